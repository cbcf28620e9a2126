"""Full-catalogue ranks and the selections the rank ensemble needs (§3.2, §13 item 8).

The rank ensemble needs, for every member and every user, the descending rank
of *every* item. ``np.argsort`` costs ~4.5 ms per 41k-item row; a stable LSD
radix sort over an order-preserving 32-bit key does the same in ~0.3 ms, and
is exact.

Ranks are 0-based, descending, ties broken by lower item id:
``rank(i) = #{j : x_j > x_i} + #{j < i : x_j == x_i}``. ``-0.0`` equals
``+0.0``; NaN ranks after every number (ties among NaNs again by id).

How a row is sorted: each float becomes a uint32 key whose ascending order is
the descending float order; three stable counting passes on 11 + 11 + 10 key
bits sort (key, item id) pairs that start in id order, so equal keys keep
ascending ids. The last pass does not move data: it writes each item's final
position (its rank) directly, or adds ``weight_table[rank]`` into an
accumulator (the fused ensemble variant), so ranks are never materialised.

Also here, for the ensemble's chunk loop:
- ``CanonicalScorer``: exact canonical scores (the ranking engine's) at BLAS speed;
- ``select_rows_varlen``: per-row best-first top-L with a per-row L;
- ``ColumnTopK``: running top-k rows of every column across row chunks;
- ``filter_prefixes``: first k unmasked entries of stored best-first lists.

Rows are independent, so results do not depend on the number of threads.
"""
from __future__ import annotations

import numpy as np
from numba import get_num_threads, njit, prange

from .topk import canonical_dot

_B0, _B1 = 11, 11  # low and middle digit widths; the top digit has 10 bits
_R0, _R1, _R2 = 1 << _B0, 1 << _B1, 1 << (32 - _B0 - _B1)
_RMAX = max(_R0, _R1, _R2)
_SIGN = np.uint32(0x80000000)
_ABS = np.uint32(0x7FFFFFFF)
_INF_BITS = np.uint32(0x7F800000)
_NAN_KEY = np.uint32(0xFFFFFFFF)


@njit(cache=True, inline="always")
def _desc_key(b):
    """uint32 key of float bits `b`: ascending key order == descending float order."""
    if b == _SIGN:  # -0.0 ranks like +0.0
        b = np.uint32(0)
    if (b & _ABS) > _INF_BITS:  # NaN: after everything
        return _NAN_KEY
    # negative (sign set): the bits as they are, larger magnitude -> later;
    # non-negative: flip the 31 low bits, larger value -> earlier. Branch-free,
    # because the sign of a score is unpredictable.
    flip = ((b >> np.uint32(31)) - np.uint32(1)) & _ABS
    return b ^ flip


@njit(cache=True, inline="always")
def _two_passes(bits_row, ka, ia, kb, ib, hist):
    """Sort the row's (key, id) pairs by the low 22 key bits into (ka, ia).

    Leaves ``hist[2]`` holding the exclusive bucket starts of the top digit, for
    the caller's final placing pass.
    """
    n = bits_row.shape[0]
    hist[:, :] = 0
    m0 = np.uint32(_R0 - 1)
    m1 = np.uint32(_R1 - 1)
    s1 = np.uint32(_B0)
    s2 = np.uint32(_B0 + _B1)
    for j in range(n):
        k = _desc_key(bits_row[j])
        hist[0, np.intp(k & m0)] += 1
        hist[1, np.intp((k >> s1) & m1)] += 1
        hist[2, np.intp(k >> s2)] += 1
    for p in range(3):
        total = 0
        for d in range(_RMAX):
            c = hist[p, d]
            hist[p, d] = total
            total += c
    for j in range(n):  # ids start in ascending order: stability keeps ties by id
        k = _desc_key(bits_row[j])
        d = np.intp(k & m0)
        pos = hist[0, d]
        hist[0, d] = pos + 1
        kb[pos] = k
        ib[pos] = j  # fits: the id dtype is chosen for n
    for j in range(n):
        k = kb[j]
        d = np.intp((k >> s1) & m1)
        pos = hist[1, d]
        hist[1, d] = pos + 1
        ka[pos] = k
        ia[pos] = ib[j]


