"""Rank ensembles of teacher members taken from two runs at block K: which members make
one run's teacher better than another's (docs/results.md, "Where the gap comes from").

Members are ensembled as the ensemble stage does it (build_rank_ensemble, the same
cover, the default list sizes); every member gets the rows of teacher_update.member_graph
for GRAPH (the Gowalla preset's "cumulative" by default).

Usage:
  python bench/ensemble_mix.py STORE K RUN_A RUN_B a:bpr_0,a:bpr_1,b:vae_0 [SUBSET ...] [--graph block]
Prints, per subset and split, Recall@20 on blocks 0..K, RA and the H-mean at K.
"""
import argparse
from pathlib import Path

from ccd_dist.ccd.ensemble import build_rank_ensemble, evaluate_teacher, member_from_model, stream_cover
from ccd_dist.ccd.teacher_update import member_graph
from ccd_dist.data import load_stream
from ccd_dist.eval.results import harmonic_mean
from ccd_dist.models import Recommender
from ccd_dist.pipeline.config import TeacherConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("store")
    ap.add_argument("k", type=int)
    ap.add_argument("run_a", type=Path)
    ap.add_argument("run_b", type=Path)
    ap.add_argument("subsets", nargs="+", help="comma-separated a:NAME / b:NAME members")
    ap.add_argument("--graph", default="cumulative", choices=("block", "cumulative"))
    args = ap.parse_args()
    stream, k = load_stream(args.store), args.k
    runs = {"a": args.run_a, "b": args.run_b}
    sizes = TeacherConfig()
    for spec in args.subsets:
        members = []
        for item in spec.split(","):
            tag, name = item.split(":")
            model = Recommender.load(runs[tag] / f"block_{k}" / "teacher" / name / "model.pt")
            model.set_interactions(member_graph(stream, k, args.graph, model.kind))
            members.append(member_from_model(f"{tag}_{name}", model))
        lists = build_rank_ensemble(members, stream[k].train, cover=stream_cover(stream, k),
                                    list_size=sizes.list_size, n_top_users=sizes.top_users)
        ev = evaluate_teacher(lists, stream, k)
        for split in ("valid", "test"):
            r = [ev[j][split]["recall@20"] for j in range(k + 1)]
            ra = sum(r) / len(r)
            # LA needs the earlier blocks' own teachers; H here uses r[k][k] for LA, exact at K = 1.
            print(f"{spec} {split} " + " ".join(f"{x:.4f}" for x in r) + f" RA {ra:.4f}"
                  + (f" H {harmonic_mean(r[k], ra):.4f}" if k == 1 else ""), flush=True)


if __name__ == "__main__":
    main()
