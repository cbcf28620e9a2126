"""ccd_dist.ranking: top-K and ranks from embeddings, against a dense brute force on tiny data."""
import numba
import numpy as np
import pytest
import scipy.sparse as sp
import torch

from ccd_dist.errors import InputError
from ccd_dist.ranking import iter_score_chunks, rank_of, top_users, topk
from ccd_dist.ranking import chunks as chunks_mod
from ccd_dist.ranking import engine
from ccd_dist.ranking._blas import fixed_split_matmul
from thread_counts import all_threads


def canonical_scores(user_emb, item_emb):
    """The engine's score: float64 products summed in dimension order, rounded once to float32."""
    acc = np.zeros((user_emb.shape[0], item_emb.shape[0]))
    for t in range(user_emb.shape[1]):
        acc += user_emb[:, t, None].astype(np.float64) * item_emb[None, :, t].astype(np.float64)
    return acc.astype(np.float32)


def brute_topk(user_emb, item_emb, k, exclude=None, users=None):
    users = np.arange(user_emb.shape[0]) if users is None else np.asarray(users)
    scores = canonical_scores(user_emb[users], item_emb)
    n = item_emb.shape[0]
    items = np.full((len(users), k), -1, np.int32)
    vals = np.full((len(users), k), -np.inf, np.float32)
    for r, u in enumerate(users):
        banned = np.zeros(n, bool)
        if exclude is not None and u < exclude.shape[0]:
            cols = exclude.tocsr()[u].indices
            banned[cols[cols < n]] = True
        ok = np.flatnonzero(~banned)
        order = np.lexsort((ok, -scores[r, ok]))[:k]
        items[r, : len(order)] = ok[order]
        vals[r, : len(order)] = scores[r, ok[order]]
    return items, vals


def assert_same(got, want):
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1].view(np.int32), want[1].view(np.int32))  # bit for bit


def embeddings(rng, n_users, n_items, d, ties):
    if ties:  # small integers: many exactly equal scores
        return (rng.integers(-2, 3, (n_users, d)).astype(np.float32),
                rng.integers(-2, 3, (n_items, d)).astype(np.float32))
    return (rng.standard_normal((n_users, d)).astype(np.float32),
            rng.standard_normal((n_items, d)).astype(np.float32))


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("backend", ["numba", "faiss"])
def test_topk_matches_brute_force(backend, ties):
    rng = np.random.default_rng(ties)
    user_emb, item_emb = embeddings(rng, 31, 47, 5, ties)
    exclude = sp.random(25, 50, density=0.3, format="csr", random_state=1)  # fewer rows, extra columns
    users = np.array([30, 0, 7, 7, 29, 3, 12, 26])
    for k, chunk in [(10, 3), (47, None), (60, 5), (0, 4), (1, 1)]:
        want = brute_topk(user_emb, item_emb, k, exclude, users)
        got = topk(user_emb, item_emb, k, exclude, users, backend=backend, chunk_size=chunk)
        assert_same(got, want)
    assert_same(topk(user_emb, item_emb, 6, backend=backend), brute_topk(user_emb, item_emb, 6))


@pytest.mark.parametrize("ties", [False, True])
def test_backends_agree_on_a_larger_catalogue(ties):
    """Enough items for the sampled-threshold selection and for FAISS's partial fetches."""
    rng = np.random.default_rng(10 + ties)
    user_emb, item_emb = embeddings(rng, 40, 6000, 6, ties)
    exclude = sp.random(40, 6000, density=0.02, format="csr", random_state=2)
    want = brute_topk(user_emb, item_emb, 25, exclude)
    for backend in ("numba", "faiss"):
        assert_same(topk(user_emb, item_emb, 25, exclude, backend=backend, chunk_size=16), want)


