"""Score users in chunks into preallocated buffers: the only way scores are made.

Memory stays O(chunk x items) per worker. The scores are a fast float32
product (BLAS); they can differ from the canonical score
(``ccd_dist.kernels.topk.canonical_dot``) in the last bits, which ``topk`` and
``rank_of`` correct for. Consumers that need exact tie semantics should call
those instead of comparing these scores.
"""
from __future__ import annotations

import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

from ._blas import local_thread_setter, one_blas_thread
from ._fpmode import flush_subnormals
from ._inputs import as_ids, as_matrix, check_pair, default_chunk


def score_chunk(user_vecs: np.ndarray, item_emb: np.ndarray, buf: np.ndarray) -> np.ndarray:
    """user_vecs @ item_emb.T into buf[:len(user_vecs)] (no allocation), subnormals flushed (``_fpmode``)."""
    out = buf[: user_vecs.shape[0]]
    with flush_subnormals():
        np.matmul(user_vecs, item_emb.T, out=out)
    return out


def iter_chunks(user_emb, item_emb, users, chunk_size):
    """(start, ids, user_vecs, scores) per chunk of the already normalised inputs, one buffer."""
    buf = np.empty((min(chunk_size, max(len(users), 1)), item_emb.shape[0]), np.float32)
    for start in range(0, len(users), chunk_size):
        ids = users[start : start + chunk_size]
        vecs = np.ascontiguousarray(user_emb[ids])
        yield start, ids, vecs, score_chunk(vecs, item_emb, buf)


def map_chunks(user_emb, item_emb, users, chunk_size, work, work_parallel, workers=None):
    """Score every chunk and hand it to a kernel; returns nothing (kernels write outputs).

    With per-thread BLAS control (see ``_blas``) and more than one worker,
    ``workers`` threads each take whole chunks: a single-threaded product into
    the worker's own buffer, then ``work(start, ids, vecs, scores)`` (a serial,
    GIL-free kernel). Otherwise chunks go one after the other through a
    multi-threaded product and ``work_parallel`` (a parallel kernel). Each row
    is computed on its own, so the results are the same either way.
    """
    workers = numba.get_num_threads() if workers is None else int(workers)
    n_chunks = -(-len(users) // chunk_size)
    setter = local_thread_setter()
    if setter is None or workers <= 1 or n_chunks <= 1:
        # One worker: the product stays on this thread (which flushes subnormals, and
        # is all a worker pinned to one thread may use); otherwise a threaded product.
        with one_blas_thread() if workers <= 1 else contextlib.nullcontext():
            for start, ids, vecs, scores in iter_chunks(user_emb, item_emb, users, chunk_size):
                work_parallel(start, ids, vecs, scores)
        return
    local = threading.local()

    def run(start):
        if not hasattr(local, "buf"):
            setter(1)  # this worker thread only; the pool's threads end with the call
            local.buf = np.empty((chunk_size, item_emb.shape[0]), np.float32)
        ids = users[start : start + chunk_size]
        vecs = np.ascontiguousarray(user_emb[ids])
        work(start, ids, vecs, score_chunk(vecs, item_emb, local.buf))

    with ThreadPoolExecutor(max_workers=min(workers, n_chunks), thread_name_prefix="ccd-rank") as pool:
        for future in [pool.submit(run, start) for start in range(0, len(users), chunk_size)]:
            future.result()


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
