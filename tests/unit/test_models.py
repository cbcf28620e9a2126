"""Models: the shared contract (model_mixin) plus what is specific to each model."""
from __future__ import annotations

import numba
import numpy as np
import pytest
import scipy.sparse as sp
import torch

from ccd_dist.errors import InputError
from ccd_dist.models import LightGCN, NormalizedGraph, build_model
from ccd_dist.models.vae import kl_weight
from model_mixin import N_ITEMS, N_USERS, ModelTestMixin, tiny_interactions
from thread_counts import gradients_per_thread_count, losses_and_gradients


def dense_normalized_adjacency(train: sp.csr_matrix) -> np.ndarray:
    """Reference D^{-1/2} A D^{-1/2} built densely (tiny graphs in tests only)."""
    r = (train.toarray() > 0).astype(np.float64)
    u, i = r.shape
    a = np.zeros((u + i, u + i))
    a[:u, u:] = r
    a[u:, :u] = r.T
    deg = a.sum(1)
    dinv = np.zeros_like(deg)
    dinv[deg > 0] = deg[deg > 0] ** -0.5
    return dinv[:, None] * a * dinv[None, :]


class TestBPRMF(ModelTestMixin):
    kind = "bpr"


class TestLightGCN(ModelTestMixin):
    kind = "lightgcn"
    build_kwargs = {"layers": 3}


class TestLightGCNTorchBackend(ModelTestMixin):
    kind = "lightgcn"
    build_kwargs = {"layers": 2, "backend": "torch"}


class TestMultVAE(ModelTestMixin):
    kind = "vae"
    lr = 0.01

    def loss(self, model, rng, step):
        return model.vae_loss(np.arange(model.n_users), step)

    def eval_loss(self, model):
        """Reconstruction of the evaluation pass (encoder mean, no noise)."""
        train = model.interactions
        users = np.arange(train.shape[0])
        x = train.toarray() / np.sqrt(np.maximum(np.diff(train.indptr), 1))[:, None]
        logp = torch.log(model.softmax(users)).numpy()
        return float(-(logp * x).sum(1).mean())

    def item_rows(self, model):
        return torch.cat([model.decoder.weight, model.decoder.bias[:, None]], dim=1).detach()

    def user_rows(self, model):
        return None


# ---------------------------------------------------------------------- LightGCN graph


def graph_with_isolated_nodes() -> sp.csr_matrix:
    """4 users x 5 items; user 3 and item 4 have no edge, item 0 is shared."""
    rows = [0, 0, 1, 1, 2, 2, 2]
    cols = [0, 1, 0, 2, 0, 1, 3]
    return sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(4, 5))


def test_normalized_adjacency_matches_dense_reference():
    train = graph_with_isolated_nodes()
    graph = NormalizedGraph(train)
    expected = dense_normalized_adjacency(train)
    np.testing.assert_allclose(graph.to_scipy().toarray(), expected, rtol=1e-6)
    np.testing.assert_allclose(graph.torch_csr().to_dense().numpy(), expected, rtol=1e-6)
    assert graph.nnz == 2 * train.nnz
    # duplicates and non-unit values count as one edge
    coo = train.tocoo()
    dup = sp.coo_matrix((np.r_[np.full(coo.nnz, 3.0), 1.0], (np.r_[coo.row, 0], np.r_[coo.col, 0])), shape=train.shape)
    np.testing.assert_allclose(NormalizedGraph(dup).to_scipy().toarray(), expected, rtol=1e-6)


def test_lightgcn_representations_match_dense_propagation():
    train = graph_with_isolated_nodes()
    model = build_model("lightgcn", 4, 5, dim=6, layers=3, seed=0).set_interactions(train)
    a = dense_normalized_adjacency(train)
    e = model.embedding.weight.detach().double().numpy()
    layers = [e]
    for _ in range(3):
        layers.append(a @ layers[-1])
    expected = np.mean(layers, axis=0)
    user, item = model.representations()
    np.testing.assert_allclose(torch.cat([user, item]).numpy(), expected, rtol=1e-5, atol=1e-7)
    # B18: nodes without an edge in the block keep E^0 / (L+1)
    np.testing.assert_allclose(user[3].numpy(), e[3] / 4, rtol=1e-6)
    np.testing.assert_allclose(item[4].numpy(), e[4 + 4] / 4, rtol=1e-6)


