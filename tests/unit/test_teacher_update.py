"""Stage 3 (§6): teacher update of BPR-MF, LightGCN and Mult-VAE members on a tiny 3-block stream."""
import copy
import dataclasses

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from ccd_dist.ccd.ensemble import build_rank_ensemble, member_from_model, stream_cover
from ccd_dist.ccd.growth import grow_with_init
from ccd_dist.ccd.teacher_update import TeacherUpdateConfig, negative_exclusion, update_teacher_member
from ccd_dist.ccd.vae_update import RetentionVAE, common_interactions, replay_rows, update_vae_member
from ccd_dist.config import TrainConfig
from ccd_dist.data import interactions_to_csr, make_synthetic_stream
from ccd_dist.errors import InputError
from ccd_dist.models import build_model
from ccd_dist.training.loop import fit
from ccd_dist.training.static import block_evaluator

BASE = TrainConfig(lr=0.02, batch_size=256, epochs=10, eval_every=5, patience=5, seed=0)
UPDATE = TeacherUpdateConfig(lr=0.01, batch_size=256, epochs=6, eval_every=2, patience=2, seed=0)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def stream():
    return make_synthetic_stream(n_users=120, n_items=80, n_blocks=3, seed=3)


@pytest.fixture(scope="module")
def side(stream):
    """Student side of block 1: a stability proxy (block 0 size) and the updated student (block 1)."""
    torch.set_num_threads(1)
    b0, b1 = stream[0], stream[1]
    stab = build_model("bpr", b0.n_users, b0.n_items, 8, seed=1)
    fit(stab, b0.train, BASE, None)
    student = build_model("bpr", b1.n_users, b1.n_items, 8, seed=2)
    fit(student, b1.train, BASE, None)
    return {"stability": stab.eval(), "plasticity": None, "student": student.eval()}


def base_member(stream, kind: str):
    b0 = stream[0]
    model = build_model(kind, b0.n_users, b0.n_items, 16, seed=0)
    cfg = dataclasses.replace(BASE, epochs=20 if kind == "vae" else 10)
    fit(model, b0.train, cfg, block_evaluator(b0, "valid", 64))
    lists = build_rank_ensemble([member_from_model(kind, model)], b0.train, cover=stream_cover(stream, 0))
    return model, lists


def recall(model, block, split="test"):
    return block_evaluator(block, split, 64)(model)["recall@20"]


@pytest.mark.parametrize("kind", ["bpr", "lightgcn", "vae"])
def test_update_learns_block_1_and_keeps_block_0(stream, side, kind):
    torch.set_num_threads(1)
    b0, b1 = stream[0], stream[1]
    member, lists = base_member(stream, kind)
    before_state = {k: v.clone() for k, v in member.state_dict().items()}
    updated, result = update_teacher_member(member, kind, stream, 1, side, lists, UPDATE,
                                            block_evaluator(b1, "valid", 64))
    assert (updated.kind, updated.n_users, updated.n_items) == (kind, b1.n_users, b1.n_items)
    assert (member.n_users, member.n_items) == (b0.n_users, b0.n_items)  # the input is left alone
    assert all(torch.equal(v, member.state_dict()[k]) for k, v in before_state.items())
    assert result.best_epoch > 0 and result.history

    untrained = build_model(kind, b1.n_users, b1.n_items, 16, seed=9).set_interactions(b1.train)
    assert recall(updated, b1, "valid") > recall(untrained, b1, "valid") + 0.05
    assert result.best_metric == pytest.approx(recall(updated, b1, "valid"))  # evaluated as returned

    # plain fine-tuning from the same member, same schedule: the stability reference
    tuned = copy.deepcopy(member)
    grow_with_init(tuned, b1.train, b1.n_users, b1.n_items)
    fit(tuned, b1.train, UPDATE.train_config(), block_evaluator(b1, "valid", 64))
    numbers = {"base": (recall(member, b0), float("nan"))}
    numbers.update({name: (recall(m, b0), recall(m, b1)) for name, m in (("updated", updated), ("finetuned", tuned))})
    print(f"{kind}: test recall@20 (block 0, block 1): " +  # shown with -s
          ", ".join(f"{n} {a:.3f}/{b:.3f}" for n, (a, b) in numbers.items()))
    assert numbers["updated"][0] > numbers["finetuned"][0] - 0.1  # not far worse than fine-tuning on old data


