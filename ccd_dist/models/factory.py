"""``build_model``: the one constructor the rest of the project calls."""
from __future__ import annotations

from ..errors import InputError
from .base import Recommender
from .bpr import BPRMF
from .lightgcn import LightGCN
from .vae import MultVAE

KINDS = {"bpr": BPRMF, "lightgcn": LightGCN, "vae": MultVAE}


def build_model(kind: str, n_users: int, n_items: int, dim: int = 64, layers: int = 2, seed: int = 0,
                **options) -> Recommender:
    """A fresh model of ``kind`` ("bpr" | "lightgcn" | "vae"), initialised from ``seed``.

    ``layers`` only applies to LightGCN (default 2, §2.2). Extra ``options`` go to
    the class (e.g. ``backend="torch"`` for LightGCN).

    >>> m = build_model("lightgcn", n_users=3, n_items=4, dim=8, layers=2, seed=0)
    >>> m.kind, m.dim, m.layers
    ('lightgcn', 8, 2)
    """
    key = str(kind).lower()
    if key not in KINDS:
        raise InputError(f"unknown model kind {kind!r}; expected one of {sorted(KINDS)}", where="kind")
    if key == "lightgcn":
        options["layers"] = layers
    return KINDS[key](int(n_users), int(n_items), int(dim), seed=int(seed), **options)
