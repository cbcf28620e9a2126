"""BPR-MF (§2.1): user and item tables, score = inner product, BPR loss on raw rows."""
from __future__ import annotations

import torch
from torch import nn

from .base import Recommender, as_index, bpr_pairwise


class BPRMF(Recommender):
    """Matrix factorisation trained with BPR; tables initialised N(0, 0.01^2)."""

    kind = "bpr"

    def __init__(self, n_users: int, n_items: int, dim: int = 64, seed: int = 0):
        super().__init__(n_users, n_items, dim, seed)
        self.user_emb = nn.Embedding.from_pretrained(self._normal(n_users, dim), freeze=False)
        self.item_emb = nn.Embedding.from_pretrained(self._normal(n_items, dim), freeze=False)

    def _ids(self, x) -> torch.Tensor:
        return torch.from_numpy(as_index(x)).to(self.user_emb.weight.device)

    def representations(self):
        with torch.no_grad():
            return self.user_emb.weight.detach().clone(), self.item_emb.weight.detach().clone()

    def score(self, users, items):
        with torch.no_grad():
            return (self.user_emb(self._ids(users)) * self.item_emb(self._ids(items))).sum(-1)

    def bpr_loss(self, users, pos, neg, reduction: str = "sum"):
        users, pos, neg = self._ids(users), self._ids(pos), self._ids(neg)
        neg = neg.view(len(users), -1)
        return bpr_pairwise(self.user_emb(users), self.item_emb(pos), self.item_emb(neg), reduction)

    def _grow(self, n_users, n_items, user_rows, item_rows):
        dev = self.user_emb.weight.device
        with torch.no_grad():
            users = torch.cat([self.user_emb.weight.detach(), user_rows.to(dev)])
            items = torch.cat([self.item_emb.weight.detach(), item_rows.to(dev)])
        self.user_emb = nn.Embedding.from_pretrained(users, freeze=False)
        self.item_emb = nn.Embedding.from_pretrained(items, freeze=False)
