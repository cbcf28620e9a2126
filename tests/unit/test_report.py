"""RunResults (results.json) summary by hand, strict JSON round trip, bad files, and `ccd-dist report`."""
import argparse
import json

import numpy as np
import pytest

from ccd_dist import cli
from ccd_dist.errors import InputError
from ccd_dist.eval import metric_names
from ccd_dist.eval.report import load_runs, write_report
from ccd_dist.eval.report_cli import register
from ccd_dist.eval.run_results import RunResults

NAN = float("nan")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
METRICS = metric_names((20, 50, 100))
# test recall@20 of the model after block k on block j (lower triangle)
STUDENT = np.array([[0.30, NAN, NAN], [0.20, 0.40, NAN], [0.10, 0.25, 0.50]])
TEACHER = np.array([[0.36, NAN, NAN], [0.30, 0.44, NAN], [0.22, 0.33, 0.52]])


def metrics_for(value, split):
    """Metrics dict as evaluate_topk returns it; each metric offset so they differ."""
    shift = 0.05 if split == "valid" else 0.0
    out = {m: value + shift + 0.001 * c for c, m in enumerate(METRICS)}
    return out | {"n_users": 7}


def stream_row(r, k):
    """evaluate_stream output of the model after block k: [j] -> {"valid": .., "test": ..}."""
    return [{s: metrics_for(r[k, j], s) for s in ("valid", "test")} for j in range(k + 1)]


def make_run(method="ccd", blocks=3, teacher=True, n_blocks=3):
    run = RunResults(n_blocks, method, preset="synthetic", data="synthetic")
    for k in range(blocks):
        run.add_evaluation("student", k, stream_row(STUDENT, k),
                           new_users={"test": metrics_for(0.11 * (k + 1), "test")})
        if teacher:
            run.add_evaluation("teacher", k, stream_row(TEACHER, k))
            run.add_stage(k, "teacher", 10.0 + k, 300.0 + k)
        run.add_stage(k, "kd" if k == 0 else "student_update", 2.5, 250.0)
        run.finish_block(k)
    return run


def h(la, ra):
    return 2 * la * ra / (la + ra)


def test_summary_matches_hand_computation():
    summ = make_run().summary()
    s = summ["student"]["test"]
    la, ra = (0.40 + 0.50) / 2, (0.10 + 0.25 + 0.50) / 3
    assert s["la"]["recall@20"] == pytest.approx(la)
    assert s["ra"]["recall@20"] == pytest.approx(ra)
    assert s["hmean"]["recall@20"] == pytest.approx(h(la, ra))
    # ndcg@20 is recall@20 + 0.001 in the fabricated data; valid is test + 0.05
    assert s["la"]["ndcg@20"] == pytest.approx(la + 0.001)
    assert summ["student"]["valid"]["ra"]["recall@20"] == pytest.approx(ra + 0.05)
    t = summ["teacher"]["test"]
    assert t["hmean"]["recall@20"] == pytest.approx(h((0.44 + 0.52) / 2, (0.22 + 0.33 + 0.52) / 3))
    # per block: LA_0 = RA_0 = H_0 = r[0][0]; block 1 from row 1
    assert [e["block"] for e in summ["per_block"]] == [0, 1, 2]
    b0 = summ["per_block"][0]["student"]["test"]
    assert b0["la"]["recall@20"] == b0["ra"]["recall@20"] == b0["hmean"]["recall@20"] == pytest.approx(0.30)
    b1 = summ["per_block"][1]["teacher"]["test"]
    assert b1["hmean"]["recall@20"] == pytest.approx(h(0.44, (0.30 + 0.44) / 2))


def test_partial_run_summarises_the_last_finished_block_and_omits_missing_models():
    run = make_run(method="ft", blocks=3, teacher=False)
    run._blocks = {0, 1}  # block 2 evaluated but not finished: it must not enter the summary
    summ = run.summary()
    assert "teacher" not in summ and "teacher" not in summ["per_block"][0]
    assert [e["block"] for e in summ["per_block"]] == [0, 1]
    assert summ["student"]["test"]["ra"]["recall@20"] == pytest.approx((0.20 + 0.40) / 2)
    assert RunResults(3, "ccd").summary() == {"per_block": []}


def test_json_round_trip_is_strict_and_maps_nan_to_null(tmp_path):
    run = make_run()
    bad = stream_row(STUDENT, 1)
    bad[0]["test"] = {m: NAN for m in METRICS} | {"n_users": 0}  # a block with no evaluable user
    run.add_evaluation("member:bpr", 1, bad)
    path = tmp_path / "results.json"
    run.save(path)
    text = path.read_text()

    def reject(token):
        raise AssertionError(f"non-strict JSON token {token}")

    data = json.loads(text, parse_constant=reject)
    assert data["format"] == "ccd-dist/results" and data["version"] == 1
    assert data["method"] == "ccd" and data["blocks"] == [0, 1, 2]
    assert data["models"]["student"]["results"]["test"]["recall@20"][0][1] is None  # j > k
    assert data["models"]["member:bpr"]["results"]["test"]["recall@20"][1][0] is None
    assert data["summary"]["student"]["test"]["hmean"]["recall@20"] == pytest.approx(
        h(0.45, 0.85 / 3))
    assert len(data["summary"]["per_block"]) == 3
    back = RunResults.load(path)
    assert back.to_dict() == data
    assert back.models["student"].new_users["test"][2]["recall@20"] == pytest.approx(0.33)
    assert {(s["block"], s["stage"]) for s in back.stages} >= {(0, "teacher"), (2, "student_update")}


