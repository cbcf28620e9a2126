"""Negative sampling kernel: validity, uniformity, determinism, input handling."""
import numba
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare

from ccd_dist.errors import InputError
from ccd_dist.kernels import sample_negatives
from ccd_dist.kernels._rng import sub_key
from ccd_dist.kernels.sampling import sample_negatives_for_rows


def csr(rows):
    """(indptr, indices) from a list of per-user item lists."""
    indptr = np.r_[0, np.cumsum([len(r) for r in rows])].astype(np.int64)
    indices = np.array([i for r in rows for i in r], dtype=np.int64)
    return indptr, indices


def forbidden_sets(pos_rows, ex_rows, n_items):
    """Reference forbidden set per user, following the documented conventions."""
    out = []
    for u, items in enumerate(pos_rows):
        f = set(items)
        if u < len(ex_rows):
            f |= {x for x in ex_rows[u] if 0 <= x < n_items}
        out.append(f)
    return out


def owners(indptr):
    return np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))


def random_csr(rng, n_users, n_items, mean_deg):
    rows = [list(rng.choice(n_items, size=min(n_items - 1, rng.poisson(mean_deg)), replace=False))
            for _ in range(n_users)]
    return rows


def test_rng_matches_splitmix64_reference_outputs():
    # Published splitmix64 outputs for state 1234567 (Vigna's reference generator).
    expected = [6457827717110365317, 3203168211198807973, 9817491932198370423,
                4593380528125082431, 16408922859458223821]
    assert [int(sub_key(np.uint64(1234567), i)) for i in range(5)] == expected


def test_shape_dtype_and_empty_cases():
    indptr, indices = csr([[1, 3], [], [0, 2, 4]])
    out = sample_negatives(indptr, indices, 6, 3, seed=0)
    assert out.shape == (5, 3) and out.dtype == np.int32
    assert sample_negatives(indptr, indices, 6, 0, seed=0).shape == (5, 0)
    empty = sample_negatives(np.zeros(4, np.int64), np.empty(0, np.int64), 6, 2, seed=0)
    assert empty.shape == (0, 2) and empty.dtype == np.int32


def test_negatives_avoid_positives_and_exclusions():
    rng = np.random.default_rng(1)
    n_items = 300
    pos = random_csr(rng, 400, n_items, 15)
    ex = [list(rng.integers(-1, n_items + 5, size=rng.integers(0, 60))) for _ in range(300)]
    indptr, indices = csr(pos)
    ex_ptr, ex_idx = csr(ex)
    out = sample_negatives(indptr, indices, n_items, 4, 7, ex_ptr, ex_idx.astype(np.int32))
    forb = forbidden_sets(pos, ex, n_items)
    for r, u in enumerate(owners(indptr)):
        assert not set(out[r].tolist()) & forb[u]
    assert out.min() >= 0 and out.max() < n_items


def test_every_eligible_item_is_drawn_uniformly_sparse_dense_and_plain_users():
    n_items = 40
    pos = [
        [x * 7 % 40 for x in range(30)],  # dense, unsorted: 30 of 40 forbidden -> rank selection
        [1, 5, 7],  # sparse with exclusions below -> rejection sampling
        [3],  # no exclusion row
    ]
    ex = [[], [10, -1, 99, 10, 11, 1]]
    indptr, indices = csr(pos)
    ex_ptr, ex_idx = csr(ex)
    n_neg = 6000
    out = sample_negatives(indptr, indices, n_items, n_neg, 3, ex_ptr, ex_idx)
    forb = forbidden_sets(pos, ex, n_items)
    who = owners(indptr)
    for u in range(len(pos)):
        draws = out[who == u].ravel()
        eligible = sorted(set(range(n_items)) - forb[u])
        counts = np.bincount(draws, minlength=n_items)
        assert set(np.flatnonzero(counts)) == set(eligible)
        assert chisquare(counts[eligible]).pvalue > 1e-4


def test_single_eligible_item_is_always_drawn():
    n_items = 5
    indptr, indices = csr([[0, 1, 3], [2]])
    ex_ptr, ex_idx = csr([[4, 4, -1]])
    out = sample_negatives(indptr, indices, n_items, 7, 11, ex_ptr, ex_idx)
    assert (out[:3] == 2).all()
    assert set(out[3:].ravel()) <= {0, 1, 3, 4}


