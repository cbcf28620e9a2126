"""Train one model on one block: the `ccd-dist train` job, also used by the base teachers."""
from __future__ import annotations

import json
import time
from pathlib import Path

from ..config import TrainJobConfig, to_dict
from ..data import Block
from ..errors import InputError
from ..eval import evaluate_block
from ..io import atomic_directory
from ..models import build_model
from ..resources import peak_rss_mb
from .loop import FitResult, fit


def block_evaluator(block: Block, split: str, chunk: int):
    """Evaluation on one split of one block, with that block's own masks (§9)."""

    def evaluate(model) -> dict:
        users, items = model.representations()
        return evaluate_block(users, items, block, split=split, chunk_size=chunk)

    return evaluate


SELECT_OVER = ("block", "seen")


def selection_evaluator(stream, k: int, over: str, chunk: int = 4096):
    """The metrics a continual stage selects its best epoch on (valid split).

    ``over="block"``: block k only, the reference's default. ``over="seen"``: each
    metric averaged over blocks 0..k, the reference's ``--eaa`` switch, which
    lets stability count in the choice of epoch.
    """
    if over not in SELECT_OVER:
        raise InputError(f"select_over must be one of {SELECT_OVER}, got {over!r}", where="select_over")
    if over == "block":
        return block_evaluator(stream[k], "valid", chunk)

    def evaluate(model) -> dict:
        users, items = model.representations()
        per_block = [evaluate_block(users, items, stream[j], split="valid", chunk_size=chunk) for j in range(k + 1)]
        return {name: sum(m[name] for m in per_block) / len(per_block) for name in per_block[-1]}

    return evaluate


def train_on_block(block: Block, cfg: TrainJobConfig, n_items_total: int | None = None, log=None):
    """Build and fit the configured model on `block`; return (model, FitResult, test metrics)."""
    model = build_model(
        cfg.model.kind,
        block.n_users,
        n_items_total or block.n_items,
        cfg.model.dim,
        layers=cfg.model.layers,
        seed=cfg.train.seed,
    )
    if block.valid.nnz:
        evaluate, monitor = block_evaluator(block, "valid", cfg.train.eval_chunk), None
    else:
        # No validation split (e.g. a LightGCN-format dataset imported without a carve):
        # no model selection; test metrics are recorded along the way, never used to select.
        evaluate, monitor = None, block_evaluator(block, "test", cfg.train.eval_chunk)
    result: FitResult = fit(model, block.train, cfg.train, evaluate, log=log, monitor=monitor)
    test = block_evaluator(block, "test", cfg.train.eval_chunk)(model)
    return model, result, test


def run_train_job(stream, block_index: int, cfg: TrainJobConfig, out: Path, force: bool = False, log=None) -> dict:
    """Train, then write model.pt, metrics.json and config.json into `out` atomically."""
    block = stream.blocks[block_index]
    started = time.perf_counter()
    model, result, test = train_on_block(block, cfg, log=log)
    metrics = {
        "valid": result.best_valid,
        "test": test,
        "epochs": result.epochs_run,
        "best_epoch": result.best_epoch,
        "seconds": time.perf_counter() - started,
        "train_seconds": result.seconds,
        "peak_rss_mb": peak_rss_mb(),
        "history": result.history,
        "block": block_index,
    }
    with atomic_directory(out, overwrite=force) as tmp:
        model.save(Path(tmp) / "model.pt")
        (Path(tmp) / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        (Path(tmp) / "config.json").write_text(json.dumps(to_dict(cfg), indent=2) + "\n")
    return metrics
