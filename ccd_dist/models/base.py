"""The one interface every recommender in ccd-dist implements (§2).

A ``Recommender`` is a ``torch.nn.Module`` with integer sizes ``n_users``,
``n_items``, embedding width ``dim`` and ``kind`` in {"bpr", "lightgcn", "vae"}.
Everything else in the project talks to models through these methods only:

``set_interactions(train_csr)``
    Give the model the current block's training interactions, a (n_users, n_items)
    scipy CSR (values are treated as 0/1). LightGCN builds its normalised graph from
    it, the VAE keeps the rows as its inputs, BPR-MF ignores it. Returns self.
``representations() -> (user_repr, item_repr)``
    float32 tensors [n_users, d'] and [n_items, d'], no grad, evaluation mode, such
    that score(u, i) = <user_repr[u], item_repr[i]>. This is what
    ``ccd_dist.ranking`` consumes (inner-product scoring, never a dense U x I).
``score(users, items) -> tensor``
    Pairwise scores through the model's own forward code (evaluation mode); equals
    the inner product of the representations. For tests and small queries.
``pair_scores(users, items) -> tensor``
    BPR-MF and LightGCN: the same scores in training mode, with gradients (only the
    pairs' rows, or their L-hop frontier, are computed). Replay losses use it.
``bpr_loss(users, pos, neg, reduction="sum")``
    BPR-MF and LightGCN: sum (or mean) over pairs of -log sigmoid(s_up - s_un);
    ``neg`` is [B] or [B, n_neg].
``vae_loss(user_batch, step)``
    Mult-VAE: the batch-mean of reconstruction + beta * KL (§2.3).
``grow(n_users, n_items, init="normal" | {"user": rows, "item": rows})``
    Enlarge the id space: existing rows are unchanged, new ids get N(0, 0.01^2) rows
    or the given rows (missing keys fall back to "normal"). Parameters are replaced,
    so build the optimiser after growing. Returns self.
``save(path)`` / ``Recommender.load(path)``
    One file holding the config (kind, sizes, dim, layers, seed), the weights and the
    current interactions, written atomically. A file that is missing, unreadable or
    does not match its config raises ``InputError`` - never a silent random start
    (bug B9 of the reference code).

Construction goes through ``build_model(kind, n_users, n_items, dim, layers=, seed=)``;
initialisation draws from a ``torch.Generator`` seeded with ``seed``, never from the
global RNG, so two models built with the same arguments are identical. BPR-MF and
LightGCN (CPU kernels) also train identically whatever the thread count; the VAE's
dense products go through MKL, whose rounding may depend on the thread count.
A model trains one batch at a time (LightGCN reuses per-graph scratch buffers).
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from ..errors import InputError
from ..io import atomic_write_bytes
from .graph import binary_csr
from .reduce import stable_mean, stable_sum

FORMAT = "ccd-dist/recommender"
FORMAT_VERSION = 1
INIT_STD = 0.01


def as_index(x, size: int | None = None, name: str = "ids") -> np.ndarray:
    """int64 numpy array of ids given as a tensor, array or list; checked against [0, size)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.int64)
    if size is not None and x.size and (x.min() < 0 or x.max() >= size):
        raise IndexError(f"{name} must lie in [0, {size}), got values in [{x.min()}, {x.max()}]")
    return x


def bpr_pairwise(u: torch.Tensor, p: torch.Tensor, n: torch.Tensor, reduction: str) -> torch.Tensor:
    """-log sigmoid(<u,p> - <u,n>) over all (positive, negative) pairs; n is [B, k, d]."""
    pos = (u * p).sum(-1, keepdim=True)
    neg = torch.einsum("bd,bkd->bk", u, n)
    loss = nn.functional.softplus(neg - pos)
    if reduction == "sum":
        return stable_sum(loss)
    if reduction == "mean":
        return stable_mean(loss)
    raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")