def test_deterministic_across_calls_threads_and_n_neg(monkeypatch):
    from ccd_dist.kernels import sampling

    monkeypatch.setattr(sampling, "_PARALLEL_MIN_WORK", 0)  # always the parallel kernel here
    rng = np.random.default_rng(2)
    n_items = 500
    pos = random_csr(rng, 3000, n_items, 12)
    ex = [list(rng.integers(0, n_items, size=30)) for _ in range(2000)]
    indptr, indices = csr(pos)
    ex_ptr, ex_idx = csr(ex)
    args = (indptr, indices, n_items, 3, 123, ex_ptr, ex_idx)
    threads = numba.get_num_threads()
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs at least 2 Numba threads")
    try:
        numba.set_num_threads(1)
        one = sample_negatives(*args)
        numba.set_num_threads(2)
        two = sample_negatives(*args)
        again = sample_negatives(*args)
    finally:
        numba.set_num_threads(threads)
    np.testing.assert_array_equal(one, two)
    np.testing.assert_array_equal(two, again)
    # column j of a row does not depend on how many negatives are asked for
    wider = sample_negatives(indptr, indices, n_items, 5, 123, ex_ptr, ex_idx)
    np.testing.assert_array_equal(wider[:, :3], one)


def test_different_seeds_differ_and_any_int_seed_works():
    rng = np.random.default_rng(3)
    indptr, indices = csr(random_csr(rng, 200, 1000, 10))
    a = sample_negatives(indptr, indices, 1000, 2, 0)
    b = sample_negatives(indptr, indices, 1000, 2, 1)
    assert (a != b).mean() > 0.9
    c = sample_negatives(indptr, indices, 1000, 2, -1)
    d = sample_negatives(indptr, indices, 1000, 2, 2**64 - 1)  # same seed modulo 2**64
    np.testing.assert_array_equal(c, d)


def test_for_rows_matches_full_call():
    rng = np.random.default_rng(4)
    n_items = 80
    pos = random_csr(rng, 50, n_items, 6)
    ex = [list(rng.integers(-1, n_items, size=10)) for _ in range(30)]
    indptr, indices = csr(pos)
    ex_ptr, ex_idx = csr(ex)
    full = sample_negatives(indptr, indices, n_items, 3, 9, ex_ptr, ex_idx)
    rows = rng.integers(0, len(indices), size=40)  # unsorted, with repeats
    part = sample_negatives_for_rows(indptr, indices, rows, n_items, 3, 9, ex_ptr, ex_idx)
    np.testing.assert_array_equal(part, full[rows])
    assert sample_negatives_for_rows(indptr, indices, [], n_items, 3, 9).shape == (0, 3)
    with pytest.raises(ValueError, match="rows"):
        sample_negatives_for_rows(indptr, indices, [len(indices)], n_items, 3, 9)


def test_user_without_eligible_item_is_an_error_naming_the_user():
    n_items = 4
    indptr, indices = csr([[0], [0, 1], [], [2]])
    ex_ptr, ex_idx = csr([[], [2, 3, 3], [0, 1, 2, 3]])  # user 2 is full but has no positives
    with pytest.raises(ValueError, match=r"user 1 has no eligible"):
        sample_negatives(indptr, indices, n_items, 1, 0, ex_ptr, ex_idx)
    with pytest.raises(ValueError, match=r"user 1 has no eligible"):
        sample_negatives_for_rows(indptr, indices, [2], n_items, 1, 0, ex_ptr, ex_idx)
    ok = sample_negatives_for_rows(indptr, indices, [0, 3], n_items, 1, 0, ex_ptr, ex_idx)
    assert ok.shape == (2, 1)
    with pytest.raises(ValueError, match=r"user 0 has no eligible"):
        sample_negatives(*csr([[1, 0, 1]]), 2, 1, 0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n_items=0), "n_items"),
        (dict(n_neg=-1), "n_neg"),
        (dict(indices=np.array([0, 1, 6])), r"6 of user 1 .*outside \[0, 6\)"),
        (dict(indices=np.array([0, -1, 2])), r"-1 of user 0"),
        (dict(indptr=np.array([0, 2, 1])), "indptr"),
        (dict(indptr=np.array([0, 2])), "indptr"),
        (dict(exclude_indptr=np.array([0, 0, 0, 0])), "exclude_indptr and exclude_indices"),
        (dict(exclude_indptr=np.zeros(4, int), exclude_indices=np.empty(0, int)), "3 rows"),
        (dict(indices=np.array([0.0, 1.0, 2.0])), "integers"),
    ],
)
def test_bad_input_is_rejected(kwargs, message):
    args = dict(indptr=np.array([0, 2, 3]), indices=np.array([0, 1, 2]), n_items=6, n_neg=2, seed=0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message) as info:
        sample_negatives(**args)
    assert isinstance(info.value, InputError)


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.int64, np.uint16, np.uint32, np.uint64])
def test_integer_dtypes_give_identical_results(dtype):
    rng = np.random.default_rng(5)
    pos = random_csr(rng, 30, 100, 5)
    ex = [list(rng.integers(0, 100, size=8)) for _ in range(20)]
    indptr, indices = csr(pos)
    ex_ptr, ex_idx = csr(ex)
    ref = sample_negatives(indptr, indices, 100, 2, 4, ex_ptr, ex_idx)
    got = sample_negatives(indptr.astype(dtype), indices.astype(dtype), np.int64(100), 2, np.uint32(4),
                           ex_ptr.astype(dtype), ex_idx.astype(dtype))
    np.testing.assert_array_equal(got, ref)


