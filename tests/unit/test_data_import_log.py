"""`import-log` on tiny CSV / Parquet logs."""
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ccd_dist.cli import main
from ccd_dist.data import import_log, load_id_map, load_stream
from ccd_dist.data import store as store_mod
from ccd_dist.data.import_log import k_core
from ccd_dist.errors import InputError

# (user, item, time); the file lists them out of order, plus one repeated pair
EVENTS = [
    ("alice", "i1", 1), ("bob", "i2", 2), ("alice", "i2", 3), ("carol", "i1", 4),
    ("bob", "i1", 5), ("alice", "i3", 6),                       # D0: first half
    ("dave", "i3", 7), ("alice", "i4", 8), ("bob", "i4", 9),    # D1
    ("erin", "i5", 10), ("dave", "i1", 11), ("alice", "i5", 12),  # D2
]


def _csv(path, rows, header="user,item,timestamp"):
    path.write_text(header + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
    return path


@pytest.fixture
def small_log(tmp_path):
    order = [5, 0, 11, 3, 8, 1, 10, 2, 7, 4, 9, 6]
    rows = [(u, i, f"2021-03-{t:02d}T10:00:00") for u, i, t in (EVENTS[j] for j in order)]
    rows.append(("alice", "i1", "2021-03-13T10:00:00"))  # repeat of (alice, i1): dropped
    return _csv(tmp_path / "log.csv", rows)


def _stored_pairs(block):
    pairs = set()
    for mat in (block.train, block.valid, block.test):
        rows = np.repeat(np.arange(mat.shape[0]), np.diff(mat.indptr))
        pairs |= set(zip(rows.tolist(), mat.indices.tolist()))
    return pairs


def test_chronological_blocks_and_first_appearance_ids(small_log):
    stream, id_maps = import_log(small_log, k_core_min=0, base_fraction=0.5, n_incremental=2)
    assert id_maps["user"].to_pylist() == ["alice", "bob", "carol", "dave", "erin"]
    assert id_maps["item"].to_pylist() == ["i1", "i2", "i3", "i4", "i5"]
    assert stream.n_users == [3, 4, 5] and stream.n_items == [3, 4, 5]
    report = stream.meta["import_report"]
    assert report["log_repeated_pairs_dropped"] == 1
    assert report["block_interactions"] == [6, 3, 3]
    uid = {u: k for k, u in enumerate(id_maps["user"].to_pylist())}
    iid = {i: k for k, i in enumerate(id_maps["item"].to_pylist())}
    blocks = [EVENTS[:6], EVENTS[6:9], EVENTS[9:]]
    for block, events in zip(stream.blocks, blocks):
        assert _stored_pairs(block) <= {(uid[u], iid[i]) for u, i, _ in events}


def test_ties_keep_input_order(tmp_path):
    path = _csv(tmp_path / "log.csv", [("z", 1, 5), ("y", 2, 5), ("x", 3, 5), ("w", 4, 5)])
    stream, id_maps = import_log(path, k_core_min=0, base_fraction=0.5, n_incremental=1)
    assert id_maps["user"].to_pylist() == ["z", "y", "x", "w"]
    assert id_maps["item"].to_pylist() == [1, 2, 3, 4]
    assert stream.n_users == [2, 4]


def test_k_core_is_iterative(tmp_path):
    rows = [("u1", "a", 1), ("u1", "b", 2), ("u2", "a", 3), ("u2", "b", 4), ("u3", "a", 5), ("u3", "c", 6)]
    stream, id_maps = import_log(_csv(tmp_path / "log.csv", rows), k_core_min=2, n_incremental=0)
    # c has one interaction -> dropped -> u3 has one -> dropped; a, b keep two each
    assert id_maps["user"].to_pylist() == ["u1", "u2"]
    assert id_maps["item"].to_pylist() == ["a", "b"]
    assert stream.meta["import_report"]["k_core_rounds"] >= 2


def test_k_core_kernel_property():
    rng = np.random.default_rng(0)
    users, items = rng.integers(0, 30, 300), rng.zipf(1.6, 300) % 40
    keep, _ = k_core(users, items, 4)
    assert keep.any()
    assert np.bincount(users[keep]).max() >= 4
    assert (np.bincount(users[keep])[np.unique(users[keep])] >= 4).all()
    assert (np.bincount(items[keep])[np.unique(items[keep])] >= 4).all()


@pytest.fixture
def random_log(tmp_path):
    rng = np.random.default_rng(3)
    n = 1500
    users = rng.integers(0, 60, n)
    items = (rng.zipf(1.3, n) + rng.integers(0, 3, n)) % 50
    times = np.sort(rng.integers(0, 10**6, n))
    # late-arriving users and items exist too
    users[-200:] += 60
    items[-150:] += 50
    path = tmp_path / "log.parquet"
    pq.write_table(
        pa.table({"uid": users, "iid": items, "ts": pa.array(times * 10**9, type=pa.timestamp("ns"))}), path
    )
    return path


def test_block_invariants_on_a_random_parquet_log(random_log):
    stream, id_maps = import_log(random_log, k_core_min=3, base_fraction=0.5, n_incremental=3,
                                 seed=1, user_col="uid", item_col="iid", time_col="ts")
    assert len(stream) == 4
    assert len(id_maps["user"]) == stream[-1].n_users and len(id_maps["item"]) == stream[-1].n_items
    assert id_maps["user"].type == pa.int64()
    ranges = stream.meta["import_report"]["block_time_range"]
    assert all(a[1] <= b[0] for a, b in zip(ranges, ranges[1:]))
    assert stream.n_users[-1] > stream.n_users[0] and stream.n_items[-1] > stream.n_items[0]
    for block in stream.blocks:
        train_items = set(block.train.indices.tolist())
        assert set(block.valid.indices.tolist()) <= train_items
        assert set(block.test.indices.tolist()) <= train_items
        assert np.array_equal(np.diff(block.valid.indptr) > 0, np.diff(block.test.indptr) > 0)
        assert block.test.nnz > 0
    again, _ = import_log(random_log, k_core_min=3, n_incremental=3, seed=1,
                          user_col="uid", item_col="iid", time_col="ts")
    other, _ = import_log(random_log, k_core_min=3, n_incremental=3, seed=2,
                          user_col="uid", item_col="iid", time_col="ts")
    assert all((a.test != b.test).nnz == 0 for a, b in zip(stream.blocks, again.blocks))
    assert any((a.test != b.test).nnz > 0 for a, b in zip(stream.blocks, other.blocks))


def test_cli_writes_store_with_id_maps(small_log, tmp_path):
    out = tmp_path / "store"
    args = ["data", "import-log", str(small_log), str(out), "--k-core", "0", "--blocks", "2"]
    assert main(args) == 0
    assert load_stream(out).n_users == [3, 4, 5]
    assert load_id_map(out, "item").to_pylist() == ["i1", "i2", "i3", "i4", "i5"]


def test_failure_midway_leaves_no_store(small_log, tmp_path, monkeypatch):
    real = store_mod.pq.write_table
    calls = []

    def fail_on_id_map(table, where, **kw):
        calls.append(where)
        if "ids" in str(where):
            raise OSError("simulated crash while writing the id maps")
        return real(table, where, **kw)

    monkeypatch.setattr(store_mod.pq, "write_table", fail_on_id_map)
    out = tmp_path / "out" / "store"
    with pytest.raises(OSError, match="simulated"):
        main(["data", "import-log", str(small_log), str(out), "--k-core", "0", "--blocks", "2"])
    assert len(calls) >= 2  # the interaction table was already written when it failed
    assert not out.exists()
    assert list(out.parent.iterdir()) == []


def _error(path, **kw):
    with pytest.raises(InputError) as err:
        import_log(path, **kw)
    return str(err.value)


def test_missing_file(tmp_path):
    assert "file not found" in _error(tmp_path / "nope.csv")


def test_missing_columns_are_named(tmp_path):
    path = _csv(tmp_path / "log.csv", [(1, 2, 3)], header="uid,iid,ts")
    msg = _error(path)
    assert "missing columns ['user', 'item', 'timestamp']" in msg and "['uid', 'iid', 'ts']" in msg
    assert str(path) in msg


@pytest.mark.parametrize(
    "rows, where, what",
    [
        ([(1, 2, 3), (-1, 2, 4)], "line 3, column 'user'", "negative id -1"),
        ([(1, 2, 3), (1, 2.5, 4)], "line 3, column 'item'", "non-integer id 2.5"),
        ([(1, 2, "2020-01-01"), (1, 3, "yesterday")], "line 3, column 'timestamp'", "unparsable timestamp 'yesterday'"),
        ([(1, 2, 3), ("", 2, 4)], "line 3, column 'user'", "empty value"),
    ],
)
def test_bad_values_name_line_and_column(tmp_path, rows, where, what):
    path = _csv(tmp_path / "log.csv", rows)
    msg = _error(path, k_core_min=0)
    assert str(path) in msg and where in msg and what in msg


def test_empty_inputs(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert "cannot read as CSV" in _error(empty)
    header_only = _csv(tmp_path / "header.csv", [])
    assert "no rows" in _error(header_only)


def test_empty_block_after_filtering(tmp_path):
    path = _csv(tmp_path / "log.csv", [("a", 1, 1), ("b", 2, 2), ("c", 3, 3)])
    assert "block 3 is empty" in _error(path, k_core_min=0, n_incremental=5)
    assert "no interactions left after the 10-core filter" in _error(path)


def test_mixed_iso_timestamps_are_ordered_in_utc(tmp_path):
    rows = [
        ("a", 1, "2021-01-01T12:00:00+02:00"),  # 10:00 UTC
        ("b", 2, "2021-01-01T11:00:00Z"),       # 11:00 UTC
        ("c", 3, "2021-01-01 09:00:00"),        # naive: read as UTC
    ]
    _, id_maps = import_log(_csv(tmp_path / "log.csv", rows), k_core_min=0, n_incremental=0)
    assert id_maps["user"].to_pylist() == ["c", "a", "b"]
