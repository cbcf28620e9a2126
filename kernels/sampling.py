"""Uniform negative sampling for BPR: one row of negatives per stored positive.

A user's *forbidden* set is its positives plus, when given, its row of the
exclusion list; negatives are uniform over the rest of [0, n_items).

How a user is sampled (inside one parallel chunk of users):
- its forbidden items are stamped in a uint16 map of the catalogue (a new stamp
  per user, so the map is never cleared between users);
- if at most half the catalogue is forbidden, each draw is rejection sampling
  against the map: O(1) per attempt, fewer than 2 attempts on average;
- otherwise the allowed items are listed once and each draw picks one by rank,
  so a nearly full user never loops.

Every draw is a pure function of (seed, positive row r, draw j, attempt a) via
the counter hash in ``_rng``, so the output is the same for any thread count and
chunking, and column j of a row does not depend on n_neg.

Exclusion list conventions: it is a CSR with at most as many rows as there
are users (more is an error); users beyond its last row have no exclusions. Its
entries may be unsorted or repeated; -1 padding and ids outside [0, n_items)
are ignored. Positives may be unsorted or repeated too, but must lie in
[0, n_items). A user with positives and no eligible item is an error raised
before anything is drawn.
"""
from __future__ import annotations

import operator

import numpy as np
from numba import njit, prange

from ccd_dist.errors import InputError

from ._rng import seed_key, sub_key, uniform_below

MAX_ATTEMPTS = 64  # rejection attempts per draw; the draw counter is j * MAX_ATTEMPTS + a
_CHUNK_WORK = 32768  # target work units (marks + draws) per parallel chunk
_INT32_MAX = np.iinfo(np.int32).max
_MAX_STAMP = 65535  # largest uint16 stamp before the map is reset
# Below this many work units (~0.3 ms on one core) a parallel region cannot pay
# off, and on a loaded machine waiting for a second thread can cost milliseconds.
_PARALLEL_MIN_WORK = 262144


# --------------------------------------------------------------------------- kernels


@njit(cache=True, inline="always")
def _mark_user(u, indptr, indices, ex_indptr, ex_indices, n_items, mark, value):
    """Set mark[x] = value for u's forbidden items; return how many changed.

    With a fresh `value` per user (a stamp), the count is the size of u's
    forbidden set and the map never needs clearing between users.
    """
    changed = 0
    for p in range(indptr[u], indptr[u + 1]):
        x = indices[p]
        if mark[x] != value:
            mark[x] = value
            changed += 1
    if u < ex_indptr.shape[0] - 1:
        for p in range(ex_indptr[u], ex_indptr[u + 1]):
            x = ex_indices[p]
            if x >= 0 and x < n_items and mark[x] != value:
                mark[x] = value
                changed += 1
    return changed


@njit(cache=True)
def _draw_chunk(c, indptr, indices, ex_indptr, ex_indices, n_items, n_neg, key,
                seg_user, seg_lo, seg_hi, rows, out_rows, chunk_ptr, out):
    """Fill out[o, :] for every position k of every segment of chunk c.

    Segment s covers positions [seg_lo[s], seg_hi[s]) of user seg_user[s];
    position k stands for positive row rows[k] written to out row out_rows[k]
    (both are k itself when rows / out_rows are empty).
    """
    explicit = rows.shape[0] > 0
    mark = np.zeros(n_items, np.uint16)  # mark[x] == stamp: x is forbidden for this user
    stamp = 0
    allowed = np.empty(0, np.int32)
    for s in range(chunk_ptr[c], chunk_ptr[c + 1]):
        u = seg_user[s]
        stamp += 1
        if stamp > _MAX_STAMP:
            mark[:] = 0
            stamp = 1
        n_forbidden = _mark_user(u, indptr, indices, ex_indptr, ex_indices, n_items, mark, stamp)
        n_allowed = n_items - n_forbidden
        dense = 2 * n_forbidden > n_items
        if dense:
            if allowed.shape[0] == 0:
                allowed = np.empty(n_items, np.int32)
            m = 0
            for x in range(n_items):
                if mark[x] != stamp:
                    allowed[m] = x
                    m += 1
        for k in range(seg_lo[s], seg_hi[s]):
            r = rows[k] if explicit else k
            o = out_rows[k] if explicit else k
            row_key = sub_key(key, r)
            for j in range(n_neg):
                if dense:
                    h = sub_key(row_key, j * MAX_ATTEMPTS)
                    out[o, j] = allowed[uniform_below(h, n_allowed)]
                    continue
                x = 0
                for a in range(MAX_ATTEMPTS):
                    h = sub_key(row_key, j * MAX_ATTEMPTS + a)
                    x = uniform_below(h, n_items)
                    if mark[x] != stamp:
                        break
                steps = 0
                while mark[x] == stamp and steps < n_items:  # probability < 2**-64: probe on
                    x = x + 1 if x + 1 < n_items else 0
                    steps += 1
                out[o, j] = x


