"""The continual protocol: which items are masked, which users are evaluated, size guards."""
import numpy as np
import pytest
import scipy.sparse as sp

from ccd_dist.data import Block, Stream, interactions_to_csr
from ccd_dist.errors import InputError
from ccd_dist.eval import (
    EmbeddingRanker,
    evaluate_block,
    evaluate_new_users,
    evaluate_stream,
    evaluate_stream_ranker,
    evaluate_topk,
    split_masks,
)


def block(index, n_users, n_items, train, valid, test):
    mats = [interactions_to_csr(*zip(*pairs), n_users, n_items) if pairs else
            sp.csr_matrix((n_users, n_items), dtype=np.float32) for pairs in (train, valid, test)]
    return Block(index, *mats)


@pytest.fixture
def stream():
    """Block 0: users 0-2, items 0-4. Block 1 adds user 3 and 4 and item 5."""
    b0 = block(
        0, 3, 5,
        train=[(0, 0), (1, 3), (2, 1)],
        valid=[(0, 2), (1, 1), (2, 4)],
        test=[(0, 1), (1, 3), (1, 4), (2, 2)],  # (1, 3) is also train: the Yelp overlap
    )
    b1 = block(
        1, 5, 6,
        train=[(0, 2), (3, 0), (4, 1)],
        valid=[(0, 3), (3, 4), (4, 5)],
        test=[(0, 4), (3, 5), (4, 0)],
    )
    s = Stream([b0, b1])
    s.validate()
    return s


def one_hot_model(scores):
    """Embeddings whose inner products are exactly `scores` (users x items)."""
    scores = np.asarray(scores, dtype=np.float32)
    return scores, np.eye(scores.shape[1], dtype=np.float32)


class Recorder:
    """Wraps a ranker and keeps every exclusion mask and user list it is given."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    n_users = property(lambda self: self.inner.n_users)
    n_items = property(lambda self: self.inner.n_items)

    def topk(self, k, exclude, users):
        self.calls.append((exclude.copy(), np.array(users)))
        return self.inner.topk(k, exclude, users)


def excluded(mask, u):
    return set(mask.indices[mask.indptr[u]:mask.indptr[u + 1]].tolist()) if u < mask.shape[0] else set()


def test_masks_follow_the_split(stream):
    b0 = stream[0]
    gt, ex = split_masks(b0, "test")
    assert gt is b0.test and excluded(ex, 1) == {3, 1}  # train {3} + valid {1}
    gt, ex = split_masks(b0, "valid")
    assert gt is b0.valid and excluded(ex, 1) == {3, 4}  # train {3} + test {3, 4}
    with pytest.raises(InputError, match="split"):
        split_masks(b0, "train")


def test_ranker_sees_only_the_evaluated_blocks_masks(stream):
    user_emb, item_emb = one_hot_model(np.arange(30).reshape(5, 6) % 7)
    rec = Recorder(EmbeddingRanker(user_emb, item_emb))
    rows = evaluate_stream_ranker(rec, stream, upto=1, ks=(2,))
    assert [sorted(r) for r in rows] == [["test", "valid"]] * 2
    (ex_v0, u_v0), (ex_t0, u_t0), (ex_v1, _), (ex_t1, u_t1) = rec.calls
    b0, b1 = stream
    for u in range(b1.n_users):
        # block 0 is evaluated with block 0's items only, never block 1's train items
        assert excluded(ex_t0, u) == excluded(b0.train + b0.valid, u)
        assert excluded(ex_v0, u) == excluded(b0.train + b0.test, u)
        assert excluded(ex_t1, u) == excluded(b1.train + b1.valid, u)
        assert excluded(ex_v1, u) == excluded(b1.train + b1.test, u)
    assert u_t0.tolist() == [0, 1, 2] and u_t1.tolist() == [0, 3, 4]


def test_train_item_is_never_counted_and_valid_differs_from_test(stream):
    # user 0 of block 0: train {0}, valid {2}, test {1}; scores rank 0 > 2 > 1 > rest
    scores = np.zeros((3, 5))
    scores[0] = [9, 7, 8, 1, 0]
    user_emb, item_emb = one_hot_model(scores)
    test = evaluate_block(user_emb, item_emb, stream[0], "test", users=[0], ks=(1,))
    valid = evaluate_block(user_emb, item_emb, stream[0], "valid", users=[0], ks=(1,))
    assert test["recall@1"] == 1.0  # item 0 (train) and 2 (valid) skipped, item 1 first
    assert valid["recall@1"] == 1.0  # item 0 (train) and 1 (test) skipped, item 2 first
    unmasked = evaluate_topk(user_emb, item_emb, stream[0].test, None, ks=(1,), users=[0])
    assert unmasked["recall@1"] == 0.0  # without the mask the train item would take the slot


def test_train_test_overlap_stays_in_ground_truth(stream):
    # user 1 of block 0: train {3}, test {3, 4}; item 3 can never be retrieved
    scores = np.zeros((3, 5))
    scores[1] = [0, 0, 0, 9, 8]
    user_emb, item_emb = one_hot_model(scores)
    kept = evaluate_block(user_emb, item_emb, stream[0], "test", users=[1], ks=(5,))
    dropped = evaluate_block(
        user_emb, item_emb, stream[0], "test", users=[1], ks=(5,), drop_excluded_ground_truth=True
    )
    assert kept["recall@5"] == 0.5 and dropped["recall@5"] == 1.0


def test_new_users_are_the_ids_first_seen_in_the_block(stream):
    rng = np.random.default_rng(0)
    user_emb = rng.integers(-2, 3, (5, 3)).astype(np.float32)
    item_emb = rng.integers(-2, 3, (6, 3)).astype(np.float32)
    new = evaluate_new_users(user_emb, item_emb, stream, 1, ks=(1, 3))
    assert new["n_users"] == 2  # users 3 and 4
    assert new == evaluate_block(user_emb, item_emb, stream[1], "test", users=[3, 4], ks=(1, 3))
    everyone = evaluate_new_users(user_emb, item_emb, stream, 0, ks=(1, 3))
    assert everyone == evaluate_block(user_emb, item_emb, stream[0], "test", ks=(1, 3))


def test_blocks_beyond_the_model_are_an_error(stream):
    small_users = np.ones((3, 2), np.float32)  # sized for block 0
    items = np.ones((6, 2), np.float32)
    with pytest.raises(InputError, match="block 1.*5 users"):
        evaluate_block(small_users, items, stream[1])
    with pytest.raises(InputError, match="block 1"):
        evaluate_stream(small_users, items, stream, upto=1)
    rows = evaluate_stream(small_users, np.ones((5, 2), np.float32), stream, upto=0)
    assert len(rows) == 1 and rows[0]["test"]["n_users"] == 3
    with pytest.raises(InputError, match="upto"):
        evaluate_stream(small_users, items, stream, upto=2)


def test_stream_row_equals_per_block_calls(stream):
    rng = np.random.default_rng(1)
    user_emb = rng.normal(size=(5, 4)).astype(np.float32)
    item_emb = rng.normal(size=(6, 4)).astype(np.float32)
    rows = evaluate_stream(user_emb, item_emb, stream, ks=(2, 4))
    for j, by_split in enumerate(rows):
        for split in ("valid", "test"):
            assert by_split[split] == evaluate_block(user_emb, item_emb, stream[j], split, ks=(2, 4))
