"""End to end: `ccd-dist run` over a tiny 3-block stream, killed with SIGKILL mid-run,
then rerun: it resumes and ends with exactly the numbers of an uninterrupted run."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from ccd_dist.data import make_synthetic_stream, save_stream

FAST = ["--set", "teacher.members=bpr-8-0,lightgcn-8-1-2,vae-8-2", "--set", "teacher.train.epochs=2",
        "--set", "teacher.train.batch_size=256", "--set", "kd.epochs=2", "--set", "kd.eval_every=1",
        "--set", "kd.n_uninteresting_items=30", "--set", "kd.n_uninteresting_users=30",
        "--set", "plain.epochs=2", "--set", "plain.eval_every=1", "--set", "student.dim=4",
        "--set", "student_update.epochs=2", "--set", "teacher_update.epochs=2", "--executor", "local"]


def _cmd(store, out):
    return [sys.executable, "-m", "ccd_dist.cli", "run", "--data", str(store), "--out", str(out), *FAST]


def _numbers(run_dir):
    """Everything in results.json except wall time and memory, which vary run to run."""
    data = json.loads((run_dir / "results.json").read_text())
    data.pop("stages")
    data.pop("data")
    return data


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("store") / "tiny"
    save_stream(make_synthetic_stream(n_users=150, n_items=120, n_blocks=3, interactions_per_user=15, seed=2), path)
    return path


@pytest.mark.slow
def test_kill_and_resume_gives_the_uninterrupted_numbers(store, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    full = tmp_path / "full"
    subprocess.run(_cmd(store, full), check=True, env=env, capture_output=True, timeout=600)

    crashed = tmp_path / "crashed"
    proc = subprocess.Popen(_cmd(store, crashed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = crashed / "block_1" / "student_update" / "done.json"
    deadline = time.time() + 300
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (crashed / "block_2" / "kd" / "done.json").exists()

    resumed = subprocess.run(_cmd(store, crashed), env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    # Stages finished before the kill are not run again.
    assert "block 0: training" not in resumed.stdout
    assert "block 1: student update" not in resumed.stdout
    assert _numbers(crashed) == _numbers(full)
