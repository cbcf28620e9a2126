"""`block_stats` and `ccd-dist data stats` on a hand-built stream."""
import json

from ccd_dist.cli import main
from ccd_dist.data import Block, Stream, block_stats, save_stream
from ccd_dist.data.stats import format_table
from ccd_dist.data.stream import interactions_to_csr


def _block(k, n_users, n_items, train, valid, test):
    mk = lambda pairs: interactions_to_csr(*(zip(*pairs) if pairs else ([], [])), n_users, n_items)  # noqa: E731
    return Block(k, mk(train), mk(valid), mk(test))


def _stream():
    return Stream(blocks=[
        _block(0, 3, 4, [(0, 0), (0, 1), (1, 1), (2, 2)], [(0, 1)], [(0, 0), (1, 1)]),
        # user 3 allocated here without interactions (like an empty train key); item 4 used
        _block(1, 5, 6, [(1, 4), (4, 4), (4, 0)], [(4, 0)], [(4, 4)]),
    ])


def test_block_stats_counts():
    rows = block_stats(_stream())
    assert rows[0] == {
        "block": 0, "users": 3, "new_users": 3, "new_users_seen": 3, "items": 4, "new_items": 4,
        "new_items_seen": 3, "train": 4, "valid": 1, "test": 2, "test_users": 2,
        "train_test_overlap": 2, "train_valid_overlap": 1,
    }
    assert rows[1]["new_users"] == 2 and rows[1]["new_users_seen"] == 1
    assert rows[1]["new_items"] == 2 and rows[1]["new_items_seen"] == 1
    assert rows[1]["test_users"] == 1 and rows[1]["train_test_overlap"] == 1


def test_format_table_is_aligned():
    text = format_table([{"block": 0, "users": 1234567}, {"block": 1, "users": 5}],
                        (("block", "block"), ("users", "users")))
    lines = text.splitlines()
    assert lines[2].split() == ["D0", "1,234,567"]
    assert len({len(line) for line in lines}) == 1


def test_cli_stats_json(tmp_path, capsys):
    out = save_stream(_stream(), tmp_path / "store")
    assert main(["data", "stats", str(out), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["blocks"] == block_stats(_stream())
    assert payload["import_report"] == {}


def test_cli_stats_missing_store(tmp_path, capsys):
    assert main(["data", "stats", str(tmp_path / "nothing")]) == 2
    assert "store not found" in capsys.readouterr().err
