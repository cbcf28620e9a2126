"""The whole run: base stage on D0, then the continual blocks, then results.json.

`run_pipeline` is what `ccd-dist run` calls. Every stage is resumable (see
`artifacts`); results.json is rebuilt from the stage artifacts after every
block, so a resumed run reports exactly what an uninterrupted one does.
"""
from __future__ import annotations

import json

from ..eval.run_results import RunResults
from .artifacts import RunDir
from .base import run_base
from .config import PipelineConfig
from .continual import run_block, teacher_update_stage
from .base import ensemble_stage
from .methods import STUDENT_BASELINES, student_baseline_stage
from .pool import TeacherPool


def _read(path):
    return json.loads(path.read_text())


def _single(metrics: dict) -> list:
    """A block-0 model's metrics as an evaluate_stream-shaped list."""
    return [{"valid": metrics["valid"], "test": metrics["test"]}]


def collect_results(stream, cfg: PipelineConfig, run: RunDir, blocks, method: str, data: str) -> RunResults:
    """Assemble results.json from the artifacts of the finished blocks."""
    results = RunResults(len(stream), method, preset=cfg.preset, data=data)
    names = [s.name for s in cfg.teacher.specs()]
    baseline = method in STUDENT_BASELINES
    for k in blocks:
        if baseline and k > 0:
            name = f"student_{method}"
            m = _read(run.stage(k, name) / "metrics.json")
            results.add_evaluation("student", k, m["per_block"], new_users=m.get("new_users"))
            results.add_stage(k, name, m["seconds"], m.get("peak_rss_mb"))
            if method != "lwckd" or run.done_record(k, "ensemble") is None:
                results.finish_block(k)  # lwckd: the teacher of block k is not updated yet
                continue
        ens = _read(run.stage(k, "ensemble") / "metrics.json")
        results.add_evaluation("teacher", k, ens["per_block"], new_users=ens.get("new_users"))
        results.add_stage(k, "ensemble", ens["seconds"], ens.get("peak_rss_mb"))
        for name in names:
            m = _read(run.stage(k, f"teacher/{name}") / "metrics.json")
            results.add_evaluation(f"member:{name}", k, m.get("per_block") or _single(m))
            results.add_stage(k, f"teacher/{name}", m["seconds"], m.get("peak_rss_mb"))
        if baseline and k > 0:
            results.finish_block(k)
            continue
        kd = _read(run.stage(k, "kd") / "metrics.json")
        results.add_evaluation("distilled", k, kd.get("per_block") or _single(kd))
        results.add_stage(k, "kd", kd["seconds"], kd.get("peak_rss_mb"))
        if k == 0:
            results.add_evaluation("student", 0, _single(kd))
            plain = run.stage(0, "plain") / "metrics.json"
            if plain.exists():
                results.add_evaluation("student_without_kd", 0, _single(_read(plain)))
        else:
            su = _read(run.stage(k, "student_update") / "metrics.json")
            results.add_evaluation("student", k, su["student"], new_users=su.get("new_users"))
            for proxy in ("stability", "plasticity"):
                # Proxies are block k-1 models: their row k has blocks 0..k-1 only.
                for j, row in enumerate(su.get(proxy) or []):
                    for split, metrics in row.items():
                        results.model(proxy).record(k, j, split, metrics)
            results.add_stage(k, "student_update", su["seconds"], su.get("peak_rss_mb"))
        results.finish_block(k)
    return results


def run_pipeline(stream, cfg: PipelineConfig, run_root, data_fp: str, blocks, method: str = "ccd",
                 data: str = "synthetic") -> RunResults:
    run = RunDir(run_root)
    fps: dict = {}
    with TeacherPool(cfg) as pool:
        run_base(stream, cfg, run_root, data_fp, k=0, pool=pool, fps=fps)
        collect_results(stream, cfg, run, [0], method, data).save(run.root / "results.json")
        if method in STUDENT_BASELINES:
            # The baseline student never reads the teacher: every block's student first,
            # then (lwckd) the teacher updated with LWC-KD + PIW, block by block.
            for k in blocks[1:]:
                student_baseline_stage(stream, k, cfg, run, method, fps)
                collect_results(stream, cfg, run, list(range(k + 1)), method, data).save(run.root / "results.json")
            if method == "lwckd":
                for k in blocks[1:]:
                    member_fps = teacher_update_stage(stream, k, cfg, run, fps, pool)
                    _, fps[(k, "ensemble")] = ensemble_stage(stream, k, cfg, run, member_fps)
                    collect_results(stream, cfg, run, list(blocks), method, data).save(run.root / "results.json")
        else:
            for k in blocks[1:]:
                run_block(stream, k, cfg, run, fps, pool)
                collect_results(stream, cfg, run, list(range(k + 1)), method, data).save(run.root / "results.json")
    return collect_results(stream, cfg, run, list(blocks), method, data)