@njit(parallel=True, cache=True)
def _rank_rows(bits, ranks, n_parts, id_proto):
    c, n = bits.shape
    s2 = np.uint32(_B0 + _B1)
    for part in prange(n_parts):
        lo = part * c // n_parts
        hi = (part + 1) * c // n_parts
        ka = np.empty(n, np.uint32)
        kb = np.empty(n, np.uint32)
        ia = np.empty(n, id_proto.dtype)
        ib = np.empty(n, id_proto.dtype)
        hist = np.empty((3, _RMAX), np.int64)
        for r in range(lo, hi):
            _two_passes(bits[r], ka, ia, kb, ib, hist)
            out = ranks[r]
            for j in range(n):
                d = np.intp(ka[j] >> s2)
                pos = hist[2, d]
                hist[2, d] = pos + 1
                out[ia[j]] = pos


@njit(parallel=True, cache=True)
def _accumulate(bits, out_sum, weight_table, n_parts, id_proto):
    c, n = bits.shape
    s2 = np.uint32(_B0 + _B1)
    for part in prange(n_parts):
        lo = part * c // n_parts
        hi = (part + 1) * c // n_parts
        ka = np.empty(n, np.uint32)
        kb = np.empty(n, np.uint32)
        ia = np.empty(n, id_proto.dtype)
        ib = np.empty(n, id_proto.dtype)
        hist = np.empty((3, _RMAX), np.int64)
        for r in range(lo, hi):
            _two_passes(bits[r], ka, ia, kb, ib, hist)
            out = out_sum[r]
            for j in range(n):
                d = np.intp(ka[j] >> s2)
                pos = hist[2, d]
                hist[2, d] = pos + 1
                out[ia[j]] += weight_table[pos]


def _parts(rows: int) -> int:
    """Row blocks for prange: a few per thread, each with its own scratch."""
    return max(1, min(rows, 4 * get_num_threads()))


def _id_proto(n: int) -> np.ndarray:
    """Item ids travel as uint16 when they fit (10% faster: less memory traffic)."""
    return np.empty(0, np.uint16 if n <= 1 << 16 else np.int32)


def _as_bits(scores) -> np.ndarray:
    scores = np.ascontiguousarray(scores, dtype=np.float32)
    if scores.ndim != 2:
        raise ValueError(f"scores must be 2-D [rows, items], got shape {scores.shape}")
    if scores.shape[1] >= 2**31:
        raise ValueError("rows longer than 2**31 - 1 items are not supported")
    return scores.view(np.uint32)


def rank_rows(scores) -> np.ndarray:
    """Descending 0-based rank of every entry of each row (ties by lower column id).

    scores: float32 [c, n] (other dtypes are cast). Returns int32 [c, n] with
    ``ranks[r, i]`` the position of item i when row r is sorted best first.
    """
    bits = _as_bits(scores)
    ranks = np.empty(bits.shape, dtype=np.int32)
    if bits.size:
        _rank_rows(bits, ranks, _parts(bits.shape[0]), _id_proto(bits.shape[1]))
    return ranks


def accumulate_rank_weights(scores, out_sum, weight_table) -> None:
    """``out_sum[r, i] += weight_table[rank_rows(scores)[r, i]]``, in place.

    Fuses ranking and the rank-to-weight map of the ensemble, so ranks are never
    stored. out_sum: float32 [c, n], C-contiguous; weight_table: float32 with
    at least n entries.
    """
    bits = _as_bits(scores)
    if not (isinstance(out_sum, np.ndarray) and out_sum.dtype == np.float32 and out_sum.flags.c_contiguous):
        raise ValueError("out_sum must be a C-contiguous float32 numpy array")
    if out_sum.shape != bits.shape:
        raise ValueError(f"out_sum has shape {out_sum.shape}, scores {bits.shape}; they must match")
    table = np.ascontiguousarray(weight_table, dtype=np.float32)
    if table.ndim != 1 or table.shape[0] < bits.shape[1]:
        raise ValueError(f"weight_table needs at least {bits.shape[1]} entries (one per rank), got {table.shape}")
    if bits.size:
        _accumulate(bits, out_sum, table, _parts(bits.shape[0]), _id_proto(bits.shape[1]))


