"""§5.3 entity initialisation: one-hop mean, two-hop sets with the popular fallback (B5), growth."""
import numpy as np
import scipy.sparse as sp
import torch

from ccd_dist.ccd.growth import grow_with_init, new_entity_rows, two_hop_sets
from ccd_dist.data import interactions_to_csr
from ccd_dist.models import build_model

# Block k of a hand-built case: old users 0..3, new users 4..7; old items 0..3, new items 4, 5.
LISTS = {0: [0, 1, 2], 1: [0, 4], 2: [1, 2], 3: [3], 4: [5], 5: [3], 6: [2], 7: [0, 3]}
N_OLD_USERS, N_OLD_ITEMS = 4, 4


def hand_case():
    users = [u for u, items in LISTS.items() for _ in items]
    items = [i for its in LISTS.values() for i in its]
    train = interactions_to_csr(users, items, 8, 6)
    rng = np.random.default_rng(0)
    # tables with rows for every id: the rows of new ids must not be read
    return train, rng.standard_normal((8, 3)).astype(np.float32), rng.standard_normal((6, 3)).astype(np.float32)


def sets_of(mat):
    return [sorted(mat.indices[mat.indptr[r]:mat.indptr[r + 1]].tolist()) for r in range(mat.shape[0])]


def test_hand_case_user_rows():
    train, U, I = hand_case()
    user_rows, _ = new_entity_rows(U, I, train, N_OLD_USERS, N_OLD_ITEMS, topk=2)
    # old-user frequencies in block k: u0 3, u1 2, u2 2, u3 1 -> popular order u0, u1 (tie u1/u2: lower id), ...
    expected = np.stack([
        (0 + (U[0] + U[1]) / 2) / 2,            # u4: item 5 only -> no old item (one-hop 0), n = 0 -> popular
        (I[3] + (U[3] + U[0]) / 2) / 2,         # u5: neighbour u3 (n = 1 < 2) filled with the most popular u0
        (I[2] + (U[0] + U[2]) / 2) / 2,         # u6: neighbours u0, u2 (n == topk): exactly them (B5)
        ((I[0] + I[3]) / 2 + (U[0] + U[1]) / 2) / 2,  # u7: neighbours u0, u1, u3 (n > 2): most frequent two
    ])
    np.testing.assert_allclose(user_rows, expected, rtol=1e-6, atol=1e-7)


def test_hand_case_item_rows():
    train, U, I = hand_case()
    _, item_rows = new_entity_rows(U, I, train, N_OLD_USERS, N_OLD_ITEMS, topk=2)
    # old-item frequencies: i0 3, i1 2, i2 3, i3 3 -> popular order i0, i2, i3 (ties by lower id), i1
    expected = np.stack([
        (U[1] + (I[0] + I[2]) / 2) / 2,  # item 4: old user u1; two-hop neighbour i0 (n = 1) + popular i2
        (0 + (I[0] + I[2]) / 2) / 2,     # item 5: only new user u4 -> one-hop 0; no neighbour -> popular i0, i2
    ])
    np.testing.assert_allclose(item_rows, expected, rtol=1e-6, atol=1e-7)


def test_two_hop_sets_for_every_neighbour_count():
    freq = np.array([1, 5, 5, 0, 2, 2])  # popular order: 1, 2, 4, 5, 0, 3
    co = sp.csr_matrix(np.array([
        [0, 0, 0, 0, 0, 0],  # n = 0: the topk most popular
        [0, 0, 0, 1, 0, 0],  # n = 1 < 3: the neighbour + the two most popular non-neighbours
        [0, 0, 1, 0, 0, 0],  # n = 1, a popular neighbour: it is not counted twice
        [1, 0, 0, 1, 1, 0],  # n = 3 == topk: exactly the neighbours
        [1, 1, 0, 1, 1, 1],  # n = 5 > 3: the 3 most frequent neighbours, ties (4, 5) by lower id
    ]))
    got = sets_of(two_hop_sets(co, freq, topk=3))
    assert got == [[1, 2, 4], [1, 2, 3], [1, 2, 4], [0, 3, 4], [1, 4, 5]]