class Recommender(nn.Module):
    """Base class: sizes, seeded initialisation, interactions, growth and persistence."""

    kind = "base"
    has_user_rows = True  # False for the VAE: users are inputs, not parameters

    def __init__(self, n_users: int, n_items: int, dim: int, seed: int = 0):
        super().__init__()
        if n_users < 0 or n_items < 0 or dim <= 0:
            raise ValueError(f"need n_users, n_items >= 0 and dim > 0, got {n_users}, {n_items}, {dim}")
        self.n_users, self.n_items, self.dim, self.seed = int(n_users), int(n_items), int(dim), int(seed)
        self._gen = torch.Generator().manual_seed(self.seed)
        self._train: sp.csr_matrix | None = None

    # ------------------------------------------------------------------ config

    def config(self) -> dict:
        return {"kind": self.kind, "n_users": self.n_users, "n_items": self.n_items, "dim": self.dim, "seed": self.seed}

    @property
    def item_width(self) -> int:
        """Width of the item rows ``grow`` accepts (d; d+1 for the VAE: weight | bias)."""
        return self.dim

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config().items() if k != "kind")

    def _normal(self, rows: int, cols: int) -> torch.Tensor:
        return torch.randn(rows, cols, generator=self._gen) * INIT_STD

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ------------------------------------------------------------------ interactions

    def set_interactions(self, train_csr) -> "Recommender":
        if not sp.issparse(train_csr):
            raise InputError(f"set_interactions expects a scipy sparse matrix, got {type(train_csr).__name__}")
        if tuple(train_csr.shape) != (self.n_users, self.n_items):
            raise InputError(
                f"set_interactions: matrix shape {tuple(train_csr.shape)} does not match the model's "
                f"(n_users, n_items) = {(self.n_users, self.n_items)}; grow() the model to the block's sizes first"
            )
        self._train = binary_csr(train_csr)
        self._interactions_changed()
        return self

    @property
    def interactions(self) -> sp.csr_matrix | None:
        return self._train

    def _interactions_changed(self) -> None:
        """Hook: rebuild whatever the model derives from the interactions."""

    # ------------------------------------------------------------------ interface

    def representations(self) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def score(self, users, items) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, users, items) -> torch.Tensor:
        return self.score(users, items)

    def bpr_loss(self, users, pos, neg, reduction: str = "sum") -> torch.Tensor:
        raise TypeError(f"{type(self).__name__} is not trained with a BPR loss; use vae_loss")

    def vae_loss(self, user_batch, step: int) -> torch.Tensor:
        raise TypeError(f"{type(self).__name__} has no VAE loss; use bpr_loss")

    # ------------------------------------------------------------------ growth

    def grow(self, n_users: int, n_items: int, init="normal") -> "Recommender":
        n_users, n_items = int(n_users), int(n_items)
        if n_users < self.n_users or n_items < self.n_items:
            raise ValueError(
                f"grow can only enlarge the model: ({self.n_users}, {self.n_items}) -> ({n_users}, {n_items})"
            )
        if isinstance(init, str):
            if init != "normal":
                raise ValueError(f"init must be 'normal' or a dict of rows, got {init!r}")
            init = {}
        if not isinstance(init, dict) or set(init) - {"user", "item"}:
            raise ValueError("init must be 'normal' or a dict with keys 'user' and/or 'item'")
        new_users, new_items = n_users - self.n_users, n_items - self.n_items
        if self.has_user_rows:
            user_rows = self._rows_for("user", init.get("user"), new_users, self.dim)
        elif init.get("user") is not None:
            raise ValueError(f"{type(self).__name__} has no user parameters; pass only 'item' rows to grow")
        else:
            user_rows = None
        item_rows = self._rows_for("item", init.get("item"), new_items, self.item_width)
        self._grow(n_users, n_items, user_rows, item_rows)
        self.n_users, self.n_items = n_users, n_items
        if self._train is not None:
            self._train = binary_csr(self._train, shape=(n_users, n_items))
            self._interactions_changed()
        return self

    def _rows_for(self, side: str, rows, count: int, width: int) -> torch.Tensor:
        if rows is None:
            return self._normal(count, width)
        rows = torch.as_tensor(rows, dtype=torch.float32).detach().cpu()
        if tuple(rows.shape) != (count, width):
            raise ValueError(f"grow: {side} rows have shape {tuple(rows.shape)}, expected {(count, width)}")
        return rows.clone()

    def _grow(self, n_users: int, n_items: int, user_rows: torch.Tensor, item_rows: torch.Tensor) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ persistence

    def save(self, path) -> None:
        """Config + weights + current interactions in one file, written atomically."""
        inter = None
        if self._train is not None:
            inter = {
                "indptr": torch.from_numpy(self._train.indptr.astype(np.int64)),
                "indices": torch.from_numpy(self._train.indices.astype(np.int64)),
            }
        state = {k: v.detach().cpu() for k, v in self.state_dict().items()}
        payload = {"format": FORMAT, "version": FORMAT_VERSION, "config": self.config(), "state_dict": state,
                   "interactions": inter, "generators": self._generator_states()}
        buf = io.BytesIO()
        torch.save(payload, buf)
        atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path, map_location="cpu") -> "Recommender":
        from .factory import build_model

        path = Path(path)
        if not path.is_file():
            raise InputError("no such model file (expected a file written by Recommender.save)", path=path)
        try:
            payload = torch.load(io.BytesIO(path.read_bytes()), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is an input error
            raise InputError(f"not a readable model checkpoint ({type(exc).__name__}: {exc})", path=path) from exc
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise InputError(f"not a ccd-dist model file (expected format {FORMAT!r})", path=path, where="format")
        if payload.get("version") != FORMAT_VERSION:
            raise InputError(f"unsupported version {payload.get('version')!r}, expected {FORMAT_VERSION}",
                             path=path, where="version")
        config = dict(payload["config"])
        if cls is not Recommender and config.get("kind") != cls.kind:
            raise InputError(f"file holds a {config.get('kind')!r} model, expected {cls.kind!r}", path=path,
                             where="config.kind")
        try:
            model = build_model(**config)
            model.load_state_dict(payload["state_dict"], strict=True)
        except (TypeError, ValueError, RuntimeError, KeyError) as exc:
            raise InputError(f"weights do not match the stored config {config}: {exc}", path=path,
                             where="state_dict") from exc
        inter = payload.get("interactions")
        if inter is not None:
            try:
                indices, indptr = inter["indices"].numpy(), inter["indptr"].numpy()
                train = sp.csr_matrix((np.ones(len(indices), dtype=np.float32), indices, indptr),
                                      shape=(model.n_users, model.n_items))
            except (TypeError, ValueError, KeyError, AttributeError) as exc:
                raise InputError(f"stored interactions are malformed: {exc}", path=path, where="interactions") from exc
            model.set_interactions(train)
        model._restore_generators(payload.get("generators") or {}, path)
        return model.to(map_location)

    def _generator_states(self) -> dict:
        """States of the model's own torch.Generators (init rows for growth, VAE noise).

        Saved so that a worker which reloads a model after a restart draws the same
        numbers as one that kept it in memory: a resumed run matches an uninterrupted one.
        """
        return {name: gen.get_state() for name, gen in vars(self).items() if isinstance(gen, torch.Generator)}

    def _restore_generators(self, states: dict, path) -> None:
        """Inverse of `_generator_states`; files written before states were saved keep fresh seeded ones."""
        for name, state in states.items():
            gen = getattr(self, name, None)
            if not isinstance(gen, torch.Generator) or not isinstance(state, torch.Tensor):
                raise InputError(f"stored generator {name!r} does not match the model", path=path,
                                 where=f"generators.{name}")
            gen.set_state(state)


def numpy_representations(model) -> tuple:
    """`model.representations()` as float32 numpy arrays (what the ranking engine takes)."""
    users, items = model.representations()
    return users.detach().cpu().numpy(), items.detach().cpu().numpy()
