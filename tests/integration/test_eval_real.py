"""The evaluation protocol on the real Yelp stream: users evaluated and the train/test overlap."""
import numpy as np
import pytest

from ccd_dist.eval import evaluate_block_ranker, evaluate_stream, split_masks

pytestmark = pytest.mark.integration


class OracleRanker:
    """Ranks a split's own ground-truth items first (by id), as far as the mask allows."""

    def __init__(self, truth, n_users, n_items):
        self.truth, self.n_users, self.n_items = truth, n_users, n_items

    def topk(self, k, exclude, users):
        out = np.full((len(users), k), -1, dtype=np.int32)
        for r, u in enumerate(users):
            banned = set(exclude.indices[exclude.indptr[u]:exclude.indptr[u + 1]].tolist())
            mine = [i for i in self.truth.indices[self.truth.indptr[u]:self.truth.indptr[u + 1]] if i not in banned]
            out[r, : min(k, len(mine))] = mine[:k]
        return out


_CACHE = {}


@pytest.fixture
def yelp(shared_data):
    from ccd_dist.data import import_ccd

    path = shared_data("ccd", "yelp")
    if path not in _CACHE:
        _CACHE[path] = import_ccd(path)
    return _CACHE[path]


def reachable_fraction(block, split):
    """Independent count: per evaluated user, the share of ground truth not in the mask."""
    other = "valid" if split == "test" else "test"
    fractions = []
    for u in np.flatnonzero(np.diff(block.split(split).indptr)):
        row = lambda m: set(m.indices[m.indptr[u]:m.indptr[u + 1]].tolist())  # noqa: E731
        gt = row(block.split(split))
        fractions.append(len(gt - row(block.train) - row(block.split(other))) / len(gt))
    return np.array(fractions)


@pytest.mark.parametrize("split", ["test", "valid"])
def test_overlap_is_counted_but_unreachable(yelp, split):
    block = yelp[0]
    oracle = OracleRanker(block.split(split), block.n_users, block.n_items)
    kept = evaluate_block_ranker(oracle, block, split)
    dropped = evaluate_block_ranker(oracle, block, split, drop_excluded_ground_truth=True)
    expected = reachable_fraction(block, split)
    assert kept["n_users"] == len(expected) == len(block.test_users())
    assert (expected < 1).sum() > 100  # Yelp D0 has hundreds of overlapping pairs
    assert kept["recall@100"] == pytest.approx(expected.mean(), abs=1e-12)  # every |G| <= 100 here
    assert dropped["recall@100"] == 1.0 and dropped["ndcg@100"] == pytest.approx(1.0)
    assert dropped["n_users"] == int((expected > 0).sum())
    _, exclude = split_masks(block, split)
    assert exclude.nnz > block.train.nnz


def test_every_test_user_of_every_block_is_evaluated(yelp):
    last = yelp[len(yelp) - 1]
    rng = np.random.default_rng(0)
    user_emb = rng.normal(size=(last.n_users, 8)).astype(np.float32)
    item_emb = rng.normal(size=(last.n_items, 8)).astype(np.float32)
    rows = evaluate_stream(user_emb, item_emb, yelp, splits=("test",), ks=(20,))
    for block, row in zip(yelp, rows):
        assert row["test"]["n_users"] == len(block.test_users())
        assert 0 <= row["test"]["recall@20"] < 0.2  # a random model is near chance
