"""Counting hits and binary DCG of top-K lists against per-row ground truth.

One pass over each row of a top-K list gives, for several cut-offs at once,
the number of ground-truth items retrieved and their discounted gain. The
caller (``ccd_dist.eval``) turns those counts into Recall@K and NDCG@K.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True)
def _count_hits_dcg(topk, indptr, indices, ks, hits, dcg, n_gt):
    n, width = topk.shape
    m = ks.shape[0]
    for u in prange(n):
        lo = indptr[u]
        hi = indptr[u + 1]
        n_gt[u] = hi - lo
        row = indices[lo:hi]
        h = 0
        d = 0.0
        j = 0
        for r in range(width):
            item = topk[u, r]
            if item >= 0 and hi > lo:
                p = np.searchsorted(row, item)
                if p < hi - lo and row[p] == item:
                    h += 1
                    d += 1.0 / np.log2(r + 2.0)
            while j < m and ks[j] == r + 1:
                hits[u, j] = h
                dcg[u, j] = d
                j += 1


def count_hits_dcg(topk_items, gt_indptr, gt_indices, ks):
    """Hits and binary DCG of each top-K row at every cut-off in `ks`.

    Parameters
    ----------
    topk_items : int array [n, K]
        Ranked item ids per row, best first. Negative ids are padding (never a
        hit). Ids within a row are assumed distinct (the ranking engine's output).
    gt_indptr, gt_indices : CSR row pointer [n + 1] and column ids
        Ground truth of row u is ``gt_indices[gt_indptr[u]:gt_indptr[u+1]]``;
        each row must be sorted ascending without duplicates (canonical CSR).
    ks : sequence of distinct ints in [1, K], any order.

    Returns
    -------
    hits : int64 [n, len(ks)]   ground-truth items among the first ks[c] positions
    dcg : float64 [n, len(ks)]  sum over those hits of 1 / log2(rank + 2), rank 0-based
    n_gt : int64 [n]            ground-truth size per row

    Columns follow the order of `ks` as given. Inputs are cast to one fixed set
    of dtypes so the Numba kernel compiles a single signature.
    """
    topk = np.ascontiguousarray(topk_items, dtype=np.int32)
    if topk.ndim != 2:
        raise ValueError(f"topk_items must be 2-D [n, K], got shape {topk.shape}")
    indptr = np.ascontiguousarray(gt_indptr, dtype=np.int64)
    indices = np.ascontiguousarray(gt_indices, dtype=np.int32)
    n, width = topk.shape
    if indptr.shape != (n + 1,):
        raise ValueError(f"gt_indptr must have n + 1 = {n + 1} entries, got {indptr.shape}")
    if indptr[0] != 0 or indptr[-1] > len(indices) or np.any(np.diff(indptr) < 0):
        raise ValueError("gt_indptr is not a valid CSR row pointer for gt_indices")
    ks_given = np.asarray(ks, dtype=np.int64).ravel()
    if len(ks_given) == 0 or len(np.unique(ks_given)) != len(ks_given):
        raise ValueError(f"ks must be a non-empty list of distinct cut-offs, got {list(ks_given)}")
    if ks_given.min() < 1 or ks_given.max() > width:
        raise ValueError(f"every cut-off in ks must lie in [1, {width}] (the top-K width), got {list(ks_given)}")
    order = np.argsort(ks_given)
    hits = np.zeros((n, len(ks_given)), dtype=np.int64)
    dcg = np.zeros((n, len(ks_given)), dtype=np.float64)
    n_gt = np.zeros(n, dtype=np.int64)
    _count_hits_dcg(topk, indptr, indices, np.ascontiguousarray(ks_given[order]), hits, dcg, n_gt)
    back = np.empty_like(order)
    back[order] = np.arange(len(order))
    return hits[:, back], dcg[:, back], n_gt
