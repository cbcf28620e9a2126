"""One training epoch alone and beside a second busy job, with OpenMP threads that spin or yield.

Why: torch's and numba's OpenMP threads busy-wait between parallel regions by
default (``OMP_WAIT_POLICY=ACTIVE``-like spinning). When two jobs share the
cores (two runs, a run and the tests, Ray workers on one node) each job's
spinning threads take the cores the other one needs, and a training step made
of many short parallel regions slows down several times. ``ccd-dist`` sets
``OMP_WAIT_POLICY=PASSIVE`` unless the user chose a value (ccd_dist/cli.py).

Each case runs in fresh child processes, since the policy is read when the
OpenMP runtime starts. The workload is one BPR epoch of a LightGCN (d = 64,
2 layers) on a synthetic block; the "busy" cases run a second copy of the same
workload in a loop beside it, with the same policy. The figures are the
median of --repeats timings of the measured child, in one run, side by side.

    python bench/bench_omp_wait.py            # writes docs/benchmarks.md
    python bench/bench_omp_wait.py --quick --no-write
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

POLICIES = ("ACTIVE", "PASSIVE")


def workload(n_users: int, loop: bool) -> None:
    """Child: time one BPR epoch (or repeat epochs forever as the busy neighbour)."""
    import torch

    from ccd_dist.config import TrainConfig
    from ccd_dist.data.synthetic import make_synthetic_stream
    from ccd_dist.models.factory import build_model
    from ccd_dist.training.loop import bpr_pass, make_optimizer

    block = make_synthetic_stream(n_users=n_users, n_items=n_users // 2, interactions_per_user=40, seed=0)[0]
    cfg = TrainConfig(batch_size=2048, epochs=1)
    model = build_model("lightgcn", block.n_users, block.n_items, 64, layers=2, seed=0)
    model.set_interactions(block.train)
    optimizer = make_optimizer(model, cfg)
    torch.manual_seed(0)
    epoch = 0
    while True:
        start = time.perf_counter()
        bpr_pass(model, optimizer, block.train, cfg, epoch)
        seconds = time.perf_counter() - start
        if not loop:
            print(json.dumps({"seconds": seconds}), flush=True)
            return
        epoch += 1


def timed(policy: str, busy: bool, n_users: int) -> float:
    env = dict(os.environ, OMP_WAIT_POLICY=policy, PYTHONPATH=str(REPO))
    me = [sys.executable, __file__, "--child", "--users", str(n_users)]
    neighbour = subprocess.Popen(me + ["--loop"], env=env, stdout=subprocess.DEVNULL) if busy else None
    try:
        if neighbour is not None:
            time.sleep(8.0)  # let it get past start-up into its epochs
        out = subprocess.run(me, env=env, check=True, capture_output=True, text=True).stdout
        return json.loads(out.strip().splitlines()[-1])["seconds"]
    finally:
        if neighbour is not None:
            neighbour.kill()
            neighbour.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--loop", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--users", type=int, default=12000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="small block, one repeat")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    if args.child:
        workload(args.users, args.loop)
        return
    if args.quick:
        args.users, args.repeats = 3000, 1
    cases = [(p, busy) for busy in (False, True) for p in POLICIES]
    times = {case: [] for case in cases}
    for _ in range(args.repeats):  # interleaved, so drift hits every case alike
        for case in cases:
            times[case].append(timed(case[0], case[1], args.users))
    med = {case: statistics.median(v) for case, v in times.items()}
    alone = med[("ACTIVE", False)]
    lines = [f"One BPR epoch of LightGCN (d = 64, 2 layers, batch 2048) on a synthetic block of {args.users} users, "
             f"{os.cpu_count()} CPUs, median of {args.repeats}. \"Busy\": a second copy of the same job runs "
             "beside it with the same policy.", "",
             "| OMP_WAIT_POLICY | alone s | beside a busy job s | slow-down when busy |", "|---|---|---|---|"]
    for p in POLICIES:
        a, b = med[(p, False)], med[(p, True)]
        lines.append(f"| {p} | {a:.2f} | {b:.2f} | {b / a:.2f}x |")
    lines += ["", f"PASSIVE alone costs {med[('PASSIVE', False)] / alone:.2f}x of ACTIVE alone; beside a busy job "
              f"ACTIVE takes {med[('ACTIVE', True)] / med[('PASSIVE', True)]:.2f}x as long as PASSIVE."]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        from bench._report import write_section

        write_section("omp_wait", "OpenMP wait policy: alone and beside a busy job", "python bench/bench_omp_wait.py",
                      body)


if __name__ == "__main__":
    main()