def test_faiss_rows_with_ties_at_the_fetch_boundary_are_redone_exactly(monkeypatch):
    """Few distinct scores: FAISS cannot show that its fetch holds the top k; those rows fall back."""
    rng = np.random.default_rng(12)
    user_emb = rng.integers(1, 3, (30, 2)).astype(np.float32)
    item_emb = rng.integers(0, 2, (5000, 2)).astype(np.float32)  # four distinct item vectors
    exclude = sp.random(30, 5000, density=0.01, format="csr", random_state=5)
    redone = []
    numba_rows = engine._numba_rows

    def spy(user_emb, item_emb, item_norm, users, *args):
        redone.append(len(users))
        return numba_rows(user_emb, item_emb, item_norm, users, *args)

    monkeypatch.setattr(engine, "_numba_rows", spy)
    got = topk(user_emb, item_emb, 20, exclude, backend="faiss", chunk_size=8)
    assert sum(redone) > 0
    assert_same(got, brute_topk(user_emb, item_emb, 20, exclude))


def test_exact_scores_decide_near_ties_that_blas_rounding_cannot():
    """Near-ties that float32 BLAS cannot resolve: the result still follows the exact score."""
    rng = np.random.default_rng(5)
    base = rng.standard_normal(16).astype(np.float32) * 1000
    item_emb = (base + rng.standard_normal((300, 16)).astype(np.float32) * 1e-3).astype(np.float32)
    user_emb = (rng.standard_normal((12, 16)) * 1000).astype(np.float32)
    want = brute_topk(user_emb, item_emb, 40)
    for backend in ("numba", "faiss"):
        assert_same(topk(user_emb, item_emb, 40, backend=backend, chunk_size=5), want)
    # ranks likewise: every candidate's rank counts items by their exact score
    scores = canonical_scores(user_emb, item_emb)
    cands = rng.integers(0, 300, (12, 30))
    ranks = rank_of(user_emb, item_emb, np.arange(12), cands, chunk_size=5)
    ids = np.arange(300)
    for u in range(12):
        for j, x in enumerate(cands[u]):
            s = scores[u]
            assert ranks[u, j] == np.sum(s > s[x]) + np.sum((s == s[x]) & (ids < x))


def test_empty_inputs_and_all_masked_users():
    rng = np.random.default_rng(0)
    user_emb, item_emb = embeddings(rng, 4, 6, 3, False)
    items, scores = topk(user_emb, item_emb, 3, users=np.array([], np.int64))
    assert items.shape == (0, 3) and scores.shape == (0, 3)
    full = sp.csr_matrix(np.ones((4, 6)))
    items, scores = topk(user_emb, item_emb, 3, full)
    assert (items == -1).all() and np.isneginf(scores).all()
    empty_mask = sp.csr_matrix((4, 6))
    assert_same(topk(user_emb, item_emb, 3, empty_mask), brute_topk(user_emb, item_emb, 3))


def test_top_users_is_topk_with_roles_swapped():
    rng = np.random.default_rng(4)
    user_emb, item_emb = embeddings(rng, 20, 9, 4, True)
    exclude = sp.random(20, 9, density=0.3, format="csr", random_state=3)
    got = top_users(user_emb, item_emb, 5, exclude, items=[8, 0, 3])
    want = brute_topk(item_emb, user_emb, 5, exclude.T.tocsr(), [8, 0, 3])
    assert_same(got, want)


def test_torch_inputs_are_accepted():
    rng = np.random.default_rng(2)
    user_emb, item_emb = embeddings(rng, 10, 12, 4, False)
    got = topk(torch.from_numpy(user_emb).double(), torch.from_numpy(item_emb), 4, users=torch.tensor([1, 5]))
    assert_same(got, brute_topk(user_emb, item_emb, 4, users=[1, 5]))
    ranks = rank_of(torch.from_numpy(user_emb), item_emb, torch.tensor([1, 5]), torch.tensor([3, 4]))
    assert ranks.shape == (2,)