@pytest.mark.parametrize("layers", [0, 1, 2, 3])
@pytest.mark.parametrize("batch", [1, 12])  # small frontiers use column masks, large ones zero-filling
def test_lightgcn_frontier_kernels_match_torch_loss_and_gradients(layers, batch):
    train = tiny_interactions(seed=1)
    kw = dict(n_users=N_USERS, n_items=N_ITEMS, dim=8, layers=layers, seed=3)
    fast = build_model("lightgcn", **kw).set_interactions(train)
    ref = build_model("lightgcn", backend="torch", **kw).set_interactions(train)
    rng = np.random.default_rng(batch)
    users = rng.integers(0, N_USERS, batch)
    pos = rng.integers(0, N_ITEMS, batch)
    neg = rng.integers(0, N_ITEMS, (batch, 2))
    lf = fast.bpr_loss(users, pos, neg)
    lr = ref.bpr_loss(users, pos, neg)
    torch.testing.assert_close(lf, lr, rtol=1e-5, atol=1e-6)
    lf.backward()
    lr.backward()
    torch.testing.assert_close(fast.embedding.weight.grad, ref.embedding.weight.grad, rtol=1e-5, atol=1e-8)


def test_lightgcn_kernels_do_not_depend_on_thread_count():
    train = tiny_interactions(seed=2)
    grads, reps = [], []
    before = numba.get_num_threads()
    try:
        for threads in (1, numba.config.NUMBA_NUM_THREADS):
            numba.set_num_threads(threads)
            model = build_model("lightgcn", N_USERS, N_ITEMS, 8, layers=3, seed=0).set_interactions(train)
            model.bpr_loss(np.arange(20), np.arange(20) % N_ITEMS, (np.arange(20) * 7) % N_ITEMS).backward()
            grads.append(model.embedding.weight.grad.clone())
            reps.append(model.representations()[1])
    finally:
        numba.set_num_threads(before)
    assert torch.equal(grads[0], grads[1]) and torch.equal(reps[0], reps[1])


def test_lightgcn_gradient_with_repeated_ids_does_not_depend_on_torch_threads():
    """A batch repeats users and items; gathering their rows must have a backward without races."""
    rng = np.random.default_rng(0)
    train = sp.random(300, 200, density=0.05, random_state=3, format="csr")
    users, pos, neg = rng.integers(0, 300, 2048), rng.integers(0, 200, 2048), rng.integers(0, 200, 2048)
    model = build_model("lightgcn", 300, 200, 64, layers=2, seed=0).set_interactions(train)
    grads = gradients_per_thread_count(lambda: model.bpr_loss(users, pos, neg), model.embedding.weight)
    assert all(torch.equal(grads[0], g) for g in grads[1:])


def test_vae_loss_and_gradients_do_not_depend_on_thread_counts():
    """[1024, 3000] decoder products and the batch loss on 1 and 2 torch / BLAS threads."""
    train = sp.random(2000, 3000, density=0.01, random_state=3, format="csr")
    model = build_model("vae", 2000, 3000, 64, seed=0).set_interactions(train)

    def loss():
        model._noise.manual_seed(5)  # the same reparameterisation noise each time
        return model.vae_loss(np.arange(1024), 3)

    runs = losses_and_gradients(loss, list(model.parameters()))
    for value, grads in runs[1:]:
        assert torch.equal(runs[0][0], value)
        assert all(torch.equal(a, b) for a, b in zip(runs[0][1], grads))


def test_lightgcn_needs_a_graph_and_valid_ids():
    model = build_model("lightgcn", N_USERS, N_ITEMS, 8)
    with pytest.raises(RuntimeError, match="set_interactions"):
        model.representations()
    model.set_interactions(tiny_interactions())
    with pytest.raises(IndexError):
        model.bpr_loss([N_USERS], [0], [1])  # would otherwise alias item 0 in the joint index
    assert isinstance(model, LightGCN) and model.adj.layout == torch.sparse_csr


# ---------------------------------------------------------------------- Mult-VAE