def test_add_stage_replaces_a_rerun_and_rejects_bad_blocks():
    run = RunResults(2, "ccd")
    run.add_stage(0, "kd", 5.0, 100.0)
    run.add_stage(0, "kd", 7.0, 120.0)
    assert run.stages == [{"block": 0, "stage": "kd", "seconds": 7.0, "peak_rss_mb": 120.0}]
    with pytest.raises(InputError, match="block index"):
        run.add_stage(2, "kd", 1.0)
    with pytest.raises(InputError, match="new_users"):
        run.add_evaluation("student", 0, stream_row(STUDENT, 0), new_users={"train": {}})


@pytest.mark.parametrize(
    "mutate, where",
    [
        (lambda d: d.update(format="something-else"), "(format)"),
        (lambda d: d.pop("models"), "(models)"),
        (lambda d: d.update(blocks=[0, 7]), "(blocks)"),
        (lambda d: d["stages"][0].pop("seconds"), "(stages[0])"),
        (lambda d: d["models"]["student"].pop("results"), "models.student"),
        (lambda d: d["models"]["teacher"].update(n_blocks=2), "models.teacher"),
    ],
)
def test_bad_results_file_names_file_and_key(tmp_path, mutate, where):
    data = make_run().to_dict()
    mutate(data)
    path = tmp_path / "results.json"
    path.write_text(json.dumps(data))
    with pytest.raises(InputError) as err:
        RunResults.load(path)
    assert str(path) in str(err.value) and where in str(err.value)


def test_unreadable_results_file(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        RunResults.load(tmp_path / "nope.json")
    (tmp_path / "broken.json").write_text('{"format": ')
    with pytest.raises(InputError, match=r"broken\.json \(line 1\): invalid JSON"):
        RunResults.load(tmp_path / "broken.json")


# -- report ----------------------------------------------------------------------
@pytest.fixture
def two_runs(tmp_path):
    ccd, ft = tmp_path / "ccd_run", tmp_path / "ft_run"
    make_run("ccd").save(ccd / "results.json")
    make_run("ft", blocks=2, teacher=False).save(ft / "results.json")  # partial, no teacher
    return ccd, ft


def run_report(argv):
    parser = argparse.ArgumentParser(prog="ccd-dist")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_report_cli_writes_markdown_and_pngs_and_prints_tables(two_runs, tmp_path, capsys):
    ccd, ft = two_runs
    out = tmp_path / "out"
    assert run_report(["report", str(ccd), str(ft), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "ccd" in printed and "ft" in printed and "3/3" in printed and "2/3" in printed
    # ccd student H after block 2 and ft student RA after block 1, rounded as printed
    assert f"{h(0.45, 0.85 / 3):.4f}" in printed and f"{0.30:.4f}" in printed
    md = (out / "report.md").read_text()
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["hmean_recall-20.png", "run1_ccd_stages.png", "run1_ccd_student_r_recall-20.png",
                    "run1_ccd_teacher_r_recall-20.png", "run2_ft_stages.png", "run2_ft_student_r_recall-20.png"]
    for name in pngs:
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1000
        assert f"({name})" in md
    assert "No teacher results in this run." in md
    assert "member" not in md  # only recorded models appear


def test_report_default_out_other_metric_and_runs_without_finished_blocks(two_runs, tmp_path, capsys):
    ccd, ft = two_runs
    started = tmp_path / "started"
    RunResults(6, "lwckd").save(started / "results.json")  # nothing finished yet, no stages
    argv = ["report", str(ft / "results.json"), str(ccd), str(started), "--metric", "ndcg@50"]
    assert run_report(argv) == 0
    out = ft / "report"
    assert (out / "hmean_ndcg-50.png").read_bytes().startswith(PNG_MAGIC)
    assert not list(out.glob("run3_*.png"))
    md = (out / "report.md").read_text()
    assert "No finished block yet." in md and "No stage timings in this run." in md
    printed = capsys.readouterr().out
    assert "N@50 H" in printed and "0/6" in printed


def test_same_method_twice_gets_distinct_labels(two_runs, tmp_path):
    ccd, _ = two_runs
    other = tmp_path / "ccd_seed1"
    make_run("ccd", blocks=1).save(other / "results.json")
    runs = load_runs([ccd, other])
    assert [r.label for r in runs] == ["ccd (ccd_run)", "ccd (ccd_seed1)"]
    with pytest.raises(InputError, match="--metric 'recall@10'"):
        write_report(runs, tmp_path / "o", "recall@10")


@pytest.fixture
def main_with_report(monkeypatch):
    """cli.main with the report command, whether or not cli.py lists it yet."""
    name = "ccd_dist.eval.report_cli"
    if name not in cli.COMMAND_MODULES:
        monkeypatch.setattr(cli, "COMMAND_MODULES", cli.COMMAND_MODULES + [name])
    return cli.main


def test_cli_bad_results_exit_code_2_names_file(main_with_report, two_runs, tmp_path, capsys):
    ccd, _ = two_runs
    bad = tmp_path / "bad_run"
    bad.mkdir()
    (bad / "results.json").write_text('{"format": "ccd-dist/results", "version": 1}')
    assert main_with_report(["report", str(ccd), str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad / "results.json") in err and "method" in err
    assert main_with_report(["report", str(tmp_path / "missing")]) == 2
    assert str(tmp_path / "missing" / "results.json") in capsys.readouterr().err
