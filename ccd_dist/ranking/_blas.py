"""Per-thread BLAS thread count, so each worker can run its own single-threaded product.

Why: a multi-threaded BLAS call followed by a Numba parallel kernel makes the
two thread pools fight (OpenBLAS workers spin for a while after each call),
and on a busy machine one descheduled BLAS thread stalls the whole product.
Independent workers, each doing a single-threaded product and then selecting
on its own chunk, avoid both. OpenBLAS >= 0.3.27 (the build numpy wheels ship)
offers ``openblas_set_num_threads_local``, which affects the calling thread
only. Where it is missing (numpy on MKL or Accelerate, older OpenBLAS) the
engine falls back to one multi-threaded product per chunk.
"""
from __future__ import annotations

import contextlib
import ctypes
import glob
import os
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import numba
import numpy as np


@lru_cache(maxsize=1)
def local_thread_setter():
    """A function n -> previous count for the calling thread's numpy BLAS, or None."""
    libs_dir = os.path.join(os.path.dirname(os.path.dirname(np.__file__)), "numpy.libs")
    for path in sorted(glob.glob(os.path.join(libs_dir, "*openblas*"))):
        try:
            lib = ctypes.CDLL(path)
            fn = lib.openblas_set_num_threads_local
        except (OSError, AttributeError):
            continue
        fn.restype = ctypes.c_int
        fn.argtypes = [ctypes.c_int]
        return fn
    return None


@contextlib.contextmanager
def one_blas_thread():
    """Inside: numpy's BLAS runs on the calling thread only (where that can be set)."""
    setter = local_thread_setter()
    previous = setter(1) if setter is not None else None
    try:
        yield
    finally:
        if previous is not None:
            setter(previous)


def fixed_split_matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None, rows_per_task: int | None = None,
                       workers: int | None = None) -> np.ndarray:
    """a @ b (into `out` if given) with the same bits whatever the BLAS thread count.

    Why: multi-threaded OpenBLAS splits a product with few output columns and
    a long inner dimension (the KD gradients, [B, n_items] @ [n_items, d])
    differently for each thread count, so the last bits of the result, and of
    every later training step, changed between one and two threads. Here the
    rows of `a` are cut into fixed slices (at most 16 of them, at least 256
    rows each unless `a` is shorter), each multiplied by a one-thread BLAS
    call on one of `workers` threads (default: Numba's thread count), so each
    output row comes from the same call however many workers share them.
    Without per-thread BLAS control (see above) the slices run one after the
    other on the library's own threads, and this guarantee is lost.
    """
    if out is None:
        out = np.empty((a.shape[0], b.shape[1]), np.result_type(a, b))
    if rows_per_task is None:  # from the shape only, never from the thread count
        rows_per_task = max(256, -(-a.shape[0] // 16))
    starts = range(0, a.shape[0], rows_per_task)
    workers = numba.get_num_threads() if workers is None else int(workers)
    setter = local_thread_setter()

    def run(start):
        np.matmul(a[start:start + rows_per_task], b, out=out[start:start + rows_per_task])

    if workers <= 1 or len(starts) <= 1 or setter is None:
        with one_blas_thread():
            for start in starts:
                run(start)
        return out
    # Each pool thread is set to one BLAS thread once and never restored: restoring
    # while another worker multiplies let some of its products run multi-threaded.
    with ThreadPoolExecutor(max_workers=min(workers, len(starts)), thread_name_prefix="ccd-matmul",
                            initializer=setter, initargs=(1,)) as pool:
        for future in [pool.submit(run, start) for start in starts]:
            future.result()
    return out