def test_flush_subnormals_is_scoped_to_the_block():
    from ccd_dist.ranking import _fpmode

    x = np.float32(1e-20)
    assert x * x > 0  # 1e-40: subnormal
    with _fpmode.flush_subnormals():
        inside = x * x
    assert x * x > 0  # restored
    if _fpmode._libm() is not None:
        assert inside == 0


@pytest.mark.parametrize("backend", ["numba", "faiss"])
def test_tiny_rows_rank_as_without_the_flush(backend, monkeypatch):
    """Rows shrunk to ~1e-37 (products subnormal): same items and scores, bit for bit, flush on or off."""
    from ccd_dist.ranking import _fpmode

    rng = np.random.default_rng(5)
    user_emb, item_emb = embeddings(rng, 40, 50, 8, False)
    user_emb[:12] *= np.float32(1e-37)  # direction kept: their order is still meaningful
    user_emb[12:15] *= np.float32(1e-44)  # subnormal entries
    item_emb[3] *= np.float32(1e-38)
    exclude = sp.random(40, 50, density=0.1, random_state=1, format="csr")
    want = brute_topk(user_emb, item_emb, 7, exclude=exclude)
    assert_same(topk(user_emb, item_emb, 7, exclude=exclude, backend=backend), want)
    cand = rng.integers(0, 50, 40)
    ranks = rank_of(user_emb, item_emb, np.arange(40), cand)
    monkeypatch.setattr(_fpmode, "ENABLED", False)
    assert_same(topk(user_emb, item_emb, 7, exclude=exclude, backend=backend), want)
    np.testing.assert_array_equal(rank_of(user_emb, item_emb, np.arange(40), cand), ranks)


@pytest.mark.parametrize("flush", [True, False])
def test_rows_whose_scores_all_lie_within_the_error_bound_are_still_exact(flush, monkeypatch):
    """A catalogue large enough for the sampled threshold (> 4,096 items) and rows shrunk to ~1e-37,
    whose error bound spans every score: the threshold pass alone used to miss items of the top k."""
    from ccd_dist.ranking import _fpmode

    monkeypatch.setattr(_fpmode, "ENABLED", flush)
    rng = np.random.default_rng(5)
    user_emb = (rng.standard_normal((600, 32)) * 0.1).astype(np.float32)
    item_emb = (rng.standard_normal((5000, 32)) * 0.1).astype(np.float32)
    user_emb[:300] *= np.float32(1e-36)
    assert_same(topk(user_emb, item_emb, 50), brute_topk(user_emb, item_emb, 50))


def test_results_do_not_depend_on_threads_chunks_or_execution_mode(monkeypatch):
    rng = np.random.default_rng(8)
    user_emb, item_emb = embeddings(rng, 50, 5000, 8, False)
    exclude = sp.random(50, 5000, density=0.01, format="csr", random_state=4)
    reference = topk(user_emb, item_emb, 30, exclude, chunk_size=7)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        assert_same(topk(user_emb, item_emb, 30, exclude, chunk_size=13), reference)
    finally:
        numba.set_num_threads(before)
    # without per-thread BLAS control the engine runs chunk after chunk with parallel kernels
    monkeypatch.setattr(chunks_mod, "local_thread_setter", lambda: None)
    assert_same(topk(user_emb, item_emb, 30, exclude, chunk_size=9), reference)
    cands = rng.integers(0, 5000, (50, 6))
    assert np.array_equal(rank_of(user_emb, item_emb, np.arange(50), cands, chunk_size=9),
                          rank_of(user_emb, item_emb, np.arange(50), cands))


@pytest.mark.parametrize("ties", [False, True])
def test_rank_of_matches_brute_force(ties):
    rng = np.random.default_rng(20 + ties)
    user_emb, item_emb = embeddings(rng, 15, 400, 4, ties)
    scores = canonical_scores(user_emb, item_emb)
    ids = np.arange(400)

    def rank(u, x):
        return np.sum(scores[u] > scores[u, x]) + np.sum((scores[u] == scores[u, x]) & (ids < x))

    users = np.array([3, 14, 3, 0, 9])  # repeated users are fine
    cands = rng.integers(0, 400, (5, 7))
    got = rank_of(user_emb, item_emb, users, cands, chunk_size=2)
    assert got.shape == (5, 7)
    for r, u in enumerate(users):
        for j, x in enumerate(cands[r]):
            assert got[r, j] == rank(u, x)
    pairs = rank_of(user_emb, item_emb, users, cands[:, 0])
    np.testing.assert_array_equal(pairs, got[:, 0])


