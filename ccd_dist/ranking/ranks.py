"""Rank of given items for given users, among all items, without a dense matrix.

Pairs are grouped by user; each chunk of distinct users is scored once and all
of its pairs are ranked by ``ccd_dist.kernels.ranks.refine_ranks`` (exact under
the canonical score, the same order as ``topk`` without a mask).
"""
from __future__ import annotations

import numpy as np

from ccd_dist.errors import InputError
from ccd_dist.kernels.ranks import rank_rows, refine_ranks

from ._inputs import as_ids, as_matrix, check_pair, default_chunk, error_bounds
from .chunks import map_chunks


def rank_of(user_emb, item_emb, users, items, *, chunk_size=None):
    """0-based rank of items[j] for users[j] among all items (0 = best).

    rank = items with a strictly higher score + items with an equal score and a
    lower id. ``users`` is int [n]; ``items`` is int [n] (one item per user
    entry) or int [n, m] (m candidates per user entry); entries < 0 give -1.
    Returns int64 ranks shaped like ``items``.

    >>> rank_of(np.ones((1, 1), np.float32), np.array([[1.], [3.], [2.]], np.float32), [0], [[0, 1, 2]]).tolist()
    [[2, 0, 1]]
    """
    user_emb = as_matrix(user_emb, "user_emb")
    item_emb = as_matrix(item_emb, "item_emb")
    item_norm = check_pair(user_emb, item_emb)
    users = as_ids(users, user_emb.shape[0], "users")
    if hasattr(items, "detach"):
        items = items.detach().cpu().numpy()
    items = np.asarray(items)
    if items.ndim not in (1, 2) or items.shape[0] != users.shape[0]:
        raise InputError(f"expected [{len(users)}] or [{len(users)}, m] item ids, got shape {items.shape}",
                         path="items")
    if items.size and not np.issubdtype(items.dtype, np.integer):
        raise InputError(f"expected integer item ids, got dtype {items.dtype}", path="items")
    n_items = item_emb.shape[0]
    if items.size and items.max() >= n_items:
        raise InputError(f"item id {items.max()} out of range [0, {n_items})", path="items")
    per_row = 1 if items.ndim == 1 else items.shape[1]
    flat = items.reshape(len(users), per_row).astype(np.int64)

    # group the entries by user: one scored row per distinct user
    order = np.argsort(users, kind="stable")
    uniq, first = np.unique(users[order], return_index=True)
    bounds = np.append(first, len(users)) * per_row  # entry offsets per distinct user
    grouped = flat[order].reshape(-1)
    ranks = np.empty(grouped.shape[0], np.int64)
    chunk = default_chunk(n_items, chunk_size)

    def args(start, ids, vecs):
        """The kernel arguments after the scores for one chunk of distinct users."""
        lo, hi = bounds[start], bounds[start + len(ids)]
        indptr = bounds[start : start + len(ids) + 1] - lo
        return indptr, grouped[lo:hi], False, vecs, item_emb, error_bounds(vecs, item_norm), ranks[lo:hi]

    def work(start, ids, vecs, scores):
        rank_rows(scores, 0, len(ids), *args(start, ids, vecs))

    def work_parallel(start, ids, vecs, scores):
        refine_ranks(scores, len(ids), *args(start, ids, vecs))

    map_chunks(user_emb, item_emb, uniq, chunk, work, work_parallel)
    out = np.empty_like(ranks)
    out.reshape(len(users), per_row)[order] = ranks.reshape(len(users), per_row)
    return out.reshape(items.shape)
