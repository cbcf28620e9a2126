"""Run a computation on several thread counts (determinism tests).

Each count is applied to all three pools a step may use: torch's, Numba's
(capped at its pool size) and, on the calling thread, numpy's BLAS.
"""
from __future__ import annotations

import contextlib

import numba
import torch

from ccd_dist.ranking._blas import local_thread_setter


@contextlib.contextmanager
def all_threads(count: int):
    """torch, Numba and this thread's numpy BLAS on `count` threads inside; restored after."""
    setter = local_thread_setter()
    before = torch.get_num_threads(), numba.get_num_threads()
    blas_before = setter(count) if setter is not None else None
    try:
        torch.set_num_threads(count)
        numba.set_num_threads(min(count, numba.config.NUMBA_NUM_THREADS))
        yield
    finally:
        torch.set_num_threads(before[0])
        numba.set_num_threads(before[1])
        if blas_before is not None:
            setter(blas_before)


def gradients_per_thread_count(loss_of, parameter, counts=(1, 2, 2, 2)) -> list:
    """The gradient of `parameter` from loss_of() on each thread count."""
    return [grads[0] for _, grads in losses_and_gradients(loss_of, (parameter,), counts)]


def losses_and_gradients(loss_of, parameters, counts=(1, 2, 2, 2)) -> list:
    """[(loss, [grad per parameter])] from loss_of() on each thread count."""
    out = []
    for threads in counts:
        with all_threads(threads):
            for p in parameters:
                p.grad = None
            loss = loss_of()
            loss.backward()
            out.append((loss.detach().clone(), [p.grad.clone() for p in parameters]))
    return out
