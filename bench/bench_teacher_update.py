"""One teacher member's block-k update (LWC-KD on), float32 against bf16 LWC-KD products, side by side.

Loads the member after block k-1, E_{k-1} and the student side of block k from a
finished `ccd` run, then runs ``update_teacher_member`` for a few epochs with
``teacher_update.lwckd_precision`` = float32 and = bfloat16, alternating, and
reports seconds per epoch (best of --repeats) and the valid Recall@20 each
reaches, so the speed-up and its cost in accuracy come from one run.

    python bench/bench_teacher_update.py stores/yelp runs/yelp_ccd 1 lightgcn_0 --preset yelp
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._report import write_section  # noqa: E402
from bench._run_inputs import add_run_arguments, block_teacher_config, previous_lists, student_side  # noqa: E402
from ccd_dist.ccd.teacher_update import update_teacher_member  # noqa: E402
from ccd_dist.data import load_stream  # noqa: E402
from ccd_dist.models import Recommender  # noqa: E402
from ccd_dist.training.static import block_evaluator  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_run_arguments(ap, "yelp", "member")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    stream, k = load_stream(args.store), args.block
    base = dataclasses.replace(block_teacher_config(args.preset, k), epochs=args.epochs, eval_every=args.epochs)
    prev = args.run / f"block_{k - 1}"
    lists, side = previous_lists(args.run, k), student_side(args.run, k)
    evaluate = block_evaluator(stream[k], "valid", 4096)
    best, recall = {}, {}
    for _ in range(args.repeats):
        for precision in ("float32", "bfloat16"):
            model = Recommender.load(prev / "teacher" / args.member / "model.pt")
            start = time.perf_counter()
            _, result = update_teacher_member(model, model.kind, stream, k, side, lists,
                                              dataclasses.replace(base, lwckd_precision=precision), evaluate)
            per_epoch = (time.perf_counter() - start) / args.epochs
            best[precision] = min(best.get(precision, float("inf")), per_epoch)
            recall[precision] = result.best_valid["recall@20"]
    lines = [f"{args.member} of `{args.run.name}`, block {k} update, {args.epochs} epochs with LWC-KD on, "
             f"best of {args.repeats} (alternating); seconds per epoch include the evaluation and the "
             f"before-graph / snapshot set-up.", "",
             "| LWC-KD products | s per epoch | speed-up | valid Recall@20 after the run |", "|---|---|---|---|"]
    for precision in ("float32", "bfloat16"):
        lines.append(f"| {precision} | {best[precision]:.1f} | {best['float32'] / best[precision]:.2f}x | "
                     f"{recall[precision]:.4f} |")
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        command = f"python bench/bench_teacher_update.py {args.store} {args.run} {k} {args.member} --preset {args.preset}"
        write_section("teacher_update", "One teacher member's update: float32 vs bf16 LWC-KD", command, body)


if __name__ == "__main__":
    main()