def test_b5_exactly_topk_neighbours_uses_only_them():
    """B5: with n == topk the reference's fill-up slice [-0:] takes every old entity."""
    freq = np.array([9, 9, 9, 1, 1])
    co = sp.csr_matrix(np.array([[0, 0, 0, 1, 1]]))
    assert sets_of(two_hop_sets(co, freq, topk=2)) == [[3, 4]]
    table = np.arange(10, dtype=np.float32).reshape(5, 2)
    # through the full path: a new user whose only item is shared with old users 3 and 4 exactly
    train = interactions_to_csr([0, 1, 2, 3, 4, 5], [0, 0, 0, 1, 1, 1], 6, 2)
    user_rows, _ = new_entity_rows(table, np.zeros((2, 2), np.float32), train, 5, 2, topk=2)
    np.testing.assert_allclose(user_rows[0], (0 + (table[3] + table[4]) / 2) / 2)


def test_fewer_old_entities_than_topk_and_no_old_entities():
    train = interactions_to_csr([0, 1, 2], [0, 1, 1], 3, 2)
    U = np.array([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]], np.float32)
    I = np.array([[2.0, 0.0], [0.0, 2.0]], np.float32)
    user_rows, item_rows = new_entity_rows(U, I, train, 2, 2, topk=20)
    # new user 2 (item 1): one-hop I1, neighbours {u1} + the only other old user u0
    np.testing.assert_allclose(user_rows[0], (I[1] + (U[0] + U[1]) / 2) / 2)
    assert item_rows.shape == (0, 2)
    # nothing old at all: the two-hop part is zero, the one-hop part too
    user_rows, item_rows = new_entity_rows(U, I, train, 0, 0, topk=3)
    assert np.all(user_rows == 0) and np.all(item_rows == 0) and user_rows.shape == (3, 2)


def test_grow_with_init_keeps_old_rows_and_sets_the_block_graph():
    train, _, _ = hand_case()
    model = build_model("lightgcn", N_OLD_USERS, N_OLD_ITEMS, dim=3, seed=0)
    model.set_interactions(interactions_to_csr([0, 1], [0, 1], N_OLD_USERS, N_OLD_ITEMS))
    old_u, old_i = model.user_table.detach().clone(), model.item_table.detach().clone()
    user_rows, item_rows = new_entity_rows(old_u, old_i, train, N_OLD_USERS, N_OLD_ITEMS, topk=2)
    grow_with_init(model, train, 8, 6, topk=2)
    assert (model.n_users, model.n_items) == (8, 6)
    assert torch.equal(model.user_table[:N_OLD_USERS], old_u) and torch.equal(model.item_table[:N_OLD_ITEMS], old_i)
    np.testing.assert_allclose(model.user_table[N_OLD_USERS:].detach().numpy(), user_rows)
    np.testing.assert_allclose(model.item_table[N_OLD_ITEMS:].detach().numpy(), item_rows)
    assert (model.interactions != train).nnz == 0
    assert model.representations()[0].shape == (8, 3)

    rand = build_model("bpr", N_OLD_USERS, N_OLD_ITEMS, dim=3, seed=0)
    grow_with_init(rand, train, 8, 6, random_init=True)
    assert not np.allclose(rand.user_table[N_OLD_USERS:].detach().numpy(), user_rows)
    assert float(rand.user_table[N_OLD_USERS:].detach().abs().max()) < 0.1  # N(0, 0.01^2)


def test_grow_with_init_vae_uses_two_hop_decoder_rows():
    train, _, _ = hand_case()
    vae = build_model("vae", N_OLD_USERS, N_OLD_ITEMS, dim=3, seed=0)
    rows = torch.cat([vae.decoder.weight, vae.decoder.bias[:, None]], 1).detach().numpy().copy()
    grow_with_init(vae, train, 8, 6, topk=2)
    assert vae.n_items == 6 and vae.n_users == 8
    grown = torch.cat([vae.decoder.weight, vae.decoder.bias[:, None]], 1).detach().numpy()
    np.testing.assert_array_equal(grown[:N_OLD_ITEMS], rows)
    # item 4: neighbour i0 + popular i2; item 5: popular i0, i2 (see test_hand_case_item_rows); no one-hop half
    np.testing.assert_allclose(grown[4], (rows[0] + rows[2]) / 2, rtol=1e-6)
    np.testing.assert_allclose(grown[5], (rows[0] + rows[2]) / 2, rtol=1e-6)
