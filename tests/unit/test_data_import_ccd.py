"""`import-ccd` on tiny TASK_k.pickle files written in tmp_path."""
import collections
import os
import pickle

import numpy as np
import pytest

from ccd_dist.cli import main
from ccd_dist.data import block_stats, import_ccd, load_stream
from ccd_dist.errors import InputError


def _dd(mapping):
    out = collections.defaultdict(list)
    out.update(mapping)
    return out


def _write_task(folder, k, train, valid, test, totals=None, **extra):
    data = {"train_dict": _dd(train), "valid_dict": _dd(valid), "test_dict": _dd(test)}
    data["item_list"] = sorted({i for its in train.values() for i in its})
    if totals is not None:
        data["num_base_block_users"], data["num_base_block_items"] = np.int64(totals[0]), np.int64(totals[1])
    data.update(extra)
    (folder / f"TASK_{k}.pickle").write_bytes(pickle.dumps(data, protocol=5))


@pytest.fixture
def gowalla_like(tmp_path):
    """Three blocks, no stored totals; user 5 is an empty train key in block 1."""
    src = tmp_path / "src"
    src.mkdir()
    _write_task(src, 0, {0: [0, 1, 2], 1: [1, 2], 2: [0, 3]}, {0: [1]}, {0: [2], 2: [3]})
    _write_task(src, 1, {1: [4, 2], 3: [4], 5: []}, {3: [4]}, {1: [2]})
    _write_task(src, 2, {6: [5, 5, 0], 0: [5]}, {6: [0]}, {6: [5]})
    return src


@pytest.fixture
def yelp_like(tmp_path):
    """Stored totals above the observed ids, repeated pairs and train/test overlap."""
    src = tmp_path / "yelp"
    src.mkdir()
    _write_task(src, 0, {0: [0, 0, 1], 1: [1, 2]}, {0: [1], 1: [2, 2]}, {0: [0], 1: [1]}, totals=(3, 5))
    _write_task(src, 1, {2: [5, 6, 6, 6]}, {2: [5]}, {2: [6]}, totals=(4, 8))
    return src


def test_totals_from_cumulative_max_ids(gowalla_like):
    stream = import_ccd(gowalla_like)
    # user 5 exists only as an empty train key: it still counts for the total
    assert stream.n_users == [3, 6, 7]
    assert stream.n_items == [4, 5, 6]
    rows = block_stats(stream)
    assert [r["train"] for r in rows] == [7, 3, 3]
    assert [r["new_users"] for r in rows] == [3, 3, 1]
    assert [r["new_items_seen"] for r in rows] == [4, 1, 1]
    report = stream.meta["import_report"]
    assert report["duplicates_dropped"][2] == {"train": 1, "valid": 0, "test": 0}
    assert report["counts_as_stored"][2] == {"train": 4, "valid": 1, "test": 1}
    assert report["train_keys_without_items"] == [0, 1, 0]
    assert stream.meta["provenance"]["totals_from"][0] == "cumulative max id + 1"


def test_stored_totals_duplicates_and_overlap(yelp_like):
    stream = import_ccd(yelp_like)
    assert stream.n_users == [3, 4] and stream.n_items == [5, 8]
    report = stream.meta["import_report"]
    assert report["duplicates_dropped"] == [
        {"train": 1, "valid": 1, "test": 0},
        {"train": 2, "valid": 0, "test": 0},
    ]
    # (0, 0) and (1, 1) are train and test; (2, 6) too in block 1: all kept
    assert [o["train_test"] for o in report["overlap"]] == [2, 1]
    assert stream[0].test[0, 0] == 1 and stream[0].train[0, 0] == 1
    assert [r["train_test_overlap"] for r in block_stats(stream)] == [2, 1]


def test_cli_writes_a_store(gowalla_like, tmp_path, capsys):
    out = tmp_path / "store"
    assert main(["data", "import-ccd", str(gowalla_like), str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    assert load_stream(out).n_users == [3, 6, 7]
    assert main(["data", "import-ccd", str(gowalla_like), str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["data", "import-ccd", str(gowalla_like), str(out), "--force"]) == 0


def test_missing_folder_and_files(tmp_path):
    with pytest.raises(InputError, match="not a directory"):
        import_ccd(tmp_path / "absent")
    with pytest.raises(InputError, match="no TASK_k.pickle"):
        import_ccd(tmp_path)


def test_gap_in_blocks(gowalla_like):
    (gowalla_like / "TASK_1.pickle").unlink()
    with pytest.raises(InputError, match="TASK_1.pickle is missing"):
        import_ccd(gowalla_like)


def test_missing_key(tmp_path):
    (tmp_path / "TASK_0.pickle").write_bytes(pickle.dumps({"train_dict": {}, "test_dict": {}}))
    with pytest.raises(InputError, match=r"missing keys \['valid_dict'\]") as err:
        import_ccd(tmp_path)
    assert "TASK_0.pickle" in str(err.value)


@pytest.mark.parametrize(
    "train, expected",
    [
        ({0: [1, "2"]}, r"key 'train_dict'.*user 0: item id '2' is not a non-negative integer"),
        ({0: [1, -3]}, r"user 0: item id -3"),
        ({-1: [1]}, r"user id -1 is not a non-negative integer"),
        ({0: (1, 2)}, r"expected a list of item ids, got tuple"),
    ],
)
def test_bad_ids(tmp_path, train, expected):
    (tmp_path / "TASK_0.pickle").write_bytes(
        pickle.dumps({"train_dict": train, "valid_dict": {}, "test_dict": {}})
    )
    with pytest.raises(InputError, match=expected) as err:
        import_ccd(tmp_path)
    assert "TASK_0.pickle" in str(err.value)


def test_stored_totals_below_observed_ids(tmp_path):
    _write_task(tmp_path, 0, {0: [0, 7]}, {}, {}, totals=(1, 5))
    with pytest.raises(InputError, match="smaller than the ids seen"):
        import_ccd(tmp_path)


def test_malicious_block_is_refused_and_nothing_written(gowalla_like, tmp_path, capsys):
    marker = tmp_path / "side_effect"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (gowalla_like / "TASK_1.pickle").write_bytes(pickle.dumps({"train_dict": Evil()}))
    out = tmp_path / "store"
    assert main(["data", "import-ccd", str(gowalla_like), str(out)]) == 2
    err = capsys.readouterr().err
    assert "TASK_1.pickle" in err and "refused" in err
    assert not marker.exists()
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_truncated_block(gowalla_like):
    path = gowalla_like / "TASK_2.pickle"
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(InputError, match="TASK_2.pickle.*truncated"):
        import_ccd(gowalla_like)
