"""KD targets of stage 1 (§4): interesting lists and uninteresting samples.

- Interesting items of user u: the teacher's top-n items after removing u's
  block-k train items, in teacher order. The authors' code at HEAD ranks the
  train items *first* (NaN sorts first in ``torch.topk``, §12 B1); this is the
  intended, first-commit behaviour.
- Interesting users of item i: the teacher's top-n users of i after removing
  the users who trained on i in block k (same fix).
- Uninteresting pool of (u, i): i is not u's train item, not in u's exclusion
  list, not one of u's interesting items, and u is not one of i's interesting
  users. Users draw ``n_items_sample`` items and items draw ``n_users_sample``
  users from it, uniformly without replacement and capped at the pool size
  (B17 fixed: the reference pads with forbidden entries when the pool is too
  small). Samples are redrawn per "period" (every ``resample_every`` epochs).

Samples are stored as bit masks (rows x catalogue / 8 bytes) rather than id
lists (the reference keeps U x 30,000 int64, 7 GB for Gowalla).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..errors import InputError
from ..kernels.subsets import sample_subset_bits, unpack_rows, unpack_rows_float


def lists_to_csr(lists: np.ndarray, n_cols: int) -> sp.csr_matrix:
    """0/1 CSR from a [rows, k] id array padded with -1 (sorted unique indices)."""
    rows, k = lists.shape
    valid = lists >= 0
    r = np.repeat(np.arange(rows, dtype=np.int64), valid.sum(1))
    c = lists[valid].astype(np.int64)
    return _pattern(r, c, (rows, n_cols))


def _pattern(rows, cols, shape) -> sp.csr_matrix:
    mat = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=shape)
    mat.sum_duplicates()
    mat.data[:] = 1.0
    mat.sort_indices()
    mat.indptr = mat.indptr.astype(np.int64, copy=False)
    mat.indices = mat.indices.astype(np.int32, copy=False)
    return mat


def union(shape, *mats) -> sp.csr_matrix:
    """Binary union of sparse matrices no larger than `shape` (smaller ones padded)."""
    rows, cols = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for m in mats:
        if m is None:
            continue
        if not sp.issparse(m):
            raise InputError(f"expected a scipy sparse matrix, got {type(m).__name__}", where="exclude")
        if m.shape[0] > shape[0] or m.shape[1] > shape[1]:
            raise InputError(f"a mask of shape {m.shape} exceeds the block's {shape}", where="exclude")
        csr = m.tocsr()  # (not tocoo: it rejects int64 indptr with int32 indices)
        keep = csr.data != 0
        r = np.repeat(np.arange(csr.shape[0], dtype=np.int64), np.diff(csr.indptr))
        rows.append(r[keep])
        cols.append(csr.indices[keep].astype(np.int64))
    return _pattern(np.concatenate(rows), np.concatenate(cols), shape)


@dataclass
class RRDTargets:
    """Interesting lists (in teacher order, -1 padded) and the forbidden pairs of the pools."""

    interesting_items: np.ndarray  # int32 [n_users, n]
    interesting_users: np.ndarray  # int32 [n_items, n]
    forbidden: sp.csr_matrix  # users x items: pairs never sampled as uninteresting
    forbidden_t: sp.csr_matrix  # the same, items x users

    @property
    def n_users(self) -> int:
        return self.forbidden.shape[0]

    @property
    def n_items(self) -> int:
        return self.forbidden.shape[1]

    def interesting_item_csr(self) -> sp.csr_matrix:
        return lists_to_csr(self.interesting_items, self.n_items)


def build_targets(lists, train, exclude=None, n_interesting: int = 40) -> RRDTargets:
    """RRD targets for block k from the teacher lists of block k (see module docstring)."""
    n_users, n_items = train.shape
    if (lists.n_users, lists.n_items) != (n_users, n_items):
        raise InputError(
            f"teacher lists cover {lists.n_users} users x {lists.n_items} items, the block {n_users} x {n_items}",
            where="teacher")
    items = lists.interesting_items(train, n_interesting)
    users = lists.interesting_users(n_interesting)
    forbidden = union((n_users, n_items), train, exclude, lists_to_csr(items, n_items),
                      lists_to_csr(users, n_users).T)
    return RRDTargets(items, np.ascontiguousarray(users), forbidden, forbidden.T.tocsr())


class UninterestingSampler:
    """Per-period uninteresting samples of every user (items) and every item (users).

    ``user_mask(users)`` / ``item_mask(items)`` give bool rows over the
    catalogue / the users. A period's samples are a pure function of
    (seed, period, row id).
    """

    def __init__(self, targets: RRDTargets, n_items_sample: int, n_users_sample: int, seed: int = 0):
        if n_items_sample < 0 or n_users_sample < 0:
            raise InputError("uninteresting sample sizes must be >= 0", where="n_uninteresting")
        self.targets = targets
        self.nui = int(n_items_sample)
        self.nuu = int(n_users_sample)
        self.seed = int(seed)
        self.period = None
        self.user_bits = self.item_bits = None
        self.user_counts = self.item_counts = None

    def ensure(self, period: int) -> None:
        """Draw the samples of `period` unless they are the current ones."""
        if self.period == period:
            return
        t = self.targets
        seq = np.random.SeedSequence([self.seed, int(period)]).generate_state(2, dtype=np.uint32)
        self.user_bits, self.user_counts = sample_subset_bits(
            np.arange(t.n_users), t.n_items, self.nui, t.forbidden.indptr, t.forbidden.indices, int(seq[0]))
        self.item_bits, self.item_counts = sample_subset_bits(
            np.arange(t.n_items), t.n_users, self.nuu, t.forbidden_t.indptr, t.forbidden_t.indices, int(seq[1]))
        self.period = period

    def user_mask(self, users) -> np.ndarray:
        """bool [len(users), n_items]: True at the users' sampled uninteresting items."""
        return unpack_rows(self.user_bits[np.asarray(users)], self.targets.n_items)

    def item_mask(self, items) -> np.ndarray:
        """bool [len(items), n_users]: True at the items' sampled uninteresting users."""
        return unpack_rows(self.item_bits[np.asarray(items)], self.targets.n_users)

    def user_keep(self, users, out) -> np.ndarray:
        """``user_mask`` as float32 0/1 written into the buffer `out`; returns out[:len(users)]."""
        return unpack_rows_float(self.user_bits, users, out)

    def item_keep(self, items, out) -> np.ndarray:
        """``item_mask`` as float32 0/1 written into the buffer `out`; returns out[:len(items)]."""
        return unpack_rows_float(self.item_bits, items, out)
