"""Rank of candidate items among all items of a score row.

rank(u, x) = #{i : s(u, i) > s(u, x)} + #{i : s(u, i) == s(u, x), i < x}, so the
best item has rank 0 and ties go to the lower id (the order of ``topk``).

Per row and candidate x with exact score c, two branch-free counts over the
row (which the compiler vectorises) give the items surely above
(fast score > c + tau) and those within [c - tau, c + tau]; only when that band
holds more than x itself are its items rescored exactly and compared with the
id tie rule. The row is walked in tiles; a tile with no item at or above the
lowest band of all candidates is skipped with one count, so candidates near
the top of the ranking are cheap.

``refine_ranks`` works on fast (BLAS) scores with an error bound ``tau`` per
row and rescores with ``canonical_dot``, so ranks are exact under the
canonical score. With ``exact=True`` the row values are the scores (tau = 0).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .topk import canonical_dot

_BLOCK = 16  # rows per parallel task
_TILE = 256  # items per tile of the counting loop


@njit(cache=True, inline="always")
def _f32_down(x):
    """Largest float32 <= x (x a float64)."""
    f = np.float32(x)
    if np.float64(f) > x:
        f = np.float32(np.nextafter(f, np.float32(-np.inf)))
    return f


@njit(cache=True, inline="always")
def _f32_up(x):
    """Smallest float32 >= x (x a float64)."""
    f = np.float32(x)
    if np.float64(f) < x:
        f = np.float32(np.nextafter(f, np.float32(np.inf)))
    return f


@njit(cache=True)
def _count_row(row, lo, hi, floor, above, band):
    """above[j] += #(row > hi[j]), band[j] += #(lo[j] <= row <= hi[j]), tile by tile."""
    n = row.shape[0]
    m = lo.shape[0]
    for start in range(0, n, _TILE):
        end = min(n, start + _TILE)
        reach = 0
        for i in range(start, end):
            reach += np.int32(row[i] >= floor)
        if reach == 0:
            continue
        for j in range(m):
            a = 0
            b = 0
            h = hi[j]
            g = lo[j]
            for i in range(start, end):
                s = row[i]
                a += np.int32(s > h)
                b += np.int32(s >= g)
            above[j] += a
            band[j] += b - a


@njit(cache=True, nogil=True)
def rank_rows(buf, lo_row, hi_row, cand_indptr, cand_items, exact, user_vecs, item_emb, tau, out_ranks):
    """Ranks of row r's candidates ``cand_items[cand_indptr[r]:cand_indptr[r + 1]]``, r in [lo_row, hi_row).

    buf rows are the scores (fast scores unless ``exact``). Candidates outside
    [0, n_items) get rank -1. Results go to the same positions of
    ``out_ranks``. Runs in the calling thread.
    """
    n = buf.shape[1]
    for r in range(lo_row, hi_row):
        a = cand_indptr[r]
        b = cand_indptr[r + 1]
        row = buf[r]
        u = user_vecs[r]
        tr = 0.0 if exact else tau[r]
        pos = np.empty(b - a, np.int64)
        val = np.empty(b - a, np.float32)
        lo = np.empty(b - a, np.float32)
        hi = np.empty(b - a, np.float32)
        m = 0
        for p in range(a, b):
            x = cand_items[p]
            if x >= 0 and x < n:
                c = row[x] if exact else canonical_dot(u, item_emb[x])
                pos[m] = p
                val[m] = c
                lo[m] = _f32_up(np.float64(c) - tr)
                hi[m] = _f32_down(np.float64(c) + tr)
                m += 1
            else:
                out_ranks[p] = -1
        if m == 0:
            continue
        above = np.zeros(m, np.int64)
        band = np.zeros(m, np.int64)
        _count_row(row, lo[:m], hi[:m], lo[:m].min(), above, band)
        for j in range(m):
            rank = above[j]
            if band[j] > 1:  # more than the candidate itself: settle the band exactly
                x = cand_items[pos[j]]
                c = val[j]
                for i in range(n):
                    s = row[i]
                    if s >= lo[j] and s <= hi[j] and i != x:
                        e = s if exact else canonical_dot(u, item_emb[i])
                        if e > c or (e == c and i < x):
                            rank += 1
            out_ranks[pos[j]] = rank


@njit(parallel=True, cache=True, nogil=True)
def refine_ranks(buf, n_rows, cand_indptr, cand_items, exact, user_vecs, item_emb, tau, out_ranks):
    """``rank_rows`` over ``buf[:n_rows]``, in parallel blocks of rows."""
    n_tasks = (n_rows + _BLOCK - 1) // _BLOCK
    for t in prange(n_tasks):
        rank_rows(buf, t * _BLOCK, min(n_rows, (t + 1) * _BLOCK), cand_indptr, cand_items, exact,
                  user_vecs, item_emb, tau, out_ranks)


def rank_of_candidates(scores, cand_items, cand_indptr=None):
    """0-based rank of candidate items among all items of each score row.

    scores: float32 [c, n_items], taken as exact. cand_items: int [c, m] (one
    candidate list per row), or, with ``cand_indptr`` (int [c + 1]), a flat
    ragged list where row r owns cand_items[cand_indptr[r]:cand_indptr[r + 1]].
    Returns int64 ranks shaped like cand_items; -1 for ids outside
    [0, n_items). rank = items with a strictly higher score + items with an
    equal score and a lower id. Scores must not be NaN.
    """
    scores = np.ascontiguousarray(scores, dtype=np.float32)
    if scores.ndim != 2:
        raise ValueError(f"scores must be 2-D, got shape {scores.shape}")
    c = scores.shape[0]
    items = np.asarray(cand_items)
    shape = items.shape
    if cand_indptr is None:
        if items.ndim != 2 or items.shape[0] != c:
            raise ValueError(f"cand_items must be [{c}, m] without cand_indptr, got shape {items.shape}")
        cand_indptr = np.arange(c + 1, dtype=np.int64) * items.shape[1]
    flat = np.ascontiguousarray(items.reshape(-1), dtype=np.int64)
    out = np.empty(flat.shape[0], np.int64)
    refine_ranks(scores, c, np.ascontiguousarray(cand_indptr, dtype=np.int64), flat, True,
                 np.zeros((c, 1), np.float32), np.zeros((1, 1), np.float32), np.zeros(c, np.float64), out)
    return out.reshape(shape)
