import numpy as np
import pytest
from numba import get_num_threads, set_num_threads

from ccd_dist.kernels import softmax_rows_


def test_softmax_rows_matches_a_float64_reference_and_does_not_overflow():
    rng = np.random.default_rng(0)
    scores = (rng.standard_normal((5, 300)) * 40).astype(np.float32)  # exp(40 * 0.5) would overflow float32
    scores[2, 7] = 500.0
    ref = scores.astype(np.float64) * 0.5
    ref_lse = np.log(np.exp(ref - ref.max(1, keepdims=True)).sum(1)) + ref.max(1)
    work = scores.copy()
    lse = softmax_rows_(work, 0.5)
    np.testing.assert_allclose(lse, ref_lse, rtol=1e-6)
    np.testing.assert_allclose(work, np.exp(ref - ref_lse[:, None]), rtol=1e-5, atol=1e-30)
    np.testing.assert_allclose(work.sum(1), 1.0, rtol=1e-5)
    assert np.isfinite(work).all() and work[2, 7] == pytest.approx(1.0)


def test_softmax_rows_is_identical_at_any_thread_count():
    scores = np.random.default_rng(1).standard_normal((64, 257)).astype(np.float32)
    before = get_num_threads()
    outs = []
    try:
        for threads in (1, before):
            set_num_threads(threads)
            work = scores.copy()
            outs.append((softmax_rows_(work, 0.2), work))
    finally:
        set_num_threads(before)
    assert np.array_equal(outs[0][0], outs[1][0]) and np.array_equal(outs[0][1], outs[1][1])


def test_softmax_rows_rejects_non_float32_input():
    with pytest.raises(ValueError, match="float32"):
        softmax_rows_(np.zeros((2, 3)), 1.0)
