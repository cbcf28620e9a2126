"""Masked top-K selection over score rows, with ties broken by lower item id.

- ``masked_topk``: the scores given are the truth. Per row, the k best items
  that are not masked, by (score descending, item id ascending).
- ``refine_rows`` / ``refine_topk`` (serial / parallel; used by
  ``ccd_dist.ranking``): the scores come from a fast float32 product (BLAS)
  whose rounding depends on the library, the blocking and the thread count.
  They only *propose* candidates: every item within ``2 * tau[row]`` of the
  k-th proposed score is rescored with the canonical dot product
  (``canonical_dot``) and the final order is taken on those exact values.
  ``tau`` bounds |fast score - canonical score| (see
  ``ccd_dist.ranking._inputs.error_bounds``), so the result is exactly the
  top-k under the canonical score, whatever produced the proposal.
- ``refine_candidates`` does the same for candidate lists fetched elsewhere
  (FAISS) and flags the rows whose fetch could not be certified.

Selection per row (``_candidates``): a threshold read off a sample of the row
drives one streaming pass that builds a bit mask of the hits per block of 64
items with branch-free (vectorised) compares and visits only the set bits; the
k-th best of those few candidates is then found with a partial sort. No heap,
no full sort, no mispredicted branch per item.

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


@njit(cache=True)
def canonical_dots(u, item_emb, ids, m, out):
    """out[p] = canonical_dot(u, item_emb[ids[p]]) for p < m, four at a time.

    Four independent sums hide the add latency; each is still summed in order
    t = 0..d-1, so every value equals ``canonical_dot`` exactly.
    """
    d = u.shape[0]
    # independent loads first, so the rows' cache misses overlap
    for p in range(m):
        v = item_emb[ids[p]]
        x = np.float32(0.0)
        for w in range(0, d, 16):
            x += v[w]
        out[p] = x
    p = 0
    while p + 4 <= m:
        v0 = item_emb[ids[p]]
        v1 = item_emb[ids[p + 1]]
        v2 = item_emb[ids[p + 2]]
        v3 = item_emb[ids[p + 3]]
        a0 = 0.0
        a1 = 0.0
        a2 = 0.0
        a3 = 0.0
        for t in range(d):
            x = np.float64(u[t])
            a0 += x * np.float64(v0[t])
            a1 += x * np.float64(v1[t])
            a2 += x * np.float64(v2[t])
            a3 += x * np.float64(v3[t])
        out[p] = np.float32(a0)
        out[p + 1] = np.float32(a1)
        out[p + 2] = np.float32(a2)
        out[p + 3] = np.float32(a3)
        p += 4
    while p < m:
        out[p] = canonical_dot(u, item_emb[ids[p]])
        p += 1


# --------------------------------------------------------------------------- row helpers

_HIT = 64  # items per block of the vectorised threshold counts (64 vectorises; 16 does not)
_PIECES = 16  # the threshold sample is _PIECES evenly spaced runs of _HIT contiguous items
_SAMPLE = _PIECES * _HIT


@njit(cache=True)
def _sample_threshold(row, r, top):
    """The r-th largest of a sample of the row (r <= top.size).

    The sample is spread over the catalogue (item ids may correlate with
    popularity) but reads only _PIECES runs of contiguous items. ``top`` holds
    the r largest values so far, descending (insertion: r is small).
    """
    n = row.shape[0]
    filled = 0
    for p in range(_PIECES):
        start = (p * (n - _HIT)) // (_PIECES - 1)
        for q in range(start, start + _HIT):
            x = row[q]
            if filled == r and not x > top[r - 1]:
                continue
            pos = filled if filled < r else r - 1
            while pos > 0 and top[pos - 1] < x:
                top[pos] = top[pos - 1]
                pos -= 1
            top[pos] = x
            if filled < r:
                filled += 1
    return top[r - 1]


# ids of the lowest set bit of a 64-bit word, by de Bruijn multiplication
_DEBRUIJN = np.uint64(0x03F79D71B4CB0A89)
_LOWEST_BIT = np.zeros(64, np.int64)
for _i in range(64):
    _LOWEST_BIT[((1 << _i) * 0x03F79D71B4CB0A89 % (1 << 64)) >> 58] = _i


@njit(cache=True)
def _collect(row, t, ci, cs):
    """Items with score >= t (and > -inf), in id order, into (ci, cs); returns the count.

    One streaming pass: per block of _HIT = 64 items a bit mask of the hits is
    built with branch-free compares (vectorised), then its set bits are
    visited; the cost is one pass plus a few cycles per hit, with no
    mispredicted branches on random data.
    """
    n = row.shape[0]
    m = 0
    nb = n // _HIT
    for b in range(nb):
        base = b * _HIT
        mask = np.uint64(0)
        for q in range(_HIT):
            s = row[base + q]
            mask |= np.uint64((s >= t) & (s > NEG_INF)) << np.uint64(q)
        while mask != np.uint64(0):
            low = mask & (~mask + np.uint64(1))
            j = base + _LOWEST_BIT[(low * _DEBRUIJN) >> np.uint64(58)]
            ci[m] = j
            cs[m] = row[j]
            m += 1
            mask ^= low
    for q in range(nb * _HIT, n):
        s = row[q]
        if s >= t and s > NEG_INF:
            ci[m] = q
            cs[m] = s
            m += 1
    return m


@njit(cache=True)
def _candidates(row, k, tau, scratch, ci, cs):
    """Every eligible item that can be in the top k once scores move by up to tau.

    Returns m: (ci, cs)[:m] holds, in increasing id, all items whose score is
    at least (k-th best score - 2 tau), or all eligible items when fewer than k.
    The first pass uses a tight threshold read off a sample (about k + 4n/_SAMPLE
    items reach it); when fewer than k do, a safer one (about 4k), and then
    every eligible item. Should 2 tau reach below the threshold used (rows
    whose scores are all within the error bound of each other, e.g. rows
    shrunk to ~1e-37), the row is collected again down to k-th - 2 tau.
    """
    if k == 0:
        return 0
    n = row.shape[0]
    r_tight = (k * _SAMPLE) // n + 4
    r_safe = (4 * k * _SAMPLE) // n + 8
    m = -1
    used = NEG_INF  # the threshold of the last collection
    if n > 4 * _SAMPLE and r_safe <= _SAMPLE // 4:
        t = _sample_threshold(row, r_safe, scratch)
        used = scratch[r_tight - 1]
        m = _collect(row, used, ci, cs)
        if m < k:
            used = t
            m = _collect(row, used, ci, cs)
    if m < k:
        used = NEG_INF
        m = _collect(row, NEG_INF, ci, cs)
    if m <= k and used == NEG_INF:  # every eligible item, at most k of them
        return m
    kth = np.partition(cs[:m], m - k)[m - k]  # k-th largest (every item above `used` is in)
    lo = np.float64(kth) - 2.0 * tau
    if np.float64(used) > lo:  # tau reaches below the sampled threshold: collect down to lo
        below = np.float32(lo)
        if np.float64(below) > lo:
            below = np.nextafter(below, NEG_INF)
        m = _collect(row, below, ci, cs)
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

    Each pair becomes one int64 key whose ascending order is that order (the
    float bits mapped to an order-preserving int, negated, above the id), so a
    partition plus a plain integer sort does the work. Scores must not be NaN;
    cs is modified (-0.0 becomes 0.0).
    """
    keys = np.empty(m, np.int64)
    for p in range(m):
        cs[p] = cs[p] + np.float32(0.0)  # -0.0 -> 0.0, so equal scores get equal keys
    bits = cs[:m].view(np.int32)
    for p in range(m):
        b = bits[p]
        asc = b ^ ((b >> 31) & np.int32(0x7FFFFFFF))  # int order == float order
        keys[p] = (np.int64(~asc) << 32) | np.int64(ci[p])
    take = min(k, m)
    if 0 < take < m:
        keys = np.partition(keys, take - 1)[:take]
    keys = np.sort(keys[:take])
    row_bits = out_scores[r].view(np.int32)
    for p in range(take):
        q = keys[p]
        out_items[r, p] = np.int32(q & 0x7FFFFFFF)
        asc = ~np.int32(q >> 32)
        row_bits[p] = asc ^ ((asc >> 31) & np.int32(0x7FFFFFFF))
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
        scratch = np.empty(_SAMPLE, np.float32)
        ci = np.empty(n, np.int32)
        cs = np.empty(n, np.float32)
        for r in range(t * _BLOCK, min(c, (t + 1) * _BLOCK)):
            for j in range(n):
                s = scores[r, j]
                row[j] = s if s == s else NEG_INF
            _mask_row(row, row_users[r], mask_indptr, mask_indices)
            m = _candidates(row, k, 0.0, scratch, ci, cs)
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


