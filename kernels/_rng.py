"""Counter-based random numbers for the Numba kernels.

A kernel never keeps a running random state: each draw hashes a counter with
the splitmix64 finaliser, so a value depends only on (seed, row, draw, attempt)
and never on the thread count or on the order in which threads run.

    key   = seed_key(seed)          # once per call, in Python
    row   = sub_key(key, r)         # r: the row (e.g. the positive's CSR index)
    h     = sub_key(row, c)         # c: a counter inside the row
    x     = uniform_below(h, n)     # an integer in [0, n)

Note: Numba's on-disk cache does not notice edits to this file from kernels in
other files; clear their ``__pycache__`` after changing it.
"""
from __future__ import annotations

import operator

import numpy as np
from numba import njit

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_SEED_SALT = np.uint64(0x5851F42D4C957F2D)
_MASK64 = (1 << 64) - 1


@njit(cache=True, inline="always")
def mix64(z):
    """splitmix64's finaliser: a bijection of uint64 with good avalanche."""
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


@njit(cache=True, inline="always")
def sub_key(key, i):
    """The key of counter i under key: splitmix64's i-th output from state key."""
    return mix64(key + (np.uint64(i) + np.uint64(1)) * GOLDEN)


@njit(cache=True, inline="always")
def uniform_below(h, n):
    """An integer in [0, n) from the top 32 bits of h (n < 2**32).

    Multiply-shift instead of modulo: no division, and the relative bias is at
    most n / 2**32 (1e-5 for 41k items), far below sampling noise.
    """
    return np.int64(((h >> np.uint64(32)) * np.uint64(n)) >> np.uint64(32))


def seed_key(seed) -> np.uint64:
    """The root key of a call from any Python integer seed (negative ones too).

    Plain Python arithmetic (the same finaliser as ``mix64``): calling a jitted
    function from Python costs more than the hash itself.
    """
    z = (operator.index(seed) & _MASK64) ^ int(_SEED_SALT)
    z = ((z ^ (z >> 30)) * int(_M1)) & _MASK64
    z = ((z ^ (z >> 27)) * int(_M2)) & _MASK64
    return np.uint64(z ^ (z >> 31))
