"""Benchmark: BPR negative sampling on Gowalla D0 train positives.

Compares, in one run, on the same positives:
- the Numba kernel ``ccd_dist.kernels.sample_negatives`` at 1 and 2 threads
  (median of several calls after a warm-up call that compiles or loads the cache);
- NumPy vectorised rejection (all draws at once, rejected ones redrawn against
  sorted (user, item) codes of the forbidden pairs);
- a plain Python rejection loop with per-user sets, timed on a random subsample
  of users and extrapolated per sample.
Each method's time includes its own per-call setup (marking, sets, sorting).
With and without a per-user exclusion list of 120 entries (three top-40 lists
concatenated, as in §5.1: skewed to popular items, with overlaps).

Data: Gowalla D0 train (../shared/data/ccd/gowalla/TASK_0.pickle, read with the
project's allow-list unpickler) when present, else a synthetic power-law
dataset of the same size.

    flock /tmp/ccd-heavy.lock python bench/bench_sampling.py
    python bench/bench_sampling.py --quick     # small synthetic run, prints only
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

import numba
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench._report import table, write_section  # noqa: E402

COMMAND = "flock /tmp/ccd-heavy.lock python bench/bench_sampling.py"
TARGET = 30e6  # samples/s, acceptance criterion (2 threads, Gowalla-like data)
EX_PER_USER = 120


def load_gowalla_d0(path: Path):
    """(indptr, indices, n_users, n_items, label) of D0 train, or None if unavailable."""
    if not path.exists():
        return None
    try:
        from ccd_dist.data.import_ccd import read_task_file
        from ccd_dist.data.stream import interactions_to_csr
    except ImportError:
        return None
    parts, _, extra = read_task_file(path)
    n_users = 1 + max([int(u.max()) for u, _ in parts.values() if len(u)] + [extra.get("max_user_key", -1)])
    n_items = 1 + max(int(i.max()) for _, i in parts.values() if len(i))
    users, items = parts["train"]
    mat = interactions_to_csr(users, items, n_users, n_items)
    return mat.indptr.astype(np.int64), mat.indices.astype(np.int32), n_users, n_items, f"Gowalla D0 train ({path})"


def synthetic(n_users, n_items, nnz, seed):
    """Power-law user degrees and item popularity, like Gowalla."""
    rng = np.random.default_rng(seed)
    deg = rng.pareto(1.5, n_users) + 1.0
    deg = np.maximum(1, np.round(deg / deg.sum() * nnz)).astype(np.int64)
    deg = np.minimum(deg, n_items // 4)
    pop = 1.0 / np.arange(1, n_items + 1) ** 0.8
    pop /= pop.sum()
    rows = [np.unique(rng.choice(n_items, size=d, p=pop)) for d in deg]
    indptr = np.r_[0, np.cumsum([len(r) for r in rows])].astype(np.int64)
    label = f"synthetic power-law ({n_users:,} users x {n_items:,} items, seed {seed})"
    return indptr, np.concatenate(rows).astype(np.int32), n_users, n_items, label


def exclusion_list(indptr, indices, n_users, n_items, seed):
    """Three popularity-skewed top-40-like lists per user, concatenated (int32)."""
    rng = np.random.default_rng(seed + 1)
    pop = np.bincount(indices, minlength=n_items).astype(np.float64) + 1.0
    pop /= pop.sum()
    ex = rng.choice(n_items, size=(n_users, EX_PER_USER), p=pop).astype(np.int32)
    return np.arange(n_users + 1, dtype=np.int64) * EX_PER_USER, ex.ravel()


def numpy_rejection(indptr, indices, ex_ptr, ex_idx, n_items, n_neg, seed):
    rng = np.random.default_rng(seed)
    n_users = indptr.size - 1
    users = np.repeat(np.arange(n_users, dtype=np.int64), np.diff(indptr))
    codes = [users * n_items + indices]
    if ex_ptr is not None:
        ex_users = np.repeat(np.arange(ex_ptr.size - 1, dtype=np.int64), np.diff(ex_ptr))
        ok = (ex_idx >= 0) & (ex_idx < n_items)
        codes.append(ex_users[ok] * n_items + ex_idx[ok])
    forbidden = np.sort(np.concatenate(codes))  # repeats do not matter to searchsorted
    row_user = np.repeat(users, n_neg)
    cand = rng.integers(0, n_items, row_user.size)
    todo = np.arange(row_user.size)
    while todo.size:
        c = row_user[todo] * n_items + cand[todo]
        pos = np.minimum(np.searchsorted(forbidden, c), forbidden.size - 1)
        todo = todo[forbidden[pos] == c]
        cand[todo] = rng.integers(0, n_items, todo.size)
    return cand.reshape(-1, n_neg).astype(np.int32)


def python_rejection(indptr, indices, ex_ptr, ex_idx, n_items, n_neg, users, seed):
    rnd = random.Random(seed)
    out = []
    n_ex = 0 if ex_ptr is None else ex_ptr.size - 1
    for u in users:
        forbidden = set(indices[indptr[u]:indptr[u + 1]].tolist())
        if u < n_ex:
            forbidden.update(x for x in ex_idx[ex_ptr[u]:ex_ptr[u + 1]].tolist() if 0 <= x < n_items)
        for _ in range(indptr[u + 1] - indptr[u]):
            row = []
            for _ in range(n_neg):
                x = rnd.randrange(n_items)
                while x in forbidden:
                    x = rnd.randrange(n_items)
                row.append(x)
            out.append(row)
    return out


def timed(fn, repeats):
    """(median, best) wall time of `repeats` calls."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times)), float(min(times))


