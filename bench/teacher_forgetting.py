"""Why does a teacher member forget block 0? One member's block-1 update with parts switched off.

Usage: python bench/teacher_forgetting.py STORE BASE_RUN CCD_RUN [--member lightgcn_0] [--epochs 10]
           [--set teacher_update.KEY=VALUE ...] [--variant N ...]

Reads the member after D0 (BASE_RUN/block_0/teacher/<member>), the D0 ensemble
lists and CCD_RUN's block-1 student side (stability, plasticity, student), runs
the block-1 teacher update with the run's schedule under each variant, and
prints test Recall@20 on D0 (r[1][0], stability) and on D1 (r[1][1], plasticity),
as the protocol scores them (a LightGCN member propagates on block 1's train graph,
§1.4), and on D0 once more with the same weights propagated on D0's train graph,
then the H-mean of Recall@20 after block 1 on valid (what a choice of settings may
look at) and on test.
"""
import argparse
import dataclasses
import time
from pathlib import Path

from ccd_dist.ccd.ensemble import TeacherLists
from ccd_dist.ccd.teacher_update import update_teacher_member
from ccd_dist.config import apply_overrides
from ccd_dist.data import load_stream
from ccd_dist.eval import evaluate_stream
from ccd_dist.eval.metrics import resize_csr
from ccd_dist.models import Recommender
from ccd_dist.models.base import numpy_representations
from ccd_dist.pipeline.config import block_schedule, preset_config
from ccd_dist.training.static import block_evaluator

from _run_inputs import row_scores

VARIANTS = {
    "CCD teacher update (all parts)": {},
    "without student-side replay": {"replay": False},
    "without LWC-KD / PIW / cluster": {"use_lwckd": False},
    "plain fine-tuning (BPR only)": {"replay": False, "use_lwckd": False, "exclusion": False},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("store")
    ap.add_argument("base_run")
    ap.add_argument("ccd_run")
    ap.add_argument("--member", default="lightgcn_0")
    ap.add_argument("--preset", default="yelp")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="teacher_update.KEY=VALUE",
                    help="applied to every variant, e.g. --set teacher_update.lr=3e-4")
    ap.add_argument("--variant", type=int, action="append", help="run only these rows (0-based)")
    args = ap.parse_args()
    stream = load_stream(args.store)
    base, run = Path(args.base_run) / "block_0", Path(args.ccd_run)
    lists = TeacherLists.load(base / "ensemble" / "lists.npz")
    su = run / "block_1" / "student_update"
    side = {n: Recommender.load(su / f"{n}.pt") for n in ("stability", "plasticity", "student")
            if (su / f"{n}.pt").exists()}
    pipeline = preset_config(args.preset)
    apply_overrides(pipeline, args.overrides)
    cfg = dataclasses.replace(block_schedule(pipeline, 1).teacher, epochs=args.epochs)
    kind = args.member.split("_")[0]
    print("| variant | D0 test R@20 (r[1][0]) | D1 test R@20 (r[1][1]) | D0 test R@20, same weights on the D0 graph "
          "| H-mean valid | H-mean test | seconds |\n|---|---|---|---|---|---|---|")
    before = Recommender.load(base / "teacher" / args.member / "model.pt")
    r00 = evaluate_stream(*numpy_representations(before), stream, upto=0)[0]["test"]["recall@20"]
    print(f"| member after D0 (before the update) | {r00:.4f} | - | {r00:.4f} | - | - | - |")
    for i, (name, flags) in enumerate(VARIANTS.items()):
        if args.variant and i not in args.variant:
            continue
        started = time.perf_counter()
        model = Recommender.load(base / "teacher" / args.member / "model.pt")
        model, _ = update_teacher_member(model, kind, stream, 1, side, lists, dataclasses.replace(cfg, **flags),
                                         block_evaluator(stream[1], "valid", 4096))
        rows = evaluate_stream(*numpy_representations(model), stream, upto=1)
        on_d0 = "-"
        if kind == "lightgcn":
            model.set_interactions(resize_csr(stream[0].train, model.n_users, model.n_items, "train"))
            on_d0 = f"{evaluate_stream(*numpy_representations(model), stream, upto=1)[0]['test']['recall@20']:.4f}"
        label = name + "".join(f", {o}" for o in args.overrides)
        label += f", {args.epochs} epochs" if args.epochs != 10 else ""
        print(f"| {label} | {rows[0]['test']['recall@20']:.4f} | {rows[1]['test']['recall@20']:.4f} | {on_d0} | "
              f"{row_scores(rows, 'valid')[2]:.4f} | {row_scores(rows, 'test')[2]:.4f} | {time.perf_counter() - started:.0f} |", flush=True)


if __name__ == "__main__":
    main()
