"""Stage 2 (§5): proxies (§5.2), exclusion (§5.1), replay sources (§5.4), the update end to end."""
import numpy as np
import pytest
import torch

from ccd_dist import ranking
from ccd_dist.ccd.ensemble import build_rank_ensemble, member_from_model
from ccd_dist.ccd.growth import new_entity_rows
from ccd_dist.ccd.proxies import merge_proxy, next_proxy
from ccd_dist.ccd.student_update import (
    StudentUpdateConfig,
    finetune_config,
    negative_exclusion,
    replay_sources,
    update_student,
)
from ccd_dist.config import TrainConfig
from ccd_dist.data import make_synthetic_stream
from ccd_dist.errors import InputError
from ccd_dist.models import build_model
from ccd_dist.training.loop import fit
from ccd_dist.training.static import block_evaluator

CFG = dict(batch_size=256, epochs=4, eval_every=2, patience=2, absolute=20, s_samples=3, p_samples=3)


@pytest.fixture(scope="module")
def world():
    stream = make_synthetic_stream(n_users=120, n_items=80, n_blocks=3, seed=4)
    lists, distilled = {}, {}
    for j in (0, 1):
        block = stream[j]
        members = []
        for seed in (0, 1):
            teacher = build_model("bpr", block.n_users, block.n_items, 16, seed=seed)
            fit(teacher, block.train, TrainConfig(lr=1e-2, batch_size=256, epochs=8, eval_every=8, seed=seed), None)
            members.append(member_from_model(f"bpr_{seed}", teacher))
        lists[j] = build_rank_ensemble(members, block.train)
        student = build_model("lightgcn", block.n_users, block.n_items, 8, seed=2)
        fit(student, block.train, TrainConfig(lr=1e-2, batch_size=256, epochs=5, eval_every=5, seed=2), None)
        distilled[j] = student
    return stream, lists, distilled


@pytest.fixture(scope="module")
def updates(world):
    stream, lists, distilled = world
    before = {j: distilled[j].embedding.weight.detach().clone() for j in (0, 1)}
    r1 = update_student(distilled[0], None, None, stream, 1, lists[0], StudentUpdateConfig(**CFG),
                        block_evaluator(stream[1], "valid", 4096))
    r2 = update_student(distilled[1], r1.stability, r1.plasticity, stream, 2, lists[1], StudentUpdateConfig(**CFG),
                        block_evaluator(stream[2], "valid", 4096))
    return {1: r1, 2: r2, "before": before}


def untrained_recall(stream, k):
    block = stream[k]
    model = build_model("lightgcn", block.n_users, block.n_items, 8, seed=11).set_interactions(block.train)
    return block_evaluator(block, "valid", 4096)(model)["recall@20"]


@pytest.mark.parametrize("k", [1, 2])
def test_update_grows_the_student_and_beats_an_untrained_model(world, updates, k):
    stream, _, distilled = world
    res = updates[k]
    block, prev = stream[k], stream[k - 1]
    assert (res.student.n_users, res.student.n_items) == (block.n_users, block.n_items)
    assert res.fit_result.best_valid["recall@20"] > untrained_recall(stream, k) + 0.05
    # k = 1 replays S only (s_samples each), k = 2 both proxies; old users only, at most that many
    per_user = CFG["s_samples"] + (CFG["p_samples"] if k == 2 else 0)
    assert 0 < res.replay_size <= prev.n_users * per_user
    assert all("replay_loss" in h for h in res.fit_result.history)
    # the input model is left as it was
    assert torch.equal(distilled[k - 1].embedding.weight, updates["before"][k - 1])


def test_proxies_follow_the_ema_rule_across_blocks(world, updates):
    _, _, distilled = world
    s1, p1 = updates[1].stability, updates[1].plasticity
    for proxy in (s1, p1):  # k = 1: copies of D_0, frozen
        assert torch.equal(proxy.embedding.weight, distilled[0].embedding.weight)
        assert not any(p.requires_grad for p in proxy.parameters())
    s2 = updates[2].stability
    d1, w = distilled[1], StudentUpdateConfig().s_weight
    n_u, n_i = s1.n_users, s1.n_items
    np.testing.assert_allclose(s2.user_table[:n_u].numpy(),
                               (w * s1.user_table + (1 - w) * d1.user_table[:n_u]).detach().numpy(), rtol=1e-6)
    np.testing.assert_allclose(s2.item_table[:n_i].numpy(),
                               (w * s1.item_table + (1 - w) * d1.item_table[:n_i]).detach().numpy(), rtol=1e-6)
    assert torch.equal(s2.user_table[n_u:], d1.user_table[n_u:].detach())
    assert (s2.n_users, s2.n_items) == (d1.n_users, d1.n_items)


