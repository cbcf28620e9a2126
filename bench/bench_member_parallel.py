"""Two teacher members' block-k updates: one after the other on all cores, or side by side on one core each.

The question behind ``--executor ray`` on a small machine: is it faster to
update members in sequence, each with every core (torch / numba threads =
CPUs), or to run one member per core at the same time, as the Ray executor
does (one thread per actor)? Each member update runs in its own child process
(``OMP_WAIT_POLICY=PASSIVE`` as the CLI sets it), on a finished ``ccd`` run:
the member after block k-1, E_{k-1} and block k's student side, for
``--epochs`` epochs. Both layouts run in one invocation; the table gives wall
seconds for the pair (child start-up and data loading included in both).

    python bench/bench_member_parallel.py stores/gowalla runs/gowalla_ccd 2 bpr_0 bpr_1 --preset gowalla
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._run_inputs import add_run_arguments, speedup_table  # noqa: E402


def update_one(store: str, run: Path, k: int, member: str, preset: str, epochs: int) -> None:
    """Child: one member's update; prints its seconds."""
    from bench._run_inputs import block_teacher_config, previous_lists, student_side
    from ccd_dist.ccd.teacher_update import update_teacher_member
    from ccd_dist.data import load_stream
    from ccd_dist.models import Recommender
    from ccd_dist.training.static import block_evaluator

    stream = load_stream(store)
    tcfg = dataclasses.replace(block_teacher_config(preset, k), epochs=epochs, eval_every=epochs)
    model = Recommender.load(run / f"block_{k - 1}" / "teacher" / member / "model.pt")
    start = time.perf_counter()
    update_teacher_member(model, model.kind, stream, k, student_side(run, k), previous_lists(run, k), tcfg,
                          block_evaluator(stream[k], "valid", 4096))
    print(json.dumps({"seconds": time.perf_counter() - start}), flush=True)


def children(args, threads: int, together: bool) -> float:
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS=str(threads),
               NUMBA_NUM_THREADS=str(threads), PYTHONPATH=str(REPO))
    cmds = [[sys.executable, __file__, "--child", args.store, str(args.run), str(args.block), m,
             "--preset", args.preset, "--epochs", str(args.epochs)] for m in args.members]
    start = time.perf_counter()
    if together:
        procs = [subprocess.Popen(c, env=env, stdout=subprocess.DEVNULL) for c in cmds]
        if any(p.wait() for p in procs):
            raise SystemExit("a member update failed")
    else:
        for c in cmds:
            subprocess.run(c, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    add_run_arguments(ap, "gowalla", "members")
    ap.add_argument("--epochs", type=int, default=1)
    args = ap.parse_args()
    if args.child:
        update_one(args.store, args.run, args.block, args.members[0], args.preset, args.epochs)
        return
    cpus = os.cpu_count() or 1
    layouts = {f"in sequence, {cpus} threads each": (cpus, False),
               f"side by side, 1 thread each ({len(args.members)} at once)": (1, True)}
    wall = {name: children(args, *layout) for name, layout in layouts.items()}
    lines = [f"{', '.join(args.members)} of `{args.run.name}`, block {args.block} update, {args.epochs} epoch(s) "
             f"each, {cpus} CPUs; wall seconds for all of them, child start-up included.", "",
             *speedup_table("layout (wall)", wall)]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        from bench._report import write_section

        command = (f"python bench/bench_member_parallel.py {args.store} {args.run} {args.block} "
                   f"{' '.join(args.members)} --preset {args.preset} --epochs {args.epochs}")
        write_section("member_parallel", "Teacher members: in sequence or side by side", command, body)


if __name__ == "__main__":
    main()
