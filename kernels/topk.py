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

Selection per row: a threshold guessed from a strided sample of the row is
checked by one vectorised pass that collects every item at or above it (about
2k items; everything eligible when the guess was too high), then the k-th
best of those candidates is found with a partial sort. No heap, no full sort.

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

_HIT = 16  # items per vectorised threshold test
_SAMPLE = 1024  # strided sample used to guess a threshold


@njit(cache=True)
def _collect(row, t, ci, cs):
    """Items with t <= score and score > -inf, in increasing id, into (ci, cs); returns the count.

    Blocks of ``_HIT`` items are first tested with a branch-free count, which
    the compiler vectorises; only blocks holding a hit are walked item by item.
    """
    n = row.shape[0]
    m = 0
    base = 0
    while base + _HIT <= n:
        c = 0
        for q in range(_HIT):
            c += np.int32(row[base + q] >= t)
        if c > 0:
            for q in range(base, base + _HIT):
                s = row[q]
                if s >= t and s > NEG_INF:
                    ci[m] = q
                    cs[m] = s
                    m += 1
        base += _HIT
    for q in range(base, n):
        s = row[q]
        if s >= t and s > NEG_INF:
            ci[m] = q
            cs[m] = s
            m += 1
    return m


@njit(cache=True)
def _guess_threshold(row, k, sample):
    """A score that about 2k + a few items reach, from a strided sample; -inf when small."""
    n = row.shape[0]
    if n <= 4 * _SAMPLE or 4 * k >= n:
        return NEG_INF
    for i in range(_SAMPLE):
        sample[i] = row[(i * n) // _SAMPLE]
    r = (2 * k * _SAMPLE) // n + 6  # expected hits ~ r / _SAMPLE * n > 2k
    if r >= _SAMPLE:
        return NEG_INF
    return np.partition(sample, _SAMPLE - r)[_SAMPLE - r]


@njit(cache=True)
def _candidates(row, k, tau, sample, ci, cs):
    """Every eligible item that can be in the top k once scores move by up to tau.

    Returns m: (ci, cs)[:m] holds, in increasing id, all items whose score is
    at least (k-th best score - 2 tau), or all eligible items when fewer than k.
    """
    if k == 0:
        return 0
    t = _guess_threshold(row, k, sample)
    m = _collect(row, t, ci, cs)
    if m < k and t > NEG_INF:  # the guess was too high: take everything eligible
        m = _collect(row, NEG_INF, ci, cs)
    if m <= k:
        return m
    kth = np.partition(cs[:m], m - k)[m - k]  # k-th largest
    lo = np.float64(kth) - 2.0 * tau
    keep = 0
    for p in range(m):
        if np.float64(cs[p]) >= lo:
            ci[keep] = ci[p]
            cs[keep] = cs[p]
            keep += 1
    return keep


@njit(cache=True)
def _emit_sorted(cs, ci, m, k, out_items, out_scores, r):
    """Write the best min(k, m) of (cs, ci)[:m] by (score desc, id asc) into row r.

    (ci, cs)[:m] must be in increasing id order: a stable sort on the negated
    score then leaves equal scores in id order.
    """
    neg = np.empty(m, np.float32)
    for p in range(m):
        neg[p] = -cs[p]
    order = np.argsort(neg, kind="mergesort")
    take = min(k, m)
    for p in range(take):
        q = order[p]
        out_items[r, p] = ci[q]
        out_scores[r, p] = cs[q]
    for p in range(take, k):
        out_items[r, p] = -1
        out_scores[r, p] = NEG_INF


@njit(cache=True, inline="always")
def _mask_row(row, user, mask_indptr, mask_indices):
    """row[x] = -inf for every in-range item x of the user's mask row."""
    if user >= 0 and user < mask_indptr.shape[0] - 1:
        n = row.shape[0]
        for p in range(mask_indptr[user], mask_indptr[user + 1]):
            x = mask_indices[p]
            if x >= 0 and x < n:
                row[x] = NEG_INF


# --------------------------------------------------------------------------- kernels


@njit(parallel=True, cache=True, nogil=True)
def _masked_topk_kernel(scores, row_users, mask_indptr, mask_indices, k, out_items, out_scores):
    c, n = scores.shape
    n_tasks = (c + _BLOCK - 1) // _BLOCK
    for t in prange(n_tasks):
        row = np.empty(n, np.float32)
        sample = np.empty(_SAMPLE, np.float32)
        ci = np.empty(n, np.int32)
        cs = np.empty(n, np.float32)
        for r in range(t * _BLOCK, min(c, (t + 1) * _BLOCK)):
            for j in range(n):
                s = scores[r, j]
                row[j] = s if s == s else NEG_INF
            _mask_row(row, row_users[r], mask_indptr, mask_indices)
            m = _candidates(row, k, 0.0, sample, ci, cs)
            _emit_sorted(cs, ci, m, k, out_items, out_scores, r)


def masked_topk(scores, row_users, mask_indptr, mask_indices, k):
    """Top-k items of each score row, skipping masked items.

    scores: float32 [c, n_items] (not modified); row_users: int [c], the CSR row
    of each score row's mask (negative = no mask); mask_indptr / mask_indices:
    the mask CSR arrays; k >= 0.
    Returns (items int32 [c, k], scores float32 [c, k]) sorted by score
    descending, ties by lower item id; -1 / -inf padding past the eligible items.
    Scores of NaN or -inf count as masked.
    """
    scores = np.ascontiguousarray(scores, dtype=np.float32)
    if scores.ndim != 2:
        raise ValueError(f"scores must be 2-D, got shape {scores.shape}")
    c = scores.shape[0]
    k = int(k)
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
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
    """Certified top-k of ``buf[:n_rows]`` (fast, finite scores; overwritten: masked -> -inf).

    Row r belongs to the user vector ``user_vecs[r]``; its result goes to row
    ``out_offset + r`` of the outputs. Final scores are ``canonical_dot`` values.
    """
    n = buf.shape[1]
    n_tasks = (n_rows + _BLOCK - 1) // _BLOCK
    for t in prange(n_tasks):
        sample = np.empty(_SAMPLE, np.float32)
        ci = np.empty(n, np.int32)
        cs = np.empty(n, np.float32)
        for r in range(t * _BLOCK, min(n_rows, (t + 1) * _BLOCK)):
            row = buf[r]
            _mask_row(row, row_users[r], mask_indptr, mask_indices)
            m = _candidates(row, k, tau[r], sample, ci, cs)
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
                by_id = np.argsort(ci[:m])
                ids = ci[:m][by_id]
                vals = cs[:m][by_id]
                _emit_sorted(vals, ids, m, k, out_items, out_scores, out_offset + r)
                ok[r] = 1
            else:
                ok[r] = 0
