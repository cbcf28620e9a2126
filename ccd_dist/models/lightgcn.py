"""LightGCN (§2.2): BPR-MF tables propagated over the block's normalised graph.

E^0 = [user table; item table], E^{l+1} = A_hat E^l with
A_hat = D^{-1/2} [[0, R], [R^T, 0]] D^{-1/2} built sparse from the edge list
(``graph.NormalizedGraph``), output = mean(E^0, ..., E^L). Edge dropout is not
implemented (the reference defines it but never uses it).

Only the current block's edges form the graph, as in the reference code (§1.4,
bug list B18, kept deliberately): an entity with no interaction in the block keeps
only E^0 / (L+1). A cumulative graph would be an alternative design; callers that
want one can pass the union of blocks to ``set_interactions``.

On CPU, training batches propagate only over the batch's L-hop frontier with the
Numba kernels (``graph.BatchPropagation``); on other devices (or with
``backend="torch"``) full torch sparse products are used. Both give the same values.
"""
from __future__ import annotations

import numpy as np
import torch

from .bpr import BPRMF
from .base import as_index, bpr_pairwise
from .graph import BatchPropagation, NormalizedGraph, propagate_full, propagate_nodes_torch


class LightGCN(BPRMF):
    kind = "lightgcn"

    def __init__(self, n_users: int, n_items: int, dim: int = 64, layers: int = 2, seed: int = 0,
                 backend: str = "auto"):
        super().__init__(n_users, n_items, dim, seed)
        if layers < 0:
            raise ValueError(f"layers must be >= 0, got {layers}")
        if backend not in ("auto", "torch"):
            raise ValueError(f"backend must be 'auto' or 'torch', got {backend!r}")
        self.layers = int(layers)
        self.backend = backend
        self.graph: NormalizedGraph | None = None

    def config(self) -> dict:
        return {**super().config(), "layers": self.layers}

    def _interactions_changed(self) -> None:
        self.graph = NormalizedGraph(self._train)

    @property
    def adj(self) -> torch.Tensor:
        """A_hat as a torch sparse CSR tensor on the model's device."""
        return self._graph().torch_csr(self.embedding.weight.device)

    def _graph(self) -> NormalizedGraph:
        if self.graph is None:
            raise RuntimeError("LightGCN has no graph: call set_interactions(train_csr) with the block's train matrix")
        return self.graph

    def representations(self):
        graph = self._graph()
        with torch.no_grad():
            out = propagate_full(graph, self.embedding.weight.detach(), self.layers)
        return out[: self.n_users].contiguous(), out[self.n_users:].contiguous()

    def _propagate_nodes(self, joint: np.ndarray):
        """Propagated rows for the joint ids ``joint``: (rows of unique nodes, inverse index)."""
        graph = self._graph()
        nodes, inverse = np.unique(joint, return_inverse=True)
        e0 = self.embedding.weight
        if e0.device.type == "cpu" and self.backend == "auto":
            out = BatchPropagation.apply(e0, graph, nodes.astype(np.int64), self.layers)
        else:
            out = propagate_nodes_torch(graph, e0, torch.from_numpy(nodes).to(e0.device), self.layers)
        return out, torch.from_numpy(inverse.reshape(-1)).to(out.device)

    def pair_scores(self, users, items):
        users, items = as_index(users, self.n_users, "users"), as_index(items, self.n_items, "items")
        out, inv = self._propagate_nodes(np.concatenate([users, items + self.n_users]))
        rows = out.index_select(0, inv)  # not out[inv]: its backward depends on the thread count
        return (rows[: len(users)] * rows[len(users):]).sum(-1)

    def score(self, users, items):
        with torch.no_grad():
            return self.pair_scores(users, items)

    def bpr_loss(self, users, pos, neg, reduction: str = "sum"):
        users = as_index(users, self.n_users, "users")
        pos = as_index(pos, self.n_items, "pos")
        neg = as_index(neg, self.n_items, "neg").reshape(len(users), -1)
        b, k = neg.shape
        out, inv = self._propagate_nodes(np.concatenate([users, pos + self.n_users, neg.ravel() + self.n_users]))
        rows = out.index_select(0, inv)  # not out[inv]: its backward depends on the thread count
        return bpr_pairwise(rows[:b], rows[b:2 * b], rows[2 * b:].view(b, k, -1), reduction)