@njit(parallel=True, cache=True)
def _draw_parallel(indptr, indices, ex_indptr, ex_indices, n_items, n_neg, key,
                   seg_user, seg_lo, seg_hi, rows, out_rows, chunk_ptr, out):
    for c in prange(chunk_ptr.shape[0] - 1):
        _draw_chunk(c, indptr, indices, ex_indptr, ex_indices, n_items, n_neg, key,
                    seg_user, seg_lo, seg_hi, rows, out_rows, chunk_ptr, out)


@njit(cache=True)
def _draw_serial(indptr, indices, ex_indptr, ex_indices, n_items, n_neg, key,
                 seg_user, seg_lo, seg_hi, rows, out_rows, chunk_ptr, out):
    """For small calls, where a parallel region would only add thread wake-ups."""
    for c in range(chunk_ptr.shape[0] - 1):
        _draw_chunk(c, indptr, indices, ex_indptr, ex_indices, n_items, n_neg, key,
                    seg_user, seg_lo, seg_hi, rows, out_rows, chunk_ptr, out)


@njit(cache=True)
def _count_forbidden(indptr, indices, ex_indptr, ex_indices, n_items, users):
    """Exact size of each listed user's forbidden set."""
    mark = np.zeros(n_items, np.uint8)
    counts = np.empty(users.shape[0], np.int64)
    for i in range(users.shape[0]):
        counts[i] = _mark_user(users[i], indptr, indices, ex_indptr, ex_indices, n_items, mark, 1)
        _mark_user(users[i], indptr, indices, ex_indptr, ex_indices, n_items, mark, 0)  # clear
    return counts


# --------------------------------------------------------------------------- input checks


