"""LWC-KD + PIW + DEC (§6.3-6.5): sparse UU/II graphs, the four terms, B3, B4, the cluster loss."""
import numpy as np
import pytest
import scipy.sparse as sp
import torch

from ccd_dist.ccd.lwckd import (
    BeforeGraphs,
    BeforeSnapshot,
    LWCKDTerm,
    RowLogSumExp,
    ScoreBuffers,
    cosine_graph,
    dec_cluster_loss,
    neighbour_log_likelihood,
)
from ccd_dist.data import interactions_to_csr
from ccd_dist.models import build_model
from ccd_dist.errors import InputError
from thread_counts import gradients_per_thread_count

T = 5.0


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


# ----------------------------------------------------------------------------- graphs
def dense_reference_graph(r: np.ndarray) -> np.ndarray:
    """The reference's procedure on a dense matrix: cosine, bisection on the average degree."""
    norms = np.maximum(np.linalg.norm(r, axis=1, keepdims=True), 1e-8)
    sim = ((r / norms) @ (r / norms).T).astype(np.float32)
    lo, hi = 0.1 + 1e-4, 0.9 - 1e-4
    for _ in range(100):
        theta = (lo + hi) / 2.0
        g = sim > np.float32(theta)
        np.fill_diagonal(g, False)
        degree = g.sum() / g.shape[0]
        if abs(degree - 10) < 0.6:
            break
        if degree > 10:
            lo = theta
        else:
            hi = theta
    return g


def test_cosine_graph_matches_dense_reference_and_hits_the_degree_target():
    rng = np.random.default_rng(0)
    r = (rng.random((90, 40)) < 0.15).astype(np.float32)
    r[5] = 0.0  # an empty row: no similarity to anything
    graph = cosine_graph(sp.csr_matrix(r), chunk=16)  # several chunks
    want = dense_reference_graph(r)
    np.testing.assert_array_equal(graph.toarray() != 0, want)
    degree = graph.nnz / graph.shape[0]
    assert abs(degree - 10) < 0.6
    assert (graph != graph.T).nnz == 0
    assert graph.diagonal().sum() == 0 and graph[5].nnz == 0


def test_cosine_graph_stays_at_the_search_floor_when_too_sparse():
    # disjoint pairs of identical rows: every row has exactly one neighbour (degree 1 < 10)
    r = np.kron(np.eye(10), np.ones((2, 3)))
    graph = cosine_graph(sp.csr_matrix(r))
    np.testing.assert_array_equal(graph.toarray() != 0, dense_reference_graph(r))
    assert graph.nnz == 20


def test_before_graphs_use_ids_with_interactions():
    prev = interactions_to_csr([2, 2, 3, 5], [1, 4, 4, 6], 7, 8)
    g = BeforeGraphs.from_train(prev)
    assert g.user_ids.tolist() == [2, 3, 5] and g.item_ids.tolist() == [1, 4, 6]
    np.testing.assert_array_equal(g.rating.toarray(), [[1, 1, 0], [0, 1, 0], [0, 0, 1]])
    assert (g.n_users, g.n_items) == (7, 8)


# ----------------------------------------------------------------------------- terms
def dense_layers(emb: np.ndarray, r: np.ndarray, n_layers: int) -> list:
    """E^0..E^{n-1} of LightGCN with the dense normalised adjacency of r."""
    n_u, n_i = r.shape
    a = np.zeros((n_u + n_i, n_u + n_i))
    a[:n_u, n_u:] = r
    a[n_u:, :n_u] = r.T
    deg = a.sum(1)
    dinv = np.where(deg > 0, 1.0 / np.sqrt(np.maximum(deg, 1e-12)), 0.0)
    a_hat = dinv[:, None] * a * dinv[None, :]
    out = [emb.astype(np.float64)]
    for _ in range(n_layers - 1):
        out.append(a_hat @ out[-1])
    return out


def log_softmax(s):
    m = s.max(axis=-1, keepdims=True)
    return s - m - np.log(np.exp(s - m).sum(axis=-1, keepdims=True))