# ----------------------------------------------------------------------------- top-L selections
# Heaps keep the *worst* kept entry at the root: lower score, or equal score and
# higher id. Candidates arrive in ascending id order, so a candidate replaces the
# root only if its score is strictly higher: ties keep the lower id.


@njit(cache=True, inline="always")
def _worse(s1, i1, s2, i2):
    return s1 < s2 or (s1 == s2 and i1 > i2)


@njit(cache=True)
def _sift_down(hs, hi, size, pos):
    while True:
        left = 2 * pos + 1
        if left >= size:
            return
        child = left
        right = left + 1
        if right < size and _worse(hs[right], hi[right], hs[left], hi[left]):
            child = right
        if _worse(hs[child], hi[child], hs[pos], hi[pos]):
            hs[pos], hs[child] = hs[child], hs[pos]
            hi[pos], hi[child] = hi[child], hi[pos]
            pos = child
        else:
            return


@njit(cache=True)
def _sift_up(hs, hi, pos):
    while pos > 0:
        parent = (pos - 1) // 2
        if _worse(hs[pos], hi[pos], hs[parent], hi[parent]):
            hs[pos], hs[parent] = hs[parent], hs[pos]
            hi[pos], hi[parent] = hi[parent], hi[pos]
            pos = parent
        else:
            return


@njit(cache=True)
def _heap_sort_best_first(hs, hi, size):
    """Turn a heap of `size` entries into a best-first sorted array, in place."""
    for end in range(size - 1, 0, -1):
        hs[0], hs[end] = hs[end], hs[0]
        hi[0], hi[end] = hi[end], hi[0]
        _sift_down(hs, hi, end, 0)


@njit(parallel=True, cache=True)
def _select_rows(scores, offsets, out_items, out_scores):
    c, n = scores.shape
    for r in prange(c):
        lo = offsets[r]
        size = offsets[r + 1] - lo
        if size == 0:
            continue
        hs = out_scores[lo:lo + size]
        hi = out_items[lo:lo + size]
        row = scores[r]
        for i in range(size):
            hs[i] = row[i]
            hi[i] = i
            _sift_up(hs, hi, i)
        for i in range(size, n):
            if row[i] > hs[0]:
                hs[0] = row[i]
                hi[0] = i
                _sift_down(hs, hi, size, 0)
        _heap_sort_best_first(hs, hi, size)


