"""The teacher update's replay draws: one ``sample_replay`` per source against ``ReplaySampler``, side by side.

A teacher member re-draws its replay set against its current ranks (§6.4)
twice per update with the default schedule, from up to three student-side
sources. Per source and per draw, ``sample_replay`` computes the source's
top-``absolute`` candidates and then the member's rank of each candidate,
which scores every user against every item. ``ReplaySampler`` computes the
candidates once and ranks all sources' candidates in one pass. Both paths run
here on the same finished run (block k's student side, a block-k member as
the reference) and must give the same sets; the table gives seconds for
``--draws`` draws, best of ``--repeats``, alternating.

    python bench/bench_replay_sampler.py stores/gowalla runs/gowalla_ccd 2 bpr_0 --preset gowalla
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._report import write_section  # noqa: E402
from bench._run_inputs import add_run_arguments, block_teacher_config, speedup_table, student_side  # noqa: E402
from ccd_dist.ccd.replay import merge_replay, sample_replay  # noqa: E402
from ccd_dist.ccd.teacher_update import make_teacher_sampler, side_sources, source_mask  # noqa: E402
from ccd_dist.data import load_stream  # noqa: E402
from ccd_dist.models import Recommender  # noqa: E402
from ccd_dist.models.base import numpy_representations  # noqa: E402
from ccd_dist.training.batches import epoch_seed  # noqa: E402


def per_source_sampler(stream, k, cfg, sources):
    """The former path: every draw runs sample_replay for each source, then merges."""
    prev, block = stream[k - 1], stream[k]
    mask = source_mask(stream, k)

    def sampler(model, round_):
        ref_u, ref_i = numpy_representations(model)
        sets = []
        for j, (_name, src, n, filtered) in enumerate(sources):
            users = np.arange(prev.n_users if filtered else block.n_users, dtype=np.int64)
            src_u, src_i = numpy_representations(src)
            sets.append(sample_replay(src_u, src_i, ref_u, ref_i, users, mask if filtered else None,
                                      absolute=cfg.absolute, n_samples=n, eps=cfg.eps,
                                      seed=epoch_seed(cfg.seed, round_, 30 + j)))
        return merge_replay(*sets)

    return sampler


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_run_arguments(ap, "gowalla", "member")
    ap.add_argument("--draws", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    stream, k = load_stream(args.store), args.block
    tcfg = block_teacher_config(args.preset, k)
    sources = side_sources(student_side(args.run, k), tcfg, k)
    member = Recommender.load(args.run / f"block_{k}" / "teacher" / args.member / "model.pt")
    paths = {"one sample_replay per source": lambda: per_source_sampler(stream, k, tcfg, sources),
             "ReplaySampler": lambda: make_teacher_sampler(stream, k, tcfg, sources)}
    best, sets = {}, {}
    for _ in range(args.repeats):
        for name, make in paths.items():
            start = time.perf_counter()
            sampler = make()
            sets[name] = [sampler(member, r) for r in range(args.draws)]
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - start)
    first, second = sets.values()
    same = all(np.array_equal(a, b) for s, t in zip(first, second) for a, b in zip(s, t))
    if not same:
        raise SystemExit("the two paths drew different replay sets")
    lines = [f"{args.member} of `{args.run.name}` as the reference, block {k}'s student side "
             f"({', '.join(s[0] for s in sources)}), {args.draws} draws of {len(first[0][0]):,} pairs each, "
             f"best of {args.repeats}; both paths give the same sets.", "", *speedup_table("path", best)]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        command = (f"python bench/bench_replay_sampler.py {args.store} {args.run} {k} {args.member} "
                   f"--preset {args.preset}")
        write_section("replay_sampler", "Teacher replay draws: per-source sampling vs ReplaySampler", command, body)


if __name__ == "__main__":
    main()
