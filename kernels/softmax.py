"""Row exponentials in place with their row sums (LWC-KD's neighbour softmax), and the row softmax.

``exp_rows_(scores)`` turns a C-contiguous float32 matrix s into exp(s) in
place and returns sum_j exp(s_rj) per row. The caller shifts the scores so
that exp cannot overflow (``ccd_dist.ccd.lwckd`` folds an upper bound of each
row into the matrix product that makes them), so no max pass and no
normalising pass are needed: the softmax is e / total, and the division is
folded into the backward's row scaling. NumPy's exp is SIMD (Numba's scalar
exp is 4x slower here), and one row is always summed by one pairwise
reduction, so the result does not depend on the thread count.
"""
from __future__ import annotations

import numpy as np


def _check(scores: np.ndarray, name: str) -> None:
    if scores.dtype != np.float32 or scores.ndim != 2 or not scores.flags.c_contiguous:
        raise ValueError(f"{name} needs a C-contiguous 2-D float32 array")


def exp_rows_(scores: np.ndarray) -> np.ndarray:
    """In place: scores <- exp(scores); returns the row sums of the result (float32 [n_rows])."""
    _check(scores, "exp_rows_")
    np.exp(scores, out=scores)
    return scores.sum(axis=1, dtype=np.float32)


def softmax_rows_(scores: np.ndarray, scale: float) -> np.ndarray:
    """In place: scores[r] <- softmax(scale * scores[r]); returns logsumexp(scale * scores[r]) [n_rows].

    The general form (the row max as the shift) for callers without a bound of their own.
    """
    _check(scores, "softmax_rows_")
    if scores.shape[1] == 0:
        return np.full(scores.shape[0], -np.inf, np.float32)
    scores *= np.float32(scale)
    top = scores.max(axis=1)
    scores -= top[:, None]
    total = exp_rows_(scores)
    scores /= total[:, None]
    return top + np.log(total)
