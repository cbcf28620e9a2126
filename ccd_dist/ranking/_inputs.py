"""Input normalisation for the ranking engine: one dtype per argument, checked once.

Keeping the kernels to one signature each keeps Numba's compile time (and its
on-disk cache) small.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ccd_dist.errors import InputError

# Any float32 summation of d products is within gamma_d * sum|u_t v_t| of the
# exact value (gamma_d ~ d * 2**-24), and the canonical score within 2**-24 of
# it; (d + 4) * 2**-23 is twice that, and sum|u_t v_t| <= |u| |v|. The absolute
# term covers products that underflow below the float32 normal range, or that
# the fast product flushes to 0 (``_fpmode``: each input or product below 2**-126
# moves the sum by at most 2**-126 times the larger of 1, |u_t| and |v_t|).
_REL = 2.0 ** -23
_ABS = 2.0 ** -120
_MAX_SCORE = 1e36  # keeps every product and partial sum finite in float32


def as_matrix(x, name: str) -> np.ndarray:
    """A C-contiguous float32 [rows, d] numpy array from numpy or torch input."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor, without importing torch
        x = x.detach().cpu()
        if hasattr(x, "float"):
            x = x.float()
        x = x.numpy()
    arr = np.ascontiguousarray(np.asarray(x), dtype=np.float32)
    if arr.ndim != 2:
        raise InputError(f"expected a 2-D [rows, dim] array, got shape {arr.shape}", path=name)
    if arr.size and not np.isfinite(arr).all():
        raise InputError("embeddings must be finite (found NaN or inf)", path=name)
    return arr


def check_pair(user_emb: np.ndarray, item_emb: np.ndarray) -> float:
    """Check the two matrices go together; returns the largest item norm (for ``error_bounds``)."""
    if user_emb.shape[1] != item_emb.shape[1]:
        raise InputError(
            f"dimension mismatch: user_emb has {user_emb.shape[1]} columns, item_emb {item_emb.shape[1]}",
            path="item_emb",
        )
    item_norm = float(row_norms(item_emb).max(initial=0.0))
    bound = float(row_norms(user_emb).max(initial=0.0)) * item_norm
    if bound > _MAX_SCORE:
        raise InputError(f"embedding norms too large (|u| * |v| up to {bound:.3g}, limit {_MAX_SCORE:.0e})",
                         path="user_emb")
    return item_norm


def row_norms(x: np.ndarray) -> np.ndarray:
    return np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))


def error_bounds(user_vecs: np.ndarray, item_max_norm: float) -> np.ndarray:
    """Per user row, a bound on |fast float32 score - canonical score| over all items.

    item_max_norm: the largest item embedding norm (``row_norms(item_emb).max()``).
    """
    d = user_vecs.shape[1]
    norms = row_norms(user_vecs)
    return (d + 4) * (_REL * norms * item_max_norm + _ABS * (1.0 + norms + item_max_norm))


def as_ids(ids, n: int, name: str) -> np.ndarray:
    """int64 ids in [0, n); None means all of them."""
    if ids is None:
        return np.arange(n, dtype=np.int64)
    if hasattr(ids, "detach"):
        ids = ids.detach().cpu().numpy()
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise InputError(f"expected a 1-D array of ids, got shape {arr.shape}", path=name)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise InputError(f"expected integer ids, got dtype {arr.dtype}", path=name)
    arr = arr.astype(np.int64, copy=False)
    if arr.size and (arr.min() < 0 or arr.max() >= n):
        bad = arr[(arr < 0) | (arr >= n)][0]
        raise InputError(f"id {bad} out of range [0, {n})", path=name)
    return arr


def as_mask(exclude, name: str = "exclude"):
    """(indptr int64, indices int32) of a scipy sparse mask; empty arrays for None.

    Rows past the matrix have no mask; the kernels ignore columns past n_items.
    """
    if exclude is None:
        return np.zeros(1, np.int64), np.zeros(0, np.int32)
    if not sp.issparse(exclude):
        raise InputError(f"expected a scipy.sparse matrix, got {type(exclude).__name__}", path=name)
    csr = exclude.tocsr()
    return (np.ascontiguousarray(csr.indptr, dtype=np.int64),
            np.ascontiguousarray(csr.indices, dtype=np.int32))


def mask_counts(indptr: np.ndarray, users: np.ndarray) -> np.ndarray:
    """Stored mask entries per user (an upper bound on the masked items)."""
    n_rows = indptr.shape[0] - 1
    inside = users < n_rows
    counts = np.zeros(users.shape[0], np.int64)
    u = users[inside]
    counts[inside] = indptr[u + 1] - indptr[u]
    return counts


def default_chunk(n_items: int, chunk_size) -> int:
    """Users per chunk: about 64 MB of float32 scores per worker, within [16, 4096].

    Large enough for an efficient single-threaded BLAS product (which wants
    hundreds of rows), small enough to keep memory modest.
    """
    if chunk_size is not None:
        chunk_size = int(chunk_size)
        if chunk_size < 1:
            raise InputError(f"chunk_size must be >= 1, got {chunk_size}", path="chunk_size")
        return chunk_size
    return int(min(4096, max(16, (64 << 20) // (4 * max(n_items, 1)))))
