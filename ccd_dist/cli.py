"""`ccd-dist` command line: one entry point, one sub-command module per area.

Each area module exposes `register(subparsers)`; a sub-command sets
`func(args) -> int`. Input errors become one clear line and exit code 2.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

# Before torch / numba start their OpenMP pools: threads that spin while they wait
# make one job up to 5x slower when anything else busy shares the cores (another
# run, a Ray worker, the tests); yielding costs nothing when alone
# (bench/bench_omp_wait.py, docs/benchmarks.md). A value the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .errors import InputError  # noqa: E402

# Area modules that add sub-commands. Each has `register(subparsers)`.
COMMAND_MODULES = [
    "ccd_dist.data.cli",
    "ccd_dist.training.cli",
    "ccd_dist.pipeline.cli",
    "ccd_dist.eval.report_cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ccd-dist",
        description="Continual Collaborative Distillation (CCD) for recommender systems.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except InputError as exc:
        print(f"ccd-dist: error: {exc}", file=sys.stderr)
        return 2
    except FileExistsError as exc:
        print(f"ccd-dist: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ccd-dist: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Output piped into e.g. `head`: not an error of ours.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # python -m ccd_dist.cli
    sys.exit(main())
