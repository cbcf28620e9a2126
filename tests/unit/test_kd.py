"""Stage-1 KD (§4): interesting lists (B1), uninteresting samples (B17), the RRD loss, a tiny run."""
import numpy as np
import pytest
import scipy.sparse as sp
import torch

from ccd_dist.ccd.ensemble import Member, build_rank_ensemble, member_from_model
from ccd_dist.ccd.interesting import UninterestingSampler, build_targets
from ccd_dist.ccd.kd import ExpSumWorkspace, KDConfig, distill, relaxed_ranking_loss, rrd_loss
from ccd_dist.data import interactions_to_csr
from ccd_dist.errors import InputError
from ccd_dist.kernels.subsets import sample_subset_bits, unpack_rows
from thread_counts import losses_and_gradients


def ordered_members(n_users, n_items):
    """One member whose scores rank item 0 first, then 1, 2, ... for every user
    and user 0 first, then 1, ... for every item: score = -(i + u / 1000)."""
    user = np.stack([np.ones(n_users), -np.arange(n_users) / 1000.0], 1).astype(np.float32)
    item = np.stack([-np.arange(n_items, dtype=np.float64), np.ones(n_items)], 1).astype(np.float32)
    return [Member("ordered", user, item)]


def test_b1_interesting_items_exclude_train_items():
    """B1: the reference ranks train items *first* (NaN in topk); they must be removed instead."""
    n_users, n_items = 6, 30
    # every user trained on the teacher's three best items (0, 1, 2) and on item 7
    users = np.repeat(np.arange(n_users), 4)
    items = np.tile([0, 1, 2, 7], n_users)
    train = interactions_to_csr(users, items, n_users, n_items)
    lists = build_rank_ensemble(ordered_members(n_users, n_items), train, list_size=10, n_top_users=3)
    inter = lists.interesting_items(train, 5)
    assert inter.tolist() == [[3, 4, 5, 6, 8]] * n_users
    # item side: users who trained on the item are not its interesting users
    train2 = interactions_to_csr([0, 2], [4, 4], n_users, n_items)
    lists2 = build_rank_ensemble(ordered_members(n_users, n_items), train2, list_size=10, n_top_users=3)
    assert lists2.interesting_users(3)[4].tolist() == [1, 3, 4]
    assert lists2.interesting_users(3)[5].tolist() == [0, 1, 2]


def test_b17_uninteresting_samples_are_allowed_and_capped():
    """B17: never a forbidden pair, exactly min(n, pool) per row, deterministic per seed and period."""
    rng = np.random.default_rng(0)
    n_users, n_items = 25, 40
    train = sp.random(n_users, n_items, density=0.3, random_state=1, format="csr")
    exclude = sp.random(n_users, n_items, density=0.1, random_state=2, format="csr")
    members = [Member("a", rng.standard_normal((n_users, 4)).astype(np.float32),
                      rng.standard_normal((n_items, 4)).astype(np.float32))]
    lists = build_rank_ensemble(members, train, list_size=8, n_top_users=8)
    targets = build_targets(lists, train, exclude, n_interesting=8)

    forbidden = (train.toarray() != 0) | (exclude.toarray() != 0)
    for u in range(n_users):
        forbidden[u, targets.interesting_items[u][targets.interesting_items[u] >= 0]] = True
    for i in range(n_items):
        forbidden[targets.interesting_users[i][targets.interesting_users[i] >= 0], i] = True
    np.testing.assert_array_equal(targets.forbidden.toarray() != 0, forbidden)
    pool_users = (~forbidden).sum(1)
    pool_items = (~forbidden).sum(0)

    nui = int(np.median(pool_users))  # some users have a smaller pool: capped there
    sampler = UninterestingSampler(targets, nui, 1000, seed=3)
    sampler.ensure(0)
    umask = sampler.user_mask(np.arange(n_users))
    imask = sampler.item_mask(np.arange(n_items))
    assert not (umask & forbidden).any()
    assert not (imask & forbidden.T).any()
    np.testing.assert_array_equal(umask.sum(1), np.minimum(nui, pool_users))
    np.testing.assert_array_equal(imask.sum(1), pool_items)  # 1000 > every pool: all allowed users
    assert (pool_users < nui).any() and (pool_users > nui).any()

    again = UninterestingSampler(targets, nui, 1000, seed=3)
    again.ensure(0)
    np.testing.assert_array_equal(again.user_mask(np.arange(n_users)), umask)
    sampler.ensure(1)
    assert not np.array_equal(sampler.user_mask(np.arange(n_users)), umask)


