"""Score users in chunks into one preallocated buffer: the only way scores are made.

Memory stays O(chunk x items). The scores are a fast float32 product (BLAS);
they can differ from the canonical score (``ccd_dist.kernels.topk.canonical_dot``)
in the last bits, which ``topk`` and ``rank_of`` correct for. Consumers that
need exact tie semantics should call those instead of comparing these scores.
"""
from __future__ import annotations

import numpy as np

from ._inputs import as_ids, as_matrix, check_pair, default_chunk


def score_chunk(user_vecs: np.ndarray, item_emb: np.ndarray, buf: np.ndarray) -> np.ndarray:
    """user_vecs @ item_emb.T into buf[:len(user_vecs)] (no allocation)."""
    out = buf[: user_vecs.shape[0]]
    np.matmul(user_vecs, item_emb.T, out=out)
    return out


def iter_chunks(user_emb, item_emb, users, chunk_size, with_buffer=True):
    """(start, ids, user_vecs, scores-or-None) per chunk of the already normalised inputs."""
    n_items = item_emb.shape[0]
    buf = np.empty((min(chunk_size, max(len(users), 1)), n_items), np.float32) if with_buffer else None
    for start in range(0, len(users), chunk_size):
        ids = users[start : start + chunk_size]
        vecs = np.ascontiguousarray(user_emb[ids])
        scores = score_chunk(vecs, item_emb, buf) if with_buffer else None
        yield start, ids, vecs, scores


def iter_score_chunks(user_emb, item_emb, users=None, chunk_size=None):
    """Yield (user_ids int64 [c], scores float32 [c, n_items]) for consecutive chunks.

    ``scores`` is a view of one buffer reused for every chunk: copy what you
    keep. Example::

        for ids, s in iter_score_chunks(U, V, chunk_size=1024):
            best = s.argmax(axis=1)
    """
    user_emb = as_matrix(user_emb, "user_emb")
    item_emb = as_matrix(item_emb, "item_emb")
    check_pair(user_emb, item_emb)
    users = as_ids(users, user_emb.shape[0], "users")
    chunk = default_chunk(item_emb.shape[0], chunk_size)
    for _start, ids, _vecs, scores in iter_chunks(user_emb, item_emb, users, chunk):
        yield ids, scores
