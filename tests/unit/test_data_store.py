"""The Parquet store: round trip, validation on load, overwrite rules, atomic writes."""
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ccd_dist.data import load_id_map, load_stream, make_synthetic_stream, read_meta, save_stream
from ccd_dist.data import store as store_mod
from ccd_dist.data.stream import SPLITS, Block, Stream, interactions_to_csr
from ccd_dist.errors import InputError


@pytest.fixture(scope="module")
def tiny():
    return make_synthetic_stream(n_users=60, n_items=40, n_blocks=3, seed=1)


def _assert_same(a: Stream, b: Stream):
    assert len(a) == len(b)
    for x, y in zip(a.blocks, b.blocks):
        assert x.index == y.index and x.train.shape == y.train.shape
        for name in SPLITS:
            assert (x.split(name) != y.split(name)).nnz == 0


def test_round_trip(tmp_path, tiny):
    out = save_stream(tiny, tmp_path / "store")
    back = load_stream(out)
    _assert_same(tiny, back)
    assert back.n_users == tiny.n_users and back.n_items == tiny.n_items
    assert back.meta["provenance"]["importer"] == "synth"
    assert back.meta["import_report"]["split"] == tiny.meta["import_report"]["split"]
    meta = read_meta(out)
    assert [b["counts"]["train"] for b in meta["blocks"]] == [blk.train.nnz for blk in tiny.blocks]
    # saving what was loaded gives the same store again
    again = load_stream(save_stream(back, tmp_path / "again"))
    _assert_same(back, again)


def test_schema(tmp_path, tiny):
    out = save_stream(tiny, tmp_path / "store")
    schema = pq.read_schema(out / store_mod.INTERACTIONS)
    assert schema.field("user").type == pa.int32()
    assert schema.field("item").type == pa.int32()
    assert schema.field("block").type == pa.int16()
    assert pa.types.is_dictionary(schema.field("split").type)


def test_loads_unsorted_rows_and_plain_string_splits(tmp_path):
    """A hand-written table (rows in any order, split as plain strings) loads the same."""
    stream = Stream(
        blocks=[
            Block(0, interactions_to_csr([0, 1], [1, 0], 2, 2), interactions_to_csr([1], [1], 2, 2),
                  interactions_to_csr([0], [0], 2, 2)),
            Block(1, interactions_to_csr([2], [2], 3, 3), interactions_to_csr([], [], 3, 3),
                  interactions_to_csr([2], [0], 3, 3)),
        ]
    )
    out = save_stream(stream, tmp_path / "store")
    table = pq.read_table(out / store_mod.INTERACTIONS)
    table = table.set_column(3, "split", table.column("split").cast(pa.string()))
    table = table.take(pa.array(np.arange(table.num_rows)[::-1]))
    pq.write_table(table, out / store_mod.INTERACTIONS)
    _assert_same(stream, load_stream(out))


def test_existing_output_needs_force(tmp_path, tiny):
    out = save_stream(tiny, tmp_path / "store")
    with pytest.raises(FileExistsError):
        save_stream(tiny, out)
    other = make_synthetic_stream(n_users=60, n_items=40, n_blocks=2, seed=2)
    save_stream(other, out, overwrite=True)
    assert len(load_stream(out)) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]


def test_force_never_replaces_a_non_store(tmp_path, tiny):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("x")
    with pytest.raises(InputError, match="not a ccd-dist store"):
        save_stream(tiny, precious, overwrite=True)
    assert (precious / "thesis.tex").exists()


def test_failed_write_leaves_nothing(tmp_path, tiny, monkeypatch):
    calls = []
    real = store_mod.pq.write_table

    def failing(table, where, **kw):
        calls.append(where)
        if len(calls) == 2:
            raise OSError("disk full (simulated)")
        return real(table, where, **kw)

    monkeypatch.setattr(store_mod.pq, "write_table", failing)
    with pytest.raises(OSError, match="simulated"):
        save_stream(tiny, tmp_path / "store", id_maps={"user": [f"u{i}" for i in range(60)]})
    assert len(calls) == 2
    assert list(tmp_path.iterdir()) == []


def test_failed_overwrite_keeps_the_old_store(tmp_path, tiny, monkeypatch):
    out = save_stream(tiny, tmp_path / "store")

    def failing(*args, **kwargs):
        raise OSError("boom")

    monkeypatch.setattr(store_mod.pq, "write_table", failing)
    with pytest.raises(OSError):
        save_stream(make_synthetic_stream(n_users=60, n_items=40, n_blocks=2), out, overwrite=True)
    assert len(load_stream(out)) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]


def test_id_maps(tmp_path, tiny):
    users = [f"u{i}" for i in range(60)]
    out = save_stream(tiny, tmp_path / "store", id_maps={"user": users})
    assert load_id_map(out, "user").to_pylist() == users
    with pytest.raises(InputError, match="no item id map"):
        load_id_map(out, "item")
    with pytest.raises(ValueError, match="expected 60"):
        save_stream(tiny, tmp_path / "bad", id_maps={"user": users[:5]})


def test_missing_store_and_files(tmp_path, tiny):
    with pytest.raises(InputError, match="store not found"):
        load_stream(tmp_path / "nothing")
    out = save_stream(tiny, tmp_path / "store")
    (out / store_mod.INTERACTIONS).unlink()
    with pytest.raises(InputError, match="missing interactions.parquet"):
        load_stream(out)
    (out / store_mod.META).unlink()
    with pytest.raises(InputError, match="missing meta.json"):
        load_stream(out)


def _edit_meta(out, fn):
    meta = json.loads((out / store_mod.META).read_text())
    fn(meta)
    (out / store_mod.META).write_text(json.dumps(meta))


def test_bad_meta(tmp_path, tiny):
    out = save_stream(tiny, tmp_path / "store")
    _edit_meta(out, lambda m: m.update(format_version=99))
    with pytest.raises(InputError, match="unsupported format_version 99"):
        load_stream(out)
    _edit_meta(out, lambda m: m.update(format_version=1))
    _edit_meta(out, lambda m: m["blocks"][1].update(n_users=5))
    with pytest.raises(InputError, match="ids beyond the block's totals"):
        load_stream(out)


def test_shrinking_totals_are_refused(tmp_path):
    stream = Stream(blocks=[Block(0, *(interactions_to_csr([0], [0], 3, 3),) * 3)])
    stream.blocks.append(Block(1, *(interactions_to_csr([0], [0], 3, 3),) * 3))
    out = save_stream(stream, tmp_path / "store")
    _edit_meta(out, lambda m: m["blocks"][1].update(n_users=2))
    with pytest.raises(InputError, match="ids must only grow"):
        load_stream(out)


def test_row_counts_are_checked(tmp_path, tiny):
    out = save_stream(tiny, tmp_path / "store")
    _edit_meta(out, lambda m: m["blocks"][0]["counts"].update(train=1))
    with pytest.raises(InputError, match=r"block 0 train.*meta.json records 1"):
        load_stream(out)


def test_missing_column(tmp_path, tiny):
    out = save_stream(tiny, tmp_path / "store")
    table = pq.read_table(out / store_mod.INTERACTIONS).drop_columns(["block"])
    pq.write_table(table, out / store_mod.INTERACTIONS)
    with pytest.raises(InputError, match=r"missing columns \['block'\]"):
        load_stream(out)
