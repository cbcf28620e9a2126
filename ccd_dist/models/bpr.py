"""BPR-MF (§2.1): user and item tables, score = inner product, BPR loss on raw rows.

Both tables live in one parameter ``embedding.weight`` over the joint id space
(users 0..U-1, then items U..U+I-1): LightGCN propagates exactly that matrix, so
keeping it joint saves a concatenation and a split per training batch.
``user_table`` / ``item_table`` are views of the two halves.
"""
from __future__ import annotations

import torch
from torch import nn

from .base import Recommender, as_index, bpr_pairwise


class BPRMF(Recommender):
    """Matrix factorisation trained with BPR; tables initialised N(0, 0.01^2)."""

    kind = "bpr"

    def __init__(self, n_users: int, n_items: int, dim: int = 64, seed: int = 0):
        super().__init__(n_users, n_items, dim, seed)
        weight = torch.cat([self._normal(n_users, dim), self._normal(n_items, dim)])
        self.embedding = nn.Embedding.from_pretrained(weight, freeze=False)

    @property
    def user_table(self) -> torch.Tensor:
        """Layer-0 user rows [n_users, d] (a view of the parameter)."""
        return self.embedding.weight[: self.n_users]

    @property
    def item_table(self) -> torch.Tensor:
        """Layer-0 item rows [n_items, d] (a view of the parameter)."""
        return self.embedding.weight[self.n_users:]

    def _ids(self, x, size: int, name: str, offset: int = 0) -> torch.Tensor:
        return torch.from_numpy(as_index(x, size, name) + offset).to(self.embedding.weight.device)

    def representations(self):
        with torch.no_grad():
            return self.user_table.detach().clone(), self.item_table.detach().clone()

    def pair_scores(self, users, items):
        u = self.embedding(self._ids(users, self.n_users, "users"))
        i = self.embedding(self._ids(items, self.n_items, "items", self.n_users))
        return (u * i).sum(-1)

    def score(self, users, items):
        with torch.no_grad():
            return self.pair_scores(users, items)

    def bpr_loss(self, users, pos, neg, reduction: str = "sum"):
        users = self._ids(users, self.n_users, "users")
        pos = self._ids(pos, self.n_items, "pos", self.n_users)
        neg = self._ids(neg, self.n_items, "neg", self.n_users).view(len(users), -1)
        return bpr_pairwise(self.embedding(users), self.embedding(pos), self.embedding(neg), reduction)

    def _grow(self, n_users, n_items, user_rows, item_rows):
        w = self.embedding.weight.detach()
        with torch.no_grad():
            weight = torch.cat([w[: self.n_users], user_rows.to(w.device), w[self.n_users:], item_rows.to(w.device)])
        self.embedding = nn.Embedding.from_pretrained(weight, freeze=False)
