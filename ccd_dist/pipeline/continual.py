"""The continual blocks k = 1..N of CCD (§0, §7.2): student update, teacher update,
rank ensemble and KD, each a stage over artifacts in the run directory.

    block_k/student_update/   student.pt (CL_k), stability.pt, plasticity.pt, metrics.json
    block_k/teacher/<m>/      model.pt, metrics.json   (each member updated, in parallel)
    block_k/ensemble/         lists.npz, metrics.json  (E_k)
    block_k/kd/               model.pt, metrics.json   (the distilled student for block k+1)

Fingerprints chain every stage to its inputs, so a rerun resumes at the first
unfinished stage and recomputes exactly what a changed input invalidates.
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np
import scipy.sparse as sp

from ..ccd.ensemble import TeacherLists
from ..ccd.kd import distill
from ..config import to_dict
from ..eval import evaluate_stream
from ..io import atomic_write_json
from ..models import Recommender, build_model
from ..ranking import topk
from ..resources import peak_rss_mb
from ..training.static import block_evaluator, selection_evaluator
from .artifacts import RunDir, fingerprint
from .base import _say, ensemble_stage, new_user_metrics, run_members
from .config import PipelineConfig, block_schedule
from .progress import epoch_printer


def exclusion_lists(models, train, n: int = 40) -> sp.csr_matrix:
    """Per-user union of each model's top-n items outside `train` (§4 / §5.1 exclusions).

    Models may be smaller than the block (older proxies): their users/items are a prefix.
    """
    n_users, n_items = train.shape
    rows, cols = [], []
    for model in models:
        if model is None:
            continue
        users, items = model.representations()
        u = min(users.shape[0], n_users)
        i = min(items.shape[0], n_items)
        top, _ = topk(users[:u], items[:i], n, exclude=train[:u, :i])
        r, c = (top >= 0).nonzero()
        rows.append(r)
        cols.append(top[r, c])
    if not rows:
        return sp.csr_matrix((n_users, n_items), dtype="float32")
    r = np.concatenate(rows)
    c = np.concatenate(cols).astype(np.int64)
    mat = sp.csr_matrix((np.ones(len(r), np.float32), (r, c)), shape=(n_users, n_items))
    mat.sum_duplicates()
    mat.data[:] = 1.0
    return mat


def evaluate_model(model, stream, k: int) -> list:
    users, items = model.representations()
    return evaluate_stream(users, items, stream, upto=k)


def _load(path) -> Recommender:
    return Recommender.load(path)


def _load_optional(path):
    """A proxy that this configuration does not keep (e.g. proxies switched off) is absent."""
    return Recommender.load(path) if path.exists() else None


def student_update_stage(stream, k, cfg: PipelineConfig, run: RunDir, fps: dict) -> str:
    from ..ccd.student_update import update_student

    fp = fingerprint("student_update", fps[(k - 1, "kd")], fps[(k - 1, "ensemble")],
                     fps.get((k - 1, "student_update")), to_dict(block_schedule(cfg, k).student))
    if run.is_done(k, "student_update", fp):
        return fp
    _say(f"block {k}: student update")
    started = time.perf_counter()
    distilled = _load(run.stage(k - 1, "kd") / "model.pt")
    prev = run.stage(k - 1, "student_update")
    stability = _load_optional(prev / "stability.pt") if k >= 2 else None
    plasticity = _load_optional(prev / "plasticity.pt") if k >= 2 else None
    lists_prev = TeacherLists.load(run.stage(k - 1, "ensemble") / "lists.npz")
    schedule = block_schedule(cfg, k).student
    result = update_student(distilled, stability, plasticity, stream, k, lists_prev, schedule,
                            selection_evaluator(stream, k, schedule.select_over),
                            log=epoch_printer("student_update", _say))
    path = run.begin(k, "student_update")
    result.student.save(path / "student.pt")
    for name in ("stability", "plasticity"):
        if getattr(result, name) is not None:
            getattr(result, name).save(path / f"{name}.pt")
    atomic_write_json(path / "metrics.json", {
        "student": evaluate_model(result.student, stream, k),
        "new_users": new_user_metrics(result.student, stream, k),
        "stability": evaluate_model(result.stability, stream, k - 1) if result.stability else None,
        "plasticity": evaluate_model(result.plasticity, stream, k - 1) if result.plasticity else None,
        "distilled": evaluate_model(distilled, stream, k - 1),
        "epochs": result.fit_result.epochs_run, "best_epoch": result.fit_result.best_epoch,
        "replay_size": result.replay_size, "history": result.fit_result.history,
        "seconds": time.perf_counter() - started, "peak_rss_mb": peak_rss_mb()})
    run.finish(k, "student_update", fp)
    return fp


def teacher_update_stage(stream, k, cfg: PipelineConfig, run: RunDir, fps: dict, pool) -> list:
    """Update every member on block k (in parallel under Ray); returns member fingerprints."""
    specs = cfg.teacher.specs()
    schedule = block_schedule(cfg, k).teacher
    member_fps = {s.name: fingerprint("teacher_update", fps[(k - 1, f"teacher/{s.name}")],
                                      fps.get((k, "student_update")), fps[(k - 1, "ensemble")], to_dict(schedule))
                  for s in specs}
    todo = [s for s in specs if not run.is_done(k, f"teacher/{s.name}", member_fps[s.name])]
    if todo:
        _say(f"block {k}: updating {len(todo)} teacher member(s)")
        ref = pool.put(stream)
        side = {name: str(run.stage(k, "student_update") / f"{name}.pt")
                for name in ("stability", "plasticity", "student")}
        lists_prev = str(run.stage(k - 1, "ensemble") / "lists.npz")
        calls, logs = [], {}
        for s in todo:
            logs[s.name] = run.begin(k, f"teacher/{s.name}") / "history.jsonl"
            prev_dir = str(run.stage(k - 1, f"teacher/{s.name}"))
            calls.append((s.name, "update", (ref, k, prev_dir, side, lists_prev, schedule),
                          {"log_path": str(logs[s.name])}))
        for name, metrics in run_members(pool, run, k, calls, logs):
            run.finish(k, f"teacher/{name}", member_fps[name])
            _say(f"  {name}: block {k} test recall@20={metrics['test']['recall@20']:.4f} ({metrics['seconds']:.0f}s)")
    for s in specs:
        fps[(k, f"teacher/{s.name}")] = member_fps[s.name]
    return [member_fps[s.name] for s in specs]


def kd_stage(stream, k, cfg: PipelineConfig, run: RunDir, fps: dict) -> str:
    """The distilled student for block k+1: KD from E_k with the §4 exclusion lists."""
    fp = fingerprint("kd", fps[(k, "ensemble")], fps[(k, "student_update")], dataclasses.asdict(cfg.student),
                     dataclasses.asdict(cfg.kd))
    if run.is_done(k, "kd", fp):
        return fp
    _say(f"block {k}: KD student")
    started = time.perf_counter()
    block = stream[k]
    su = run.stage(k, "student_update")
    side = [_load_optional(su / "stability.pt"), _load_optional(su / "plasticity.pt") if k >= 2 else None,
            _load(su / "student.pt")]
    exclude = exclusion_lists(side, block.train)
    lists = TeacherLists.load(run.stage(k, "ensemble") / "lists.npz")
    model = build_model(cfg.student.kind, block.n_users, block.n_items, cfg.student.dim,
                        layers=cfg.student.layers, seed=cfg.kd.seed)
    model, result = distill(model, block.train, lists, cfg.kd, exclude=exclude,
                            evaluate=block_evaluator(block, "valid", 4096), log=epoch_printer("kd", _say))
    path = run.begin(k, "kd")
    model.save(path / "model.pt")
    atomic_write_json(path / "metrics.json", {
        "per_block": evaluate_model(model, stream, k), "epochs": result.epochs_run,
        "best_epoch": result.best_epoch, "history": result.history,
        "seconds": time.perf_counter() - started, "peak_rss_mb": peak_rss_mb()})
    run.finish(k, "kd", fp)
    return fp


def run_block(stream, k: int, cfg: PipelineConfig, run: RunDir, fps: dict, pool) -> None:
    """One continual block of CCD: S_update, T_update, Ensemble, KD (§0 order)."""
    fps[(k, "student_update")] = student_update_stage(stream, k, cfg, run, fps)
    member_fps = teacher_update_stage(stream, k, cfg, run, fps, pool)
    _, fps[(k, "ensemble")] = ensemble_stage(stream, k, cfg, run, member_fps)
    fps[(k, "kd")] = kd_stage(stream, k, cfg, run, fps)