@njit(cache=True, nogil=True)
def refine_rows(buf, lo, hi, row_users, mask_indptr, mask_indices, k, user_vecs, item_emb, tau,
                out_items, out_scores, out_offset):
    """Certified top-k of rows [lo, hi) of ``buf`` (fast, finite scores; overwritten:
    masked -> -inf), in the calling thread.

    Row r belongs to the user vector ``user_vecs[r]`` with error bound
    ``tau[r]``; its result goes to row ``out_offset + r`` of the outputs. Final
    scores are ``canonical_dot`` values.
    """
    n = buf.shape[1]
    scratch = np.empty(_SAMPLE, np.float32)
    ci = np.empty(n, np.int32)
    cs = np.empty(n, np.float32)
    for r in range(lo, hi):
        row = buf[r]
        _mask_row(row, row_users[r], mask_indptr, mask_indices)
        m = _candidates(row, k, tau[r], scratch, ci, cs)
        canonical_dots(user_vecs[r], item_emb, ci, m, cs)
        _emit_sorted(cs, ci, m, k, out_items, out_scores, out_offset + r)


@njit(parallel=True, cache=True, nogil=True)
def refine_topk(buf, n_rows, row_users, mask_indptr, mask_indices, k, user_vecs, item_emb, tau,
                out_items, out_scores, out_offset):
    """``refine_rows`` over ``buf[:n_rows]``, in parallel blocks of rows."""
    n_tasks = (n_rows + _BLOCK - 1) // _BLOCK
    for t in prange(n_tasks):
        refine_rows(buf, t * _BLOCK, min(n_rows, (t + 1) * _BLOCK), row_users, mask_indptr, mask_indices,
                    k, user_vecs, item_emb, tau, out_items, out_scores, out_offset)


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
