"""§5.4 / §6.4 replay: candidates, weighted sampling without replacement, labels, merging, the pass."""
import math

import numba
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scipy.stats import chisquare

from ccd_dist import ranking
from ccd_dist.ccd import replay as replay_mod
from ccd_dist.ccd.replay import ReplayPass, annealed_lambda, merge_replay, pair_logits, sample_replay
from ccd_dist.data import interactions_to_csr
from ccd_dist.errors import InputError
from ccd_dist.models import build_model


def random_case(n_users=30, n_items=50, d=4, seed=0):
    rng = np.random.default_rng(seed)
    f = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    mask = sp.random(n_users, n_items, density=0.3, random_state=seed, format="csr")
    return f(n_users, d), f(n_items, d), f(n_users, 3), f(n_items, 3), mask


def dense_top(user, item, mask, absolute):
    """Brute-force reference (tiny data only): each user's top-`absolute` unmasked items."""
    scores = (user.astype(np.float64) @ item.T.astype(np.float64))
    scores[mask.toarray() != 0] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")
    return [[i for i in row[:absolute] if np.isfinite(scores[u, i])] for u, row in enumerate(order)]


def per_user(users, items):
    out = {}
    for u, i in zip(users.tolist(), items.tolist()):
        out.setdefault(u, []).append(i)
    return out


def test_candidates_are_the_unmasked_top_absolute():
    su, si, ru, ri, mask = random_case()
    absolute = 8
    # asking for more samples than candidates returns every candidate
    users, items, labels = sample_replay(su, si, ru, ri, None, mask, absolute=absolute, n_samples=50, seed=1)
    got = per_user(users, items)
    expected = dense_top(su, si, mask, absolute)
    for u in range(len(su)):
        assert sorted(got[u]) == sorted(expected[u])
        assert len(got[u]) <= absolute
        assert not (mask[u].toarray()[0, got[u]] != 0).any()
    np.testing.assert_allclose(labels, 1 / (1 + np.exp(-np.einsum("ij,ij->i", su[users], si[items]))), rtol=1e-5)


def test_draws_without_replacement_and_respect_user_subsets():
    su, si, ru, ri, mask = random_case()
    chosen = np.array([3, 7, 11, 29])
    users, items, _ = sample_replay(su, si, ru, ri, chosen, mask, absolute=10, n_samples=4, seed=2)
    assert sorted(set(users.tolist())) == chosen.tolist()
    pairs = set(zip(users.tolist(), items.tolist()))
    assert len(pairs) == len(users) == 4 * len(chosen)
    top = dense_top(su, si, mask, 10)
    assert all(i in top[u] for u, i in pairs)
    # a fully masked user has no candidates and no samples; rows beyond the mask are unmasked
    full = sp.csr_matrix(np.ones((1, si.shape[0])))
    users, items, _ = sample_replay(su, si, ru, ri, [0, 1], full, absolute=5, n_samples=2)
    assert users.tolist() == [1, 1]


def test_weights_tilt_towards_items_the_reference_ranks_low():
    """With one draw per user, P(candidate j) = w_j / sum w, w = exp(eps (rank_ref - rank_src))."""
    rng = np.random.default_rng(5)
    n_users, n_items, absolute, eps = 4000, 60, 10, 0.03
    # every user has the same taste, so every user has the same candidates and weights;
    # the draws differ because the noise is keyed by the user id
    su = np.tile(rng.standard_normal((1, 4)).astype(np.float32), (n_users, 1))
    si = rng.standard_normal((n_items, 4)).astype(np.float32)
    ru = np.tile(rng.standard_normal((1, 4)).astype(np.float32), (n_users, 1))
    ri = rng.standard_normal((n_items, 4)).astype(np.float32)
    _, items, _ = sample_replay(su, si, ru, ri, None, None, absolute=absolute, n_samples=1, eps=eps, seed=3)
    cands = np.argsort(-(si @ su[0]), kind="stable")[:absolute]
    ref_rank = np.empty(n_items, np.int64)
    ref_rank[np.argsort(-(ri @ ru[0]), kind="stable")] = np.arange(n_items)
    w = np.exp(eps * (ref_rank[cands] - np.arange(absolute)))
    assert w.max() / w.min() > 2  # the case does tilt
    counts = np.array([(items == c).sum() for c in cands])
    assert counts.sum() == n_users
    assert chisquare(counts, n_users * w / w.sum()).pvalue > 1e-3
    assert counts[np.argmax(w)] > 1.5 * counts[np.argmin(w)]


def test_deterministic_by_seed_whatever_the_thread_count():
    su, si, ru, ri, mask = random_case(n_users=300, n_items=80)
    before = numba.get_num_threads()
    try:
        runs = []
        for threads in (1, max(2, before)):
            numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
            runs.append(sample_replay(su, si, ru, ri, None, mask, absolute=12, n_samples=4, seed=9))
    finally:
        numba.set_num_threads(before)
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)
    other = sample_replay(su, si, ru, ri, None, mask, absolute=12, n_samples=4, seed=10)
    assert not np.array_equal(other[1], runs[0][1])


def test_softmax_and_callable_labels():
    su, si, ru, ri, mask = random_case(n_users=5, n_items=20)
    users, items, labels = sample_replay(su, si, ru, ri, None, None, absolute=5, n_samples=3, label="softmax")
    logits = su.astype(np.float64) @ si.T.astype(np.float64)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    np.testing.assert_allclose(labels, probs[users, items], rtol=1e-4)
    _, _, const = sample_replay(su, si, ru, ri, None, None, absolute=5, n_samples=3,
                                label=lambda u, i, s: np.full(len(i), 0.25))
    assert np.all(const == np.float32(0.25))


