"""How much of a CCD-vs-ft gap at one block is seed noise: update the block-k student with several seeds.

Starts from a finished ``ccd`` run's block k-1 artifacts (the distilled student,
E_{k-1}'s lists, the block k-1 proxies) and runs the CCD student update (the
preset's block-k schedule) and the ``ft`` update (``finetune_config`` with the
same optimisation settings) once per seed. The seed drives the mini-batch order,
the negatives and the replay draws; everything else is the run's. Seed 0 is the
pipeline's own seed, so its row reproduces the run (and an ``ft`` run from the
same base). Per seed it prints test Recall@20 on block k (r[k][k]), RA_k (mean
of r[k][0..k]) and H(r[k][k], RA_k), which is the stream's H-mean at k = 1 only.

    python bench/student_seeds.py stores/yelp runs/yelp_ccd_v2 1 --preset yelp --seeds 5 \
        --set kd.rrd_idle_users=true
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ccd_dist.ccd.ensemble import TeacherLists  # noqa: E402
from ccd_dist.ccd.student_update import finetune_config, update_student  # noqa: E402
from ccd_dist.config import apply_overrides  # noqa: E402
from ccd_dist.data import load_stream  # noqa: E402
from ccd_dist.models import Recommender  # noqa: E402
from ccd_dist.pipeline.config import block_schedule, preset_config  # noqa: E402
from ccd_dist.pipeline.continual import evaluate_model  # noqa: E402
from ccd_dist.pipeline.methods import apply_method  # noqa: E402
from ccd_dist.training.static import selection_evaluator  # noqa: E402
from bench._run_inputs import row_scores  # noqa: E402


def _optional(path: Path):
    return Recommender.load(path) if path.exists() else None


def scores(model, stream, k: int, split: str) -> tuple[float, float, float]:
    """(r[k][k], RA_k, H of the two) on Recall@20 of `split`."""
    return row_scores(evaluate_model(model, stream, k), split)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("store")
    ap.add_argument("run", type=Path)
    ap.add_argument("block", type=int)
    ap.add_argument("--preset", default="yelp")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="the run's own --set overrides (only student_update.* matter here)")
    args = ap.parse_args()
    stream, k = load_stream(args.store), args.block
    if k < 1:
        ap.error("block must be 1 or later (block 0 has no student update)")
    cfg = preset_config(args.preset)
    apply_method(cfg, "ccd")
    apply_overrides(cfg, args.set)
    ccd_cfg = block_schedule(cfg, k).student
    ft_cfg = finetune_config(**dataclasses.asdict(cfg.student_update.train_config()))
    prev = args.run / f"block_{k - 1}"
    distilled = Recommender.load(prev / "kd" / "model.pt")
    stability = _optional(prev / "student_update" / "stability.pt") if k >= 2 else None
    plasticity = _optional(prev / "student_update" / "plasticity.pt") if k >= 2 else None
    lists = TeacherLists.load(prev / "ensemble" / "lists.npz")
    evaluate = selection_evaluator(stream, k, ccd_cfg.select_over)

    print(f"| seed | method | valid H | test r[{k}][{k}] | test RA | test H |")
    print("|---|---|---|---|---|---|")
    rows = {"ccd": [], "ft": []}
    for seed in range(args.seeds):
        for name, base, side in (("ccd", ccd_cfg, (stability, plasticity, lists)), ("ft", ft_cfg, (None, None, None))):
            result = update_student(distilled, *side[:2], stream, k, side[2], dataclasses.replace(base, seed=seed),
                                    evaluate)
            valid_h = scores(result.student, stream, k, "valid")[2]
            learned, retained, test_h = scores(result.student, stream, k, "test")
            rows[name].append(test_h)
            print(f"| {seed} | {name} | {valid_h:.4f} | {learned:.4f} | {retained:.4f} | {test_h:.4f} |", flush=True)
    diffs = [c - f for c, f in zip(rows["ccd"], rows["ft"])]
    for name, values in rows.items():
        print(f"{name}: test H mean {statistics.mean(values):.4f}, sd {statistics.pstdev(values):.4f}")
    print(f"ccd - ft per seed: {' '.join(f'{d:+.4f}' for d in diffs)}; mean {statistics.mean(diffs):+.4f}; "
          f"ccd ahead in {sum(d > 0 for d in diffs)} of {len(diffs)}")


if __name__ == "__main__":
    main()