def test_subset_sampling_is_uniform_over_the_pool():
    draws = 4000  # rows with the same forbidden columns draw independently (their own keys)
    forbid_indptr = np.arange(draws + 1, dtype=np.int64) * 2
    forbid_indices = np.tile(np.array([1, 4], dtype=np.int32), draws)
    bits, n = sample_subset_bits(np.arange(draws), 8, 3, forbid_indptr, forbid_indices, seed=5)
    taken = unpack_rows(bits, 8)
    assert (n == 3).all() and (taken.sum(1) == 3).all()
    assert not taken[:, [1, 4]].any()
    freq = taken[:, [0, 2, 3, 5, 6, 7]].mean(0)
    # each allowed column is taken with probability 3/6; 5 sigma is about 0.04
    np.testing.assert_allclose(freq, 0.5, atol=0.04)
    # and pairs are as often together as a uniform 3-subset of 6 implies: 3/6 * 2/5
    both = (taken[:, 0] & taken[:, 7]).mean()
    assert both == pytest.approx(0.2, abs=0.035)


def direct_loss(s1, s2, valid):
    """The DE-RRD formula written out per row and position with NumPy."""
    total = 0.0
    for r in range(s1.shape[0]):
        a = np.minimum(s1[r][valid[r]], 10.0)
        b = np.minimum(s2[r], 10.0)
        for k in range(len(a)):
            total -= a[k] - np.log(np.exp(a[k:]).sum() + np.exp(b).sum() + 1e-8)
    return total


def test_relaxed_ranking_loss_matches_direct_formula():
    rng = np.random.default_rng(4)
    s1 = rng.normal(0, 5, size=(5, 6))
    s1[0, 0] = 14.0  # clipped at 10
    s2 = rng.normal(0, 5, size=(5, 9))
    valid = np.ones((5, 6), dtype=bool)
    valid[2, 4:] = False  # a short interesting list
    got = relaxed_ranking_loss(torch.tensor(s1), torch.tensor(s2), torch.tensor(valid))
    assert float(got) == pytest.approx(direct_loss(s1, s2, valid), rel=1e-9)
    # a mask over a wider candidate row equals passing the selected columns
    wide = np.concatenate([s2, rng.normal(0, 5, size=(5, 4))], 1)
    mask = np.zeros(wide.shape, dtype=bool)
    mask[:, :9] = True
    masked = relaxed_ranking_loss(torch.tensor(s1), torch.tensor(wide), torch.tensor(valid), torch.tensor(mask))
    assert float(masked) == pytest.approx(float(got), rel=1e-12)