def test_vae_representation_ranks_like_softmax_and_has_no_eval_noise():
    model = build_model("vae", N_USERS, N_ITEMS, 8, seed=0).set_interactions(tiny_interactions())
    TestMultVAE().fit(model, steps=20)
    user, item = model.representations()
    again = model.representations()
    assert torch.equal(user, again[0]) and torch.equal(item, again[1])  # B14: no noise at evaluation
    logits = (user @ item.T).double()
    probs = model.softmax(np.arange(N_USERS)).double()
    torch.testing.assert_close(torch.softmax(logits, dim=1), probs, rtol=1e-4, atol=1e-7)
    order = torch.argsort(logits, dim=1, descending=True, stable=True)
    ranked = torch.gather(probs, 1, order)
    assert bool((ranked[:, :-1] >= ranked[:, 1:]).all())  # the softmax never disagrees with the order
    assert torch.equal(user[:, -1], torch.ones(N_USERS))


def test_vae_training_noise_is_standard_gaussian_and_kl_is_scheduled():
    model = build_model("vae", N_USERS, N_ITEMS, 8, seed=0).set_interactions(tiny_interactions())
    with torch.no_grad():  # mu = 0 and log sigma = 0, so the decoder sees the raw noise (B14: Gaussian)
        for layer in (model.w_mean, model.w_logstd):
            layer.weight.zero_()
            layer.bias.zero_()
    seen = []
    model.decoder.register_forward_hook(lambda _m, args, _out: seen.append(args[0].detach().clone()))
    users = np.arange(N_USERS)
    first = model.vae_loss(users, 0).item()
    second = model.vae_loss(np.tile(users, 20), 0).item()
    assert first != second
    z = torch.cat(seen).flatten()
    assert abs(float(z.mean())) < 0.1 and 0.9 < float(z.std()) < 1.1 and float(z.min()) < -1.0
    assert kl_weight(0) == 0.0 and kl_weight(20_000) == pytest.approx(0.1) and kl_weight(10**7) == 0.2


def test_vae_grows_items_only():
    model = build_model("vae", N_USERS, N_ITEMS, 8, seed=0).set_interactions(tiny_interactions())
    enc = model.encoder.weight.detach().clone()
    model.grow(N_USERS + 4, N_ITEMS + 2)
    assert model.encoder.weight.shape == (8, N_ITEMS + 2)
    assert torch.equal(model.encoder.weight[:, :N_ITEMS], enc)
    assert model.representations()[0].shape == (N_USERS + 4, 9)
    with pytest.raises(ValueError, match="user"):
        model.grow(N_USERS + 5, N_ITEMS + 2, init={"user": torch.zeros(1, 8)})


def test_build_model_rejects_unknown_kind():
    with pytest.raises(InputError, match="lightgcn"):
        build_model("lightgnn", 3, 3, 4)


@pytest.mark.parametrize("kind", ["bpr", "lightgcn", "vae"])
def test_reloaded_model_draws_what_the_kept_one_draws(kind, tmp_path):
    """A worker that reloads its model after a restart must continue the same random
    streams (growth init rows, VAE noise) as one that kept it: resumed runs match."""
    kept = build_model(kind, N_USERS, N_ITEMS, 8, seed=3).set_interactions(tiny_interactions())
    # Given item rows: the generator is advanced by the new user rows only, so a freshly
    # seeded generator that drew a model of the grown size would be at another state.
    kept.grow(N_USERS + 2, N_ITEMS + 3, init={"item": torch.zeros(3, kept.item_width)})
    if kind == "vae":
        kept.vae_loss(np.arange(N_USERS), 0)  # advances the noise generator
    kept.save(tmp_path / "m.pt")
    reloaded = type(kept).load(tmp_path / "m.pt")
    for model in (kept, reloaded):
        model.grow(N_USERS + 4, N_ITEMS + 5)
    for a, b in zip(kept.representations(), reloaded.representations()):
        assert torch.equal(a, b)
    if kind == "vae":
        assert kept.vae_loss(np.arange(N_USERS), 0).item() == reloaded.vae_loss(np.arange(N_USERS), 0).item()


def test_model_file_without_generator_states_still_loads(tmp_path):
    """Checkpoints written before generator states were stored load with freshly seeded ones."""
    model = build_model("vae", N_USERS, N_ITEMS, 8, seed=3)
    model.save(tmp_path / "m.pt")
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    payload.pop("generators")
    torch.save(payload, tmp_path / "old.pt")
    old = type(model).load(tmp_path / "old.pt")
    fresh = build_model("vae", N_USERS, N_ITEMS, 8, seed=3)
    assert torch.equal(old._noise.get_state(), fresh._noise.get_state())