def test_merge_replay_keeps_the_max_label():
    a = (np.array([0, 0, 1]), np.array([3, 4, 3]), np.array([0.2, 0.9, 0.5], np.float32))
    b = (np.array([0, 2, 1]), np.array([3, 1, 3]), np.array([0.7, 0.1, 0.4], np.float32))
    users, items, labels = merge_replay(a, b)
    assert list(zip(users.tolist(), items.tolist())) == [(0, 3), (0, 4), (1, 3), (2, 1)]
    np.testing.assert_array_equal(labels, np.array([0.7, 0.9, 0.5, 0.1], np.float32))
    assert len(merge_replay()[0]) == 0


def test_pair_logits_match_the_model_scores_and_carry_gradients():
    train = interactions_to_csr([0, 0, 1, 2], [0, 1, 1, 2], 3, 4)
    for kind in ("bpr", "lightgcn"):
        model = build_model(kind, 3, 4, dim=4, seed=0).set_interactions(train)
        users, items = np.array([0, 1, 2, 2]), np.array([3, 1, 0, 2])
        logits = pair_logits(model, users, items)
        np.testing.assert_allclose(logits.detach().numpy(), model.score(users, items).numpy(), rtol=1e-5, atol=1e-7)
        logits.sum().backward()
        assert model.embedding.weight.grad is not None and model.embedding.weight.grad.abs().sum() > 0


def test_b15_replay_pass_keeps_the_last_triple(monkeypatch):
    """B15: the reference's last replay batch ends at -1 and drops one triple."""
    seen = []
    real = replay_mod.pair_logits

    def spy(model, users, items):
        seen.extend(zip(np.asarray(users).tolist(), np.asarray(items).tolist()))
        return real(model, users, items)

    monkeypatch.setattr(replay_mod, "pair_logits", spy)
    model = build_model("bpr", 4, 5, dim=3, seed=0)
    data = (np.array([0, 1, 2, 3, 3]), np.array([0, 1, 2, 3, 4]), np.full(5, 0.5, np.float32))
    step = ReplayPass(lambda m, r: data, lambda0=0.5, anneal_t=10, batch_size=2, seed=0)
    out = step(model, torch.optim.Adam(model.parameters(), lr=1e-3), 3)
    assert sorted(seen) == sorted(zip(data[0].tolist(), data[1].tolist()))
    assert out["replay_size"] == 5
    assert out["replay_lambda"] == pytest.approx(0.5 * math.exp(-0.3)) == annealed_lambda(0.5, 3, 10)


def test_replay_pass_learns_labels_and_resamples_when_told():
    model = build_model("bpr", 6, 6, dim=4, seed=1)
    users = np.repeat(np.arange(6), 2)
    items = np.stack([np.arange(6), (np.arange(6) + 3) % 6], 1).ravel()
    labels = np.tile([0.95, 0.05], 6).astype(np.float32)
    rounds = []

    def sampler(m, r):
        rounds.append(r)
        return users, items, labels

    step = ReplayPass(sampler, lambda0=1.0, anneal_t=1e9, batch_size=4, seed=0, resample_after=lambda e: e == 1)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for epoch in range(40):
        step(model, opt, epoch)
    assert rounds == [0, 1]  # drawn before epoch 0, redrawn after epoch 1 only
    with torch.no_grad():
        s = pair_logits(model, users, items).numpy()
    assert s[labels > 0.5].min() > s[labels < 0.5].max()


def test_sampler_of_several_sources_equals_separate_draws_merged():
    # ReplaySampler ranks all sources' candidates in one pass of the reference and keeps
    # the candidates between draws; the sets must be those of separate sample_replay calls.
    rng = np.random.default_rng(5)
    f = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    n_users, n_items = 40, 60
    old_u, old_i = f(30, 4), f(50, 4)  # a proxy sized for the previous block
    new_u, new_i = f(n_users, 6), f(n_items, 6)  # the updated student, block k's size
    mask = sp.random(n_users, n_items, density=0.2, random_state=1, format="csr")
    sources = [(old_u, old_i, np.arange(30), mask, 3), (old_u * 0.5, old_i, np.arange(30), mask, 0),
               (new_u, new_i, np.arange(n_users), None, 4)]
    seed_of = lambda round_, j: 100 * round_ + j  # noqa: E731
    sampler = replay_mod.ReplaySampler(sources, absolute=12, eps=0.05, seed_of=seed_of)
    for round_ in range(2):
        ref_u, ref_i = f(n_users, 5), f(n_items, 5)  # the reference changes between draws
        got = sampler(ref_u, ref_i, round_)
        want = merge_replay(*[sample_replay(su, si, ref_u, ref_i, users, m, absolute=12, n_samples=n, eps=0.05,
                                            seed=seed_of(round_, j))
                              for j, (su, si, users, m, n) in enumerate(sources)])
        assert len(got[0]) > 0
        cands = [c for _j, c, _n in sampler.plan]
        for c, ranks in zip(cands, replay_mod._reference_ranks(cands, ref_u, ref_i)):
            np.testing.assert_array_equal(ranks, ranking.rank_of(ref_u, ref_i, c.users, c.cand))
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)


def test_sampler_rejects_a_reference_with_fewer_items_than_a_source():
    su, si, ru, ri, mask = random_case()
    sampler = replay_mod.ReplaySampler([(su, si, None, mask, 2)], absolute=5, eps=0.1, seed_of=lambda r, j: r)
    with pytest.raises(InputError, match="fewer than the source"):
        sampler(ru, ri[:10], 0)
