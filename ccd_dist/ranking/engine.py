"""Masked top-K by inner product, with two interchangeable backends.

The score of (u, i) is the *canonical* dot product (float64 sum in a fixed
order, rounded to float32; ``ccd_dist.kernels.topk.canonical_dot``). Fast
engines only propose candidates; the final set, order and scores are always
computed by our kernels from canonical scores with an error bound that
certifies no other item can enter. So both backends return identical arrays,
bit for bit, for any chunk size, thread count or BLAS build.

- ``numba``: BLAS product of a user chunk into a preallocated buffer, then
  ``refine_rows`` (mask, threshold selection, certified rescoring); workers
  take whole chunks (see ``chunks.map_chunks``).
- ``faiss``: exact inner-product search (IndexFlatIP) over-fetching by the
  largest mask in a bucket of users with similar mask sizes, then
  ``refine_candidates``; rows it cannot certify (ties at the fetch boundary)
  are redone by the numba path.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ccd_dist.errors import InputError
from ccd_dist.kernels.topk import refine_candidates, refine_rows, refine_topk

from ._inputs import as_ids, as_mask, as_matrix, check_pair, default_chunk, error_bounds, mask_counts
from .chunks import map_chunks

BACKENDS = ("numba", "faiss")
DEFAULT_BACKEND = "numba"  # faster at Gowalla scale; see docs/benchmarks.md (topk)


def topk(user_emb, item_emb, k, exclude=None, users=None, *, backend=DEFAULT_BACKEND, chunk_size=None):
    """Top-k items per user by inner product, skipping excluded items.

    user_emb [n_users, d], item_emb [n_items, d]: numpy or torch, cast to
    float32. exclude: optional scipy sparse [rows, cols]; row u masks user u's
    items (rows past its end: no mask; columns >= n_items: ignored). users:
    optional row ids (default all); output row i is users[i].
    Returns (items int32 [n, k], scores float32 [n, k]) sorted by score
    descending, ties by lower item id, padded with -1 / -inf where fewer than
    k items are eligible.

    >>> items, scores = topk(np.eye(2, dtype=np.float32), np.eye(2, dtype=np.float32), 1)
    >>> items.ravel().tolist()
    [0, 1]
    """
    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}; expected one of {BACKENDS}", path="backend")
    k = int(k)
    if k < 0:
        raise InputError(f"k must be >= 0, got {k}", path="k")
    user_emb = as_matrix(user_emb, "user_emb")
    item_emb = as_matrix(item_emb, "item_emb")
    item_norm = check_pair(user_emb, item_emb)
    users = as_ids(users, user_emb.shape[0], "users")
    indptr, indices = as_mask(exclude)
    chunk = default_chunk(item_emb.shape[0], chunk_size)
    out_items = np.empty((len(users), k), np.int32)
    out_scores = np.empty((len(users), k), np.float32)
    if len(users) == 0:
        return out_items, out_scores
    if backend == "numba" or k == 0 or item_emb.shape[0] == 0:
        _numba_rows(user_emb, item_emb, item_norm, users, indptr, indices, k, chunk, out_items, out_scores)
    else:
        _faiss_rows(user_emb, item_emb, item_norm, users, indptr, indices, k, chunk, out_items, out_scores)
    return out_items, out_scores


def top_users(user_emb, item_emb, k, exclude=None, items=None, **kwargs):
    """Top-k users of each item (``topk`` with the roles swapped).

    exclude is the usual users x items mask; it is transposed here.
    Returns (users int32 [n, k], scores float32 [n, k]) for items (default all).
    """
    if exclude is not None and not sp.issparse(exclude):
        raise InputError(f"expected a scipy.sparse matrix, got {type(exclude).__name__}", path="exclude")
    exclude_t = None if exclude is None else exclude.tocsr().T.tocsr()
    return topk(item_emb, user_emb, k, exclude=exclude_t, users=items, **kwargs)


def _numba_rows(user_emb, item_emb, item_norm, users, indptr, indices, k, chunk, out_items, out_scores):
    def work(start, ids, vecs, scores):
        refine_rows(scores, 0, len(ids), ids, indptr, indices, k, vecs, item_emb, error_bounds(vecs, item_norm),
                    out_items, out_scores, start)

    def work_parallel(start, ids, vecs, scores):
        refine_topk(scores, len(ids), ids, indptr, indices, k, vecs, item_emb, error_bounds(vecs, item_norm),
                    out_items, out_scores, start)

    map_chunks(user_emb, item_emb, users, chunk, work, work_parallel)


def _faiss_rows(user_emb, item_emb, item_norm, users, indptr, indices, k, chunk, out_items, out_scores):
    import faiss

    n_items, d = item_emb.shape
    index = faiss.IndexFlatIP(d)
    index.add(item_emb)
    margin = 8 + k // 8  # extra fetch so the k-th exact score clears the boundary
    counts = mask_counts(indptr, users)
    order = np.argsort(counts, kind="stable")  # buckets of similar mask size
    failed = []
    for start in range(0, len(order), chunk):
        rows = order[start : start + chunk]
        ids = users[rows]
        vecs = np.ascontiguousarray(user_emb[ids])
        fetch = int(min(n_items, k + counts[rows].max() + margin))
        cand_scores, cand_ids = index.search(vecs, fetch)
        tau = error_bounds(vecs, item_norm)
        items_c = np.empty((len(rows), k), np.int32)
        scores_c = np.empty((len(rows), k), np.float32)
        ok = np.zeros(len(rows), np.uint8)
        refine_candidates(cand_ids, np.ascontiguousarray(cand_scores, dtype=np.float32), ids, indptr, indices,
                          k, vecs, item_emb, tau, fetch >= n_items, items_c, scores_c, 0, ok)
        good = ok.astype(bool)
        out_items[rows[good]] = items_c[good]
        out_scores[rows[good]] = scores_c[good]
        if not good.all():
            failed.append(rows[~good])
    if failed:
        rows = np.concatenate(failed)
        items_f = np.empty((len(rows), k), np.int32)
        scores_f = np.empty((len(rows), k), np.float32)
        _numba_rows(user_emb, item_emb, item_norm, users[rows], indptr, indices, k, chunk, items_f, scores_f)
        out_items[rows] = items_f
        out_scores[rows] = scores_f
