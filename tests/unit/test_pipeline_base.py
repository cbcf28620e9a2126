"""`ccd-dist run --blocks 0`: the base stage end to end on a tiny store, and resume."""
import json

import pytest

from ccd_dist.cli import main
from ccd_dist.data import make_synthetic_stream, save_stream

FAST = ["--set", "teacher.members=bpr-8-0,lightgcn-8-1-2", "--set", "teacher.train.epochs=2",
        "--set", "teacher.train.batch_size=256", "--set", "kd.epochs=2", "--set", "kd.eval_every=1",
        "--set", "kd.n_uninteresting_items=30", "--set", "kd.n_uninteresting_users=30",
        "--set", "plain.epochs=2", "--set", "plain.eval_every=1", "--set", "student.dim=4",
        "--executor", "local", "--blocks", "0"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("store") / "tiny"
    save_stream(make_synthetic_stream(n_users=100, n_items=120, n_blocks=2, interactions_per_user=15, seed=2), path)
    return path


def _stage_mtimes(run):
    return {p.parent.name + "/" + p.name: p.stat().st_mtime_ns for p in run.rglob("done.json")}


def test_base_stage_writes_artifacts_and_resumes(store, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["run", "--data", str(store), "--out", str(run), *FAST]) == 0
    out = capsys.readouterr().out
    assert "ensemble" in out and "kd student" in out
    assert "bpr_0 epoch 2: bpr_loss" in out and "lightgcn_1 epoch 1: bpr_loss" in out  # per-epoch progress
    assert "kd epoch 1: bpr_loss" in out and "de_rrd_loss" in out and "plain epoch 1: bpr_loss" in out
    results = json.loads((run / "base_results.json").read_text())
    assert set(results["members"]) == {"bpr_0", "lightgcn_1"}
    for part in ("ensemble", "kd_student", "plain_student"):
        assert 0.0 <= results[part]["test"]["recall@20"] <= 1.0
    assert (run / "block_0" / "ensemble" / "lists.npz").exists()
    assert (run / "block_0" / "teacher" / "bpr_0" / "history.jsonl").read_text().count("\n") == 2
    before = _stage_mtimes(run)
    assert len(before) == 5  # two members, ensemble, kd, plain

    # A rerun finds every stage done and recomputes nothing.
    assert main(["run", "--data", str(store), "--out", str(run), *FAST]) == 0
    assert _stage_mtimes(run) == before
    assert json.loads((run / "base_results.json").read_text())["kd_student"]["test"] == results["kd_student"]["test"]

    # Changing the KD config reruns only KD; a lost stage is recomputed.
    (run / "block_0" / "plain" / "done.json").unlink()
    assert main(["run", "--data", str(store), "--out", str(run), *FAST, "--set", "kd.urrd_lambda=0.02"]) == 0
    after = _stage_mtimes(run)
    changed = {k for k in before if before[k] != after.get(k)}
    assert changed == {"kd/done.json", "plain/done.json"}


def test_run_rejects_bad_arguments(store, tmp_path, capsys):
    assert main(["run", "--data", str(store), "--out", str(tmp_path / "r"), "--blocks", "1-3"]) == 2
    assert "--blocks" in capsys.readouterr().err
    assert main(["run", "--data", str(store), "--out", str(tmp_path / "r"), "--set", "kd.lrr=1"]) == 2
    assert "kd.lr" in capsys.readouterr().err
    assert main(["run", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "r")]) == 2
    capsys.readouterr()
    assert main(["run", "--data", str(store), "--out", str(tmp_path / "r"),
                 "--set", "teacher_update.select_over=all"]) == 2
    err = capsys.readouterr().err
    assert "teacher_update.select_over" in err and "block, seen" in err
    assert not (tmp_path / "r").exists()  # rejected before anything is written


def test_base_from_reuses_the_base_stage(store, tmp_path, capsys):
    first = tmp_path / "first"
    assert main(["run", "--data", str(store), "--out", str(first), *FAST]) == 0
    capsys.readouterr()
    second = tmp_path / "second"
    assert main(["run", "--data", str(store), "--out", str(second), "--base-from", str(first), *FAST]) == 0
    out = capsys.readouterr().out
    assert "training" not in out and "rank ensemble" not in out
    assert json.loads((second / "base_results.json").read_text())["kd_student"]["test"] == \
        json.loads((first / "base_results.json").read_text())["kd_student"]["test"]


def test_vae_epochs_retrain_only_the_vae_members(store, tmp_path, capsys):
    """teacher.vae_epochs gives Mult-VAE members their own base-stage epochs; the other
    members keep teacher.train and their finished stages (same fingerprints)."""
    run = tmp_path / "run"
    fast = list(FAST)
    fast[1] = "teacher.members=bpr-8-0,vae-8-1"
    assert main(["run", "--data", str(store), "--out", str(run), *fast]) == 0
    vae_history = run / "block_0" / "teacher" / "vae_1" / "history.jsonl"
    assert vae_history.read_text().count("\n") == 2
    before = _stage_mtimes(run)
    capsys.readouterr()
    assert main(["run", "--data", str(store), "--out", str(run), *fast, "--set", "teacher.vae_epochs=3"]) == 0
    assert "training 1 teacher member(s): vae_1" in capsys.readouterr().out
    assert vae_history.read_text().count("\n") == 3
    after = _stage_mtimes(run)
    assert {k for k in before if before[k] != after.get(k)} == {"vae_1/done.json", "ensemble/done.json",
                                                                "kd/done.json"}
