"""ResultMatrix, LA / RA / H-mean on hand-computed matrices, JSON round trip."""
import json
import math

import numpy as np
import pytest

from ccd_dist.errors import InputError
from ccd_dist.eval import ResultMatrix, harmonic_mean, learning_average, retained_average

NAN = float("nan")
R = np.array([[0.5, NAN, NAN], [0.3, 0.4, NAN], [0.2, 0.1, 0.6]])


def test_learning_and_retained_average_by_hand():
    assert learning_average(R, 0) == 0.5  # LA_0 is defined as r[0][0]
    assert learning_average(R, 1) == pytest.approx(0.4)
    assert learning_average(R, 2) == pytest.approx((0.4 + 0.6) / 2)
    assert retained_average(R, 0) == 0.5
    assert retained_average(R, 1) == pytest.approx((0.3 + 0.4) / 2)
    assert retained_average(R, 2) == pytest.approx((0.2 + 0.1 + 0.6) / 3)
    assert harmonic_mean(0.4, 0.35) == pytest.approx(2 * 0.4 * 0.35 / 0.75)
    assert harmonic_mean(0.0, 0.0) == 0.0
    assert math.isnan(harmonic_mean(NAN, 0.3))


def test_missing_entries_give_nan_not_a_shorter_mean():
    r = R.copy()
    r[2, 1] = NAN
    assert math.isnan(retained_average(r, 2))
    assert learning_average(r, 2) == pytest.approx(0.5)  # diagonal still complete


def filled_matrix():
    rm = ResultMatrix(3, ks=(20, 50), meta={"model": "student"})
    for k in range(3):
        for j in range(k + 1):
            for s, shift in (("valid", 0.05), ("test", 0.0)):
                vals = {m: R[k, j] + shift + 0.01 * c for c, m in enumerate(rm.metrics)}
                rm.record(k, j, s, vals | {"n_users": 10 * (j + 1)})
    rm.record_new_users(2, "test", {m: 0.25 for m in rm.metrics} | {"n_users": 4})
    return rm


def test_summary_per_block():
    rm = filled_matrix()
    summary = rm.summary("test")
    assert set(summary) == {"recall@20", "ndcg@20", "recall@50", "ndcg@50"}
    s = summary["recall@20"]
    assert s["la"] == pytest.approx([0.5, 0.4, 0.5])
    assert s["ra"] == pytest.approx([0.5, 0.35, 0.3])
    assert s["hmean"] == pytest.approx([0.5, 2 * 0.4 * 0.35 / 0.75, 2 * 0.5 * 0.3 / 0.8])
    assert rm.summary("valid")["recall@20"]["la"] == pytest.approx([0.55, 0.45, 0.55])
    assert math.isnan(rm.matrix("test", "ndcg@50")[0, 2])  # j > k


def test_json_round_trip(tmp_path):
    rm = filled_matrix()
    path = tmp_path / "results.json"
    rm.save(path)
    text = path.read_text()
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert data["results"]["test"]["recall@20"][0][1] is None
    back = ResultMatrix.load(path)
    assert back.to_dict() == rm.to_dict()
    for s in rm.splits:
        for m in rm.metrics:
            np.testing.assert_array_equal(back.matrix(s, m), rm.matrix(s, m))
    assert back.new_users["test"][2]["n_users"] == 4 and back.meta == {"model": "student"}


def test_record_row_from_evaluate_stream_output():
    rm = ResultMatrix(2, ks=(20,))
    row = [{"test": {"recall@20": 0.1, "ndcg@20": 0.2, "n_users": 3}},
           {"test": {"recall@20": 0.3, "ndcg@20": 0.4, "n_users": 5}}]
    rm.record_row(1, row)
    assert rm.matrix("test", "ndcg@20")[1].tolist() == [0.2, 0.4]
    assert rm.n_users["test"][1].tolist() == [3, 5]
    with pytest.raises(InputError, match="blocks 0..0"):
        rm.record_row(0, row)


def test_bad_records_and_files(tmp_path):
    rm = ResultMatrix(2, ks=(20,))
    with pytest.raises(InputError, match="j <= k"):
        rm.record(0, 1, "test", {"recall@20": 0.1, "ndcg@20": 0.1})
    with pytest.raises(InputError, match="ndcg@20"):
        rm.record(1, 0, "test", {"recall@20": 0.1})
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="bad.json.*line 1"):
        ResultMatrix.load(bad)
    data = rm.to_dict()
    data["results"]["test"]["recall@20"] = [[0.1]]
    bad.write_text(json.dumps(data))
    with pytest.raises(InputError, match=r"bad.json.*results.test.recall@20.*2 x 2"):
        ResultMatrix.load(bad)
    del data["results"]
    bad.write_text(json.dumps(data))
    with pytest.raises(InputError, match="bad.json.*'results'"):
        ResultMatrix.load(bad)