def test_rank_of_agrees_with_topk_positions():
    rng = np.random.default_rng(6)
    user_emb, item_emb = embeddings(rng, 12, 700, 3, True)
    items, _ = topk(user_emb, item_emb, 50)
    ranks = rank_of(user_emb, item_emb, np.arange(12), items)
    np.testing.assert_array_equal(ranks, np.broadcast_to(np.arange(50), (12, 50)))


def test_iter_score_chunks_covers_every_user_once_with_one_buffer():
    rng = np.random.default_rng(1)
    user_emb, item_emb = embeddings(rng, 11, 7, 3, False)
    seen, buffers = [], set()
    for ids, scores in iter_score_chunks(user_emb, item_emb, users=np.arange(10, -1, -1), chunk_size=4):
        assert scores.shape == (len(ids), 7)
        np.testing.assert_allclose(scores, user_emb[ids] @ item_emb.T, rtol=1e-5, atol=1e-5)
        seen.extend(ids.tolist())
        buffers.add(scores.__array_interface__["data"][0])
    assert seen == list(range(10, -1, -1))
    assert len(buffers) == 1


@pytest.mark.parametrize(
    "call, expected",
    [
        (lambda u, v: topk(u, v, -1), "k must be >= 0"),
        (lambda u, v: topk(u, v, 2, backend="gpu"), "unknown backend"),
        (lambda u, v: topk(u, v[:, :2], 2), "dimension mismatch"),
        (lambda u, v: topk(u, np.full_like(v, np.nan), 2), "finite"),
        (lambda u, v: topk(u, v, 2, users=[0, 9]), "out of range"),
        (lambda u, v: topk(u, v, 2, exclude=np.zeros((3, 4))), "scipy.sparse"),
        (lambda u, v: topk(u, v, 2, chunk_size=0), "chunk_size"),
        (lambda u, v: topk(u * 1e20, v * 1e20, 2), "too large"),
        (lambda u, v: rank_of(u, v, [0], [[7]]), "out of range"),
        (lambda u, v: rank_of(u, v, [0, 1], [1]), "expected [2]"),
    ],
)
def test_bad_input_raises_input_error(call, expected):
    rng = np.random.default_rng(0)
    user_emb, item_emb = embeddings(rng, 3, 4, 3, False)
    with pytest.raises(InputError, match=expected.replace("[", r"\[").replace("]", r"\]")):
        call(user_emb, item_emb)


def test_fixed_split_matmul_is_the_same_on_any_number_of_workers_and_blas_threads():
    """Plain OpenBLAS changes the last bits of [B, n] @ [n, d] with its thread count."""
    rng = np.random.default_rng(0)
    a = rng.random((1000, 700)).astype(np.float32)
    b = rng.standard_normal((700, 8)).astype(np.float32)
    results = []
    for _ in range(20):  # a worker left on more BLAS threads showed up about once in 20 rounds
        for threads in (1, 2):
            with all_threads(threads):
                results += [fixed_split_matmul(a, b, workers=w) for w in (1, 2, 3)]
                results.append(fixed_split_matmul(a.T.copy().T, b))  # a strided (Fortran-order) left operand
    assert all(np.array_equal(results[0], r) for r in results[1:])
    np.testing.assert_allclose(results[0], a.astype(np.float64) @ b, rtol=1e-4, atol=1e-4)
    out = np.full((1000, 8), np.nan, np.float32)
    assert fixed_split_matmul(a, b, out=out) is out and np.array_equal(out, results[0])
