"""Synthetic interaction streams with the growth structure of the CCD data.

The generator, in words:

- users and items have latent tastes in `dim` dimensions; items also have a
  Zipf-like popularity (log-rank bias), so a few items are very popular;
- ids are given in order of arrival: `user_base_share` of the users and
  `item_base_share` of the items exist in the base block D0, the rest arrive
  evenly over the incremental blocks, so new ids in block k exceed all earlier
  ones and every block has new users and new items;
- block k's active users are its new users plus returning earlier users (each
  with probability `return_rate`, at least one);
- each active user draws distinct items without replacement with probability
  proportional to exp(taste score + popularity), via Gumbel top-k; new items get
  a freshness boost in their arrival block and each appears at least once there;
- user tastes drift between blocks (a random walk of strength `drift`);
- `base_fraction` of all interactions fall in D0, the rest is shared evenly by
  the incremental blocks;
- inside each block, the per-user train / valid / test split of §1.2.

Everything is drawn from one seed, so the stream is a pure function of the
arguments. Scores are computed in user chunks (never a full users x items matrix).
"""
from __future__ import annotations

import numpy as np

from .assemble import assemble_stream
from .splitting import split_block
from .stream import Stream

MIN_PER_USER = 3  # the fewest items that can give a user train, valid and test
CHUNK = 512
FRESHNESS = 1.0


def _arrivals(n: int, base_share: float, n_blocks: int, what: str) -> np.ndarray:
    """Arrival block of each id, non-decreasing in the id, every block gets at least one."""
    if n_blocks == 1:
        return np.zeros(n, dtype=np.int64)
    n_base = int(round(base_share * n))
    n_base = min(max(n_base, 1), n - (n_blocks - 1))
    if n - n_base < n_blocks - 1 or n_base < 1:
        raise ValueError(f"{n} {what} are too few for {n_blocks} blocks with new {what} in each")
    later = [len(p) for p in np.array_split(np.arange(n - n_base), n_blocks - 1)]
    return np.repeat(np.arange(n_blocks), [n_base, *later]).astype(np.int64)


def _counts(rng, activity, target: int, n_available: int) -> np.ndarray:
    """Items per active user: MIN_PER_USER each plus a share of the rest by activity."""
    cap = max(MIN_PER_USER, n_available // 2)
    base = np.full(len(activity), min(MIN_PER_USER, n_available), dtype=np.int64)
    extra = max(target - int(base.sum()), 0)
    if extra:
        base += rng.multinomial(extra, activity / activity.sum())
    return np.minimum(base, cap)


def _draw_items(rng, tastes, item_vecs, item_bias, counts):
    """Distinct items per user by Gumbel top-k over softmax(taste score + bias), in chunks."""
    users, items = [], []
    scale = 1.0 / np.sqrt(tastes.shape[1])
    for lo in range(0, len(tastes), CHUNK):
        t = tastes[lo : lo + CHUNK]
        c = counts[lo : lo + CHUNK]
        keys = (t @ item_vecs.T) * (2.0 * scale) + item_bias
        keys += rng.gumbel(size=keys.shape)
        kmax = int(c.max())
        if kmax < keys.shape[1]:  # only the kmax best per row need ordering
            top = np.argpartition(-keys, kmax - 1, axis=1)[:, :kmax]
        else:
            top = np.broadcast_to(np.arange(keys.shape[1]), keys.shape)
        top_keys = np.take_along_axis(keys, top, axis=1)
        order = np.take_along_axis(top, np.argsort(-top_keys, axis=1, kind="stable"), axis=1)
        take = np.arange(order.shape[1])[None, :] < c[:, None]
        rows = np.broadcast_to(np.arange(lo, lo + len(t))[:, None], order.shape)
        users.append(rows[take])
        items.append(order[take])
    return np.concatenate(users), np.concatenate(items)


def make_synthetic_stream(
    n_users: int = 2000,
    n_items: int = 1000,
    n_blocks: int = 6,
    interactions_per_user: float = 30.0,
    seed: int = 0,
    dim: int = 16,
    base_fraction: float = 0.5,
    user_base_share: float = 0.5,
    item_base_share: float = 0.8,
    return_rate: float = 0.3,
    drift: float = 0.3,
    popularity_skew: float = 1.0,
) -> Stream:
    """A deterministic synthetic Stream of `n_blocks` blocks (D0 plus n_blocks - 1 incremental).

    About n_users * interactions_per_user interactions in all, `base_fraction`
    of them in D0. The last block's totals are exactly n_users x n_items.
    """
    if n_blocks < 1:
        raise ValueError("n_blocks must be >= 1")
    if n_users < 2 or n_items < 2 * MIN_PER_USER:
        raise ValueError(
            f"need at least 2 users and {2 * MIN_PER_USER} items, got {n_users} users and {n_items} items"
        )
    rng = np.random.default_rng(seed)
    user_block = _arrivals(n_users, user_base_share, n_blocks, "users")
    item_block = _arrivals(n_items, item_base_share, n_blocks, "items")
    tastes = rng.standard_normal((n_users, dim))
    item_vecs = rng.standard_normal((n_items, dim))
    popularity = -popularity_skew * np.log1p(rng.permutation(n_items).astype(np.float64))
    activity = rng.lognormal(0.0, 0.5, size=n_users)

    total = n_users * interactions_per_user
    targets = [total] if n_blocks == 1 else (
        [base_fraction * total] + [(1 - base_fraction) * total / (n_blocks - 1)] * (n_blocks - 1)
    )
    parts, totals, reports = [], [], []
    for k in range(n_blocks):
        n_u = int(np.count_nonzero(user_block <= k))
        n_i = int(np.count_nonzero(item_block <= k))
        active = np.flatnonzero(user_block == k)
        if k > 0:
            returning = np.flatnonzero(rng.random(int(np.count_nonzero(user_block < k))) < return_rate)
            if len(returning) == 0:
                returning = rng.integers(0, int(np.count_nonzero(user_block < k)), size=1)
            active = np.sort(np.r_[returning, active])
        bias = popularity[:n_i] + FRESHNESS * ((item_block[:n_i] == k) & (k > 0))
        counts = _counts(rng, activity[active], int(round(targets[k])), n_i)
        rows, items = _draw_items(rng, tastes[active], item_vecs[:n_i], bias, counts)
        users = active[rows]
        if k > 0:  # every item arriving now occurs at least once in its arrival block
            fresh = np.flatnonzero(item_block == k)
            missing = fresh[~np.isin(fresh, items)]
            users = np.r_[users, rng.choice(active, size=len(missing))]
            items = np.r_[items, missing]
        split, report = split_block(users, items, np.random.default_rng([seed, 1, k]))
        parts.append(split)
        reports.append(report)
        totals.append((n_u, n_i))
        noise = rng.standard_normal(tastes.shape)
        tastes = np.sqrt(1.0 - drift**2) * tastes + drift * noise
    meta = {
        "provenance": {
            "importer": "synth",
            "sources": [],
            "options": {
                "n_users": n_users,
                "n_items": n_items,
                "n_blocks": n_blocks,
                "interactions_per_user": interactions_per_user,
                "seed": seed,
                "dim": dim,
                "base_fraction": base_fraction,
                "user_base_share": user_base_share,
                "item_base_share": item_base_share,
                "return_rate": return_rate,
                "drift": drift,
                "popularity_skew": popularity_skew,
            },
        },
        "import_report": {"split": reports},
        "id_maps": None,
    }
    return assemble_stream(parts, totals, meta)


def default_stream() -> Stream:
    """The embedded default dataset: the synthetic stream with default arguments."""
    return make_synthetic_stream()
