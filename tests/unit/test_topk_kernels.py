"""The Numba kernels behind ccd_dist.ranking, against plain numpy brute force."""
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from ccd_dist.kernels import masked_topk, rank_of_candidates
from ccd_dist.kernels.topk import canonical_dot, canonical_dots, refine_candidates


def brute_topk(scores, row_users, mask, k):
    """Reference: per row, eligible items sorted by (score desc, id asc), padded."""
    c, n = scores.shape
    items = np.full((c, k), -1, np.int32)
    vals = np.full((c, k), -np.inf, np.float32)
    for r in range(c):
        banned = np.zeros(n, bool)
        u = row_users[r]
        if 0 <= u < mask.shape[0]:
            cols = mask.indices[mask.indptr[u] : mask.indptr[u + 1]]
            banned[cols[(cols >= 0) & (cols < n)]] = True
        row = scores[r]
        ok = np.flatnonzero(~banned & ~np.isnan(row) & (row > -np.inf))
        order = np.lexsort((ok, -row[ok]))[:k]
        items[r, : len(order)] = ok[order]
        vals[r, : len(order)] = row[ok[order]]
    return items, vals


def brute_rank(row, x):
    ids = np.arange(row.size)
    return int(np.sum(row > row[x]) + np.sum((row == row[x]) & (ids < x)))


def random_mask(rng, rows, cols, density):
    mask = sp.random(rows, cols, density=density, format="csr", random_state=rng)
    return mask


@pytest.mark.parametrize("n_items", [37, 5000])  # 5000 > 4 * sample: the sampled-threshold path
@pytest.mark.parametrize("ties", [False, True])
def test_masked_topk_matches_brute_force(n_items, ties):
    rng = np.random.default_rng(n_items + ties)
    c = 23
    if ties:
        scores = rng.integers(-3, 4, (c, n_items)).astype(np.float32)
    else:
        scores = rng.standard_normal((c, n_items)).astype(np.float32)
    mask = random_mask(rng, 15, n_items + 5, 0.2)  # fewer rows than users, extra columns
    row_users = rng.integers(-2, 20, c)  # negative and past-the-end rows have no mask
    for k in (0, 1, 7, 100):
        got = masked_topk(scores, row_users, mask.indptr, mask.indices, k)
        want = brute_topk(scores, row_users, mask, k)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


def test_masked_topk_pads_when_few_items_are_eligible_and_leaves_input_alone():
    scores = np.array([[3.0, 1.0, 2.0, 0.5], [1.0, 1.0, 1.0, 1.0]], np.float32)
    before = scores.copy()
    mask = sp.csr_matrix(np.array([[1, 0, 1, 1], [0, 0, 0, 0]]))
    items, vals = masked_topk(scores, [0, 1], mask.indptr, mask.indices, 3)
    np.testing.assert_array_equal(items, [[1, -1, -1], [0, 1, 2]])
    np.testing.assert_array_equal(vals, [[1.0, -np.inf, -np.inf], [1.0, 1.0, 1.0]])
    np.testing.assert_array_equal(scores, before)


def test_masked_topk_treats_nan_and_minus_inf_as_masked_and_tolerates_messy_masks():
    scores = np.array([[np.nan, 5.0, -np.inf, 4.0, 4.0, -0.0, 0.0]], np.float32)
    # unsorted, repeated, negative and out-of-range entries
    indptr = np.array([0, 5])
    indices = np.array([3, 3, -1, 99, 1])
    items, vals = masked_topk(scores, [0], indptr, indices, 4)
    np.testing.assert_array_equal(items, [[4, 5, 6, -1]])  # -0.0 and 0.0 tie: lower id first
    assert vals[0, 0] == 4.0 and vals[0, 1] == 0.0 and vals[0, 3] == -np.inf


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    c=st.integers(1, 6),
    n=st.integers(1, 40),
    k=st.integers(0, 45),
)
def test_masked_topk_property(data, c, n, k):
    """Any small integer score matrix and mask: same answer as the brute force."""
    values = data.draw(st.lists(st.integers(-3, 3), min_size=c * n, max_size=c * n))
    scores = np.array(values, np.float32).reshape(c, n)
    dense = np.array(data.draw(st.lists(st.booleans(), min_size=c * n, max_size=c * n))).reshape(c, n)
    mask = sp.csr_matrix(dense.astype(np.float32))
    row_users = np.array(data.draw(st.lists(st.integers(-1, c), min_size=c, max_size=c)))
    got = masked_topk(scores, row_users, mask.indptr, mask.indices, k)
    want = brute_topk(scores, row_users, mask, k)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    # the output is sorted and has no masked or repeated item
    for r in range(c):
        real = got[0][r][got[0][r] >= 0]
        assert len(set(real.tolist())) == len(real)