def test_second_block_uses_plasticity_and_grows_again(stream, side):
    torch.set_num_threads(1)
    b1, b2 = stream[1], stream[2]
    member, lists0 = base_member(stream, "bpr")
    cfg = dataclasses.replace(UPDATE, epochs=3)
    updated1, _ = update_teacher_member(member, "bpr", stream, 1, side, lists0, cfg, block_evaluator(b1, "valid", 64))
    lists1 = build_rank_ensemble([member_from_model("bpr", updated1)], b1.train, cover=stream_cover(stream, 1))
    stab = build_model("bpr", b1.n_users, b1.n_items, 8, seed=3)
    fit(stab, b1.train, BASE, None)
    plas = build_model("bpr", b1.n_users, b1.n_items, 8, seed=4)
    fit(plas, b1.train, BASE, None)
    student = build_model("bpr", b2.n_users, b2.n_items, 8, seed=5)
    fit(student, b2.train, BASE, None)
    side2 = {"stability": stab, "plasticity": plas, "student": student}
    updated2, result = update_teacher_member(updated1, "bpr", stream, 2, side2, lists1, cfg,
                                             block_evaluator(b2, "valid", 64))
    assert (updated2.n_users, updated2.n_items) == (b2.n_users, b2.n_items)
    sizes = [h["replay_size"] for h in result.history]
    assert sizes[0] > b1.n_users  # several draws per user from S, P and the student
    # a missing proxy that the config asks for is an error
    with pytest.raises(InputError, match="plasticity"):
        update_teacher_member(updated1, "bpr", stream, 2, {**side2, "plasticity": None}, lists1, cfg, None)


def test_wrong_or_missing_member_is_an_error(stream, side):
    b1 = stream[1]
    with pytest.raises(InputError, match="failed load"):
        update_teacher_member(None, "bpr", stream, 1, side, None, UPDATE, None)
    wrong = build_model("bpr", b1.n_users, b1.n_items, 16)  # already block-1 sized
    with pytest.raises(InputError, match="block 0"):
        update_teacher_member(wrong, "bpr", stream, 1, side, None, UPDATE, None)
    with pytest.raises(InputError, match="vae"):
        update_vae_member(build_model("bpr", 60, 64, 8), "bpr", stream, 1, side, None, UPDATE, None)


def test_negative_exclusion_is_the_union_of_the_top_lists(stream, side):
    b0, b1 = stream[0], stream[1]
    member, lists = base_member(stream, "bpr")
    reps = [(tuple(t.numpy() for t in side["stability"].representations()), True),
            (tuple(t.numpy() for t in side["student"].representations()), False)]
    excl = negative_exclusion(stream, 1, lists, reps, n=3).toarray() != 0
    want = np.zeros((b1.n_users, b1.n_items), bool)
    ens = lists.top_csr(3, exclude=b0.train).toarray() != 0
    want[: b0.n_users, : b0.n_items] |= ens
    mask = (sp.csr_matrix(b1.train, copy=True).toarray() != 0)
    mask[: b0.n_users, : b0.n_items] |= b0.train.toarray() != 0
    for (users, items), filtered in reps:
        scores = users @ items.T
        if filtered:
            scores = np.where(mask[: len(users), : len(items)], -np.inf, scores)
        top = np.argsort(-scores, axis=1, kind="stable")[:, :3]
        np.put_along_axis(want[: len(users), : len(items)], top, True, axis=1)
    np.testing.assert_array_equal(excl, want)


# ----------------------------------------------------------------------------- VAE pieces
def test_common_interactions_and_replay_rows():
    prev = interactions_to_csr([0, 0, 1, 2, 3], [0, 3, 1, 2, 4], 4, 5)

    class B:  # block k: user 1 and item 2 are active; user 0 and item 4 are not
        train = interactions_to_csr([1, 5], [0, 6], 6, 7)
        valid = interactions_to_csr([], [], 6, 7)
        test = interactions_to_csr([4], [2], 6, 7)

    common = common_interactions(prev, B)
    assert sorted(zip(*common.nonzero())) == [(0, 0), (1, 1), (2, 2)]
    rows = replay_rows(B.train, np.array([1, 1, 3, 3]), np.array([0, 2, 4, 4]), 0.1)
    np.testing.assert_allclose(rows.toarray()[[1, 3, 5]], [[1, 0, 0.1, 0, 0, 0, 0], [0, 0, 0, 0, 0.1, 0, 0],
                                                           [0, 0, 0, 0, 0, 0, 1]])


def test_vae_retention_is_the_kl_on_common_items():
    torch.set_num_threads(1)
    before = build_model("vae", 5, 6, 4, seed=0).set_interactions(interactions_to_csr([0, 1, 2], [0, 1, 2], 5, 6))
    present = build_model("vae", 6, 8, 4, seed=1)
    common = interactions_to_csr([0, 0, 2], [1, 4, 3], 5, 6)
    wrapper = RetentionVAE(present, before, common, kl_lambda=1.0)
    users = np.array([0, 1, 2, 5])  # user 1 has no common items, user 5 is new
    logp = torch.log_softmax(torch.randn(4, 8, generator=torch.Generator().manual_seed(0)), 1)
    got = float(wrapper.retention(users, logp))
    b = before.softmax([0, 2]).numpy()
    p = logp.exp().numpy()
    kl0 = sum(b[0, i] * (np.log(b[0, i]) - np.log(p[0, i])) for i in (1, 4))
    kl2 = b[1, 3] * (np.log(b[1, 3]) - np.log(p[2, 3]))
    assert got == pytest.approx((kl0 + kl2) / 2, rel=1e-5)
    assert all(not p.requires_grad or p.grad is None for p in before.parameters())
    assert not any(n.startswith("_before") for n, _ in wrapper.named_parameters())


