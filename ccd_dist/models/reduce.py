"""Loss reductions whose result does not depend on torch's thread count.

A full reduction (``x.sum()``, ``x.mean()``, ``reduction="mean"``) of more than
32,768 elements is split across torch's threads and the partial sums are
combined, so the last bits change with the thread count, and with them every
later step of training (15 of 20 random [1024, 40] sums differ between one and
two threads). A reduction along the last dimension of a 2-D tensor is computed
row by row, each row by one thread, so summing fixed-width rows and then the
row sums, while more than that many remain, gives the same bits on any thread
count.
"""
from __future__ import annotations

import torch

# ATen's GRAIN_SIZE: smaller reductions run on one thread.
SERIAL_LIMIT = 32768
ROW = 1024


def stable_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum of all entries of `x`, the same on every thread count."""
    flat = x.reshape(-1)
    while flat.numel() > SERIAL_LIMIT:
        pad = (-flat.numel()) % ROW
        if pad:
            flat = torch.cat([flat, flat.new_zeros(pad)])
        flat = flat.view(-1, ROW).sum(1)
    return flat.sum()


def stable_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of all entries of `x`, the same on every thread count."""
    return stable_sum(x) / max(x.numel(), 1)
