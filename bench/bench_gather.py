"""Gathering a batch's rows for BPR: x[ids] against x.index_select(0, ids), forward + backward.

Why: LightGCN's pair scores gather the propagated rows of a batch's users,
positives and negatives, with many repeated ids. The backward of advanced
indexing (``index_put_`` with accumulation) depends on torch's thread count
and, here, is also slow; ``index_select``'s backward (``index_add_``) is fixed
order. Both give the same forward values. Shapes: a Yelp teacher batch
(512 users x (1 positive + 2 negatives), d = 128, over the batch's ~1,500
unique nodes); best of --repeats, interleaved, on 1 and 2 threads.

    python bench/bench_gather.py            # writes docs/benchmarks.md
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _report import table, write_section  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--negatives", type=int, default=2)
    ap.add_argument("--nodes", type=int, default=1500)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()

    import torch

    gen = torch.Generator().manual_seed(0)
    n_rows = args.batch * (2 + args.negatives)
    ids = torch.randint(0, args.nodes, (n_rows,), generator=gen)
    weight = torch.randn(n_rows, args.dim, generator=gen)
    rows = torch.randn(args.nodes, args.dim, generator=gen, requires_grad=True)
    ways = {"x[ids]": lambda: rows[ids], "x.index_select(0, ids)": lambda: rows.index_select(0, ids)}

    def run(gather) -> tuple[float, torch.Tensor]:
        start = time.perf_counter()
        for _ in range(args.calls):
            rows.grad = None
            (gather() * weight).sum().backward()
        return (time.perf_counter() - start) / args.calls * 1e3, rows.grad.clone()

    out, same_forward = [], torch.equal(ways["x[ids]"](), ways["x.index_select(0, ids)"]())
    reference = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        best, grads = {}, {}
        for _ in range(args.repeats):
            for name, gather in ways.items():
                ms, grad = run(gather)
                best[name] = min(best.get(name, float("inf")), ms)
                grads.setdefault(name, []).append(grad)
        for name in ways:
            reference.setdefault(name, grads[name][0])
            stable = all(torch.equal(reference[name], g) for g in grads[name])
            out.append({"threads": threads, "gather": f"`{name}`", "ms per forward + backward": f"{best[name]:.3f}",
                        "speed-up": f"{best['x[ids]'] / best[name]:.2f}x",
                        "gradient equal to the 1-thread one in every repeat": stable})
    body = (f"{n_rows:,} rows (ids repeated) of a {args.nodes:,} x {args.dim} table, {args.calls} calls per timing, "
            f"best of {args.repeats}. Forward values identical: {same_forward}.\n\n{table(out)}")
    print(body)
    if not args.no_write:
        write_section("gather", "Batch row gather: advanced indexing vs index_select", "python bench/bench_gather.py",
                      body)


if __name__ == "__main__":
    main()