@pytest.mark.parametrize("kind", ["bpr", "vae"])
def test_zero_epochs_only_grows_the_member(stream, kind):
    """The "without teacher update" ablation: block-1 size, old rows unchanged, nothing trained."""
    b0, b1 = stream[0], stream[1]
    member = build_model(kind, b0.n_users, b0.n_items, 8, seed=0).set_interactions(b0.train)
    cfg = dataclasses.replace(UPDATE, epochs=0)
    grown, result = update_teacher_member(member, kind, stream, 1, {}, None, cfg, None)
    assert (grown.n_users, grown.n_items) == (b1.n_users, b1.n_items) and result.epochs_run == 0
    old_items = member.representations()[1].numpy()
    np.testing.assert_array_equal(grown.representations()[1].numpy()[: b0.n_items], old_items)
    assert (grown.interactions != b1.train).nnz == 0


def _same_pattern(a, b) -> bool:
    return a.shape == b.shape and (a != b).nnz == 0


def test_cumulative_graph_keeps_old_edges_for_lightgcn_only(stream, side):
    """graph="cumulative": a LightGCN member propagates on train 0..k, BPR-MF is unaffected."""
    torch.set_num_threads(1)
    b1 = stream[1]
    union = stream.train_upto(1)
    assert union.nnz > b1.train.nnz and (union.multiply(b1.train)).nnz == b1.train.nnz
    member, lists = base_member(stream, "lightgcn")
    cfg = dataclasses.replace(UPDATE, epochs=2, graph="cumulative")
    updated, _ = update_teacher_member(member, "lightgcn", stream, 1, side, lists, cfg, None)
    assert _same_pattern(updated.interactions, union)
    block_only, _ = update_teacher_member(member, "lightgcn", stream, 1, side, lists,
                                          dataclasses.replace(cfg, graph="block"), None)
    assert _same_pattern(block_only.interactions, b1.train)
    # Old users without a block-1 train edge are isolated nodes only on the block graph.
    idle = np.flatnonzero((np.diff(b1.train.indptr) == 0) & (np.diff(union.indptr) > 0))
    assert len(idle) > 0
    users_c, _ = updated.representations()
    scale = 1.0 / (updated.layers + 1)  # an isolated node keeps E^0 / (L+1)
    raw = updated.embedding.weight.detach()[torch.from_numpy(idle)]
    assert not torch.allclose(users_c[torch.from_numpy(idle)], raw * scale)

    bpr, bpr_lists = base_member(stream, "bpr")
    grown, _ = update_teacher_member(bpr, "bpr", stream, 1, side, bpr_lists,
                                     dataclasses.replace(cfg, epochs=0), None)
    assert _same_pattern(grown.interactions, b1.train)
    with pytest.raises(InputError, match="graph"):
        update_teacher_member(member, "lightgcn", stream, 1, side, lists, dataclasses.replace(cfg, graph="all"), None)


def test_cumulative_graph_feeds_a_vae_idle_users_history(stream):
    """graph="cumulative" for a Mult-VAE: block k's row where the user has one, the user's
    rows of blocks 0..k-1 where the user is idle in block k; "block" keeps block k's rows."""
    from ccd_dist.ccd.teacher_update import member_graph

    k = 2
    rows = sp.csr_matrix(member_graph(stream, k, "cumulative", "vae"))
    block = sp.csr_matrix(stream[k].train)
    history = sp.csr_matrix(stream.train_upto(k))
    active = np.diff(block.indptr) > 0
    idle_with_history = np.flatnonzero(~active & (np.diff(history.indptr) > 0))
    assert active.any() and idle_with_history.size
    for u in np.flatnonzero(active)[:20]:
        assert set(rows[u].indices) == set(block[u].indices)
    for u in idle_with_history[:20]:
        assert set(rows[u].indices) == set(history[u].indices)
    assert _same_pattern(member_graph(stream, k, "block", "vae"), block)


def test_vae_replay_off_trains_a_vae_on_block_rows_only(stream, side):
    """teacher_update.vae_replay=false: a VAE member ignores the student side (the same
    model as without any replay), where the default trains on block rows + replay pairs."""
    torch.set_num_threads(1)
    b1 = stream[1]
    member, lists = base_member(stream, "vae")
    cfg = dataclasses.replace(UPDATE, epochs=2)
    with_replay, hist = update_teacher_member(member, "vae", stream, 1, side, lists, cfg, None)
    assert hist.history[0]["replay_rows_nnz"] > b1.train.nnz
    no_vae_replay, hist_off = update_teacher_member(member, "vae", stream, 1, side, lists,
                                                    dataclasses.replace(cfg, vae_replay=False), None)
    assert hist_off.history[0]["replay_rows_nnz"] == b1.train.nnz
    assert _same_pattern(no_vae_replay.interactions, b1.train)
    no_replay, _ = update_teacher_member(member, "vae", stream, 1, side, lists,
                                         dataclasses.replace(cfg, replay=False), None)
    for key, value in no_vae_replay.state_dict().items():
        assert torch.equal(value, no_replay.state_dict()[key])
    assert not torch.equal(with_replay.decoder.weight, no_vae_replay.decoder.weight)
