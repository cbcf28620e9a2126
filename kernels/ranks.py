"""Rank of candidate items among all items of a score row.

rank(u, x) = #{i : s(u, i) > s(u, x)} + #{i : s(u, i) == s(u, x), i < x}, so the
best item has rank 0 and ties go to the lower id (the order of ``topk``).

Per row, one pass over the items buckets their scores on a fine grid laid
over the candidates' bands [c - tau, c + tau]; bucket counts give the items
surely above each band, and only items whose bucket meets a band are compared
with that candidate, exactly (canonical score, id tie rule). Cost: one scalar
pass per row plus a few comparisons per candidate, whatever the number of
candidates.

``refine_ranks`` works on fast (BLAS) scores with an error bound ``tau`` per
row and rescores with ``canonical_dot``, so ranks are exact under the
canonical score. With ``exact=True`` the row values are the scores (tau = 0).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .topk import canonical_dot

_BLOCK = 16  # rows per parallel task


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


@njit(cache=True, inline="always")
def _bucket(s, base, scale, n_buckets):
    """Monotone bucket of a score: 0 below base (and NaN), n_buckets + 1 at or past the top."""
    t = (np.float64(s) - base) * scale
    if not t >= 0.0:
        return 0
    if t >= n_buckets:
        return n_buckets + 1
    return 1 + np.int64(t)


@njit(cache=True, nogil=True)
def rank_rows(buf, lo_row, hi_row, cand_indptr, cand_items, exact, user_vecs, item_emb, tau, out_ranks):
    """Ranks of row r's candidates ``cand_items[cand_indptr[r]:cand_indptr[r + 1]]``, r in [lo_row, hi_row).

    buf rows are the scores (fast scores unless ``exact``). Candidates outside
    [0, n_items) get rank -1. Results go to the same positions of
    ``out_ranks``. Runs in the calling thread.

    Per row: the candidates' bands [c - tau, c + tau] are mapped onto a fine
    grid of score buckets spanning them; one pass over the row counts the
    items per bucket, and compares an item with a candidate only when the
    item's bucket meets that candidate's band (the bucket map is monotone, so
    every other item is surely above or surely below). Band items other than
    the candidate itself are rescored exactly, once each.
    """
    n = buf.shape[1]
    for r in range(lo_row, hi_row):
        a = cand_indptr[r]
        b = cand_indptr[r + 1]
        row = buf[r]
        u = user_vecs[r]
        tr = 0.0 if exact else tau[r]
        # valid candidates, sorted by exact score
        pos = np.empty(b - a, np.int64)
        val = np.empty(b - a, np.float32)
        m = 0
        for p in range(a, b):
            x = cand_items[p]
            if x >= 0 and x < n:
                pos[m] = p
                val[m] = row[x] if exact else canonical_dot(u, item_emb[x])
                m += 1
            else:
                out_ranks[p] = -1
        if m == 0:
            continue
        order = np.argsort(val[:m])
        cid = np.empty(m, np.int64)
        cval = np.empty(m, np.float32)
        lo = np.empty(m, np.float32)
        hi = np.empty(m, np.float32)
        for j in range(m):
            q = order[j]
            cid[j] = cand_items[pos[q]]
            cval[j] = val[q]
            lo[j] = _f32_up(np.float64(val[q]) - tr)
            hi[j] = _f32_down(np.float64(val[q]) + tr)
        # a grid of about 64 buckets per candidate over [lowest band, highest band]
        n_buckets = min(64 * m, 1 << 16)
        base = np.float64(lo[0])
        span = np.float64(hi[m - 1]) - base
        scale = n_buckets / span if span > 0.0 else 1.0
        blo = np.empty(m, np.int64)
        bhi = np.empty(m, np.int64)
        first = np.full(n_buckets + 2, -1, np.int64)  # lowest candidate whose band meets the bucket
        for j in range(m - 1, -1, -1):
            blo[j] = _bucket(lo[j], base, scale, n_buckets)
            bhi[j] = _bucket(hi[j], base, scale, n_buckets)
            for g in range(blo[j], bhi[j] + 1):
                first[g] = j
        hist = np.zeros(n_buckets + 2, np.int64)
        exact_above = np.zeros(m, np.int64)
        for i in range(n):
            s = row[i]
            g = _bucket(s, base, scale, n_buckets)
            hist[g] += 1
            j = first[g]
            if j < 0:
                continue
            e = np.float32(np.nan)
            have_e = False
            while j < m and blo[j] <= g:
                if g <= bhi[j]:
                    if s > hi[j]:
                        exact_above[j] += 1
                    elif s >= lo[j] and i != cid[j]:
                        if not have_e:
                            e = s if exact else canonical_dot(u, item_emb[i])
                            have_e = True
                        if e > cval[j] or (e == cval[j] and i < cid[j]):
                            exact_above[j] += 1
                j += 1
        # suffix sums: items in buckets strictly above a band are surely above it
        run = np.int64(0)
        for g in range(n_buckets + 1, -1, -1):
            run += hist[g]
            hist[g] = run
        for j in range(m):
            above = exact_above[j]
            if bhi[j] + 1 <= n_buckets + 1:
                above += hist[bhi[j] + 1]
            out_ranks[pos[order[j]]] = above


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
