"""Benchmark: continual evaluation of one Gowalla-sized model over all six blocks.

A random d=64 model sized for Gowalla D5 (29,858 users x 40,988 items) is
evaluated, test and valid metrics, on every block j = 0..5 (one row of the
result matrix), with each ranking backend. Reports wall time and resident
memory measured in this process (peak = ru_maxrss over the process lifetime).
The pickles are imported into a temporary store in a child process, so the
peak reflects loading the store and evaluating, not parsing pickles.

    flock /tmp/ccd-heavy.lock python bench/bench_eval.py
"""
from __future__ import annotations

import argparse
import gc
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench._report import table, write_section  # noqa: E402

COMMAND = "flock /tmp/ccd-heavy.lock python bench/bench_eval.py"
IMPORT = (
    "import sys; from ccd_dist.data import import_ccd, save_stream; save_stream(import_ccd(sys.argv[1]), sys.argv[2])"
)


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "ccd" / "gowalla"))
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backends", nargs="+", default=["numba", "faiss"])
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args(argv)

    from ccd_dist.data import load_stream
    from ccd_dist.eval import ResultMatrix, evaluate_stream

    rows, mem = [], [("start (imports done)", rss_mb())]
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="ccd-bench-eval-") as tmp:
        store = Path(tmp) / "gowalla"
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", IMPORT, args.data, str(store)], check=True)
        t_import = time.perf_counter() - t0
        t0 = time.perf_counter()
        stream = load_stream(store)
        t_load = time.perf_counter() - t0
    mem.append(("stream loaded", rss_mb()))
    last = stream[len(stream) - 1]
    rng = np.random.default_rng(args.seed)
    user_emb = rng.normal(0, 0.1, (last.n_users, args.dim)).astype(np.float32)
    item_emb = rng.normal(0, 0.1, (last.n_items, args.dim)).astype(np.float32)
    mem.append(("model built", rss_mb()))
    print(f"import {t_import:.1f}s, load {t_load:.2f}s; model {user_emb.shape} x {item_emb.shape}", flush=True)

    k = len(stream) - 1
    results = {}
    for backend in args.backends:
        evaluate_stream(user_emb, item_emb, stream, upto=0, splits=("test",), ks=(20,), backend=backend)  # warm-up
        gc.collect()
        t0 = time.perf_counter()
        per_block = evaluate_stream(user_emb, item_emb, stream, upto=k, backend=backend)
        seconds = time.perf_counter() - t0
        mem.append((f"after evaluation ({backend})", rss_mb()))
        rm = ResultMatrix(len(stream), meta={"model": f"random d={args.dim}"})
        rm.record_row(k, per_block)
        results[backend] = per_block
        n_eval = sum(b[s]["n_users"] for b in per_block for s in ("valid", "test"))
        rows.append({
            "backend": backend,
            "blocks x splits": f"{k + 1} x 2",
            "users ranked": f"{n_eval:,}",
            "time (s)": f"{seconds:.1f}",
            "users/s": f"{n_eval / seconds:,.0f}",
            "RA recall@20": f"{rm.summary('test')['recall@20']['ra'][k]:.5f}",
        })
        print(rows[-1], flush=True)
    if len(results) > 1:
        first, *others = results.values()
        assert all(o == first for o in others), "backends disagree on the metrics"
    peak = peak_mb()
    load_after = os.getloadavg()[0]

    per_block_rows = [
        {
            "block j": j,
            "test users": f"{b['test']['n_users']:,}",
            "valid users": f"{b['valid']['n_users']:,}",
            "test recall@20": f"{b['test']['recall@20']:.5f}",
            "test ndcg@20": f"{b['test']['ndcg@20']:.5f}",
        }
        for j, b in enumerate(next(iter(results.values())))
    ]
    body = (
        f"Random d={args.dim} model sized for Gowalla D{k} ({last.n_users:,} users x {last.n_items:,} items), "
        f"evaluated with `evaluate_stream` on blocks 0..{k}, valid and test splits, K = 20, 50, 100, "
        f"full-catalogue ranking through `ccd_dist.ranking.topk`; one warm-up call per backend first "
        f"(JIT compile). Store import (child process) {t_import:.1f} s, store load {t_load:.2f} s. "
        f"1-minute load average {load_before:.1f} before the run and {load_after:.1f} at its end, this run "
        "included (2 shared CPUs: a load well above 2 means other work competed and the times are inflated).\n\n"
        + table(rows)
        + "\n\nResident memory of the benchmark process (MB):\n\n"
        + table([{"point": p, "RSS (MB)": f"{v:,.0f}"} for p, v in mem] + [
            {"point": "**peak (ru_maxrss, whole process)**", "RSS (MB)": f"**{peak:,.0f}**"}
        ])
        + f"\n\nTarget: peak under 2,048 MB: {'met' if peak < 2048 else 'NOT met'}. Backends agree on every "
        "metric.\n\nPer block (random model, so the metrics are near chance):\n\n"
        + table(per_block_rows)
    )
    print(body)
    if not args.no_write:
        write_section("eval", "Evaluation: one model over all Gowalla blocks", COMMAND, body)


if __name__ == "__main__":
    main()
