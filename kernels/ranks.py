"""Rank of candidate items among all items of a score row.

rank(u, x) = #{i : s(u, i) > s(u, x)} + #{i : s(u, i) == s(u, x), i < x}, so the
best item has rank 0 and ties go to the lower id (the order of ``topk``).

Per row the candidates are sorted once by (score desc, id asc); every item is
then placed among them with a binary search, and a prefix sum turns the
placements into ranks: O(n_items * log(candidates)) per row instead of
O(n_items * candidates). An item scoring below the worst candidate is skipped
with one comparison.

``refine_ranks`` works on fast (BLAS) scores with an error bound ``tau`` per
row: candidates get their canonical score (``canonical_dot``); an item whose fast
score is within tau of a candidate's is rescored canonically before it is
compared, so ranks are exact under the canonical score. With ``exact=True``
the row values themselves are the scores (tau must be 0).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .topk import canonical_dot

_BLOCK = 16


@njit(cache=True, inline="always")
def _first_below(vals, lo, hi, x):
    """First q in [lo, hi) with vals[q] < x, for vals sorted descending (hi if none)."""
    while lo < hi:
        mid = (lo + hi) >> 1
        if vals[mid] < x:
            hi = mid
        else:
            lo = mid + 1
    return lo


@njit(cache=True, inline="always")
def _first_at_or_below(vals, lo, hi, x):
    """First q in [lo, hi) with vals[q] <= x, for vals sorted descending (hi if none)."""
    while lo < hi:
        mid = (lo + hi) >> 1
        if vals[mid] <= x:
            hi = mid
        else:
            lo = mid + 1
    return lo


@njit(parallel=True, cache=True, nogil=True)
def refine_ranks(buf, n_rows, cand_indptr, cand_items, exact, user_vecs, item_emb, tau, out_ranks):
    """Ranks of row r's candidates ``cand_items[cand_indptr[r]:cand_indptr[r + 1]]``.

    buf[:n_rows] are the rows' scores (fast scores unless ``exact``). Candidates
    outside [0, n_items) get rank -1. Results go to the same positions of
    ``out_ranks``.
    """
    n = buf.shape[1]
    n_tasks = (n_rows + _BLOCK - 1) // _BLOCK
    for t in prange(n_tasks):
        for r in range(t * _BLOCK, min(n_rows, (t + 1) * _BLOCK)):
            a = cand_indptr[r]
            b = cand_indptr[r + 1]
            row = buf[r]
            # valid candidates and their exact scores
            m = 0
            pos = np.empty(b - a, np.int64)
            val = np.empty(b - a, np.float64)
            for p in range(a, b):
                x = cand_items[p]
                if x >= 0 and x < n:
                    pos[m] = p
                    if exact:
                        val[m] = np.float64(row[x])
                    else:
                        val[m] = np.float64(canonical_dot(user_vecs[r], item_emb[x]))
                    m += 1
                else:
                    out_ranks[p] = -1
            if m == 0:
                continue
            # sort by (score desc, id asc): ids ascending, then stable on -score
            ids = np.empty(m, np.int64)
            for q in range(m):
                ids[q] = cand_items[pos[q]]
            by_id = np.argsort(ids, kind="mergesort")
            neg = np.empty(m, np.float64)
            for q in range(m):
                neg[q] = -val[by_id[q]]
            order = np.argsort(neg, kind="mergesort")
            sv = np.empty(m, np.float64)
            sid = np.empty(m, np.int64)
            for q in range(m):
                src = by_id[order[q]]
                sv[q] = val[src]
                sid[q] = ids[src]
            tr = tau[r]
            worst = sv[m - 1] - tr
            cnt = np.zeros(m + 1, np.int64)
            u = user_vecs[r]
            for i in range(n):
                s = np.float64(row[i])
                if s < worst:
                    continue
                hi_q = _first_below(sv, 0, m, s - tr)       # from here on: surely beaten
                lo_q = _first_at_or_below(sv, 0, hi_q, s + tr)  # before here: surely not
                q = hi_q
                if lo_q < hi_q:
                    e = s
                    if not exact:
                        e = np.float64(canonical_dot(u, item_emb[i]))
                    q = lo_q
                    while q < hi_q and not (e > sv[q] or (e == sv[q] and i < sid[q])):
                        q += 1
                cnt[q] += 1
            run = 0
            for q in range(m):
                run += cnt[q]
                out_ranks[pos[by_id[order[q]]]] = run


def rank_of_candidates(scores, cand_items, cand_indptr=None):
    """0-based rank of candidate items among all items of each score row.

    scores: float32 [c, n_items], taken as exact. cand_items: int [c, m] (one
    candidate list per row), or, with ``cand_indptr`` (int [c + 1]), a flat
    ragged list where row r owns cand_items[cand_indptr[r]:cand_indptr[r + 1]].
    Returns int64 ranks shaped like cand_items; -1 for ids outside
    [0, n_items). rank = items with a strictly higher score + items with an equal
    score and a lower id.
    """
    scores = np.ascontiguousarray(scores, dtype=np.float32)
    c = scores.shape[0]
    items = np.asarray(cand_items)
    shape = items.shape
    if cand_indptr is None:
        if items.ndim != 2 or items.shape[0] != c:
            raise ValueError(f"cand_items must be [{c}, m] without cand_indptr, got shape {items.shape}")
        cand_indptr = np.arange(c + 1, dtype=np.int64) * items.shape[1]
    flat = np.ascontiguousarray(items.reshape(-1), dtype=np.int64)
    out = np.empty(flat.shape[0], np.int64)
    dummy_vecs = np.zeros((c, 1), np.float32)
    dummy_items = np.zeros((1, 1), np.float32)
    refine_ranks(scores, c, np.ascontiguousarray(cand_indptr, dtype=np.int64), flat, True,
                 dummy_vecs, dummy_items, np.zeros(c, np.float64), out)
    return out.reshape(shape)