def test_exclusions_with_padding_out_of_range_ids_and_fewer_rows():
    n_items = 30
    pos = [[0], [1], [2], [3]]
    ex = [[5, 6, -1, -1], [40, 2**40, -7, 7]]  # rows for users 0 and 1 only
    indptr, indices = csr(pos)
    ex_ptr, ex_idx = csr(ex)
    out64 = sample_negatives(indptr, indices, n_items, 3000, 1, ex_ptr, ex_idx)
    ex32 = np.where((ex_idx >= 0) & (ex_idx < n_items), ex_idx, -1).astype(np.int32)
    out32 = sample_negatives(indptr, indices, n_items, 3000, 1, ex_ptr, ex32)
    np.testing.assert_array_equal(out64, out32)
    forb = forbidden_sets(pos, ex, n_items)
    for u in range(4):
        assert set(out64[u].tolist()) == set(range(n_items)) - forb[u]


@st.composite
def small_problem(draw):
    n_items = draw(st.integers(1, 12))
    n_users = draw(st.integers(1, 6))
    item = st.integers(0, n_items - 1)
    pos = [draw(st.lists(item, max_size=n_items + 2)) for _ in range(n_users)]  # unsorted, repeats
    n_ex = draw(st.integers(0, n_users))
    ex = [draw(st.lists(st.integers(-2, n_items + 2), max_size=n_items + 3)) for _ in range(n_ex)]
    n_neg = draw(st.integers(0, 4))
    seed = draw(st.integers(-(2**70), 2**70))
    return n_items, pos, ex, n_neg, seed


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_problem())
def test_property_random_small_matrices(problem):
    n_items, pos, ex, n_neg, seed = problem
    indptr, indices = csr(pos)
    ex_ptr, ex_idx = csr(ex)
    forb = forbidden_sets(pos, ex, n_items)
    full = [u for u, items in enumerate(pos) if items and len(forb[u]) == n_items]
    if full and n_neg > 0:
        with pytest.raises(ValueError, match=f"user {full[0]} has no eligible"):
            sample_negatives(indptr, indices, n_items, n_neg, seed, ex_ptr, ex_idx)
        return
    out = sample_negatives(indptr, indices, n_items, n_neg, seed, ex_ptr, ex_idx)
    assert out.shape == (len(indices), n_neg) and out.dtype == np.int32
    for r, u in enumerate(owners(indptr)):
        eligible = set(range(n_items)) - forb[u]
        assert set(out[r].tolist()) <= eligible
        if len(eligible) == 1:
            assert (out[r] == min(eligible)).all()
    rows = np.arange(len(indices))[::-1]
    np.testing.assert_array_equal(
        sample_negatives_for_rows(indptr, indices, rows, n_items, n_neg, seed, ex_ptr, ex_idx), out[rows]
    )


def test_parallel_and_serial_kernels_agree_and_the_stamp_map_resets(monkeypatch):
    # 70,000 users in one chunk run past the 65,535 uint16 stamps, so the map is reset mid-chunk.
    from ccd_dist.kernels import sampling

    n_users, n_items = 70_000, 3
    indptr = np.arange(n_users + 1, dtype=np.int64)
    indices = np.arange(n_users, dtype=np.int64) % n_items
    ex_ptr = np.arange(n_users + 1, dtype=np.int64)
    ex_idx = (indices + 1) % n_items
    monkeypatch.setattr(sampling, "_PARALLEL_MIN_WORK", 0)
    many = sample_negatives(indptr, indices, n_items, 2, 5, ex_ptr, ex_idx)
    monkeypatch.setattr(sampling, "_CHUNK_WORK", 10**12)  # one chunk: the serial kernel
    one = sample_negatives(indptr, indices, n_items, 2, 5, ex_ptr, ex_idx)
    np.testing.assert_array_equal(one, many)
    np.testing.assert_array_equal(one, np.repeat(((indices + 2) % n_items)[:, None], 2, axis=1))
