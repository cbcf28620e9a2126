"""Full ranks, the rank ensemble (§3.2) and its lists, against dense brute force on tiny data."""
import numpy as np
import pytest
import scipy.sparse as sp

from ccd_dist.ccd.ensemble import (
    Member,
    TeacherLists,
    build_rank_ensemble,
    evaluate_teacher,
    rank_weight_table,
    stream_cover,
)
from ccd_dist.data import Block, Stream, interactions_to_csr
from ccd_dist.errors import InputError
from ccd_dist.kernels.fullrank import ColumnTopK, accumulate_rank_weights, rank_rows, select_rows_varlen


def reference_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks from a stable argsort of the negated scores (ties by lower id, NaN last)."""
    order = np.argsort(-x, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(x.shape[1])[None, :].repeat(x.shape[0], 0), axis=1)
    return ranks


def tie_heavy(rng, rows, cols):
    x = rng.integers(-3, 4, size=(rows, cols)).astype(np.float32)
    x[x == 0] = rng.choice(np.array([0.0, -0.0], dtype=np.float32), size=int((x == 0).sum()))
    specials = np.array([np.inf, -np.inf, np.nan, -0.0, 0.0, 1e-45, -1e-45, 3.4e38], dtype=np.float32)
    pos = rng.integers(0, cols, size=(rows, 6))
    for r in range(rows):
        x[r, pos[r]] = rng.choice(specials, size=6)
    return x


@pytest.mark.parametrize("cols", [1, 5, 2049, 70_000])
def test_rank_rows_matches_stable_argsort(cols):
    rng = np.random.default_rng(cols)
    x = tie_heavy(rng, 7, cols)
    x[0] = rng.standard_normal(cols).astype(np.float32)  # a row without ties
    x[1] = 0.0  # a row of identical values: ranks are the ids
    np.testing.assert_array_equal(rank_rows(x), reference_ranks(x))
    np.testing.assert_array_equal(rank_rows(x)[1], np.arange(cols))


def test_accumulate_rank_weights_adds_table_at_ranks():
    rng = np.random.default_rng(1)
    x = tie_heavy(rng, 9, 300)
    table = rank_weight_table(300)
    out = rng.random((9, 300)).astype(np.float32)
    expected = out + table[reference_ranks(x)]
    accumulate_rank_weights(x, out, table)
    np.testing.assert_array_equal(out, expected)
    with pytest.raises(ValueError, match="weight_table"):
        accumulate_rank_weights(x, out, table[:10])


def test_weight_table_closed_form():
    w = rank_weight_table(45_000)
    assert w[0] == 1.0
    assert w[1] == pytest.approx(2 ** -0.05)
    assert w[40_987] == pytest.approx(40_988 ** -0.05)
    assert np.all(np.diff(w) < 0)


def test_select_rows_varlen_and_column_topk_match_sorting():
    rng = np.random.default_rng(2)
    x = rng.integers(0, 4, size=(23, 31)).astype(np.float32)
    lengths = rng.integers(0, 32, size=23)
    indptr, items, scores = select_rows_varlen(x, lengths)
    for r in range(23):
        order = np.argsort(-x[r], kind="stable")[: lengths[r]]
        np.testing.assert_array_equal(items[indptr[r]:indptr[r + 1]], order)
        np.testing.assert_array_equal(scores[indptr[r]:indptr[r + 1]], x[r, order])
    mask = sp.random(23, 31, density=0.4, random_state=3, format="csr")
    mask.sort_indices()
    top = ColumnTopK(31, 5)
    for start in range(0, 23, 4):
        sub = mask[start:start + 4]
        top.add(x[start:start + 4], start, sub.indptr, sub.indices)
    rows, _ = top.result()
    dense = mask.toarray() > 0
    for i in range(31):
        allowed = [u for u in range(23) if not dense[u, i]]
        best = sorted(allowed, key=lambda u: (-x[u, i], u))[:5]
        assert rows[i].tolist() == best + [-1] * (5 - len(best))
    with pytest.raises(ValueError, match="ascending"):
        top.add(x[:2], 0, mask[:2].indptr, mask[:2].indices)


# ----------------------------------------------------------------------------- the ensemble
def integer_members(rng, n_users, n_items, n_members, dim=3):
    """Small-integer embeddings: exact scores with many ties."""
    return [
        Member(f"m{j}", rng.integers(-2, 3, size=(n_users, dim)).astype(np.float32),
               rng.integers(-2, 3, size=(n_items + j, dim)).astype(np.float32))  # extra rows are ignored
        for j in range(n_members)
    ]


def dense_ensemble(members, n_users, n_items):
    table = rank_weight_table(n_items)
    total = np.zeros((n_users, n_items), np.float32)
    for m in members:
        scores = m.user_repr[:n_users] @ m.item_repr[:n_items].T
        total += table[reference_ranks(scores)]
    return total / np.float32(len(members))


def test_ensemble_matches_dense_brute_force():
    rng = np.random.default_rng(4)
    n_users, n_items = 37, 29
    members = integer_members(rng, n_users, n_items, 3)
    train = sp.random(n_users, n_items, density=0.25, random_state=5, format="csr")
    lists = build_rank_ensemble(members, train, list_size=6, n_top_users=4, chunk_size=8)
    E = dense_ensemble(members, n_users, n_items)
    dense_train = train.toarray() != 0
    inter = lists.interesting_items(train, 6)
    unfiltered, unfiltered_scores = lists.topk_with_scores(6)
    for u in range(n_users):
        by_score = sorted(range(n_items), key=lambda i: (-E[u, i], i))
        assert unfiltered[u].tolist() == by_score[:6]
        np.testing.assert_allclose(unfiltered_scores[u], E[u, by_score[:6]], rtol=1e-6)
        assert inter[u].tolist() == [i for i in by_score if not dense_train[u, i]][:6]
    for i in range(n_items):
        users = sorted((u for u in range(n_users) if not dense_train[u, i]), key=lambda u: (-E[u, i], u))[:4]
        assert lists.item_users[i].tolist() == users + [-1] * (4 - len(users))
    # the same lists as exclusion rows of a larger next block
    nxt = lists.top_csr(6, exclude=train, shape=(n_users + 3, n_items + 2))
    assert nxt.shape == (n_users + 3, n_items + 2) and nxt[n_users:].nnz == 0
    assert [sorted(nxt[u].indices) for u in range(n_users)] == [sorted(row) for row in inter]


def test_ensemble_does_not_depend_on_chunk_size():
    rng = np.random.default_rng(6)
    members = integer_members(rng, 40, 25, 2)
    train = sp.random(40, 25, density=0.2, random_state=7, format="csr")
    a = build_rank_ensemble(members, train, list_size=5, chunk_size=3)
    b = build_rank_ensemble(members, train, list_size=5, chunk_size=1000)
    for name in ("user_indptr", "user_items", "user_scores", "item_users", "item_scores"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def test_single_member_ensemble_is_that_members_ranking():
    from ccd_dist import ranking

    rng = np.random.default_rng(8)
    user = rng.standard_normal((30, 4)).astype(np.float32)
    item = rng.standard_normal((50, 4)).astype(np.float32)
    item[10] = item[3]  # exact ties, broken by lower id
    train = sp.random(30, 50, density=0.2, random_state=9, format="csr")
    lists = build_rank_ensemble([Member("only", user, item)], train, list_size=20)
    expected, _ = ranking.topk(user, item, 20, exclude=train)
    np.testing.assert_array_equal(lists.interesting_items(train, 20), expected)
    expected_all, _ = ranking.topk(user, item, 20)
    np.testing.assert_array_equal(lists.topk(20), expected_all)


def test_lists_refuse_masks_beyond_their_cover():
    rng = np.random.default_rng(10)
    members = integer_members(rng, 12, 40, 1)
    train = sp.csr_matrix((12, 40), dtype=np.float32)
    lists = build_rank_ensemble(members, train, list_size=3)
    top = lists.topk(3)
    blocker = interactions_to_csr(np.repeat(np.arange(12), 3), top.ravel(), 12, 40)
    with pytest.raises(InputError, match="cover"):
        lists.topk(3, exclude=blocker)
    covered = build_rank_ensemble(members, train, list_size=3, cover=blocker)
    picked = covered.topk(3, exclude=blocker)
    assert all(not set(picked[u]) & set(top[u]) for u in range(12))


def test_save_load_round_trip_and_bad_files(tmp_path):
    rng = np.random.default_rng(11)
    members = integer_members(rng, 15, 12, 2)
    train = sp.random(15, 12, density=0.3, random_state=12, format="csr")
    lists = build_rank_ensemble(members, train, list_size=4, n_top_users=3, meta={"block": 0})
    path = tmp_path / "lists.npz"
    lists.save(path)
    back = TeacherLists.load(path)
    assert back.member_names == ["m0", "m1"] and back.meta["block"] == 0
    assert back.train_fingerprint == lists.train_fingerprint
    for name in ("user_indptr", "user_items", "user_scores", "item_users", "item_scores"):
        np.testing.assert_array_equal(getattr(back, name), getattr(lists, name))
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(InputError, match="bad.npz"):
        TeacherLists.load(bad)
    with pytest.raises(InputError, match="missing.npz"):
        TeacherLists.load(tmp_path / "missing.npz")


def test_member_too_small_is_an_input_error():
    rng = np.random.default_rng(13)
    members = integer_members(rng, 5, 6, 1)
    with pytest.raises(InputError, match="item rows"):
        build_rank_ensemble(members, sp.csr_matrix((5, 9), dtype=np.float32))


def tiny_stream(rng):
    """Two blocks with growing ids, every user with train/valid/test items."""
    blocks = []
    for k, (n_users, n_items) in enumerate([(20, 30), (26, 34)]):
        splits = {}
        for split, per_user in (("train", 4), ("valid", 1), ("test", 1)):
            users = np.repeat(np.arange(n_users), per_user)
            items = rng.integers(0, n_items, size=len(users))
            splits[split] = interactions_to_csr(users, items, n_users, n_items)
        blocks.append(Block(k, splits["train"], splits["valid"], splits["test"]))
    return Stream(blocks)


def test_ensemble_evaluation_equals_member_evaluation_for_one_member():
    from ccd_dist.eval import evaluate_stream

    rng = np.random.default_rng(14)
    stream = tiny_stream(rng)
    user = rng.standard_normal((26, 5)).astype(np.float32)
    item = rng.standard_normal((34, 5)).astype(np.float32)
    lists = build_rank_ensemble([Member("m", user, item)], stream[1].train, list_size=100,
                                cover=stream_cover(stream, 1))
    got = evaluate_teacher(lists, stream, 1)
    expected = evaluate_stream(user, item, stream, 1)
    for j in range(2):
        for split in ("valid", "test"):
            for key, value in expected[j][split].items():
                assert got[j][split][key] == pytest.approx(value), (j, split, key)