@pytest.mark.parametrize("ties", [False, True])
def test_rank_of_candidates_matches_brute_force(ties):
    rng = np.random.default_rng(7 + ties)
    c, n = 9, 300
    scores = (rng.integers(0, 5, (c, n)) if ties else rng.standard_normal((c, n))).astype(np.float32)
    cands = rng.integers(-2, n + 2, (c, 12))  # some invalid ids
    got = rank_of_candidates(scores, cands)
    for r in range(c):
        for j, x in enumerate(cands[r]):
            assert got[r, j] == (brute_rank(scores[r], x) if 0 <= x < n else -1)
    # the ragged form gives the same ranks
    lens = rng.integers(0, 12, c)
    indptr = np.concatenate([[0], np.cumsum(lens)])
    flat = np.concatenate([cands[r, : lens[r]] for r in range(c)])
    ragged = rank_of_candidates(scores, flat, cand_indptr=indptr)
    np.testing.assert_array_equal(ragged, np.concatenate([got[r, : lens[r]] for r in range(c)]))


def test_rank_of_candidates_of_a_sorted_row_are_positions():
    row = np.array([[5.0, 5.0, 4.0, 9.0, 5.0]], np.float32)
    np.testing.assert_array_equal(rank_of_candidates(row, [[3, 0, 1, 4, 2]]), [[0, 1, 2, 3, 4]])


def test_canonical_dots_equal_canonical_dot():
    rng = np.random.default_rng(3)
    emb = (rng.standard_normal((50, 13)) * 10.0 ** rng.integers(-3, 4, (50, 1))).astype(np.float32)
    u = rng.standard_normal(13).astype(np.float32)
    ids = rng.integers(0, 50, 23).astype(np.int32)
    out = np.empty(23, np.float32)
    canonical_dots(u, emb, ids, 23, out)
    want = [canonical_dot(u, emb[i]) for i in ids]
    np.testing.assert_array_equal(out.view(np.int32), np.array(want, np.float32).view(np.int32))
    # and the canonical value is the float64 sum rounded once
    acc = np.zeros(23)
    for t in range(13):
        acc += np.float64(u[t]) * emb[ids, t].astype(np.float64)
    np.testing.assert_array_equal(out, acc.astype(np.float32))


def test_refine_candidates_flags_rows_it_cannot_certify():
    item_emb = np.ones((6, 1), np.float32)  # every item scores the same: the fetch boundary is a tie
    user = np.ones((1, 1), np.float32)
    no_mask = (np.zeros(1, np.int64), np.zeros(0, np.int32))
    cand_ids = np.array([[4, 2, 0]], np.int64)  # an engine returned some of the tied items
    cand_scores = np.ones((1, 3), np.float32)
    out_i = np.zeros((1, 2), np.int32)
    out_s = np.zeros((1, 2), np.float32)
    ok = np.zeros(1, np.uint8)
    tau = np.array([1e-6])
    refine_candidates(cand_ids, cand_scores, np.zeros(1, np.int64), *no_mask, 2, user, item_emb, tau, False,
                      out_i, out_s, 0, ok)
    assert ok[0] == 0  # items 1, 3, 5 could still belong to the top 2 (they do: 0 and 1)
    cand_ids = np.array([[4, 2, 0, 1, 3, 5]], np.int64)
    refine_candidates(cand_ids, np.ones((1, 6), np.float32), np.zeros(1, np.int64), *no_mask, 2, user,
                      item_emb, tau, True, out_i, out_s, 0, ok)
    assert ok[0] == 1
    np.testing.assert_array_equal(out_i, [[0, 1]])