def _int_array(a, name: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != 1:
        raise InputError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        return arr.astype(np.int64)
    if arr.dtype.kind not in "iu":
        raise InputError(f"{name} must hold integers, got dtype {arr.dtype}")
    return arr


def _check_indptr(indptr, n_entries: int, name: str) -> np.ndarray:
    ptr = _int_array(indptr, name)
    if ptr.size == 0:
        raise InputError(f"{name} must have at least one entry (rows + 1)")
    ptr = ptr.astype(np.int64)
    if ptr[0] != 0 or ptr[-1] != n_entries or (ptr.size > 1 and np.any(np.diff(ptr) < 0)):
        raise InputError(
            f"{name} must start at 0, never decrease and end at the number of indices "
            f"({n_entries}); got start {ptr[0]}, end {ptr[-1]}"
        )
    return np.ascontiguousarray(ptr)


def _check_positives(indptr, indices, n_items: int):
    """int64 indptr and int32 indices, with every positive id in [0, n_items)."""
    idx = _int_array(indices, "indices")
    ptr = _check_indptr(indptr, idx.size, "indptr")
    if idx.size:
        bad = (idx < 0) | (idx >= n_items)
        if bad.any():
            p = int(np.argmax(bad))
            user = int(np.searchsorted(ptr, p, side="right") - 1)
            raise InputError(
                f"positive item id {int(idx[p])} of user {user} (indices[{p}]) is outside [0, {n_items})"
            )
    return ptr, np.ascontiguousarray(idx, dtype=np.int32)


def _check_exclusions(ex_indptr, ex_indices, n_users: int, n_items: int):
    """int64 indptr and int32 indices; ids outside [0, n_items) become -1 (ignored)."""
    if ex_indptr is None and ex_indices is None:
        return np.zeros(1, np.int64), np.empty(0, np.int32)
    if ex_indptr is None or ex_indices is None:
        raise InputError("exclude_indptr and exclude_indices must be given together")
    idx = _int_array(ex_indices, "exclude_indices")
    ptr = _check_indptr(ex_indptr, idx.size, "exclude_indptr")
    if ptr.size - 1 > n_users:
        raise InputError(
            f"the exclusion list has {ptr.size - 1} rows but there are only {n_users} users; "
            "expected at most one row per user"
        )
    if idx.dtype != np.int32:
        valid = (idx >= 0) & (idx < n_items)
        clean = np.full(idx.size, -1, np.int32)
        clean[valid] = idx[valid]
        idx = clean
    return ptr, np.ascontiguousarray(idx)


def _check_scalars(n_items, n_neg, seed):
    n_items = operator.index(n_items)
    n_neg = operator.index(n_neg)
    if not 0 < n_items <= _INT32_MAX:
        raise InputError(f"n_items must be in [1, {_INT32_MAX}], got {n_items}")
    if n_neg < 0:
        raise InputError(f"n_neg must be >= 0, got {n_neg}")
    return n_items, n_neg, seed_key(seed)


def _forbidden_bound(ptr, ex_ptr, users):
    """Positives + exclusion entries of each user: an upper bound on its forbidden count."""
    n_ex = np.zeros(ptr.size - 1, np.int64)
    n_ex[: ex_ptr.size - 1] = np.diff(ex_ptr)
    return (ptr[users + 1] - ptr[users]) + n_ex[users]


def _check_eligible(ptr, idx, ex_ptr, ex_idx, n_items: int, users: np.ndarray) -> None:
    """Raise, before any sampling, if one of `users` has every item forbidden."""
    suspects = users[_forbidden_bound(ptr, ex_ptr, users) >= n_items]
    if suspects.size == 0:
        return
    counts = _count_forbidden(ptr, idx, ex_ptr, ex_idx, n_items, suspects)
    full = suspects[counts >= n_items]
    if full.size:
        more = f" (and {full.size - 1} more users)" if full.size > 1 else ""
        raise InputError(
            f"user {int(full[0])} has no eligible negative item{more}: its positives and "
            f"exclusions cover all {n_items} items"
        )


def _chunks(work: np.ndarray) -> np.ndarray:
    """Boundaries that split consecutive segments into chunks of similar total work."""
    n_seg = work.size
    total = int(work.sum())
    n_chunks = max(1, min(n_seg, total // _CHUNK_WORK))
    cum = np.cumsum(work)
    cuts = np.searchsorted(cum, np.arange(1, n_chunks) * (total / n_chunks), side="left") + 1
    return np.unique(np.concatenate(([0], np.minimum(cuts, n_seg), [n_seg]))).astype(np.int64)


def _run(ptr, idx, ex_ptr, ex_idx, n_items, n_neg, key, seg_user, seg_lo, seg_hi, rows, out_rows, n_out):
    out = np.empty((n_out, n_neg), np.int32)
    if n_out == 0 or n_neg == 0:
        return out
    # work units: one per draw and per row (its key), two per forbidden entry (marking)
    work = (seg_hi - seg_lo) * (n_neg + 1) + 2 * _forbidden_bound(ptr, ex_ptr, seg_user)
    chunk_ptr = _chunks(work)
    parallel = chunk_ptr.size > 2 and work.sum() >= _PARALLEL_MIN_WORK
    draw = _draw_parallel if parallel else _draw_serial
    draw(ptr, idx, ex_ptr, ex_idx, np.int64(n_items), np.int64(n_neg), key,
         seg_user, seg_lo, seg_hi, rows, out_rows, chunk_ptr, out)
    return out


# --------------------------------------------------------------------------- public API


def sample_negatives(indptr, indices, n_items, n_neg, seed, exclude_indptr=None, exclude_indices=None):
    """Draw `n_neg` negatives for every positive of a users x items CSR.

    Returns int32 of shape [nnz, n_neg]; row r belongs to the r-th stored
    positive. Negatives are uniform over [0, n_items) minus the user's
    positives and exclusion row (see the module docstring). The result depends
    only on the inputs and `seed`, never on the number of threads.

    Raises InputError (a ValueError) on malformed input or when a user with
    positives has no eligible item; nothing is sampled in that case.
    """
    n_items, n_neg, key = _check_scalars(n_items, n_neg, seed)
    ptr, idx = _check_positives(indptr, indices, n_items)
    ex_ptr, ex_idx = _check_exclusions(exclude_indptr, exclude_indices, ptr.size - 1, n_items)
    seg_user = np.flatnonzero(np.diff(ptr)).astype(np.int64)
    if n_neg:
        _check_eligible(ptr, idx, ex_ptr, ex_idx, n_items, seg_user)
    empty = np.empty(0, np.int64)
    return _run(ptr, idx, ex_ptr, ex_idx, n_items, n_neg, key,
                seg_user, ptr[seg_user], ptr[seg_user + 1], empty, empty, idx.size)


def sample_negatives_for_rows(indptr, indices, rows, n_items, n_neg, seed,
                              exclude_indptr=None, exclude_indices=None):
    """The rows `rows` (positive indices into the CSR) of `sample_negatives`.

    ``sample_negatives_for_rows(..., rows, ...)[i]`` equals
    ``sample_negatives(...)[rows[i]]`` for the same arguments, but draws only
    the requested rows (useful for one mini-batch; the input checks still read
    the whole CSR). Only the users owning those rows are checked for an empty
    eligible set. Rows may repeat and come in any order.
    """
    n_items, n_neg, key = _check_scalars(n_items, n_neg, seed)
    ptr, idx = _check_positives(indptr, indices, n_items)
    ex_ptr, ex_idx = _check_exclusions(exclude_indptr, exclude_indices, ptr.size - 1, n_items)
    rows = _int_array(rows, "rows").astype(np.int64)
    if rows.size and (rows.min() < 0 or rows.max() >= idx.size):
        raise InputError(f"rows must be positive indices in [0, {idx.size}), got {rows.min()}..{rows.max()}")
    order = np.argsort(rows, kind="stable").astype(np.int64)
    sorted_rows = rows[order]
    row_user = np.searchsorted(ptr, sorted_rows, side="right") - 1
    starts = np.flatnonzero(np.r_[True, row_user[1:] != row_user[:-1]]) if rows.size else np.empty(0, np.int64)
    seg_user = row_user[starts].astype(np.int64)
    seg_hi = np.r_[starts[1:], rows.size].astype(np.int64)
    if n_neg:
        _check_eligible(ptr, idx, ex_ptr, ex_idx, n_items, seg_user)
    return _run(ptr, idx, ex_ptr, ex_idx, n_items, n_neg, key,
                seg_user, starts.astype(np.int64), seg_hi, sorted_rows, order, rows.size)
