"""Masked top-K selection over score rows, with ties broken by lower item id.

Two kernels share one row routine:

- ``masked_topk``: the scores given are the truth. Per row, the k best items
  that are not masked, by (score descending, item id ascending).
- ``refine_topk`` (used by ``ccd_dist.ranking``): the scores come from a fast
  float32 product (BLAS) whose rounding depends on the library, the blocking
  and the thread count. It only *proposes* candidates: every item within
  ``2 * tau[row]`` of the k-th proposed score is rescored with the canonical
  dot product (``canonical_dot``) and the final order is taken on those exact
  values. ``tau`` bounds |fast score - canonical score| (see
  ``ccd_dist.ranking._inputs.error_bounds``), so the result is exactly the
  top-k under the canonical score, whatever produced the proposal.

- ``refine_candidates`` does the same for candidate lists fetched elsewhere
  (FAISS) and reports the rows whose proposal could not be certified.

Masks are CSR rows (``mask_indptr``, ``mask_indices``) addressed by
``row_users[r]``; a negative ``row_users[r]`` or one past the last CSR row means
"no mask". Mask entries may be unsorted or repeated; ids outside
[0, n_items) are ignored. Rows with fewer than k eligible items are padded
with item -1 and score -inf. Every row is computed independently, so results do
not depend on the number of threads.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

_BLOCK = 16  # rows per parallel task; scratch buffers are allocated once per task
NEG_INF = np.float32(-np.inf)


# --------------------------------------------------------------------------- canonical score


@njit(cache=True, inline="always")
def canonical_dot(u, v):
    """float32(sum_t float64(u[t]) * float64(v[t])), summed in order t = 0..d-1.

    Products of two float32 numbers are exact in float64, so the value does not
    depend on whether the compiler fuses multiply and add: it is the same on
    every path that calls this function.
    """
    acc = 0.0
    for t in range(u.shape[0]):
        acc += np.float64(u[t]) * np.float64(v[t])
    return np.float32(acc)


# --------------------------------------------------------------------------- row helpers


@njit(cache=True, inline="always")
def _worse(sa, ia, sb, ib):
    """Is (sa, ia) ranked below (sb, ib)? Lower score, or equal score and higher id."""
    return sa < sb or (sa == sb and ia > ib)


@njit(cache=True)
def _sift_down(hs, hi, pos, size):
    """Restore the min-heap (root = worst entry) below ``pos``."""
    s = hs[pos]
    i = hi[pos]
    while True:
        child = 2 * pos + 1
        if child >= size:
            break
        right = child + 1
        if right < size and _worse(hs[right], hi[right], hs[child], hi[child]):
            child = right
        if _worse(hs[child], hi[child], s, i):
            hs[pos] = hs[child]
            hi[pos] = hi[child]
            pos = child
        else:
            break
    hs[pos] = s
    hi[pos] = i


@njit(cache=True)
def _heap_select(row, k, hs, hi):
    """The k best non-NaN entries of ``row`` into the heap (hs, hi); returns the count.

    Items are visited in increasing id, so an item whose score merely equals
    the current k-th never displaces it (it has the higher id): the strict
    ``>`` test implements the tie rule. NaN (masked) never passes it.
    """
    n = row.shape[0]
    cnt = 0
    j = 0
    while j < n and cnt < k:
        s = row[j]
        if s == s:
            hs[cnt] = s
            hi[cnt] = j
            cnt += 1
        j += 1
    if cnt < k:
        return cnt
    for p in range(k // 2 - 1, -1, -1):
        _sift_down(hs, hi, p, k)
    thr = hs[0]
    while j < n:
        s = row[j]
        if s > thr:
            hs[0] = s
            hi[0] = j
            _sift_down(hs, hi, 0, k)
            thr = hs[0]
        j += 1
    return k


@njit(cache=True)
def _emit_sorted(cs, ci, m, k, out_items, out_scores, r):
    """Write the best min(k, m) of (cs, ci)[:m] by (score desc, id asc) into row r."""
    # ids ascending first, then a stable sort on descending score
    by_id = np.argsort(ci[:m], kind="mergesort")
    neg = np.empty(m, np.float32)
    for p in range(m):
        neg[p] = -cs[by_id[p]]
    order = np.argsort(neg, kind="mergesort")
    take = min(k, m)
    for p in range(take):
        q = by_id[order[p]]
        out_items[r, p] = ci[q]
        out_scores[r, p] = cs[q]
    for p in range(take, k):
        out_items[r, p] = -1
        out_scores[r, p] = NEG_INF


@njit(cache=True, inline="always")
def _mask_row(row, user, mask_indptr, mask_indices, value):
    """row[x] = value for every in-range item x of the user's mask row."""
    if user >= 0 and user < mask_indptr.shape[0] - 1:
        n = row.shape[0]
        for p in range(mask_indptr[user], mask_indptr[user + 1]):
            x = mask_indices[p]
            if x >= 0 and x < n:
                row[x] = value


# --------------------------------------------------------------------------- kernels


@njit(parallel=True, cache=True, nogil=True)
def _masked_topk_kernel(scores, row_users, mask_indptr, mask_indices, k, out_items, out_scores):
    c, n = scores.shape
    n_tasks = (c + _BLOCK - 1) // _BLOCK
    for t in prange(n_tasks):
        row = np.empty(n, np.float32)
        hs = np.empty(max(k, 1), np.float32)
        hi = np.empty(max(k, 1), np.int32)
        for r in range(t * _BLOCK, min(c, (t + 1) * _BLOCK)):
            row[:] = scores[r]
            _mask_row(row, row_users[r], mask_indptr, mask_indices, np.float32(np.nan))
            m = _heap_select(row, k, hs, hi)
            _emit_sorted(hs, hi, m, k, out_items, out_scores, r)


