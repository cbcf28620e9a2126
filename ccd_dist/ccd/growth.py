"""Initial embeddings for the users and items that are new in block k (§5.3, shared by §6.3).

A model trained up to block k-1 has rows for ids < (U_{k-1}, I_{k-1}) ("old").
Growing it to (U_k, I_k) needs rows for the new ids; the reference
(``PIW_LWCKD.update``) builds each from block k's train matrix R and the
model's raw layer-0 tables:

- one-hop: the mean of the *old* neighbours' rows over the new entity's block-k
  interactions with old entities (a new user: its old items; a new item: its
  old users); the zero vector when there are none;
- two-hop, with the "popular" fallback: the entity's two-hop old neighbours
  are the old entities of its own kind that share a block-k interaction with
  it (R R^T for users, R^T R for items, old columns only). With the
  frequency of an old entity = its number of block-k interactions and n the
  number of neighbours:
    n = 0           -> the ``topk`` most frequent old entities;
    0 < n <= topk   -> all n neighbours plus the (topk - n) most frequent
                       non-neighbours;
    n > topk        -> the ``topk`` neighbours of highest frequency;
  and the part is the mean of the chosen entities' rows;
- the new row = (one_hop + two_hop) / 2; a zero one-hop is still averaged in
  (halving the vector), as in the reference.

Ties in frequency go to the lower id. Bug B5 is fixed: in the reference an
entity with exactly ``topk`` neighbours takes a fill-up slice ``[-0:]``, i.e.
every old entity; here it takes exactly its n neighbours.

Only sparse products of the new rows are formed (§13 item 5): new users x old
users and new items x old items, never a dense U x U or I x I matrix.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..errors import InputError


def check_update_block(stream, k: int, stage: str) -> None:
    """Continual updates run on blocks 1..N-1 (block 0 is the base stage)."""
    if not 1 <= k < len(stream):
        raise InputError(f"the {stage} runs for blocks 1..{len(stream) - 1}, got k = {k}", where="k")


def check_previous_block_size(model, stream, k: int, what: str, where: str) -> None:
    """`model` (or teacher lists, before graphs) must be sized for block k-1: what a block-k
    update starts from (B9: a wrong model is an error, never a silent restart)."""
    prev = stream[k - 1]
    if (model.n_users, model.n_items) != (prev.n_users, prev.n_items):
        raise InputError(f"{what} is {model.n_users} x {model.n_items}, block {k - 1} is {prev.n_users} x "
                         f"{prev.n_items}", where=where)

DEFAULT_TOPK = 20


def _table(x, name: str):
    if x is None:
        return None
    if hasattr(x, "detach"):
        x = x.detach().cpu().float().numpy()
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim != 2:
        raise InputError(f"expected a 2-D [rows, dim] table, got shape {arr.shape}", where=name)
    return arr


def popularity_order(freq: np.ndarray) -> np.ndarray:
    """Ids sorted by frequency descending, ties by lower id."""
    return np.lexsort((np.arange(len(freq)), -freq.astype(np.int64)))


def two_hop_sets(co: sp.csr_matrix, freq: np.ndarray, topk: int) -> sp.csr_matrix:
    """Row r of the result marks the old entities whose rows form new entity r's two-hop part.

    co: new x old co-interaction pattern (nonzero = two-hop neighbour);
    freq: block-k interaction count of every old entity. See the module
    docstring for the rule (B5 fixed: n == topk keeps exactly the n neighbours).
    """
    n_new, n_old = co.shape
    topk = int(topk)
    order = popularity_order(freq)
    position = np.empty(n_old, np.int64)
    position[order] = np.arange(n_old)
    popular = order[:topk]
    rows, cols = [], []
    for r in range(n_new):
        nbrs = co.indices[co.indptr[r]:co.indptr[r + 1]].astype(np.int64)
        n = len(nbrs)
        if n > topk:
            chosen = nbrs[np.argsort(position[nbrs], kind="stable")[:topk]]
        else:
            # among the `topk` most popular at most n are neighbours: enough to fill up
            fill = popular[~np.isin(popular, nbrs)][: topk - n]
            chosen = np.concatenate([nbrs, fill])
        rows.append(np.full(len(chosen), r, np.int64))
        cols.append(chosen)
    r = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    c = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    return sp.csr_matrix((np.ones(len(r), np.float64), (r, c)), shape=(n_new, n_old))


def _row_mean(pattern: sp.csr_matrix, table: np.ndarray) -> np.ndarray:
    """Mean of table rows marked in each row of `pattern` (zero for empty rows), float64."""
    pattern = sp.csr_matrix(pattern, dtype=np.float64, copy=True)
    pattern.data[:] = 1.0
    counts = np.diff(pattern.indptr)
    scale = np.divide(1.0, counts, out=np.zeros(len(counts)), where=counts > 0)
    return np.asarray(sp.diags(scale) @ (pattern @ table.astype(np.float64)))


def _side_rows(r_new, r_old_same, n_old_other, own_old_table, other_old_table, topk, one_hop):
    """New rows of one side (users; or items, with R transposed).

    r_new: the new entities' block-k interactions (rows) over the other side's ids;
    r_old_same: the same for the old entities of this side (co-interaction and
    frequency); own_old_table / other_old_table: the old rows of each side.
    """
    n_new, dim = r_new.shape[0], own_old_table.shape[1]
    if n_new == 0:
        return np.zeros((0, dim), np.float32)
    if r_old_same.shape[0]:
        co = (r_new @ r_old_same.T).tocsr()
        co.eliminate_zeros()
        co.sort_indices()
        two = _row_mean(two_hop_sets(co, np.diff(r_old_same.indptr), topk), own_old_table)
    else:
        two = np.zeros((n_new, dim))
    if not one_hop:
        return two.astype(np.float32)
    one = _row_mean(r_new[:, :n_old_other], other_old_table)
    return ((one + two) / 2.0).astype(np.float32)


def new_entity_rows(user_table, item_table, train_k, n_old_users: int, n_old_items: int,
                    topk: int = DEFAULT_TOPK, one_hop: bool = True):
    """Rows for the new users [n_old_users, U_k) and new items [n_old_items, I_k) of block k.

    user_table / item_table: the model's raw layer-0 rows (numpy or torch),
    at least n_old_users / n_old_items rows (only those are read); train_k:
    block k's train matrix (U_k x I_k, scipy sparse). ``one_hop=False`` keeps
    only the two-hop part (not halved); then ``user_table`` may be None and
    the user rows are returned as None (used for the VAE, whose users are
    not parameters).
    Returns (user_rows float32 [U_k - n_old_users, d], item_rows float32 [I_k - n_old_items, d]).
    """
    if not sp.issparse(train_k):
        raise InputError(f"train_k must be a scipy sparse matrix, got {type(train_k).__name__}", where="train_k")
    n_users, n_items = train_k.shape
    n_old_users, n_old_items = int(n_old_users), int(n_old_items)
    if not (0 <= n_old_users <= n_users and 0 <= n_old_items <= n_items):
        raise InputError(f"old sizes ({n_old_users}, {n_old_items}) must not exceed the block's {train_k.shape}",
                         where="train_k")
    if int(topk) < 1:
        raise InputError(f"topk must be >= 1, got {topk}", where="topk")
    users = _table(user_table, "user_table")
    items = _table(item_table, "item_table")
    if users is None and one_hop:
        raise InputError("user_table is needed for the one-hop part", where="user_table")
    for name, table, need in (("user_table", users, n_old_users), ("item_table", items, n_old_items)):
        if table is not None and table.shape[0] < need:
            raise InputError(f"{name} has {table.shape[0]} rows, need the {need} old ones", where=name)
    if users is not None and users.shape[1] != items.shape[1]:
        raise InputError(f"user width {users.shape[1]} != item width {items.shape[1]}", where="user_table")
    users = None if users is None else users[:n_old_users]
    items = items[:n_old_items]

    r = sp.csr_matrix(train_k, dtype=np.float64, copy=True)
    r.sum_duplicates()
    r.eliminate_zeros()
    r.data[:] = 1.0
    rt = r.T.tocsr()
    item_rows = _side_rows(rt[n_old_items:], rt[:n_old_items], n_old_users, items, users, topk, one_hop)
    user_rows = None
    if users is not None:
        user_rows = _side_rows(r[n_old_users:], r[:n_old_users], n_old_items, users, items, topk, one_hop)
    return user_rows, item_rows


def grow_with_init(model, train_k, n_users_k: int, n_items_k: int, topk: int = DEFAULT_TOPK,
                   random_init: bool = False, graph=None):
    """Grow `model` to (n_users_k, n_items_k) with §5.3 rows for the new ids; set block k's graph
    (or `graph`, e.g. a LightGCN teacher's cumulative one).

    BPR-MF / LightGCN: ``new_entity_rows`` on the raw layer-0 tables.
    Mult-VAE (users are inputs, not parameters; only items grow): a new
    item's decoder row (weight | bias, the VAE's item representation) is the
    two-hop part alone on the old decoder rows. The one-hop part is left out:
    it would average user representations [mu, 1], which live in the encoder
    space and would set the bias to 1, not a decoder row. The reference VAE
    never grows (it is sized with the final item count), so there is no
    reference behaviour to follow; new encoder columns get N(0, 0.01^2).
    random_init: every new row N(0, 0.01^2) instead (the reference's flag).
    The interactions are then set to `train_k` (the block-k graph for LightGCN).
    Returns the model.
    """
    n_users_k, n_items_k = int(n_users_k), int(n_items_k)
    if tuple(train_k.shape) != (n_users_k, n_items_k):
        raise InputError(f"train_k has shape {tuple(train_k.shape)}, expected {(n_users_k, n_items_k)}",
                         where="train_k")
    if random_init:
        model.grow(n_users_k, n_items_k, "normal")
    elif model.kind == "vae":
        with_bias = np.concatenate([model.decoder.weight.detach().cpu().numpy(),
                                    model.decoder.bias.detach().cpu().numpy()[:, None]], axis=1)
        _, item_rows = new_entity_rows(None, with_bias, train_k, model.n_users, model.n_items, topk, one_hop=False)
        model.grow(n_users_k, n_items_k, {"item": item_rows})
    else:
        user_rows, item_rows = new_entity_rows(model.user_table, model.item_table, train_k, model.n_users,
                                               model.n_items, topk)
        model.grow(n_users_k, n_items_k, {"user": user_rows, "item": item_rows})
    model.set_interactions(train_k if graph is None else graph)
    return model
