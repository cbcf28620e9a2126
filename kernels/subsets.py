"""Uniform random subsets without replacement from an allowed pool, as bit masks,
and the row kernels of the losses that consume them.

Used for the RRD "uninteresting" samples (§4): for each row r (a user, or an
item), m columns drawn uniformly without replacement among the columns that
are not forbidden for r, capped at the size of that pool (the reference's
``torch.multinomial`` silently pads with forbidden entries instead, §12 B17).

Method: selection sampling (Knuth's Algorithm S) in one pass over the columns:
an allowed column is taken with probability need / left, which yields every
m-subset of the pool with equal probability. The uniform for (row r, column
i) is a hash of (seed, r, i) (``_rng``), so a row's subset depends only on the
seed and the row id, not on which other rows are drawn or the thread count.

Output rows are bit-packed (bit i of a row is byte i >> 3, bit i & 7: NumPy's
``bitorder="little"``), so a Gowalla-sized users x items mask takes ~150 MB.
"""
from __future__ import annotations

import numpy as np
from numba import get_num_threads, njit, prange

from ._rng import seed_key, sub_key

_UNIT = 2.0 ** -53


@njit(parallel=True, cache=True)
def _subset_bits(rows, n_cols, m, f_indptr, f_indices, key, out_bits, out_counts, n_parts):
    n_rows = rows.shape[0]
    n_forbid_rows = f_indptr.shape[0] - 1
    for part in prange(n_parts):
        mark = np.zeros(n_cols, np.uint8)
        for t in range(part * n_rows // n_parts, (part + 1) * n_rows // n_parts):
            r = rows[t]
            lo = f_indptr[r] if r < n_forbid_rows else 0
            hi = f_indptr[r + 1] if r < n_forbid_rows else 0
            forbidden = 0
            for p in range(lo, hi):
                x = f_indices[p]
                if x >= 0 and x < n_cols and mark[x] == 0:
                    mark[x] = 1
                    forbidden += 1
            left = n_cols - forbidden
            need = min(m, left)
            out_counts[t] = need
            row_key = sub_key(key, r)
            for i in range(n_cols):
                if need == 0:
                    break
                if mark[i]:
                    continue
                u = np.float64(sub_key(row_key, i) >> np.uint64(11)) * _UNIT
                if u * left < need:
                    out_bits[t, i >> 3] |= np.uint8(1 << (i & 7))
                    need -= 1
                left -= 1
            for p in range(lo, hi):
                x = f_indices[p]
                if x >= 0 and x < n_cols:
                    mark[x] = 0


def sample_subset_bits(rows, n_cols: int, m: int, forbid_indptr, forbid_indices, seed: int):
    """Bit-packed uniform m-subsets of the allowed columns of each row in `rows`.

    rows: row ids (int); forbidden columns of row r are
    ``forbid_indices[forbid_indptr[r]:forbid_indptr[r+1]]`` (unsorted or
    repeated entries, -1 padding and ids outside [0, n_cols) are fine; rows
    past the CSR have none). Returns (bits uint8 [len(rows), ceil(n_cols/8)],
    counts int64 [len(rows)]) where counts = min(m, pool size).
    """
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    if rows.size and rows.min() < 0:
        raise ValueError("row ids must be >= 0")
    if m < 0 or n_cols < 0:
        raise ValueError(f"need m >= 0 and n_cols >= 0, got {m}, {n_cols}")
    bits = np.zeros((len(rows), (n_cols + 7) // 8), np.uint8)
    counts = np.zeros(len(rows), np.int64)
    if len(rows) and n_cols:
        parts = max(1, min(len(rows), 4 * get_num_threads()))
        _subset_bits(rows, int(n_cols), int(m), np.ascontiguousarray(forbid_indptr, dtype=np.int64),
                     np.ascontiguousarray(forbid_indices, dtype=np.int32), seed_key(seed), bits, counts, parts)
    return bits, counts


def unpack_rows(bits, n_cols: int) -> np.ndarray:
    """bool [rows, n_cols] from the packed rows of ``sample_subset_bits``."""
    return np.unpackbits(bits, axis=1, count=n_cols, bitorder="little").view(np.bool_)


@njit(parallel=True, cache=True)
def _unpack_float(bits, rows, out):
    n_cols = out.shape[1]
    for t in prange(rows.shape[0]):
        src = bits[rows[t]]
        dst = out[t]
        for i in range(n_cols):
            dst[i] = np.float32((src[i >> 3] >> (i & 7)) & 1)


def unpack_rows_float(bits, rows, out) -> np.ndarray:
    """out[t, i] = bit i of packed row bits[rows[t]] as float32 0/1; returns out[:len(rows)].

    One pass straight into a preallocated buffer (the RRD loss multiplies by it).
    """
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    if out.dtype != np.float32 or not out.flags.c_contiguous or out.shape[0] < len(rows):
        raise ValueError("out must be a C-contiguous float32 array with at least len(rows) rows")
    if out.shape[1] > 8 * bits.shape[1]:
        raise ValueError(f"out has {out.shape[1]} columns, the packed rows only {8 * bits.shape[1]}")
    view = out[: len(rows)]
    if len(rows):
        _unpack_float(bits, rows, view)
    return view


@njit(parallel=True, cache=True)
def _clip_scale(e, g, clipped):
    for r in prange(e.shape[0]):
        row = e[r]
        scale = g[r]
        for i in range(row.shape[0]):
            x = row[i]
            row[i] = np.float32(0.0) if x >= clipped else x * scale


def clip_scale_rows(e, g, clipped: float) -> None:
    """In place: e[r, i] = 0 where e[r, i] >= clipped, else e[r, i] * g[r].

    The backward pass of a clipped masked exp-sum: entries whose exponential
    shows they were clipped get no gradient, the rest are scaled by the row's
    incoming gradient. e: C-contiguous float32 [B, n]; g: float32 [B].
    """
    if e.dtype != np.float32 or not e.flags.c_contiguous:
        raise ValueError("e must be a C-contiguous float32 array")
    g = np.ascontiguousarray(g, dtype=np.float32)
    if g.shape != (e.shape[0],):
        raise ValueError(f"g must have one value per row ({e.shape[0]}), got shape {g.shape}")
    if e.size:
        _clip_scale(e, g, np.float32(clipped))
