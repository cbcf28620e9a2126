"""Stability and plasticity proxies of the student (§5.2): EMA merges of distilled students.

At block k (reference ``merge_model``, the live second definition):

- k = 1: S = P = a copy of the distilled student D;
- k >= 2: S = merge(S_prev, D, s_weight), P = merge(P_prev, D, p_weight), with
  S_prev / P_prev the proxies built at block k-1 (sized for block k-2).

``merge_proxy(old, D, w)`` is a copy of D in which every row that already
existed in ``old`` becomes w * old + (1 - w) * D, on the raw layer-0 user and
item tables only; rows of entities that are new since then come from D. The
copy keeps D's interactions (its block k-1 graph for LightGCN), so its
representations are propagated over that graph, and it is frozen (no
parameter requires grad). With the ``run.sh`` schedule sw = 1.0 keeps the old
proxy's rows exactly and pw = 0.0 makes P = D.
"""
from __future__ import annotations

import copy

import torch

from ..errors import InputError


def _check_student(model, name: str) -> None:
    if getattr(model, "kind", None) not in ("bpr", "lightgcn"):
        raise InputError(f"proxies merge raw layer-0 tables: {name} must be BPR-MF or LightGCN, "
                         f"got {getattr(model, 'kind', type(model).__name__)!r}", where=name)


def frozen_copy(model):
    """A deep copy of `model` in evaluation mode with every parameter frozen."""
    out = copy.deepcopy(model)
    for p in out.parameters():
        p.requires_grad_(False)
    return out.eval()


def merge_proxy(old_proxy, distilled, weight: float):
    """Copy of `distilled` with the rows `old_proxy` has set to weight*old + (1-weight)*distilled.

    old_proxy None: a plain frozen copy of `distilled` (the k = 1 rule).
    """
    _check_student(distilled, "distilled")
    weight = float(weight)
    if not 0.0 <= weight <= 1.0:
        raise InputError(f"the merge weight must lie in [0, 1], got {weight}", where="weight")
    out = frozen_copy(distilled)
    if old_proxy is None:
        return out
    _check_student(old_proxy, "old_proxy")
    if old_proxy.dim != distilled.dim:
        raise InputError(f"old proxy has width {old_proxy.dim}, the distilled student {distilled.dim}",
                         where="old_proxy")
    if old_proxy.n_users > distilled.n_users or old_proxy.n_items > distilled.n_items:
        raise InputError(f"old proxy ({old_proxy.n_users} x {old_proxy.n_items}) is larger than the distilled "
                         f"student ({distilled.n_users} x {distilled.n_items}); ids only grow", where="old_proxy")
    with torch.no_grad():
        for side, n_old in (("user_table", old_proxy.n_users), ("item_table", old_proxy.n_items)):
            new_rows = getattr(out, side)  # a view into the copy's parameter
            old_rows = getattr(old_proxy, side).detach().to(new_rows.device)
            new_rows[:n_old] = weight * old_rows[:n_old] + (1.0 - weight) * new_rows[:n_old]
    return out


def next_proxy(prev, distilled, weight: float, k: int, name: str = "proxy"):
    """One proxy for block k: a copy of D at k = 1, merge(prev, D, weight) from k = 2.

    A missing previous proxy at k >= 2 is an error, never a silent restart from D.
    """
    if k <= 1:
        return merge_proxy(None, distilled, weight)
    if prev is None:
        raise InputError(f"block {k} needs the {name} proxy built at block {k - 1}", where=name)
    return merge_proxy(prev, distilled, weight)


def build_proxies(prev_stability, prev_plasticity, distilled, s_weight: float, p_weight: float, k: int):
    """(S, P) for block k (``next_proxy`` for each)."""
    return (next_proxy(prev_stability, distilled, s_weight, k, "stability"),
            next_proxy(prev_plasticity, distilled, p_weight, k, "plasticity"))
