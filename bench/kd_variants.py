"""Distil the block-k student of an existing run again, with KD variants, and print its test Recall@20.

Reads the run's E_k (``block_k/ensemble/lists.npz``) and the side models of
``block_k/student_update`` (the §4 exclusion lists), so every variant sees the
same teacher. Variants are comma-separated; each is a '+'-joined set of:
``ref`` (the preset's KD), ``idle`` (kd.rrd_idle_users), ``cum`` (the student
propagates on train 0..k instead of block k), ``eN`` (N KD epochs), ``seen``
(select the epoch on valid Recall@20 averaged over blocks 0..k).

    python bench/kd_variants.py stores/yelp runs/yelp_ccd_cum_nolwckd 1 ref,idle,e20,idle+e20 --preset yelp
"""
from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ccd_dist.ccd.ensemble import TeacherLists  # noqa: E402
from ccd_dist.ccd.kd import distill  # noqa: E402
from ccd_dist.data import load_stream  # noqa: E402
from ccd_dist.models import Recommender  # noqa: E402
from ccd_dist.models.factory import build_model  # noqa: E402
from ccd_dist.pipeline.config import preset_config  # noqa: E402
from ccd_dist.pipeline.continual import evaluate_model, exclusion_lists  # noqa: E402
from ccd_dist.training.static import block_evaluator, selection_evaluator  # noqa: E402


def kd_config(base, parts: list):
    """The preset's KD config with a variant's `idle` and `eN` parts applied."""
    epochs = [int(p[1:]) for p in parts if re.fullmatch(r"e\d+", p)]
    return dataclasses.replace(base, rrd_idle_users="idle" in parts, **({"epochs": epochs[-1]} if epochs else {}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("store")
    ap.add_argument("run", type=Path)
    ap.add_argument("block", type=int)
    ap.add_argument("variants")
    ap.add_argument("--preset", default="yelp")
    args = ap.parse_args()
    stream, cfg, k = load_stream(args.store), preset_config(args.preset), args.block
    block = stream[k]
    su = args.run / f"block_{k}" / "student_update"
    side = [Recommender.load(su / "stability.pt"), Recommender.load(su / "plasticity.pt") if k >= 2 else None,
            Recommender.load(su / "student.pt")]
    exclude = exclusion_lists(side, block.train)
    lists = TeacherLists.load(args.run / f"block_{k}" / "ensemble" / "lists.npz")
    print("| variant | " + " | ".join(f"D{j}" for j in range(k + 1)) + " | mean 0..k | best epoch | seconds |")
    print("|---" * (k + 5) + "|")
    for variant in args.variants.split(","):
        parts = variant.split("+")
        kd = kd_config(cfg.kd, parts)
        evaluate = selection_evaluator(stream, k, "seen") if "seen" in parts else block_evaluator(block, "valid", 4096)
        model = build_model(cfg.student.kind, block.n_users, block.n_items, cfg.student.dim,
                            layers=cfg.student.layers, seed=kd.seed)
        start = time.perf_counter()
        model, result = distill(model, block.train, lists, kd, exclude=exclude, evaluate=evaluate,
                                graph=stream.train_upto(k) if "cum" in parts else None)
        recall = [row["test"]["recall@20"] for row in evaluate_model(model, stream, k)]
        cells = " | ".join(f"{r:.4f}" for r in recall)
        print(f"| {variant} | {cells} | {sum(recall) / len(recall):.4f} | "
              f"{result.best_epoch} | {time.perf_counter() - start:.0f} |", flush=True)


if __name__ == "__main__":
    main()
