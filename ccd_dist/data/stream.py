"""In-memory interaction stream: an ordered list of blocks over a growing id space.

Block k holds its own train / valid / test interactions as CSR matrices of shape
(n_users_k, n_items_k), where n_users_k / n_items_k count every id allocated up
to and including block k (§1.3 of the algorithm reference). Ids only grow: a
block never has fewer users or items than the block before it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

SPLITS = ("train", "valid", "test")


def interactions_to_csr(users, items, n_users: int, n_items: int) -> sp.csr_matrix:
    """Binary CSR matrix from (user, item) pairs; repeated pairs count once."""
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    data = np.ones(len(users), dtype=np.float32)
    mat = sp.csr_matrix((data, (users, items)), shape=(n_users, n_items), dtype=np.float32)
    mat.sum_duplicates()
    mat.data[:] = 1.0
    mat.sort_indices()
    # scipy needs indptr and indices of one dtype (tocoo/nonzero fail otherwise).
    index_dtype = np.int32 if mat.nnz < 2**31 - 1 else np.int64
    mat.indptr = mat.indptr.astype(index_dtype, copy=False)
    mat.indices = mat.indices.astype(index_dtype, copy=False)
    return mat


@dataclass
class Block:
    """One block of the stream: train / valid / test CSR matrices of equal shape."""

    index: int
    train: sp.csr_matrix
    valid: sp.csr_matrix
    test: sp.csr_matrix

    @property
    def n_users(self) -> int:
        return self.train.shape[0]

    @property
    def n_items(self) -> int:
        return self.train.shape[1]

    def split(self, name: str) -> sp.csr_matrix:
        if name not in SPLITS:
            raise KeyError(f"unknown split {name!r}; expected one of {SPLITS}")
        return getattr(self, name)

    def test_users(self) -> np.ndarray:
        """Users with at least one test interaction in this block."""
        return np.flatnonzero(np.diff(self.test.indptr)).astype(np.int64)

    def validate(self) -> None:
        for name in SPLITS:
            mat = self.split(name)
            if mat.shape != (self.n_users, self.n_items):
                raise ValueError(
                    f"block {self.index}: {name} has shape {mat.shape}, expected {(self.n_users, self.n_items)}"
                )


@dataclass
class Stream:
    """An ordered list of blocks plus provenance metadata."""

    blocks: list
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, k: int) -> Block:
        return self.blocks[k]

    @property
    def n_users(self) -> list:
        return [b.n_users for b in self.blocks]

    @property
    def n_items(self) -> list:
        return [b.n_items for b in self.blocks]

    def new_users(self, k: int) -> np.ndarray:
        """Ids first allocated in block k: [n_users_{k-1}, n_users_k)."""
        lo = self.blocks[k - 1].n_users if k > 0 else 0
        return np.arange(lo, self.blocks[k].n_users, dtype=np.int64)

    def new_items(self, k: int) -> np.ndarray:
        lo = self.blocks[k - 1].n_items if k > 0 else 0
        return np.arange(lo, self.blocks[k].n_items, dtype=np.int64)

    def train_upto(self, k: int) -> sp.csr_matrix:
        """The union of the train splits of blocks 0..k, binary, at block k's shape."""
        block = self.blocks[k]
        coo = [self.blocks[j].train.tocoo() for j in range(k + 1)]
        return interactions_to_csr(np.concatenate([c.row for c in coo]), np.concatenate([c.col for c in coo]),
                                   block.n_users, block.n_items)

    def validate(self) -> None:
        """Check shapes and that the id space only grows."""
        if not self.blocks:
            raise ValueError("a stream needs at least one block")
        prev_u = prev_i = 0
        for k, block in enumerate(self.blocks):
            if block.index != k:
                raise ValueError(f"block at position {k} has index {block.index}")
            block.validate()
            if block.n_users < prev_u or block.n_items < prev_i:
                raise ValueError(
                    f"block {k}: id space shrinks ({block.n_users} users, {block.n_items} items "
                    f"after {prev_u} users, {prev_i} items); ids must only grow"
                )
            prev_u, prev_i = block.n_users, block.n_items