def masked_topk(scores, row_users, mask_indptr, mask_indices, k):
    """Top-k items of each score row, skipping masked items.

    scores: float32 [c, n_items] (not modified); row_users: int [c], the CSR row
    of each score row's mask (negative = no mask); mask_indptr / mask_indices:
    the mask CSR arrays; k >= 0.
    Returns (items int32 [c, k], scores float32 [c, k]) sorted by score
    descending, ties by lower item id; -1 / -inf padding past the eligible items.
    NaN scores count as masked.
    """
    scores = np.ascontiguousarray(scores, dtype=np.float32)
    c = scores.shape[0]
    k = int(k)
    out_items = np.empty((c, k), np.int32)
    out_scores = np.empty((c, k), np.float32)
    _masked_topk_kernel(
        scores,
        np.ascontiguousarray(row_users, dtype=np.int64),
        np.ascontiguousarray(mask_indptr, dtype=np.int64),
        np.ascontiguousarray(mask_indices, dtype=np.int32),
        k,
        out_items,
        out_scores,
    )
    return out_items, out_scores


@njit(parallel=True, cache=True, nogil=True)
def refine_topk(buf, n_rows, row_users, mask_indptr, mask_indices, k, user_vecs, item_emb, tau,
                out_items, out_scores, out_offset):
    """Certified top-k of ``buf[:n_rows]`` (fast scores; overwritten: masked -> NaN).

    Row r belongs to the user vector ``user_vecs[r]``; its result goes to row
    ``out_offset + r`` of the outputs. Final scores are ``canonical_dot`` values.
    """
    n = buf.shape[1]
    n_tasks = (n_rows + _BLOCK - 1) // _BLOCK
    for t in prange(n_tasks):
        hs = np.empty(max(k, 1), np.float32)
        hi = np.empty(max(k, 1), np.int32)
        ci = np.empty(n, np.int32)
        cs = np.empty(n, np.float32)
        for r in range(t * _BLOCK, min(n_rows, (t + 1) * _BLOCK)):
            row = buf[r]
            _mask_row(row, row_users[r], mask_indptr, mask_indices, np.float32(np.nan))
            cnt = _heap_select(row, k, hs, hi)
            if k == 0:
                continue
            # every item that could beat the k-th proposal under the exact score
            lo = -np.inf
            if cnt == k:
                lo = np.float64(hs[0]) - 2.0 * tau[r]
            m = 0
            for j in range(n):
                if np.float64(row[j]) >= lo:
                    ci[m] = j
                    m += 1
            u = user_vecs[r]
            for p in range(m):
                cs[p] = canonical_dot(u, item_emb[ci[p]])
            _emit_sorted(cs, ci, m, k, out_items, out_scores, out_offset + r)


@njit(parallel=True, cache=True, nogil=True)
def refine_candidates(cand_ids, cand_scores, row_users, mask_indptr, mask_indices, k, user_vecs,
                      item_emb, tau, complete, out_items, out_scores, out_offset, ok):
    """Certified top-k from fetched candidate lists (e.g. FAISS), or a failure flag.

    cand_ids / cand_scores [c, f]: each row's f best items by some fast score,
    sorted descending (ids < 0 are empty slots). ``complete`` says the lists hold
    every item. A row is certified when its k-th exact score beats the lowest
    fetched fast score by more than tau: no unfetched item can then reach the
    top k. ``ok[r]`` is set to 1 when row ``out_offset + r`` was written.
    """
    c, f = cand_ids.shape
    n = item_emb.shape[0]
    n_tasks = (c + _BLOCK - 1) // _BLOCK
    for t in prange(n_tasks):
        marks = np.zeros(n, np.uint8)
        ci = np.empty(f, np.int32)
        cs = np.empty(f, np.float32)
        for r in range(t * _BLOCK, min(c, (t + 1) * _BLOCK)):
            user = row_users[r]
            has_mask = user >= 0 and user < mask_indptr.shape[0] - 1
            if has_mask:
                for p in range(mask_indptr[user], mask_indptr[user + 1]):
                    x = mask_indices[p]
                    if x >= 0 and x < n:
                        marks[x] = 1
            u = user_vecs[r]
            m = 0
            for p in range(f):
                x = cand_ids[r, p]
                if x >= 0 and x < n and marks[x] == 0:
                    ci[m] = x
                    cs[m] = canonical_dot(u, item_emb[x])
                    m += 1
            if has_mask:
                for p in range(mask_indptr[user], mask_indptr[user + 1]):
                    x = mask_indices[p]
                    if x >= 0 and x < n:
                        marks[x] = 0
            good = complete
            if not good and m >= k:
                # k-th best exact score among the fetched, unmasked items
                kth = np.float32(np.inf)
                if k > 0:
                    kth = np.sort(cs[:m])[m - k]
                lowest = cand_scores[r, f - 1]
                good = np.float64(kth) > np.float64(lowest) + tau[r]
            if good:
                _emit_sorted(cs, ci, m, k, out_items, out_scores, out_offset + r)
                ok[r] = 1
            else:
                ok[r] = 0