def reference_terms(old, present, n_old_users, n_users, prev, graphs, batch_users, batch_items, compact_bug=False):
    """UI, IU, UU, II of §6.5 computed directly; old / present are lists of joint layer tables."""
    bu_ids, bi_ids = graphs.user_ids, graphs.item_ids
    upos = {u: j for j, u in enumerate(bu_ids)}
    ipos = {i: j for j, i in enumerate(bi_ids)}
    users = [u for u in np.unique(batch_users) if u in upos]
    items = [i for i in np.unique(batch_items) if i in ipos]
    r = prev.toarray()
    uu, ii = graphs.uu.toarray(), graphs.ii.toarray()
    out = dict(ui=0.0, iu=0.0, uu=0.0, ii=0.0)
    for o, p in zip(old, present):
        o_u, o_i = o[:n_old_users], o[n_old_users:]
        p_u, p_i = p[:n_users], p[n_users:]
        row_u = (lambda u: upos[u]) if compact_bug else (lambda u: u)  # B4: compact index into a full table
        row_i = (lambda i: ipos[i]) if compact_bug else (lambda i: i)

        def term(target, neigh, weights):
            lp = log_softmax(target @ neigh.T / T)
            return (weights * lp).sum() / (weights.sum() + 1e-8)

        if users:
            out["ui"] += -np.mean([term(o_u[row_u(u)], p_i[bi_ids], r[u, bi_ids]) for u in users]) / len(old)
            out["uu"] += -np.mean([term(o_u[row_u(u)], p_u[bu_ids], uu[upos[u]]) for u in users]) / len(old)
        if items:
            out["iu"] += -np.mean([term(o_i[row_i(i)], p_u[bu_ids], r[bu_ids, i]) for i in items]) / len(old)
            out["ii"] += -np.mean([term(o_i[row_i(i)], p_i[bi_ids], ii[ipos[i]]) for i in items]) / len(old)
    return out


def tiny_case(kind: str, seed: int = 0):
    """A model trained on nothing but with spread-out rows, old block with ids 0 and 1 idle, grown to block k."""
    rng = np.random.default_rng(seed)
    n_u0, n_i0, n_u1, n_i1 = 12, 14, 15, 17
    pairs = [(u, i) for u in range(2, n_u0) for i in range(1, n_i0) if rng.random() < 0.35]
    prev = interactions_to_csr([p[0] for p in pairs], [p[1] for p in pairs], n_u0, n_i0)
    pairs1 = [(u, i) for u in range(n_u1) for i in range(n_i1) if rng.random() < 0.25]
    train1 = interactions_to_csr([p[0] for p in pairs1], [p[1] for p in pairs1], n_u1, n_i1)
    model = build_model(kind, n_u0, n_i0, 6, layers=2, seed=seed)
    with torch.no_grad():
        model.embedding.weight.mul_(60.0)  # norms ~1: non-trivial softmaxes
    model.set_interactions(prev)
    graphs = BeforeGraphs.from_train(prev)
    snapshot = BeforeSnapshot.capture(model, prev)
    old = [np.concatenate([u.numpy(), i.numpy()]).astype(np.float64) for u, i in zip(snapshot.users, snapshot.items)]
    model.grow(n_u1, n_i1)
    with torch.no_grad():
        model.embedding.weight.add_(0.3 * torch.randn(model.embedding.weight.shape,
                                                      generator=torch.Generator().manual_seed(seed + 1)))
    model.set_interactions(train1)
    w = model.embedding.weight.detach().numpy()
    present = dense_layers(w, train1.toarray(), 2) if kind == "lightgcn" else [w.astype(np.float64)]
    users = torch.tensor([0, 1, 2, 3, 3, 7, 11, 13, 14])  # idle old ids, before ids, new ids
    items = torch.tensor([0, 2, 5, 5, 9, 13, 15, 16])
    return dict(model=model, prev=prev, train1=train1, graphs=graphs, snapshot=snapshot, old=old, present=present,
                users=users, items=items, n_u0=n_u0, n_u1=n_u1)


def run_term(case, **kwargs):
    opts = dict(temperature=T, lwckd_lambda=1.0, cluster_lambda=0.0, use_piw=False, seed=0)
    opts.update(kwargs)
    term = LWCKDTerm(case["model"], case["snapshot"], case["graphs"], np.arange(case["train1"].shape[1]), **opts)
    loss = term(case["model"], case["users"], case["items"], None, 0)
    return term, loss, term.epoch_summary()


