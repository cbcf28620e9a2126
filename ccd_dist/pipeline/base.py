"""The base stage on D0 (or any single block): teacher members, rank ensemble, KD student.

Stages and their artifacts (under RUN/block_K/):

    teacher/<member>/   model.pt, metrics.json         each member trained on the block (§3.1)
    ensemble/           lists.npz, metrics.json        rank ensemble E_k as lists (§3.2)
    kd/                 model.pt, metrics.json         student distilled from E_k (§4)
    plain/              model.pt, metrics.json         the same student without KD (reference)

Every stage is skipped when its `done.json` fingerprint matches, so a rerun
after a crash resumes at the first unfinished stage.
"""
from __future__ import annotations

import dataclasses
import json
import time

from ..ccd.ensemble import TeacherLists, build_rank_ensemble, evaluate_teacher, member_from_model, stream_cover
from ..ccd.kd import distill
from ..ccd.teacher_update import member_graph
from ..config import to_dict
from ..io import atomic_write_json
from ..models import Recommender, build_model
from ..resources import peak_rss_mb
from ..training.loop import fit
from ..training.static import block_evaluator
from .artifacts import RunDir, fingerprint
from .config import PipelineConfig
from .pool import TeacherPool
from .progress import HistoryWatcher, epoch_printer


def _say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run_members(pool, run: RunDir, k: int, calls: list, logs: dict):
    """Run member calls, printing their epochs; save each member as soon as it finishes
    (a crash loses only unfinished members) and yield (name, metrics)."""
    with HistoryWatcher(logs, _say):
        for name, metrics in pool.run(calls):
            pool.call(name, "save", str(run.stage(k, f"teacher/{name}")), metrics=metrics)
            yield name, metrics


def _metrics_row(block, model, chunk=4096) -> dict:
    return {s: block_evaluator(block, s, chunk)(model) for s in ("valid", "test")}


def teacher_stage(stream, k: int, cfg: PipelineConfig, run: RunDir, data_fp: str, pool) -> dict:
    """Train every member not yet finished (in parallel under Ray); return {name: metrics}."""
    block = stream[k]
    specs = cfg.teacher.specs()
    fps = {s.name: fingerprint("teacher", data_fp, k, dataclasses.asdict(s), to_dict(cfg.teacher.train_config(s)))
           for s in specs}
    todo = [s for s in specs if not run.is_done(k, f"teacher/{s.name}", fps[s.name])]
    if todo:
        _say(f"block {k}: training {len(todo)} teacher member(s): {', '.join(s.name for s in todo)}")
        ref = pool.put(block)
        calls, logs = [], {}
        for s in todo:
            logs[s.name] = run.begin(k, f"teacher/{s.name}") / "history.jsonl"
            calls.append((s.name, "train_base", (ref, cfg.teacher.train_config(s)), {"log_path": str(logs[s.name])}))
        for name, m in run_members(pool, run, k, calls, logs):
            run.finish(k, f"teacher/{name}", fps[name], {"model": "model.pt"})
            _say(f"  {name}: test recall@20={m['test']['recall@20']:.4f} ({m['epochs']} epochs, {m['seconds']:.0f}s)")
    out = {}
    for s in specs:
        out[s.name] = json.loads((run.stage(k, f"teacher/{s.name}") / "metrics.json").read_text())
        out[s.name]["fingerprint"] = fps[s.name]
    return out


def load_member_models(run: RunDir, k: int, cfg: PipelineConfig) -> list:
    return [Recommender.load(run.stage(k, f"teacher/{s.name}") / "model.pt") for s in cfg.teacher.specs()]


def new_user_metrics(ranker, stream, k: int) -> dict | None:
    """Metrics on block k restricted to the users new in block k (None at k = 0)."""
    from ..eval import EmbeddingRanker, evaluate_new_users_ranker

    if k == 0 or len(stream.new_users(k)) == 0:
        return None
    if isinstance(ranker, Recommender):
        users, items = ranker.representations()
        ranker = EmbeddingRanker(users, items)
    return {split: evaluate_new_users_ranker(ranker, stream, k, split=split) for split in ("valid", "test")}


