"""The command line's process-wide defaults."""
from __future__ import annotations

import os
import subprocess
import sys

PROBE = ("import sys, os; import ccd_dist.cli; "
         "print(os.environ['OMP_WAIT_POLICY'], 'torch' in sys.modules)")


def _probe(**env_overrides) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env.update(env_overrides)
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, check=True, capture_output=True, text=True)
    return out.stdout.split()


def test_cli_makes_openmp_threads_yield_before_torch_starts():
    # Spinning OpenMP threads slow a job several times beside any other busy process
    # (bench/bench_omp_wait.py); the policy only counts if set before torch loads.
    policy, torch_loaded = _probe()
    assert policy == "PASSIVE"
    assert torch_loaded == "False"  # set by the time the entry point's module exists, torch not yet loaded


def test_cli_keeps_a_wait_policy_the_user_chose():
    assert _probe(OMP_WAIT_POLICY="ACTIVE")[0] == "ACTIVE"