def check_valid(out, indptr, indices, ex_ptr, ex_idx, n_items, users):
    """Spot check: no drawn negative of the sampled users is forbidden."""
    for u in users:
        forbidden = set(indices[indptr[u]:indptr[u + 1]].tolist())
        if ex_ptr is not None and u < ex_ptr.size - 1:
            forbidden.update(ex_idx[ex_ptr[u]:ex_ptr[u + 1]].tolist())
        drawn = set(out[indptr[u]:indptr[u + 1]].ravel().tolist())
        assert not drawn & forbidden, f"user {u}: drew a forbidden item"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "ccd" / "gowalla" / "TASK_0.pickle"))
    parser.add_argument("--quick", action="store_true", help="small synthetic data, few repeats, prints only")
    parser.add_argument("--n-neg", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--python-users", type=int, default=1500, help="users in the Python loop's subsample")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args(argv)

    from ccd_dist.kernels import sample_negatives

    if args.quick:
        data = synthetic(3000, 4000, 40_000, args.seed)
        args.repeats, args.python_users, args.no_write = 3, 300, True
    else:
        data = load_gowalla_d0(Path(args.data)) or synthetic(29_858, 40_988, 417_977, args.seed)
    indptr, indices, n_users, n_items, label = data
    nnz = indices.size
    deg = np.diff(indptr)
    ex_ptr, ex_idx = exclusion_list(indptr, indices, n_users, n_items, args.seed)
    max_threads = numba.config.NUMBA_NUM_THREADS
    thread_counts = [t for t in (1, 2) if t <= max_threads]
    rng = np.random.default_rng(args.seed + 2)
    active = np.flatnonzero(deg)
    py_users = np.sort(rng.choice(active, size=min(args.python_users, active.size), replace=False))
    py_nnz = int(deg[py_users].sum())
    load_start = os.getloadavg()[0]
    print(f"data: {label}; {n_users:,} users, {n_items:,} items, {nnz:,} positives; "
          f"load average {load_start:.2f}", flush=True)

    t0 = time.perf_counter()
    sample_negatives(indptr, indices, n_items, 1, args.seed)
    first_call = time.perf_counter() - t0

    rows, ok_target = [], []
    for with_ex in (False, True):
        ex = (ex_ptr, ex_idx) if with_ex else (None, None)
        for n_neg in args.n_neg:
            samples = nnz * n_neg
            t_py, _ = timed(lambda: python_rejection(indptr, indices, *ex, n_items, n_neg, py_users, args.seed),
                               max(1, args.repeats // 3))
            py_rate = py_nnz * n_neg / t_py
            t_np, b_np = timed(lambda: numpy_rejection(indptr, indices, *ex, n_items, n_neg, args.seed),
                               max(1, args.repeats // 3))
            results = [("Python loop (subsample, extrapolated)", 1, samples / py_rate, None),
                       ("NumPy vectorised rejection", 1, t_np, b_np)]
            for threads in thread_counts:
                numba.set_num_threads(threads)
                out = sample_negatives(indptr, indices, n_items, n_neg, args.seed, *ex)  # warm-up
                check_valid(out, indptr, indices, *ex, n_items, py_users[:200])
                t_nb, b_nb = timed(lambda: sample_negatives(indptr, indices, n_items, n_neg, args.seed, *ex),
                                   args.repeats)
                results.append(("Numba kernel", threads, t_nb, b_nb))
                if threads == 2:
                    ok_target.append(samples / t_nb >= TARGET)
            numba.set_num_threads(max_threads)
            for method, threads, t, best in results:
                rows.append({
                    "exclusions": f"{EX_PER_USER}/user" if with_ex else "none",
                    "n_neg": n_neg,
                    "method": method,
                    "threads": threads,
                    "time per call (ms)": f"{t * 1e3:,.1f}",
                    "samples/s (M)": f"{samples / t / 1e6:,.2f}",
                    "best call (ms)": "-" if best is None else f"{best * 1e3:,.1f}",
                    "speed-up vs Python": f"{samples / t / py_rate:,.{0 if samples / t >= 10 * py_rate else 1}f}x",
                })
                print(rows[-1], flush=True)

    met = ("met" if all(ok_target) else "NOT met") if ok_target else "not measured (fewer than 2 Numba threads)"
    body = (
        f"Data: {label}: {n_users:,} users x {n_items:,} items, {nnz:,} positives "
        f"(mean {nnz / max(1, (deg > 0).sum()):.1f} per user with positives, max {deg.max():,}). "
        f"Exclusion list: {EX_PER_USER} int32 ids per user (three popularity-skewed 40-item lists, overlapping). "
        f"One call draws n_neg negatives for every positive; samples = positives x n_neg.\n\n"
        f"Times (and samples/s) are medians over {args.repeats} calls (Numba; after one warm-up call per setting) or "
        f"{max(1, args.repeats // 3)} calls (NumPy, Python); every method's time includes its per-call setup. "
        f"The Python loop (per-user `set`, `random.randrange` rejection) runs on {len(py_users):,} random users "
        f"({py_nnz:,} positives) and is extrapolated per sample to the full data. "
        f"First Numba call in this process (compile or cache load): {first_call:.2f} s. "
        f"Load average at start: {load_start:.2f}.\n\n"
        + table(rows)
        + f"\n\nTarget: at least {TARGET / 1e6:.0f} M samples/s with 2 threads for every setting above: {met}.\n"
    )
    print(body)
    if not args.no_write:
        write_section("sampling", "Negative sampling (BPR)", COMMAND, body)


if __name__ == "__main__":
    main()