@pytest.mark.parametrize("kind", ["bpr", "lightgcn"])
def test_lwckd_terms_match_a_direct_computation(kind):
    """Also B4: old rows are looked up by entity id (ids 0 and 1 have no block k-1 interaction)."""
    case = tiny_case(kind)
    assert case["graphs"].user_ids[0] == 2 and case["graphs"].item_ids[0] == 1  # compact != id
    assert case["graphs"].uu.nnz and case["graphs"].ii.nnz
    _, loss, parts = run_term(case)
    want = reference_terms(case["old"], case["present"], case["n_u0"], case["n_u1"], case["prev"], case["graphs"],
                           case["users"].numpy(), case["items"].numpy())
    for key in ("ui", "iu", "uu", "ii"):
        assert parts[f"lwckd_{key}"] == pytest.approx(want[key], rel=1e-4, abs=1e-5), key
    assert float(loss.detach()) == pytest.approx(sum(want.values()), rel=1e-4)
    bug = reference_terms(case["old"], case["present"], case["n_u0"], case["n_u1"], case["prev"], case["graphs"],
                          case["users"].numpy(), case["items"].numpy(), compact_bug=True)
    assert abs(sum(bug.values()) - float(loss.detach())) > 1e-3  # the test can tell B4 from the fix


def test_lwckd_gradients_reach_present_rows_only_of_before_entities():
    case = tiny_case("bpr")
    _, loss, _ = run_term(case)
    loss.backward()
    grad = case["model"].embedding.weight.grad.abs().sum(1).numpy()
    n_u1 = case["n_u1"]
    g = case["graphs"]
    assert (grad[g.user_ids] > 0).all() and (grad[n_u1 + g.item_ids] > 0).all()
    others = np.setdiff1d(np.arange(len(grad)), np.concatenate([g.user_ids, n_u1 + g.item_ids]))
    assert (grad[others] == 0).all()


