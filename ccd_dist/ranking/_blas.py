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

import ctypes
import glob
import os
from functools import lru_cache


@lru_cache(maxsize=1)
def local_thread_setter():
    """A function n -> previous count for the calling thread's numpy BLAS, or None."""
    import numpy as np

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