def test_fused_rrd_loss_equals_the_explicit_loss_with_gradients():
    torch.manual_seed(0)
    rows = (torch.randn(6, 4) * 2).requires_grad_()
    table = (torch.randn(15, 4) * 2).requires_grad_()
    interesting = torch.randint(0, 15, (6, 5))
    valid = torch.ones(6, 5, dtype=torch.bool)
    valid[1, 3:] = False
    sampled = torch.rand(6, 15) < 0.6
    with torch.no_grad():
        rows[0] *= 4  # some scores beyond the clip at 10
    ws = ExpSumWorkspace(8, 15)
    keep = torch.from_numpy(ws.keep[:6])
    keep.copy_(sampled.float())
    fused = rrd_loss(rows, table, interesting, valid, keep, ws)
    grads = torch.autograd.grad(fused, (rows, table))
    generic = rrd_loss(rows, table, interesting, valid, sampled.float())  # the any-device path
    generic_grads = torch.autograd.grad(generic, (rows, table))
    scores = rows @ table.T
    plain = relaxed_ranking_loss(scores.gather(1, interesting), scores, valid, sampled)
    expected = torch.autograd.grad(plain, (rows, table))
    assert (scores > 10).any()
    assert float(fused.detach()) == pytest.approx(float(plain.detach()), rel=1e-5)
    for got, want in zip(grads + generic_grads, expected + expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    # a second forward before the first backward would corrupt the shared buffer
    first = rrd_loss(rows, table, interesting, valid, keep, ws)
    rrd_loss(rows, table, interesting, valid, keep, ws)
    with pytest.raises(RuntimeError, match="reused"):
        first.backward()


def test_relaxed_ranking_loss_prefers_the_teacher_order():
    good = torch.tensor([[3.0, 2.0, 1.0]])
    bad = torch.tensor([[1.0, 2.0, 3.0]])
    rest = torch.tensor([[-1.0, -2.0]])
    assert relaxed_ranking_loss(good, rest) < relaxed_ranking_loss(bad, rest)


def test_distill_refuses_lists_of_another_block():
    from ccd_dist.models import build_model

    train = interactions_to_csr([0, 1], [0, 1], 3, 4)
    other = interactions_to_csr([0, 2], [0, 1], 3, 4)
    lists = build_rank_ensemble(ordered_members(3, 4), other, list_size=2)
    with pytest.raises(InputError, match="different train"):
        distill(build_model("bpr", 3, 4, 4), train, lists, KDConfig(epochs=1))


def test_kd_student_learns_from_two_bpr_teachers():
    from ccd_dist.config import TrainConfig
    from ccd_dist.data import make_synthetic_stream
    from ccd_dist.eval import evaluate_block
    from ccd_dist.models import build_model
    from ccd_dist.training.loop import fit

    stream = make_synthetic_stream(n_users=300, n_items=200, n_blocks=2, interactions_per_user=20, seed=0)
    block = stream[0]

    def valid_metrics(model):
        users, items = model.representations()
        return evaluate_block(users, items, block, split="valid")

    members = []
    for seed in (0, 1):
        teacher = build_model("bpr", block.n_users, block.n_items, 32, seed=seed)
        fit(teacher, block.train, TrainConfig(lr=1e-2, batch_size=256, epochs=15, seed=seed), None)
        members.append(member_from_model(f"bpr_{seed}", teacher))
    lists = build_rank_ensemble(members, block.train)

    student = build_model("lightgcn", block.n_users, block.n_items, 8, seed=5)
    baseline = valid_metrics(student.set_interactions(block.train))["recall@20"]
    cfg = KDConfig(epochs=10, eval_every=5, patience=5, batch_size=256, urrd_lambda=0.1, ir_lambda=0.1,
                   n_uninteresting_items=100, n_uninteresting_users=100, resample_every=5)
    student, result = distill(student, block.train, lists, cfg, evaluate=valid_metrics)
    de_rrd = [h["de_rrd_loss"] for h in result.history]
    ir_rrd = [h["ir_rrd_loss"] for h in result.history]
    assert de_rrd[-1] < de_rrd[0] and ir_rrd[-1] < ir_rrd[0]
    assert result.best_valid["recall@20"] > baseline + 0.1
    # the student's own top-40 moved towards the teacher's interesting items
    from ccd_dist import ranking

    def overlap(model):
        users, items = model.representations()
        top, _ = ranking.topk(users, items, 40, exclude=block.train)
        inter = lists.interesting_items(block.train, 40)
        return np.mean([len(set(a) & set(b)) for a, b in zip(top, inter)])

    untrained = build_model("lightgcn", block.n_users, block.n_items, 8, seed=5).set_interactions(block.train)
    assert overlap(student) > overlap(untrained) + 5


def test_rrd_idle_users_distils_users_without_a_block_interaction():
    """Users active only in older blocks get no DE-RRD in the reference; `rrd_idle_users` distils them."""
    from ccd_dist import ranking
    from ccd_dist.config import TrainConfig
    from ccd_dist.data import make_synthetic_stream
    from ccd_dist.models import build_model
    from ccd_dist.training.loop import fit

    block = make_synthetic_stream(n_users=300, n_items=200, n_blocks=2, interactions_per_user=20, seed=0)[0]
    teacher = build_model("bpr", block.n_users, block.n_items, 32, seed=0)
    fit(teacher, block.train, TrainConfig(lr=1e-2, batch_size=256, epochs=15, seed=0), None)
    idle = np.arange(0, block.n_users, 3)  # a third of the users has no interaction in "this" block
    keep = np.ones(block.n_users)
    keep[idle] = 0
    train = (sp.diags(keep) @ block.train).tocsr()
    train.eliminate_zeros()
    lists = build_rank_ensemble([member_from_model("bpr", teacher)], train)
    inter = lists.interesting_items(train, 20)[idle]

    def idle_overlap(flag):
        cfg = KDConfig(epochs=6, eval_every=10, batch_size=256, n_uninteresting_items=100,
                       n_uninteresting_users=100, rrd_idle_users=flag)
        student, result = distill(build_model("bpr", block.n_users, block.n_items, 8, seed=5), train, lists, cfg)
        users, items = student.representations()
        top, _ = ranking.topk(users[idle], items, 20)
        return np.mean([len(set(a) & set(b)) for a, b in zip(top, inter)]), result.history

    off, off_history = idle_overlap(False)
    on, on_history = idle_overlap(True)
    assert "idle_rrd_loss" not in off_history[0]
    assert on_history[-1]["idle_rrd_loss"] < on_history[0]["idle_rrd_loss"]
    assert on > off + 1.5, (on, off)  # measured 10.1 vs 7.4 of 20 at 6 epochs


def test_rrd_loss_and_gradients_do_not_depend_on_thread_counts():
    """A KD batch: 1024 rows x 40 interesting ids that repeat (a 40,960-entry loss sum), and
    the fused path's [B, n] @ [n, d] gradient products, on 1 and 2 torch / BLAS threads."""
    gen = torch.Generator().manual_seed(3)
    n_rows, n_table, k = 1024, 700, 40
    rows = (torch.randn(n_rows, 8, generator=gen) * 0.5).requires_grad_(True)
    table = (torch.randn(n_table, 8, generator=gen) * 0.5).requires_grad_(True)
    interesting = torch.randint(0, n_table, (n_rows, k), generator=gen)
    valid = torch.ones(n_rows, k, dtype=torch.bool)
    keep = (torch.rand(n_rows, n_table, generator=gen) < 0.5).float()
    ws = ExpSumWorkspace(n_rows, n_table)
    for workspace in (None, ws):
        runs = losses_and_gradients(lambda: rrd_loss(rows, table, interesting, valid, keep, workspace),
                                    (rows, table))
        for loss, grads in runs[1:]:
            assert torch.equal(runs[0][0], loss)
            assert all(torch.equal(a, b) for a, b in zip(runs[0][1], grads))
