"""LWC-KD's neighbour log-softmax (the bulk of a teacher update) against the plain torch form.

One call of each at Yelp block-1 teacher size (a 2048-pair batch's ~1,600 before
users against ~12,000 before entities, d=128), forward + backward, measured
side by side in one run (best of --repeats, interleaved):
  (a) torch: logsumexp(t @ n.T / T) with autograd (what a straightforward port does);
  (b) ccd_dist RowLogSumExp, recomputing the softmax rows in the backward;
  (c) ccd_dist RowLogSumExp as the teacher update runs it: rows kept for the
      backward, score buffers reused between calls;
  (d) as (c) with ``teacher_update.lwckd_precision=bfloat16``: the three
      products on bf16 operands, the softmax in float32.
Gradients of (b) and (c) are checked against (a) to rtol 1e-3; (d)'s relative
error (norm of the difference / norm of (a)) is reported.

    python bench/bench_lwckd.py [--rows 1600 --cols 12000 --dim 128]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._report import write_section  # noqa: E402
import ccd_dist.ccd.lwckd as lwckd  # noqa: E402


def run_torch(t, n, g, scale):
    n = n.detach().requires_grad_(True)
    (torch.logsumexp((t @ n.T) * scale, dim=1) * g).sum().backward()
    return n.grad


def run_ours(t, n, g, scale, buffers=None, dtype=torch.float32):
    n = n.detach().requires_grad_(True)
    (lwckd.RowLogSumExp.apply(t, n, scale, buffers, dtype) * g).sum().backward()
    return n.grad


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1600)
    ap.add_argument("--cols", type=int, default=12000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    gen = torch.Generator().manual_seed(0)
    t = torch.randn(args.rows, args.dim, generator=gen) * 0.3
    n = torch.randn(args.cols, args.dim, generator=gen) * 0.3
    g = torch.rand(args.rows, generator=gen)
    scale = 1 / 5.0
    buffers = lwckd.ScoreBuffers()
    saved = lwckd.CACHE_BUDGET

    def recompute():
        lwckd.CACHE_BUDGET = 0
        try:
            return run_ours(t, n, g, scale)
        finally:
            lwckd.CACHE_BUDGET = saved

    variants = {"torch logsumexp + autograd": lambda: run_torch(t, n, g, scale),
                "RowLogSumExp, recompute in backward": recompute,
                "RowLogSumExp, rows kept + reused buffers": lambda: run_ours(t, n, g, scale, buffers),
                "as above, bf16 products": lambda: run_ours(t, n, g, scale, buffers, torch.bfloat16)}
    ref = run_torch(t, n, g, scale)
    for name, fn in list(variants.items())[:-1]:
        np.testing.assert_allclose(fn().numpy(), ref.numpy(), rtol=1e-3, atol=1e-6, err_msg=name)
    bf16_error = float(torch.linalg.norm(variants["as above, bf16 products"]() - ref) / torch.linalg.norm(ref))
    best = {name: float("inf") for name in variants}
    for _ in range(args.repeats):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    base = best["torch logsumexp + autograd"]
    lines = [f"Shape: {args.rows} targets x {args.cols} neighbours, d={args.dim}; forward + backward of one call; "
             f"best of {args.repeats}, interleaved. Gradients agree with (a) to rtol 1e-3 "
             f"(bf16: relative error {bf16_error:.1e}).", "",
             "| variant | ms per call | speed-up vs torch |", "|---|---|---|"]
    for name, sec in best.items():
        lines.append(f"| {name} | {sec * 1e3:.1f} | {base / sec:.2f}x |")
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        write_section("lwckd", "LWC-KD neighbour softmax (teacher update)", "python bench/bench_lwckd.py", body)


if __name__ == "__main__":
    main()
