"""Mini-batches for the two training objectives: BPR triples and VAE user rows."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from ..kernels import sample_negatives


def epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """A distinct, reproducible seed per (run seed, epoch, purpose)."""
    return int(np.random.SeedSequence([seed, epoch, stream]).generate_state(1, dtype=np.uint32)[0])


def bpr_triples(train: sp.csr_matrix, n_neg: int, seed: int, exclude: sp.csr_matrix | None = None):
    """(users, pos, neg) int64 arrays: every positive repeated once per negative.

    Negatives are uniform over the catalogue, never a positive of the user and
    never in the user's exclusion list (rows beyond `exclude` have none).
    """
    indptr, indices = train.indptr, train.indices
    n_users, n_items = train.shape
    kwargs = {}
    if exclude is not None:
        kwargs = dict(exclude_indptr=exclude.indptr, exclude_indices=exclude.indices)
    neg = sample_negatives(indptr, indices, n_items, n_neg, seed, **kwargs)  # [nnz, n_neg]
    users = np.repeat(np.arange(n_users, dtype=np.int64), np.diff(indptr))
    users = np.repeat(users, n_neg)
    pos = np.repeat(indices.astype(np.int64), n_neg)
    return users, pos, neg.reshape(-1).astype(np.int64)


def iter_batches(arrays, batch_size: int, seed: int):
    """Shuffle aligned arrays once and yield torch batches of them."""
    n = len(arrays[0])
    order = np.random.default_rng(seed).permutation(n)
    tensors = [torch.from_numpy(np.ascontiguousarray(a[order])) for a in arrays]
    for start in range(0, n, batch_size):
        yield [t[start:start + batch_size] for t in tensors]


def active_users(train: sp.csr_matrix) -> np.ndarray:
    """Users with at least one training interaction (the VAE's training rows)."""
    return np.flatnonzero(np.diff(train.indptr)).astype(np.int64)
