import numpy as np
import pytest

from ccd_dist.kernels import exp_rows_, softmax_rows_


def test_exp_rows_matches_a_float64_reference():
    rng = np.random.default_rng(0)
    scores = -np.abs(rng.standard_normal((5, 300)) * 20).astype(np.float32)  # shifted: every entry <= 0
    work = scores.copy()
    total = exp_rows_(work)
    np.testing.assert_allclose(work, np.exp(scores.astype(np.float64)), rtol=1e-6, atol=1e-30)
    np.testing.assert_allclose(total, np.exp(scores.astype(np.float64)).sum(1), rtol=1e-5)
    assert total.dtype == np.float32


def test_exp_rows_rejects_non_float32_input():
    with pytest.raises(ValueError, match="float32"):
        exp_rows_(np.zeros((2, 3)))


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


def test_softmax_rows_rejects_non_float32_input():
    with pytest.raises(ValueError, match="float32"):
        softmax_rows_(np.zeros((2, 3)), 1.0)
