"""Top-K ranking of embeddings with rows shrunk to ~1e-37, with and without the subnormal flush.

Why: users without an interaction in a block get no gradient but keep their
weight decay, so a member trained 20 epochs on Yelp D0 has 11 % of its user
rows near 1e-37. Their scores are sums of subnormal products, which x86
computes about a hundred times slower than normal floats; the ranking engine
sets flush-to-zero around its fast product (``ccd_dist/ranking/_fpmode.py``).
This measures ``ranking.topk`` (top-100 with a train mask, as an evaluation
does) on one and on two threads, flush on and off, interleaved, best of
--repeats, and checks the results are identical. With --model/--store it
times the evaluation of a saved member instead of synthetic embeddings.

    python bench/bench_subnormal.py                      # writes docs/benchmarks.md
    python bench/bench_subnormal.py --model runs/yelp_ccd_v2/block_0/teacher/lightgcn_0/model.pt \\
        --store stores/yelp --no-write
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _report import table, write_section  # noqa: E402


def synthetic(n_users: int, n_items: int, dim: int, tiny_share: float, seed: int = 0):
    """Embeddings like a trained member's: normal rows, and `tiny_share` of the users shrunk to ~1e-37."""
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    users = (rng.standard_normal((n_users, dim)) * 0.1).astype(np.float32)
    items = (rng.standard_normal((n_items, dim)) * 0.1).astype(np.float32)
    shrunk = rng.random(n_users) < tiny_share
    users[shrunk] *= np.float32(1e-36)
    mask = sp.random(n_users, n_items, density=10 / n_items, random_state=seed, format="csr")
    return users, items, mask


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, default=12000)
    ap.add_argument("--items", type=int, default=11000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--tiny-share", type=float, default=0.11)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model", type=Path, help="a saved member (model.pt): time its block evaluation instead")
    ap.add_argument("--store", type=Path, help="the store of --model (block 0's valid split)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()

    import numba
    import torch

    from ccd_dist.ranking import _fpmode, topk

    if args.model is not None:
        from ccd_dist.data import load_stream
        from ccd_dist.models import Recommender
        from ccd_dist.training.static import block_evaluator

        model = Recommender.load(args.model)
        evaluate = block_evaluator(load_stream(args.store)[0], "valid", 4096)
        workload = lambda: evaluate(model)["recall@20"]  # noqa: E731
        what = f"valid evaluation of `{args.model}` (block 0)"
    else:
        users, items, mask = synthetic(args.users, args.items, args.dim, args.tiny_share)
        workload = lambda: topk(users, items, 100, exclude=mask)  # noqa: E731
        what = (f"`ranking.topk`, top-100 with a train mask, {args.users:,} users x {args.items:,} items, "
                f"d = {args.dim}, {args.tiny_share:.0%} of the user rows scaled to ~1e-37")

    rows, same = [], True
    for threads in (1, 2):
        torch.set_num_threads(threads)
        numba.set_num_threads(threads)
        best, results = {True: float("inf"), False: float("inf")}, {}
        workload()  # compile and warm up
        for _ in range(args.repeats):
            for flush in (False, True):
                _fpmode.ENABLED = flush
                start = time.perf_counter()
                results[flush] = workload()
                best[flush] = min(best[flush], time.perf_counter() - start)
        _fpmode.ENABLED = True
        a, b = results[False], results[True]
        same &= all(np.array_equal(x, y) for x, y in zip(a, b)) if isinstance(a, tuple) else a == b
        rows.append({"threads": threads, "no flush s": f"{best[False]:.2f}", "flush s": f"{best[True]:.2f}",
                     "speed-up": f"{best[False] / best[True]:.2f}x"})
    body = (f"{what}; best of {args.repeats}, interleaved.\n\n{table(rows)}\n\n"
            f"Results identical with and without the flush: {same}.")
    print(body)
    if not args.no_write:
        command = "python bench/bench_subnormal.py" + (" --model ... --store ..." if args.model else "")
        write_section("subnormal", "Ranking rows shrunk by weight decay: subnormal flush", command, body)


if __name__ == "__main__":
    main()
