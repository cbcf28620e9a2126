"""`ccd-dist run --method ft|lwckd|retrain` on a tiny 3-block stream sharing one base stage."""
import json

import pytest

from ccd_dist.cli import main
from ccd_dist.data import make_synthetic_stream, save_stream

FAST = ["--set", "teacher.members=bpr-8-0,lightgcn-8-1-2", "--set", "teacher.train.epochs=2",
        "--set", "teacher.train.batch_size=256", "--set", "kd.epochs=2", "--set", "kd.eval_every=1",
        "--set", "kd.n_uninteresting_items=30", "--set", "kd.n_uninteresting_users=30",
        "--set", "plain.epochs=2", "--set", "plain.eval_every=1", "--set", "student.dim=4",
        "--set", "student_update.epochs=2", "--set", "teacher_update.epochs=2", "--executor", "local"]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("baselines")
    store = root / "tiny"
    save_stream(make_synthetic_stream(n_users=120, n_items=100, n_blocks=3, interactions_per_user=15, seed=4), store)
    assert main(["run", "--data", str(store), "--out", str(root / "base"), "--blocks", "0", *FAST]) == 0
    return store, root / "base"


def _run(base, tmp_path, method):
    store, base_dir = base
    out = tmp_path / method
    assert main(["run", "--data", str(store), "--out", str(out), "--method", method,
                 "--base-from", str(base_dir), *FAST]) == 0
    return out, json.loads((out / "results.json").read_text())


@pytest.mark.parametrize("method", ["ft", "lwckd", "retrain"])
def test_student_baselines_report_a_student_for_every_block(base, tmp_path, capsys, method):
    out, res = _run(base, tmp_path, method)
    assert res["method"] == method
    assert [entry["block"] for entry in res["summary"]["per_block"]] == [0, 1, 2]
    assert res["summary"]["student"]["test"]["hmean"]["recall@20"] > 0.0
    for k in (1, 2):
        metrics = json.loads((out / f"block_{k}" / f"student_{method}" / "metrics.json").read_text())
        assert len(metrics["per_block"]) == k + 1  # evaluated on blocks 0..k
    teacher_updated = (out / "block_2" / "ensemble" / "done.json").exists()
    assert teacher_updated == (method == "lwckd")
    assert "block 0: training" not in capsys.readouterr().out  # the base stage is reused


def test_lwckd_reports_its_teacher_and_ft_does_not(base, tmp_path):
    _, lwckd = _run(base, tmp_path, "lwckd")
    _, ft = _run(base, tmp_path, "ft")
    teacher = lwckd["summary"]["teacher"]["test"]["hmean"]["recall@20"]
    assert teacher is not None and 0.0 < teacher <= 1.0
    assert ft["summary"].get("teacher", {}).get("test", {}).get("hmean", {}).get("recall@20") is None
