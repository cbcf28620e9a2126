import numpy as np
import pytest

from ccd_dist.kernels import exp_rows_


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
