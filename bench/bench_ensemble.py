"""Benchmark: the Gowalla-sized seven-member rank ensemble (§3.2) over all users.

29,858 users x 40,988 items; members as in the reference for Gowalla: 5 BPR-MF
(d = 64) and 2 Mult-VAE-like (d = 65: [mu, 1] . [W_i, b_i]) representations,
random (the cost does not depend on training). Masks: the real Gowalla D0 train
split (padded to the final id space) and, as the cover the lists must support,
all splits of D0..D5, when ../shared/data/ccd/gowalla exists; otherwise a
synthetic mask of the same size.

Reports total time, peak RSS, the per-row cost of the pieces (exact scoring,
fused radix ranking) and of an np.argsort ranking on a subsample.

    flock /tmp/ccd-heavy.lock python bench/bench_ensemble.py [--users N] [--no-write]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent))

N_USERS, N_ITEMS = 29_858, 40_988
GOWALLA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ccd" / "gowalla"


def masks(n_users: int, rng):
    """(train, cover, source): real Gowalla D0 train + all splits of D0..D5 when available."""
    from ccd_dist.ccd.ensemble import _binary_csr, stream_cover

    if GOWALLA.exists():
        from ccd_dist.data import import_ccd

        stream = import_ccd(GOWALLA)
        train = _binary_csr(stream[0].train, (N_USERS, N_ITEMS), "train")
        cover = stream_cover(stream, len(stream) - 1)
        source = "real Gowalla D0 train; cover = all splits of D0..D5"
    else:
        nnz = 418_000
        rows = rng.integers(0, N_USERS, nnz)
        cols = rng.integers(0, N_ITEMS, nnz)
        train = _binary_csr(sp.csr_matrix((np.ones(nnz, np.float32), (rows, cols)), shape=(N_USERS, N_ITEMS)),
                            (N_USERS, N_ITEMS), "train")
        cover = train
        source = "synthetic mask (418k pairs); real data not found"
    return train[:n_users], cover[:n_users], source


def members(rng):
    from ccd_dist.ccd.ensemble import Member

    out = []
    for s in range(5):
        out.append(Member(f"BPR_{s}", (rng.standard_normal((N_USERS, 64)) * 0.1).astype(np.float32),
                          (rng.standard_normal((N_ITEMS, 64)) * 0.1).astype(np.float32)))
    for s in (0, 2):
        mu = np.tanh(rng.standard_normal((N_USERS, 64))).astype(np.float32)
        users = np.concatenate([mu, np.ones((N_USERS, 1), np.float32)], 1)
        items = np.concatenate([rng.standard_normal((N_ITEMS, 64)) * 0.2, rng.standard_normal((N_ITEMS, 1))], 1)
        out.append(Member(f"VAE_{s}", users, items.astype(np.float32)))
    return out


def piece_costs(ms, rows: int, argsort_rows: int) -> dict:
    """Per user-row milliseconds of each piece, one member, measured on `rows` users."""
    from ccd_dist.ccd.ensemble import rank_weight_table
    from ccd_dist.kernels.fullrank import CanonicalScorer, accumulate_rank_weights

    m = ms[0]
    scorer = CanonicalScorer(m.item_repr)
    b64 = np.empty((rows, N_ITEMS), np.float64)
    b32 = np.empty((rows, N_ITEMS), np.float32)
    acc = np.zeros((rows, N_ITEMS), np.float32)
    table = rank_weight_table(N_ITEMS)
    scorer.scores(m.user_repr[:rows], b64, b32)  # compile, and touch every buffer page
    accumulate_rank_weights(b32, acc, table)
    t = time.perf_counter()
    s = scorer.scores(m.user_repr[:rows], b64, b32)
    t_score = time.perf_counter() - t
    t = time.perf_counter()
    accumulate_rank_weights(s, acc, table)
    t_rank = time.perf_counter() - t
    t = time.perf_counter()
    np.argsort(-s[:argsort_rows], axis=1, kind="stable")
    t_argsort = time.perf_counter() - t
    return {
        "score": 1e3 * t_score / rows,
        "radix": 1e3 * t_rank / rows,
        "argsort": 1e3 * t_argsort / argsort_rows,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=N_USERS, help="users to rank (default: all)")
    ap.add_argument("--chunk", type=int, default=None, help="users per chunk (default: ensemble's)")
    ap.add_argument("--argsort-rows", type=int, default=100)
    ap.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    args = ap.parse_args(argv)

    from numba import get_num_threads

    from ccd_dist.ccd.ensemble import Member, build_rank_ensemble
    from ccd_dist.resources import peak_rss_mb

    rng = np.random.default_rng(0)
    train, cover, source = masks(args.users, rng)
    ms = [Member(m.name, m.user_repr[: args.users], m.item_repr) for m in members(rng)]
    costs = piece_costs(ms, 256, args.argsort_rows)
    rss_before = peak_rss_mb()

    build_rank_ensemble(ms[:1], train[:64], cover=cover[:64])  # compile everything once
    load_start = os.getloadavg()[0]
    t = time.perf_counter()
    lists = build_rank_ensemble(ms, train, cover=cover, chunk_size=args.chunk)
    total = time.perf_counter() - t
    load_end = os.getloadavg()[0]
    peak = peak_rss_mb()
    n_rank_rows = len(ms) * args.users

    lengths = np.diff(lists.user_indptr)
    steps = lists.meta["seconds_by_step"]
    print("seconds by step:", steps)
    print(f"{args.users} users x {N_ITEMS} items, {len(ms)} members: {total:.1f} s, peak RSS {peak:.0f} MiB")
    print(f"per member-row: exact score {costs['score']:.3f} ms, radix rank+weights {costs['radix']:.3f} ms, "
          f"np.argsort {costs['argsort']:.3f} ms")
    print(f"user lists: mean length {lengths.mean():.1f}, max {lengths.max()}; "
          f"items with <40 users: {(lists.item_users[:, -1] < 0).sum()}")

    if not args.no_write:
        from _report import table, write_section

        cmd = "flock /tmp/ccd-heavy.lock python bench/bench_ensemble.py" + (
            f" --users {args.users}" if args.users != N_USERS else "")
        rows = [
            {"measure": "users x items x members", "value": f"{args.users:,} x {N_ITEMS:,} x {len(ms)}"},
            {"measure": "total time", "value": f"{total:.1f} s"},
            {"measure": "of which: exact scoring / ranking / user lists / item lists",
             "value": " / ".join(f"{steps[k]:.1f} s" for k in ("score", "rank", "user_lists", "item_lists"))},
            {"measure": "time per member-row (all pieces)", "value": f"{1e3 * total / n_rank_rows:.3f} ms"},
            {"measure": "peak RSS (process)", "value": f"{peak:,.0f} MiB (before the ensemble: {rss_before:,.0f})"},
            {"measure": "exact canonical scoring, per member-row", "value": f"{costs['score']:.3f} ms"},
            {"measure": "fused radix rank + weights, per member-row", "value": f"{costs['radix']:.3f} ms"},
            {"measure": "np.argsort(kind='stable') rank, per row",
             "value": f"{costs['argsort']:.3f} ms ({costs['argsort'] / costs['radix']:.1f}x the radix kernel)"},
            {"measure": "np.argsort estimate for all ranks",
             "value": f"{costs['argsort'] * n_rank_rows / 1e3:.0f} s (ranking alone)"},
            {"measure": "stored user lists", "value": f"mean {lengths.mean():.1f} items, max {lengths.max()}"},
            {"measure": "threads (numba)", "value": str(get_num_threads())},
            {"measure": "machine load (1-min average) at start / end",
             "value": f"{load_start:.1f} / {load_end:.1f} (other jobs share the 2 cores)"},
        ]
        body = (
            f"Masks: {source}. Members: 5 BPR-MF (d=64) + 2 VAE-like (d=65), random representations. "
            "Target: under 3 minutes and 3 GB peak RSS.\n\n" + table(rows)
        )
        write_section("ensemble", "Rank ensemble (Gowalla size, 7 members)", cmd, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