def ensemble_stage(stream, k: int, cfg: PipelineConfig, run: RunDir, member_fps: list) -> tuple[dict, str]:
    """E_k: the rank ensemble's lists (saved, for the stages that read them) -> (its metrics, fingerprint)."""
    fp = fingerprint("ensemble", member_fps, cfg.teacher.list_size, cfg.teacher.top_users)
    path = run.stage(k, "ensemble")
    if not run.is_done(k, "ensemble", fp):
        _say(f"block {k}: rank ensemble of {len(member_fps)} members")
        started = time.perf_counter()
        models = load_member_models(run, k, cfg)
        block = stream[k]
        graphs = {kind: member_graph(stream, k, cfg.teacher_update.graph, kind) for kind in {m.kind for m in models}}
        members = []
        for spec, model in zip(cfg.teacher.specs(), models):
            # member_graph's rows, also for a Mult-VAE saved with its replay rows (see ccd/vae_update.py)
            model.set_interactions(graphs[model.kind])
            members.append(member_from_model(spec.name, model))
        lists = build_rank_ensemble(members, block.train, cover=stream_cover(stream, k),
                                    list_size=cfg.teacher.list_size, n_top_users=cfg.teacher.top_users)
        evals = evaluate_teacher(lists, stream, k)
        new_users = new_user_metrics(lists, stream, k)
        run.begin(k, "ensemble")
        lists.save(path / "lists.npz")
        atomic_write_json(path / "metrics.json", {
            "valid": evals[k]["valid"], "test": evals[k]["test"], "per_block": evals, "new_users": new_users,
            "seconds": time.perf_counter() - started, "peak_rss_mb": peak_rss_mb()})
        run.finish(k, "ensemble", fp, {"lists": "lists.npz"})
    return json.loads((path / "metrics.json").read_text()), fp


def student_stage(stream, k: int, cfg: PipelineConfig, run: RunDir, name: str, fp: str, lists=None) -> dict:
    """Train a fresh student on block k: with KD from `lists`, or plain BPR when lists is None."""
    path = run.stage(k, name)
    if not run.is_done(k, name, fp):
        block = stream[k]
        _say(f"block {k}: {name} student ({cfg.student.kind} d={cfg.student.dim})")
        started = time.perf_counter()
        seed = cfg.kd.seed if lists is not None else cfg.plain.seed
        model = build_model(cfg.student.kind, block.n_users, block.n_items, cfg.student.dim,
                            layers=cfg.student.layers, seed=seed)
        evaluate = block_evaluator(block, "valid", 4096)
        if lists is not None:
            model, result = distill(model, block.train, lists, cfg.kd, evaluate=evaluate,
                                    log=epoch_printer(name, _say))
        else:
            result = fit(model, block.train, cfg.plain, evaluate, log=epoch_printer(name, _say))
        metrics = _metrics_row(block, model)
        metrics.update(epochs=result.epochs_run, best_epoch=result.best_epoch,
                       seconds=time.perf_counter() - started, peak_rss_mb=peak_rss_mb(), history=result.history)
        run.begin(k, name)
        model.save(path / "model.pt")
        atomic_write_json(path / "metrics.json", metrics)
        run.finish(k, name, fp, {"model": "model.pt"})
        _say(f"  {name}: test recall@20={metrics['test']['recall@20']:.4f} ({metrics['seconds']:.0f}s)")
    return json.loads((path / "metrics.json").read_text())


def run_base(stream, cfg: PipelineConfig, run_root, data_fp: str, k: int = 0, pool=None, fps=None) -> dict:
    """Teacher members -> ensemble -> KD student and plain student on block k; writes base_results.json.

    `fps` (optional dict) receives the stage fingerprints keyed by (block, stage).
    """
    run = RunDir(run_root)
    run.root.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run.root / "config.json", to_dict(cfg))
    own_pool = pool is None
    pool = pool or TeacherPool(cfg)
    try:
        members = teacher_stage(stream, k, cfg, run, data_fp, pool)
    finally:
        if own_pool:
            pool.close()
    member_fps = [members[s.name]["fingerprint"] for s in cfg.teacher.specs()]
    ensemble, ens_fp = ensemble_stage(stream, k, cfg, run, member_fps)
    student = dataclasses.asdict(cfg.student)
    kd = student_stage(stream, k, cfg, run, "kd", fingerprint("kd", ens_fp, student, dataclasses.asdict(cfg.kd)),
                       lists=TeacherLists.load(run.stage(k, "ensemble") / "lists.npz"))
    plain = student_stage(stream, k, cfg, run, "plain",
                          fingerprint("plain", data_fp, k, student, dataclasses.asdict(cfg.plain)))
    if fps is not None:
        for name, m in members.items():
            fps[(k, f"teacher/{name}")] = m["fingerprint"]
        fps[(k, "ensemble")] = ens_fp
        fps[(k, "kd")] = fingerprint("kd", ens_fp, student, dataclasses.asdict(cfg.kd))
    results = {"block": k, "members": members, "ensemble": ensemble, "kd_student": kd, "plain_student": plain}
    atomic_write_json(run.root / "base_results.json", results)
    return results


def format_base_table(results: dict) -> str:
    rows = [(name, m) for name, m in results["members"].items()]
    rows += [("ensemble", results["ensemble"]), ("kd student", results["kd_student"]),
             ("student without KD", results["plain_student"])]
    lines = [f"{'model':<22}{'R@20':>8}{'N@20':>8}{'seconds':>9}{'peak RSS MB':>13}"]
    for name, m in rows:
        lines.append(f"{name:<22}{m['test']['recall@20']:>8.4f}{m['test']['ndcg@20']:>8.4f}"
                     f"{m.get('seconds', float('nan')):>9.0f}{m.get('peak_rss_mb', float('nan')):>13.0f}")
    return "\n".join(lines)