def select_rows_varlen(scores, lengths):
    """Best-first top-`lengths[r]` (score desc, ties by lower id) of each row, as CSR.

    scores: float32 [c, n] without NaN; lengths: ints in [0, n] per row.
    Returns (indptr int64 [c+1], items int32, scores float32).
    """
    scores = np.ascontiguousarray(scores, dtype=np.float32)
    c, n = scores.shape
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.shape != (c,) or (c and (lengths.min() < 0 or lengths.max() > n)):
        raise ValueError(f"lengths must hold {c} values in [0, {n}]")
    offsets = np.zeros(c + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    items = np.empty(offsets[-1], dtype=np.int32)
    vals = np.empty(offsets[-1], dtype=np.float32)
    if offsets[-1]:
        _select_rows(scores, offsets, items, vals)
    return offsets, items, vals


@njit(cache=True)
def _is_masked(m_indices, lo, hi, x):
    """Is x among the sorted m_indices[lo:hi]?"""
    end = hi
    while lo < hi:
        mid = (lo + hi) // 2
        if m_indices[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo < end and m_indices[lo] == x


@njit(parallel=True, cache=True)
def _merge_columns(scores, user0, m_indptr, m_indices, heap_s, heap_u, size, thr, n_parts):
    c, n = scores.shape
    k = heap_s.shape[1]
    for part in prange(n_parts):
        a = part * n // n_parts
        b = (part + 1) * n // n_parts
        for r in range(c):
            row = scores[r]
            for i in range(a, b):
                # thr is -inf until a column's heap is full, so this test is the
                # whole cost for almost every entry (-inf scores are never kept)
                if row[i] > thr[i]:
                    if _is_masked(m_indices, m_indptr[r], m_indptr[r + 1], i):
                        continue
                    s = row[i]
                    u = user0 + r
                    j = size[i]
                    if j < k:
                        heap_s[i, j] = s
                        heap_u[i, j] = u
                        _sift_up(heap_s[i], heap_u[i], j)
                        size[i] = j + 1
                        if j + 1 == k:
                            thr[i] = heap_s[i, 0]
                    else:
                        heap_s[i, 0] = s
                        heap_u[i, 0] = u
                        _sift_down(heap_s[i], heap_u[i], k, 0)
                        thr[i] = heap_s[i, 0]


@njit(parallel=True, cache=True)
def _finish_columns(heap_s, heap_u, size):
    n, k = heap_s.shape
    for i in prange(n):
        m = size[i]
        _heap_sort_best_first(heap_s[i], heap_u[i], m)
        for j in range(m, k):
            heap_s[i, j] = -np.inf
            heap_u[i, j] = -1


class ColumnTopK:
    """Running top-k rows (e.g. users) of every column (item), fed one row chunk at a time.

    Memory is O(columns x k); each chunk costs one pass over its scores. Chunks
    must arrive in ascending row order (ties then keep the lower row id).
    Masked (row, column) pairs and -inf scores are skipped. Columns with fewer than k unmasked
    rows are padded with row -1 / score -inf.
    """

    def __init__(self, n_columns: int, k: int):
        self.k = int(k)
        self.scores = np.full((n_columns, self.k), -np.inf, dtype=np.float32)
        self.rows = np.full((n_columns, self.k), -1, dtype=np.int32)
        self.size = np.zeros(n_columns, dtype=np.int64)
        self.thr = np.full(n_columns, -np.inf, dtype=np.float32)
        self.next_row = 0
        self._parts = max(1, min(n_columns, 8 * get_num_threads()))

    def add(self, scores, first_row: int, mask_indptr, mask_indices) -> None:
        """Offer rows first_row.. of `scores` [c, n_columns]; mask rows are CSR rows for them."""
        scores = np.ascontiguousarray(scores, dtype=np.float32)
        if first_row < self.next_row:
            raise ValueError(f"row chunks must arrive in ascending order: got {first_row} after {self.next_row}")
        if scores.shape[1] != self.scores.shape[0]:
            raise ValueError(f"scores have {scores.shape[1]} columns, expected {self.scores.shape[0]}")
        indptr = np.ascontiguousarray(mask_indptr, dtype=np.int64)
        if indptr.shape != (scores.shape[0] + 1,):
            raise ValueError("mask_indptr must have one entry per score row plus one")
        indices = np.ascontiguousarray(mask_indices, dtype=np.int32)
        if self.k and scores.shape[0]:
            _merge_columns(scores, first_row, indptr - indptr[0], indices[indptr[0]:indptr[-1]],
                           self.scores, self.rows, self.size, self.thr, self._parts)
        self.next_row = first_row + scores.shape[0]

    def result(self):
        """(rows int32 [n_columns, k], scores float32 [n_columns, k]), best first."""
        rows, scores = self.rows.copy(), self.scores.copy()
        if self.k:
            _finish_columns(scores, rows, self.size)
        return rows, scores


# ----------------------------------------------------------------------------- exact scores
@njit(parallel=True, cache=True)
def _round_canonical(s64, user_vecs, item_emb, tau, out, n_parts):
    c, n = s64.shape
    for part in prange(n_parts):
        for r in range(part * c // n_parts, (part + 1) * c // n_parts):
            t = tau[r]
            row = s64[r]
            dst = out[r]
            doubtful = False
            for i in range(n):  # branch-free, vectorisable
                x = row[i]
                f = np.float32(x)
                dst[i] = f
                doubtful |= (np.float32(x - t) != f) | (np.float32(x + t) != f)
            if doubtful:  # rare: some value lies within t of a float32 rounding boundary
                for i in range(n):
                    x = row[i]
                    f = np.float32(x)
                    if np.float32(x - t) != f or np.float32(x + t) != f:
                        dst[i] = canonical_dot(user_vecs[r], item_emb[i])


class CanonicalScorer:
    """Exact canonical float32 scores of user chunks against all items, fast.

    The canonical score (``ccd_dist.kernels.topk.canonical_dot``: float64 sum of
    the exact products in order, rounded once) is what the ranking engine ranks
    by. Here a float64 BLAS product gives each score to within
    ``2 (d + 2) 2**-53 |u| max|v|`` of the canonical float64 sum; rounding it to
    float32 is therefore exact unless it lies that close to a rounding
    boundary, and those few entries (~1e-7 of them) are recomputed with
    ``canonical_dot``. So full ranks built on these scores are bit-identical
    for any BLAS build, thread count or chunking.
    """

    def __init__(self, item_emb):
        self.item_emb = np.ascontiguousarray(item_emb, dtype=np.float32)
        if self.item_emb.ndim != 2:
            raise ValueError(f"item_emb must be 2-D [n_items, d], got shape {self.item_emb.shape}")
        self.item_t64 = np.ascontiguousarray(self.item_emb.T, dtype=np.float64)  # [d, n], made once
        sq = np.einsum("ij,ij->i", self.item_emb, self.item_emb, dtype=np.float64)
        self.v_max = float(np.sqrt(sq.max(initial=0.0)))

    def scores(self, user_vecs, buf64, out32):
        """Scores of user_vecs float32 [c, d] into out32[:c] (float32 [>= c, n]); buf64 float64 alike."""
        user_vecs = np.ascontiguousarray(user_vecs, dtype=np.float32)
        c, d = user_vecs.shape
        if d != self.item_emb.shape[1]:
            raise ValueError(f"user vectors have width {d}, items {self.item_emb.shape[1]}")
        s64 = buf64[:c]
        np.matmul(user_vecs.astype(np.float64), self.item_t64, out=s64)
        u_norm = np.sqrt(np.einsum("ij,ij->i", user_vecs, user_vecs, dtype=np.float64))
        tau = 2.0 * (d + 2) * 2.0**-53 * u_norm * self.v_max
        out = out32[:c]
        if c and self.item_emb.shape[0]:
            _round_canonical(s64, user_vecs, self.item_emb, tau, out, _parts(c))
        return out


# ----------------------------------------------------------------------------- filtered prefixes
@njit(parallel=True, cache=True)
def _filter_prefixes(indptr, items, scores, users, m_indptr, m_indices, k, n_items, out_items, out_scores, short):
    n_mask_rows = m_indptr.shape[0] - 1
    for t in prange(users.shape[0]):
        u = users[t]
        lo = indptr[u]
        hi = indptr[u + 1]
        has_mask = u < n_mask_rows
        mlo = m_indptr[u] if has_mask else 0
        mhi = m_indptr[u + 1] if has_mask else 0
        got = 0
        for p in range(lo, hi):
            if got == k:
                break
            x = items[p]
            if mhi > mlo:
                a, b = mlo, mhi
                while a < b:
                    mid = (a + b) // 2
                    if m_indices[mid] < x:
                        a = mid + 1
                    else:
                        b = mid
                if a < mhi and m_indices[a] == x:
                    continue
            out_items[t, got] = x
            out_scores[t, got] = scores[p]
            got += 1
        for j in range(got, k):
            out_items[t, j] = -1
            out_scores[t, j] = -np.inf
        # fewer than k survivors is only final if the stored list is the whole catalogue
        short[t] = got < k and hi - lo < n_items


def filter_prefixes(indptr, items, scores, users, mask_indptr, mask_indices, k, n_items):
    """First k entries of stored best-first rows that are not masked.

    Rows are CSR (indptr, items, scores); users selects the rows; the mask is
    CSR with sorted rows (rows past its end: no mask). Returns (items int32
    [n, k], scores float32 [n, k], short bool [n]); ``short`` flags rows whose
    stored prefix ran out before k survivors (unless it covers all n_items).
    """
    users = np.ascontiguousarray(users, dtype=np.int64)
    out_items = np.empty((len(users), k), np.int32)
    out_scores = np.empty((len(users), k), np.float32)
    short = np.zeros(len(users), np.bool_)
    if len(users):
        _filter_prefixes(np.ascontiguousarray(indptr, dtype=np.int64), np.ascontiguousarray(items, dtype=np.int32),
                         np.ascontiguousarray(scores, dtype=np.float32), users,
                         np.ascontiguousarray(mask_indptr, dtype=np.int64),
                         np.ascontiguousarray(mask_indices, dtype=np.int32), int(k), int(n_items),
                         out_items, out_scores, short)
    return out_items, out_scores, short
