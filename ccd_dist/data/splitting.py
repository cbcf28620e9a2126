"""Per-user train / valid / test splits inside one block.

`split_block` follows the CCD preprocessing (§1.2 of the algorithm reference):
for each user, shuffle the user's items; test gets max(int(0.1 n), 1) of them,
valid the same number of the next ones, the rest is train. Valid/test items
that occur in no user's train split of the block are removed, and a user whose
valid or test list ends empty is dropped from both. This loses the
interactions of users with one item (they land in test, valid stays empty),
exactly as the reference data does; the report counts what was removed.

`carve_valid` takes a validation split out of a fixed train split (LightGCN
files have none).

Both are vectorised: one random key per interaction, a lexsort by (user, key)
and the rank of each interaction inside its user's group.
"""
from __future__ import annotations

import numpy as np

from .assemble import unique_sorted


def _ranks_within_user(users: np.ndarray, rng: np.random.Generator):
    """Shuffle inside each user: order, per-position rank in the user's group, group sizes."""
    keys = rng.random(len(users))
    order = np.lexsort((keys, users))
    sorted_users = users[order]
    n = len(users)
    starts = np.flatnonzero(np.r_[True, sorted_users[1:] != sorted_users[:-1]]) if n else np.empty(0, np.int64)
    sizes = np.diff(np.r_[starts, n])
    group_start = np.repeat(starts, sizes)
    group_size = np.repeat(sizes, sizes)
    rank = np.arange(n) - group_start
    return order, rank, group_size


def split_block(users, items, rng: np.random.Generator, test_fraction: float = 0.1):
    """Split one block's distinct (user, item) pairs per §1.2.

    Returns ({"train"|"valid"|"test": (users, items)}, report) where report
    counts the valid/test pairs removed because their item is not in the
    block's train split and the users dropped from valid and test.
    """
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    order, rank, size = _ranks_within_user(users, rng)
    u, i = users[order], items[order]
    n_eval = np.maximum(np.floor(test_fraction * size).astype(np.int64), 1)
    is_test = rank < n_eval
    is_valid = (rank >= n_eval) & (rank < 2 * n_eval)
    is_train = ~(is_test | is_valid)

    train_items = unique_sorted(i[is_train])
    in_train = np.isin(i, train_items)
    removed = int(np.count_nonzero((is_test | is_valid) & ~in_train))
    is_test &= in_train
    is_valid &= in_train

    n_users = int(u.max()) + 1 if len(u) else 0
    has_test = np.bincount(u[is_test], minlength=n_users) > 0
    has_valid = np.bincount(u[is_valid], minlength=n_users) > 0
    keep_user = has_test & has_valid
    in_eval_users = np.bincount(u[is_test | is_valid], minlength=n_users) > 0
    dropped_users = int(np.count_nonzero(in_eval_users & ~keep_user))
    lost = int(np.count_nonzero((is_test | is_valid) & ~keep_user[u]))
    is_test &= keep_user[u]
    is_valid &= keep_user[u]

    parts = {name: (u[m], i[m]) for name, m in (("train", is_train), ("valid", is_valid), ("test", is_test))}
    report = {
        "eval_pairs_item_not_in_train": removed,
        "eval_users_dropped": dropped_users,
        "eval_pairs_of_dropped_users": lost,
    }
    return parts, report


def carve_valid(users, items, fraction: float, rng: np.random.Generator):
    """Boolean mask of the train pairs moved to valid.

    Every user with at least two train items gives min(max(int(fraction n), 1), n - 1)
    randomly chosen items, so each user keeps at least one train item.
    """
    users = np.asarray(users, dtype=np.int64)
    mask = np.zeros(len(users), dtype=bool)
    if fraction <= 0 or len(users) == 0:
        return mask
    order, rank, size = _ranks_within_user(users, rng)
    n_valid = np.minimum(np.maximum(np.floor(fraction * size).astype(np.int64), 1), size - 1)
    mask[order] = rank < n_valid
    return mask
