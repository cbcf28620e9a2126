"""Synthetic streams and the §1.2 per-user split they (and import-log) use."""
import numpy as np
import pytest

from ccd_dist.cli import main
from ccd_dist.data import block_stats, load_stream, make_synthetic_stream, open_stream
from ccd_dist.data.splitting import split_block


@pytest.fixture(scope="module")
def small():
    return make_synthetic_stream(n_users=300, n_items=150, n_blocks=4, seed=5)


def _users_with(mat):
    return np.flatnonzero(np.diff(mat.indptr))


def test_tiny_sizes_work():
    stream = make_synthetic_stream(n_users=60, n_items=40, n_blocks=3, seed=0)
    assert len(stream) == 3
    assert stream.n_users[-1] == 60 and stream.n_items[-1] == 40
    assert all(b.test.nnz > 0 and b.train.nnz > 0 for b in stream.blocks)


def test_growth_structure(small):
    assert small.n_users[-1] == 300 and small.n_items[-1] == 150
    for k in range(1, len(small)):
        prev, block = small[k - 1], small[k]
        assert block.n_users > prev.n_users and block.n_items > prev.n_items
        active = _users_with(block.train)
        assert (active >= prev.n_users).any(), "new users arrive in every block"
        assert (active < prev.n_users).any(), "earlier users return"
        assert (block.train.indices >= prev.n_items).any(), "new items are used in their block"


def test_base_fraction_and_popularity_skew(small):
    sizes = [b.train.nnz + b.valid.nnz + b.test.nnz for b in small.blocks]
    assert 0.4 < sizes[0] / sum(sizes) < 0.6
    counts = np.sort(np.bincount(small[0].train.indices, minlength=small[0].n_items))[::-1]
    top_decile = counts[: len(counts) // 10].sum() / counts.sum()
    assert top_decile > 0.2  # uniform popularity would give about 0.1


def test_splits_follow_the_reference_rules(small):
    for block in small.blocks:
        train_items = set(block.train.indices.tolist())
        assert set(block.valid.indices.tolist()) <= train_items
        assert set(block.test.indices.tolist()) <= train_items
        assert np.array_equal(_users_with(block.valid), _users_with(block.test))
        assert (block.train.multiply(block.test)).nnz == 0


def test_deterministic_by_seed():
    a = make_synthetic_stream(n_users=80, n_items=50, n_blocks=3, seed=11)
    b = make_synthetic_stream(n_users=80, n_items=50, n_blocks=3, seed=11)
    c = make_synthetic_stream(n_users=80, n_items=50, n_blocks=3, seed=12)
    for x, y in zip(a.blocks, b.blocks):
        assert all((x.split(s) != y.split(s)).nnz == 0 for s in ("train", "valid", "test"))
    assert any((x.train != z.train).nnz > 0 for x, z in zip(a.blocks, c.blocks))


def test_too_small_is_a_clear_error():
    with pytest.raises(ValueError, match="too few for 6 blocks"):
        make_synthetic_stream(n_users=4, n_items=40, n_blocks=6)


def test_default_dataset_is_the_synthetic_stream():
    stream = open_stream()
    assert len(stream) == 6 and stream.n_users[-1] == 2000 and stream.n_items[-1] == 1000
    total = sum(r["train"] + r["valid"] + r["test"] for r in block_stats(stream))
    assert 50_000 < total < 70_000


def test_cli_synth_and_stats(tmp_path, capsys):
    out = tmp_path / "syn"
    assert main(["data", "synth", str(out), "--users", "60", "--items", "40", "--blocks", "2", "--seed", "3"]) == 0
    stream = load_stream(out)
    assert len(stream) == 3 and stream.n_users[-1] == 60
    capsys.readouterr()
    assert main(["data", "stats", str(out)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["block", "users", "+users"]
    assert [line.split()[0] for line in table[2:5]] == ["D0", "D1", "D2"]
    assert len({len(line) for line in table[:5]}) == 1  # aligned
    assert main(["data", "synth", str(out), "--users", "3"]) == 2


# --- split_block: the §1.2 rules on hand-made blocks -------------------------

def _split(pairs, seed=0):
    users, items = np.array(pairs).T
    return split_block(users, items, np.random.default_rng(seed))


def test_split_sizes_per_user():
    # user 0: 25 items -> 2 test, 2 valid, 21 train; user 1: 10 items -> 1, 1, 8.
    # Users 2..9 hold every item in train, so no valid/test item is filtered out.
    pairs = [(0, i) for i in range(25)] + [(1, i) for i in range(10)]
    pairs += [(u, i) for u in range(2, 10) for i in range(25)]
    parts, report = _split(pairs)
    count = lambda split, u: int(np.count_nonzero(parts[split][0] == u))  # noqa: E731
    assert (count("test", 0), count("valid", 0), count("train", 0)) == (2, 2, 21)
    assert (count("test", 1), count("valid", 1), count("train", 1)) == (1, 1, 8)
    assert report["eval_users_dropped"] == 0


def test_split_drops_users_whose_valid_or_test_is_empty():
    # user 2 has a single item: it lands in test, valid stays empty -> dropped from both
    pairs = [(u, i) for u in (0, 1, 3, 4) for i in range(10)] + [(2, 3)]
    parts, report = _split(pairs)
    for split in ("valid", "test", "train"):
        assert 2 not in parts[split][0]
    assert report["eval_users_dropped"] == 1


def test_split_removes_eval_items_missing_from_train():
    # item 99 appears only for user 0; if it is drawn for valid/test it must go
    pairs = [(0, i) for i in range(9)] + [(0, 99)]
    for seed in range(20):
        parts, report = _split(pairs, seed)
        assert 99 not in parts["valid"][1] and 99 not in parts["test"][1]
