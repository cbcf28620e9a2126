"""The three KD score products: numpy's threaded BLAS against ``fixed_split_matmul``.

Why: OpenBLAS splits the gradient products ([B, n] @ [n, d] and its transpose)
differently for each thread count, so KD's last bits changed with the thread
count. ``fixed_split_matmul`` cuts the rows into fixed slices and multiplies
each on one thread. This measures what that costs on the shapes of a Gowalla
D0 KD batch (1,024 users x 40,981 items, d = 16): the forward scores, the
user-row gradient and the item-table gradient, best of --repeats, interleaved,
both ways on two threads; and whether each way gives the same bits on 1 and 2
threads.

    python bench/bench_kd_products.py            # writes docs/benchmarks.md
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "unit"))

from _report import table, write_section  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1024)
    ap.add_argument("--items", type=int, default=40981)
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()

    import numpy as np

    from ccd_dist.ranking._blas import fixed_split_matmul
    from thread_counts import all_threads

    rng = np.random.default_rng(0)
    rows = rng.standard_normal((args.rows, args.dim)).astype(np.float32)
    table_ = rng.standard_normal((args.items, args.dim)).astype(np.float32)
    e = rng.random((args.rows, args.items)).astype(np.float32)
    buf = np.empty_like(e)
    products = {
        "scores rows @ table.T": (rows, table_.T, buf),
        "user grad e @ table": (e, table_, None),
        "item grad e.T @ rows": (e.T, rows, None),
    }
    ways = {"np.matmul": lambda a, b, out: np.matmul(a, b, out=out),
            "fixed_split_matmul": lambda a, b, out: fixed_split_matmul(a, b, out=out)}

    def timed(way, a, b, out):
        start = time.perf_counter()
        for _ in range(args.calls):
            result = way(a, b, out)
        return (time.perf_counter() - start) / args.calls * 1e3, result.copy()

    out_rows = []
    for product, (a, b, out) in products.items():
        best, bits = {}, {}
        for threads in (1, 2):
            with all_threads(threads):
                for _ in range(args.repeats if threads == 2 else 1):
                    for name, way in ways.items():
                        ms, result = timed(way, a, b, out)
                        bits.setdefault(name, []).append(result)
                        if threads == 2:
                            best[name] = min(best.get(name, float("inf")), ms)
        for name in ways:
            same = all(np.array_equal(bits[name][0], r) for r in bits[name][1:])
            out_rows.append({"product": product, "way": f"`{name}`", "ms on 2 threads": f"{best[name]:.1f}",
                             "time vs np.matmul": f"{best[name] / best['np.matmul']:.2f}x",
                             "same bits on 1 and 2 threads": same})
    body = (f"[{args.rows:,} x {args.items:,}] scores, d = {args.dim}, {args.calls} calls per timing, best of "
            f"{args.repeats} on 2 threads.\n\n{table(out_rows)}")
    print(body)
    if not args.no_write:
        write_section("kd_products", "KD score products: threaded BLAS vs fixed row slices",
                      "python bench/bench_kd_products.py", body)


if __name__ == "__main__":
    main()