def test_merge_proxy_arithmetic_and_missing_proxies():
    old = build_model("bpr", 2, 3, dim=2, seed=0)
    dist = build_model("bpr", 4, 5, dim=2, seed=1)
    merged = merge_proxy(old, dist, 0.25)
    with torch.no_grad():
        np.testing.assert_allclose(merged.user_table[:2], 0.25 * old.user_table + 0.75 * dist.user_table[:2], rtol=1e-6)
        np.testing.assert_allclose(merged.item_table[:3], 0.25 * old.item_table + 0.75 * dist.item_table[:3], rtol=1e-6)
        assert torch.equal(merged.user_table[2:], dist.user_table[2:])
        assert torch.equal(merged.item_table[3:], dist.item_table[3:])
    assert torch.equal(merge_proxy(old, dist, 1.0).user_table[:2], old.user_table.detach())
    assert torch.equal(next_proxy(None, dist, 0.9, 1).embedding.weight, dist.embedding.weight)
    with pytest.raises(InputError, match="block 2 needs"):
        next_proxy(None, dist, 0.9, 2, "stability")
    with pytest.raises(InputError, match="larger"):
        merge_proxy(dist, old, 0.5)


def test_negative_exclusion_for_old_users_only(world):
    stream, lists, distilled = world
    d0 = distilled[0]
    excl = negative_exclusion(stream, 1, lists[0], [d0], n=10)
    assert excl.shape == (stream[1].n_users, stream[1].n_items)
    teacher_top = lists[0].topk(10, exclude=stream[0].train)
    users, items = d0.representations()
    student_top, _ = ranking.topk(users, items, 10)
    for u in range(stream[0].n_users):
        row = set(excl.indices[excl.indptr[u]:excl.indptr[u + 1]].tolist())
        assert row == set(teacher_top[u].tolist()) | set(student_top[u].tolist())
        assert not row & set(stream[0].train[u].indices.tolist()) - set(student_top[u].tolist())
    assert excl[stream[0].n_users:].nnz == 0


def test_replay_sources_follow_the_flags():
    def names(k, **flags):
        return [n for n, _, _ in replay_sources(StudentUpdateConfig(**flags), k, "D", "S", "P")]

    assert names(1) == ["stability"]
    assert names(2) == ["stability", "plasticity"]
    assert names(1, use_stability=False) == ["plasticity"]
    assert names(2, use_plasticity=False) == ["stability"]
    assert names(2, use_stability=False, use_plasticity=False) == ["distilled"]
    assert names(2, p_samples=0) == ["stability"]


def test_new_ids_start_from_the_growth_rows(world):
    stream, lists, distilled = world
    d0, block = distilled[0], stream[1]
    cfg = StudentUpdateConfig(**{**CFG, "lr": 0.0, "weight_decay": 0.0, "epochs": 1,
                                 "replay_reference": "current"})
    res = update_student(d0, None, None, stream, 1, lists[0], cfg, None)
    user_rows, item_rows = new_entity_rows(d0.user_table, d0.item_table, block.train, d0.n_users, d0.n_items, 20)
    assert np.abs(user_rows).sum() > 0
    with torch.no_grad():
        np.testing.assert_allclose(res.student.user_table[d0.n_users:].numpy(), user_rows, rtol=1e-6)
        np.testing.assert_allclose(res.student.item_table[d0.n_items:].numpy(), item_rows, rtol=1e-6)
        assert torch.equal(res.student.user_table[:d0.n_users], d0.user_table)
    assert res.replay_size > 0


def test_finetune_baseline_needs_no_teacher(world):
    stream, _, distilled = world
    cfg = finetune_config(**{**CFG, "epochs": 2})
    res = update_student(distilled[1], None, None, stream, 2, None, cfg, block_evaluator(stream[2], "valid", 4096))
    assert res.stability is None and res.plasticity is None and res.replay_size == 0
    assert (res.student.n_users, res.student.n_items) == (stream[2].n_users, stream[2].n_items)
    assert not any("replay_loss" in h for h in res.fit_result.history)
    with pytest.raises(InputError, match="teacher lists"):
        update_student(distilled[1], None, None, stream, 2, None, StudentUpdateConfig(**CFG), None)
    with pytest.raises(InputError, match="block 1 is"):
        update_student(distilled[0], None, None, stream, 2, None, cfg, None)
