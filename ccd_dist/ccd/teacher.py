"""The teacher system: its members per dataset preset and their base training on D0 (§2.4, §3.1).

Each member is a `MemberWorker` that keeps its model between calls, so the same
object serves as an in-process worker or a Ray actor (see
`ccd_dist.distributed.executor`); members train in parallel under Ray.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import TrainConfig
from ..io import atomic_write_json
from ..resources import peak_rss_mb


@dataclass(frozen=True)
class MemberSpec:
    """One teacher member: model kind, size and seed. `name` is its artifact folder."""

    kind: str
    dim: int
    seed: int
    layers: int = 2

    @property
    def name(self) -> str:
        return f"{self.kind}_{self.seed}"


def preset_members(preset: str) -> list[MemberSpec]:
    """Members as in the authors' code (§2.4); `synthetic` is a small BPR-MF + LightGCN mix."""
    if preset == "gowalla":
        return [MemberSpec("vae", 64, s) for s in (0, 2)] + [MemberSpec("bpr", 64, s) for s in range(5)]
    if preset == "yelp":
        return [MemberSpec("lightgcn", 128, s, layers=2) for s in range(5)]
    if preset == "synthetic":
        # Small and quick; the Mult-VAE needs many more user batches than a few-minute run gives it.
        return [MemberSpec("bpr", 32, 0), MemberSpec("lightgcn", 32, 1, layers=2), MemberSpec("bpr", 32, 2)]
    raise KeyError(f"unknown preset {preset!r}; expected gowalla, yelp or synthetic")


def base_teacher_config(**overrides) -> TrainConfig:
    """§3.1 defaults: Adam 1e-3, wd 1e-4, batch 512, 2 negatives, 100 epochs, patience 10."""
    cfg = TrainConfig(lr=1e-3, weight_decay=1e-4, batch_size=512, negatives=2, epochs=100,
                      eval_every=1, patience=10)
    return dataclasses.replace(cfg, **overrides)


def _jsonl_logger(path):
    if path is None:
        return None

    def log(record: dict) -> None:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, default=float) + "\n")

    return log


class MemberWorker:
    """Holds one member's model; runs in-process or as a Ray actor."""

    def __init__(self, spec: MemberSpec):
        self.spec = spec
        self.model = None

    def train_base(self, block, cfg: TrainConfig, n_items: int | None = None, log_path=None) -> dict:
        """Train from scratch on `block` (D0) and return its metrics (§3.1).

        With `log_path`, every epoch's record is appended there as a JSON line,
        so progress is visible while the member trains in another process.
        """
        from ..config import ModelConfig, TrainJobConfig
        from ..training.static import train_on_block

        started = time.perf_counter()
        job = TrainJobConfig(
            model=ModelConfig(kind=self.spec.kind, dim=self.spec.dim, layers=self.spec.layers),
            train=dataclasses.replace(cfg, seed=self.spec.seed),
        )
        self.model, result, test = train_on_block(block, job, n_items_total=n_items, log=_jsonl_logger(log_path))
        self.block = block.index
        return {
            "name": self.spec.name,
            "valid": result.best_valid,
            "test": test,
            "epochs": result.epochs_run,
            "best_epoch": result.best_epoch,
            "seconds": time.perf_counter() - started,
            "peak_rss_mb": peak_rss_mb(),
        }

    def update(self, stream, k: int, prev_dir, side_paths: dict, lists_path, cfg, log_path=None) -> dict:
        """Stage 3 for this member on block k (§6); returns its metrics on blocks 0..k.

        The worker keeps its model between blocks; after a restart it loads the
        block k-1 model from `prev_dir` (a failed load is an error, never a
        random start: B9).
        """
        from ..eval import evaluate_stream
        from ..models import Recommender
        from ..training.static import selection_evaluator
        from .ensemble import TeacherLists

        started = time.perf_counter()
        if self.model is None or getattr(self, "block", None) != k - 1:
            self.load(prev_dir)
            self.block = k - 1
        side = {name: Recommender.load(path) if path and Path(path).exists() else None
                for name, path in side_paths.items()}
        lists_prev = TeacherLists.load(lists_path)
        if self.spec.kind == "vae":
            from .vae_update import update_vae_member as update
        else:
            from .teacher_update import update_teacher_member as update
        evaluate = selection_evaluator(stream, k, cfg.select_over)
        cfg = dataclasses.replace(cfg, seed=self.spec.seed)  # each member draws its own samples, as §2.4 seeds
        self.model, result = update(self.model, self.spec.kind, stream, k, side, lists_prev, cfg, evaluate,
                                    log=_jsonl_logger(log_path))
        self.block = k
        users, items = self.representations()
        per_block = evaluate_stream(users, items, stream, upto=k)
        return {
            "name": self.spec.name, "valid": per_block[k]["valid"], "test": per_block[k]["test"],
            "per_block": per_block, "epochs": result.epochs_run, "best_epoch": result.best_epoch,
            "seconds": time.perf_counter() - started, "peak_rss_mb": peak_rss_mb(),
        }

    def representations(self) -> tuple[np.ndarray, np.ndarray]:
        from ..models.base import numpy_representations

        return numpy_representations(self.model)

    def save(self, directory, metrics: dict | None = None) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save(directory / "model.pt")
        if metrics is not None:
            atomic_write_json(directory / "metrics.json", metrics)

    def load(self, directory) -> dict:
        """Load a saved member; a missing or broken file is an error (B9: no silent random start)."""
        from ..models import Recommender

        directory = Path(directory)
        self.model = Recommender.load(directory / "model.pt")
        self.block = None  # unknown until the caller says which block this model is from
        metrics_path = directory / "metrics.json"
        return json.loads(metrics_path.read_text()) if metrics_path.exists() else {}

    def set_interactions(self, train) -> None:
        self.model.set_interactions(train)
