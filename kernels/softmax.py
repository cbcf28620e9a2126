"""Row softmax in place, returning each row's log-sum-exp (LWC-KD's neighbour softmax).

``softmax_rows_(scores, scale)`` turns every row s of a C-contiguous float32
matrix into softmax(scale * s) and returns logsumexp(scale * s) per row
(float32), with no temporary the size of the matrix: a max-and-shift pass, an
in-place NumPy exp (SIMD; Numba's scalar exp is 4x slower here), and a
normalising pass. This replaces the chain of full-matrix temporaries of the
torch expression, which dominated the teacher update on CPU. Rows are
independent and the exp is elementwise, so the result does not depend on the
thread count.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True)
def _shift_rows(scores, scale, top):
    """scores[r] <- scale * scores[r] - top[r], top[r] = max_j scale * scores[r, j]."""
    n_rows, n_cols = scores.shape
    for r in prange(n_rows):
        row = scores[r]
        best = -np.inf
        for j in range(n_cols):
            v = row[j] * scale
            row[j] = v
            if v > best:
                best = v
        for j in range(n_cols):
            row[j] -= best
        top[r] = best


@njit(parallel=True, cache=True)
def _normalise_rows(probs, top, lse):
    """probs[r] /= sum(probs[r]); lse[r] = top[r] + log(sum)."""
    n_rows, n_cols = probs.shape
    for r in prange(n_rows):
        row = probs[r]
        total = 0.0
        for j in range(n_cols):
            total += row[j]
        inv = np.float32(1.0 / total)
        for j in range(n_cols):
            row[j] *= inv
        lse[r] = top[r] + np.log(total)


def softmax_rows_(scores: np.ndarray, scale: float) -> np.ndarray:
    """In place: scores[r] <- softmax(scale * scores[r]); returns logsumexp(scale * scores[r]) [n_rows]."""
    if scores.dtype != np.float32 or scores.ndim != 2 or not scores.flags.c_contiguous:
        raise ValueError("softmax_rows_ needs a C-contiguous 2-D float32 array")
    lse = np.empty(scores.shape[0], np.float32)
    if scores.shape[1] == 0:
        lse[:] = -np.inf
        return lse
    top = np.empty(scores.shape[0], np.float32)
    _shift_rows(scores, np.float32(scale), top)
    np.exp(scores, out=scores)
    _normalise_rows(scores, top, lse)
    return lse