def test_row_logsumexp_gradients_match_autograd():
    gen = torch.Generator().manual_seed(0)
    t = torch.randn(7, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    n = torch.randn(11, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: RowLogSumExp.apply(a, b, 0.2), (t, n))
    np.testing.assert_allclose(RowLogSumExp.apply(t, n, 0.2).detach().numpy(),
                               torch.logsumexp(t @ n.T * 0.2, 1).detach().numpy(), rtol=1e-12)


@pytest.mark.parametrize("cache,pooled", [(True, False), (False, False), (True, True), (False, True)])
def test_row_logsumexp_float32_kernel_path_matches_torch(monkeypatch, cache, pooled):
    """The CPU float32 path (bound folded into the product; rows kept or recomputed in chunks; reused buffers)."""
    import ccd_dist.ccd.lwckd as lwckd_mod

    if not cache:
        monkeypatch.setattr(lwckd_mod, "CACHE_BUDGET", 0)
        monkeypatch.setattr(lwckd_mod, "SCORE_BUDGET", 40)  # 3-row chunks of 13 columns
    gen = torch.Generator().manual_seed(1)
    t0 = torch.randn(8, 6, generator=gen) * 3
    n0 = torch.randn(13, 6, generator=gen) * 3
    g = torch.randn(8, generator=gen)
    t, n = t0.clone().requires_grad_(True), n0.clone().requires_grad_(True)
    buffers = ScoreBuffers() if pooled else None
    for _ in range(2):  # the second round reuses the first round's buffers
        t.grad = n.grad = None
        (RowLogSumExp.apply(t, n, 0.7, buffers) * g).sum().backward()
    t_ref, n_ref = t0.double().requires_grad_(True), n0.double().requires_grad_(True)
    out_ref = torch.logsumexp(t_ref @ n_ref.T * 0.7, 1)
    (out_ref * g.double()).sum().backward()
    tol = dict(rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(RowLogSumExp.apply(t0, n0, 0.7, buffers).numpy(), out_ref.detach().numpy(),
                               rtol=1e-5)
    if pooled:
        assert buffers.free, "buffers come back to the pool after the backward"
    np.testing.assert_allclose(t.grad.numpy(), t_ref.grad.numpy(), **tol)
    np.testing.assert_allclose(n.grad.numpy(), n_ref.grad.numpy(), **tol)


def _lse_and_grads(t0, n0, g, scale, **kwargs):
    t, n = t0.clone().requires_grad_(True), n0.clone().requires_grad_(True)
    out = RowLogSumExp.apply(t, n, scale, *kwargs.values())
    (out * g).sum().backward()
    return out.detach(), t.grad, n.grad


def test_row_logsumexp_uses_the_exact_max_when_the_bound_is_too_loose():
    """Large norms (bound > SAFE_SHIFT) with one dominant pair: no underflow to log(0), same as float64."""
    gen = torch.Generator().manual_seed(2)
    t0 = torch.randn(5, 4, generator=gen) * 30
    n0 = torch.randn(9, 4, generator=gen) * 30
    n0[0] = -t0[0]  # row 0's scores are all far below its Cauchy-Schwarz bound except none
    g = torch.rand(5, generator=gen)
    out, gt, gn = _lse_and_grads(t0, n0, g, 0.2, buffers=ScoreBuffers())
    ref, rt, rn = _lse_and_grads(t0.double(), n0.double(), g.double(), 0.2)
    assert torch.isfinite(out).all()
    np.testing.assert_allclose(out.numpy(), ref.numpy(), rtol=1e-5)
    np.testing.assert_allclose(gt.numpy(), rt.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gn.numpy(), rn.numpy(), rtol=1e-4, atol=1e-4)


def test_row_logsumexp_bfloat16_products_stay_close_to_float32():
    gen = torch.Generator().manual_seed(3)
    t0 = torch.randn(40, 16, generator=gen)
    n0 = torch.randn(300, 16, generator=gen)
    g = torch.rand(40, generator=gen)
    ref = _lse_and_grads(t0, n0, g, 0.2, buffers=None, dtype=torch.float32)
    low = _lse_and_grads(t0, n0, g, 0.2, buffers=ScoreBuffers(), dtype=torch.bfloat16)
    for a, b in zip(low, ref):
        assert a.dtype == torch.float32
        rel = float(torch.linalg.norm(a - b) / torch.linalg.norm(b))
        assert 0 < rel < 2e-2  # rounded (not silently float32), but close


def test_lwckd_term_rejects_an_unknown_precision():
    case = tiny_case("bpr", seed=3)
    with pytest.raises(InputError, match="lwckd_precision"):
        run_term(case, precision="float16")


def test_b3_piw_weights_apply_per_user():
    """B3: the reference's (B,) x (B, 1) broadcast makes PIW a no-op; fixed, the weights matter."""
    case = tiny_case("bpr", seed=3)
    term, _, _ = run_term(case, use_piw=True)
    with torch.no_grad():  # make the per-user weights clearly unequal
        term.piw.cstm.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(5))
        for layer in (term.piw.mlp[0], term.piw.mlp[2]):
            layer.weight.mul_(300.0)
    loss_fixed = term(case["model"], case["users"], case["items"], None, 0)
    fixed = term.epoch_summary()
    term.piw_noop = True
    term(case["model"], case["users"], case["items"], None, 0)
    noop = term.epoch_summary()
    _, _, plain = run_term(case, use_piw=False)

    # per-user weights: mean 1, not all equal
    u_ids, _ = term._batch_entities(case["users"], term.user_pos)
    ut = torch.from_numpy(u_ids)
    layer = case["model"].embedding.weight[: case["n_u1"]]
    w = term.piw(term.old_users[0][ut], layer[ut], term.centres[0]).detach().numpy()
    assert w.mean() == pytest.approx(1.0, rel=1e-5) and w.std() > 0.05
    # the fixed UI / UU are the weighted means of the per-user terms
    old_u = case["old"][0][: case["n_u0"]]
    p = case["present"][0]
    p_u, p_i = p[: case["n_u1"]], p[case["n_u1"]:]
    g = case["graphs"]
    r, uu = case["prev"].toarray(), g.uu.toarray()
    upos = {u: j for j, u in enumerate(g.user_ids)}

    def row_term(u, neigh, weights):
        return (weights * log_softmax(old_u[u] @ neigh.T / T)).sum() / (weights.sum() + 1e-8)

    rows_ui = np.array([row_term(u, p_i[g.item_ids], r[u, g.item_ids]) for u in u_ids])
    rows_uu = np.array([row_term(u, p_u[g.user_ids], uu[upos[u]]) for u in u_ids])
    assert fixed["lwckd_ui"] == pytest.approx(-(rows_ui * w).mean(), rel=1e-4)
    assert fixed["lwckd_uu"] == pytest.approx(-(rows_uu * w).mean(), rel=1e-4)
    assert abs(fixed["lwckd_ui"] - plain["lwckd_ui"]) > 1e-3
    # piw_noop reproduces the reference: the same as no PIW at all
    assert noop["lwckd_ui"] == pytest.approx(plain["lwckd_ui"], rel=1e-5)
    assert noop["lwckd_uu"] == pytest.approx(plain["lwckd_uu"], rel=1e-5)
    assert noop["lwckd_iu"] == pytest.approx(fixed["lwckd_iu"], rel=1e-6)  # IU / II never weighted
    plain_total = sum(plain[f"lwckd_{k}"] for k in ("ui", "iu", "uu", "ii"))
    assert float(loss_fixed.detach()) != pytest.approx(plain_total, rel=1e-4)


# ----------------------------------------------------------------------------- cluster loss
def test_dec_cluster_loss_matches_the_student_t_formula():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((9, 3))
    mu = rng.standard_normal((4, 3))
    nu = 8.0
    q = (1 + ((z[:, None, :] - mu[None]) ** 2).sum(-1) / nu) ** (-(nu + 1) / 2)
    q /= q.sum(1, keepdims=True)
    p = q ** 2 / q.sum(0, keepdims=True)
    p /= p.sum(1, keepdims=True)
    want = (p * (np.log(p) - np.log(q))).sum() / len(z)
    got = dec_cluster_loss(torch.tensor(z), torch.tensor(mu), nu)
    assert float(got) == pytest.approx(want, rel=1e-7)  # (the 1e-8 guard of the cluster frequency)


@pytest.mark.parametrize("kind", ["bpr", "lightgcn"])
def test_cluster_loss_only_moves_the_centres(kind):
    case = tiny_case(kind, seed=1)
    term, loss, parts = run_term(case, use_piw=True, lwckd_lambda=0.0, cluster_lambda=1.0)
    assert parts["lwckd_cluster"] > 0
    loss.backward()
    grad = case["model"].embedding.weight.grad
    assert grad is None or float(grad.abs().sum()) == 0.0
    assert len(term.centres) == (2 if kind == "lightgcn" else 1)
    assert all(float(c.grad.abs().sum()) > 0 for c in term.centres)
    for p in term.piw.parameters():
        assert p.grad is None or float(p.grad.abs().sum()) == 0.0


def test_term_parameters_are_centres_cstm_and_mlp():
    case = tiny_case("lightgcn", seed=2)
    term, _, _ = run_term(case, use_piw=True, n_clusters=4)
    shapes = sorted(tuple(p.shape) for p in term.parameters())
    assert (4, 6) in shapes and (4, 6, 6) in shapes and (6, 4) in shapes and (1, 6) in shapes
    assert sum(1 for s in shapes if s == (4, 6)) == 2  # one set of centres per regularised layer


def test_shared_before_graphs_are_built_once_per_block(monkeypatch):
    import ccd_dist.ccd.lwckd as lwckd_mod

    calls = []
    real = lwckd_mod.BeforeGraphs.from_train.__func__
    monkeypatch.setattr(lwckd_mod.BeforeGraphs, "from_train",
                        classmethod(lambda cls, m, chunk=256: calls.append(1) or real(cls, m, chunk)))
    monkeypatch.setattr(lwckd_mod, "_SHARED", {})
    rng = np.random.default_rng(0)
    a = sp.random(30, 20, density=0.2, format="csr", random_state=rng)
    b = sp.random(30, 20, density=0.2, format="csr", random_state=rng)
    first = lwckd_mod.BeforeGraphs.shared(a)
    assert lwckd_mod.BeforeGraphs.shared(a.copy()) is first and len(calls) == 1
    other = lwckd_mod.BeforeGraphs.shared(b)
    assert other is not first and len(calls) == 2
    np.testing.assert_array_equal(other.user_ids, lwckd_mod.BeforeGraphs.from_train(b).user_ids)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_row_logsumexp_is_identical_at_any_thread_count(dtype):
    gen = torch.Generator().manual_seed(4)
    t0, n0, g = torch.randn(64, 16, generator=gen), torch.randn(700, 16, generator=gen), torch.rand(64, generator=gen)
    results = []
    for threads in (1, 2):
        torch.set_num_threads(threads)  # the one_torch_thread fixture restores the count
        results.append(_lse_and_grads(t0, n0, g, 0.2, buffers=ScoreBuffers(), dtype=dtype))
    assert all(torch.equal(a, b) for a, b in zip(*results))


def test_neighbour_rows_gradient_does_not_depend_on_torch_threads():
    """Neighbours repeat across target rows; the gradient must add them up in a fixed order."""
    rng = np.random.default_rng(4)
    target = torch.from_numpy(rng.standard_normal((400, 64)).astype(np.float32))
    neighbours = torch.from_numpy(rng.standard_normal((150, 64)).astype(np.float32)).requires_grad_(True)
    weights = sp.random(400, 150, density=0.2, random_state=5, format="csr")
    grads = gradients_per_thread_count(lambda: neighbour_log_likelihood(target, neighbours, weights, 5.0).sum(),
                                       neighbours)
    assert all(torch.equal(grads[0], g) for g in grads[1:])
