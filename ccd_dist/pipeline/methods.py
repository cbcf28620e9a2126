"""Methods that run through the same pipeline (`ccd-dist run --method ...`).

- `ccd`: the full method (§0).
- Ablations of CCD, as config changes of the same stages:
  `ccd-no-replay` (no proxy-guided replay in the student update),
  `ccd-no-proxies` (no stability / plasticity proxies in the student or teacher update),
  `ccd-no-teacher-update` (members only grow with the new-entity initialisation, 0 epochs).
- Student-only baselines, each starting from the same D0 base stage (the distilled
  student of block 0) and updating the student on every block:
  `ft` (growth init + BPR on block k, nothing else), `lwckd` (the student with
  LWC-KD + PIW; the teacher members are updated with LWC-KD + PIW too, without
  student-side knowledge, and rank-ensembled), `retrain` (a fresh student on the
  union of the train splits of blocks 0..k; a reference, not a continual method).
"""
from __future__ import annotations

import dataclasses
import time

from ..ccd.student_update import finetune_config, update_student
from ..ccd.teacher_update import update_teacher_member
from ..config import apply_overrides, to_dict
from ..data import Block
from ..errors import InputError
from ..io import atomic_write_json
from ..models import Recommender, build_model
from ..resources import peak_rss_mb
from ..training.loop import fit
from ..training.static import selection_evaluator
from .artifacts import RunDir, fingerprint
from .base import _say, new_user_metrics
from .continual import evaluate_model
from .progress import epoch_printer

CCD_VARIANTS = {
    "ccd": [],
    "ccd-no-replay": ["student_update.replay=false"],
    "ccd-no-proxies": ["student_update.use_stability=false", "student_update.use_plasticity=false",
                       "teacher_update.use_stability=false", "teacher_update.use_plasticity=false"],
    "ccd-no-teacher-update": ["teacher_update.epochs=0"],
}
STUDENT_BASELINES = ("ft", "lwckd", "retrain")
METHODS = tuple(CCD_VARIANTS) + STUDENT_BASELINES


def apply_method(cfg, method: str) -> None:
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}", path="--method")
    apply_overrides(cfg, CCD_VARIANTS.get(method, []))
    if method == "lwckd":
        # Teacher members: LWC-KD + PIW only, no student-side knowledge or replay.
        apply_overrides(cfg, ["teacher_update.use_stability=false", "teacher_update.use_plasticity=false",
                              "teacher_update.use_student=false", "teacher_update.replay=false"])


def cumulative_block(stream, k: int) -> Block:
    """Block k's splits with the train split replaced by the union of train splits 0..k."""
    return dataclasses.replace(stream[k], train=stream.train_upto(k))


def student_baseline_stage(stream, k: int, cfg, run: RunDir, method: str, fps: dict) -> str:
    """One block of a student-only baseline: the student of block k from that of block k-1."""
    name = f"student_{method}"
    prev_fp = fps[(k - 1, name)] if k > 1 else fps[(0, "kd")]
    fp = fingerprint(name, prev_fp, k, to_dict(cfg.student_update), to_dict(cfg.teacher_update),
                     to_dict(cfg.plain), dataclasses.asdict(cfg.student))
    fps[(k, name)] = fp
    if run.is_done(k, name, fp):
        return fp
    _say(f"block {k}: {method} student")
    started = time.perf_counter()
    prev_path = run.stage(k - 1, name) / "model.pt" if k > 1 else run.stage(0, "kd") / "model.pt"
    block = stream[k]
    evaluate = selection_evaluator(stream, k, cfg.student_update.select_over)
    log = epoch_printer(name, _say)
    if method == "ft":
        result = update_student(Recommender.load(prev_path), None, None, stream, k, None,
                                finetune_config(**_train_fields(cfg.student_update)), evaluate, log=log)
        model, fit_result = result.student, result.fit_result
    elif method == "lwckd":
        tcfg = dataclasses.replace(cfg.teacher_update, **_train_fields(cfg.student_update), replay=False,
                                   use_stability=False, use_plasticity=False, use_student=False, exclusion=False,
                                   graph="block")  # a student: block k's graph, whatever the teacher's
        model, fit_result = update_teacher_member(Recommender.load(prev_path), cfg.student.kind, stream, k, {},
                                                  None, tcfg, evaluate, log=log)
    else:  # retrain
        union = cumulative_block(stream, k)
        model = build_model(cfg.student.kind, block.n_users, block.n_items, cfg.student.dim,
                            layers=cfg.student.layers, seed=cfg.plain.seed)
        fit_result = fit(model, union.train, cfg.plain, evaluate, log=log)
    per_block = evaluate_model(model, stream, k)
    path = run.begin(k, name)
    model.save(path / "model.pt")
    atomic_write_json(path / "metrics.json", {
        "per_block": per_block, "new_users": new_user_metrics(model, stream, k),
        "epochs": fit_result.epochs_run, "best_epoch": fit_result.best_epoch, "history": fit_result.history,
        "seconds": time.perf_counter() - started, "peak_rss_mb": peak_rss_mb()})
    run.finish(k, name, fp)
    _say(f"  {method}: block {k} test recall@20={per_block[k]['test']['recall@20']:.4f}")
    return fp


def _train_fields(su) -> dict:
    """The optimisation settings of the student update, shared by every student baseline."""
    return dataclasses.asdict(su.train_config())
