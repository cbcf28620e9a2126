"""Recall@K / NDCG@K: hand-computed cases and the independent pytrec_eval."""
import math

import numpy as np
import pytest
import pytrec_eval
import scipy.sparse as sp

from ccd_dist.errors import InputError
from ccd_dist.eval import average, evaluate_topk, per_row_metrics, per_user_ranker_metrics
from ccd_dist.eval.metrics import EmbeddingRanker


def csr(rows, n_items):
    """CSR matrix from a list of per-user item lists."""
    indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])])
    indices = np.concatenate([np.asarray(r, dtype=np.int64) for r in rows]) if rows else []
    return sp.csr_matrix((np.ones(len(indices), np.float32), indices, indptr), shape=(len(rows), n_items))


def d(rank):  # discount of a 0-based rank
    return 1.0 / math.log2(rank + 2)


def brute_topk(user_emb, item_emb, k, exclude_rows):
    """Independent reference ranking: exact scores, ties by lower item id, -1 padding."""
    out = []
    for u, vec in enumerate(user_emb):
        banned = set(exclude_rows[u]) if u < len(exclude_rows) else set()
        cand = [(-float(np.dot(vec, item_emb[i])), i) for i in range(len(item_emb)) if i not in banned]
        ranked = [i for _, i in sorted(cand)][:k]
        out.append(ranked + [-1] * (k - len(ranked)))
    return np.array(out, dtype=np.int64)


# -- hand-computed cases -------------------------------------------------------------


def test_ground_truth_smaller_than_k():
    topk = np.array([[3, 1, 4, 0, 2]])
    out = per_row_metrics(topk, csr([[1, 2, 7]], 8), ks=(1, 3, 5))
    assert out["recall@1"][0] == 0.0
    assert out["recall@3"][0] == pytest.approx(1 / 3)
    assert out["recall@5"][0] == pytest.approx(2 / 3)
    assert out["ndcg@1"][0] == 0.0
    ideal3 = d(0) + d(1) + d(2)  # min(|G|=3, K) positions, for K = 3 and K = 5
    assert out["ndcg@3"][0] == pytest.approx(d(1) / ideal3)
    assert out["ndcg@5"][0] == pytest.approx((d(1) + d(4)) / ideal3)


def test_ground_truth_larger_than_k():
    topk = np.array([[0, 9, 1, 8, 2]])
    out = per_row_metrics(topk, csr([[0, 1, 2, 3, 4, 5, 6]], 10), ks=(5,))
    assert out["recall@5"][0] == pytest.approx(3 / 7)  # |G| = 7 even though only 5 fit
    ideal5 = sum(d(r) for r in range(5))
    assert out["ndcg@5"][0] == pytest.approx((d(0) + d(2) + d(4)) / ideal5)


def test_padding_and_empty_ground_truth():
    topk = np.array([[5, -1, -1], [1, 2, 3]])
    out = per_row_metrics(topk, csr([[5], []], 6), ks=(3,))
    assert out["recall@3"][0] == 1.0 and out["ndcg@3"][0] == 1.0
    assert math.isnan(out["recall@3"][1]) and out["n_gt"].tolist() == [1, 0]
    means = average(out, ks=(3,))  # the row without ground truth is not a user to average over
    assert means["n_users"] == 1 and means["recall@3"] == 1.0


def test_ties_in_scores_are_broken_by_lower_item_id():
    # scores 1, 2, 2, 1, 0 -> ranking [1, 2, 0, 3, 4]
    user_emb = np.array([[1.0]], dtype=np.float32)
    item_emb = np.array([[1.0], [2.0], [2.0], [1.0], [0.0]], dtype=np.float32)
    gt = csr([[2, 3]], 5)
    out = evaluate_topk(user_emb, item_emb, gt, None, ks=(1, 2, 4))
    assert out["n_users"] == 1
    assert out["recall@1"] == 0.0
    assert out["recall@2"] == pytest.approx(0.5)
    assert out["ndcg@2"] == pytest.approx(d(1) / (d(0) + d(1)))
    assert out["recall@4"] == pytest.approx(1.0)
    assert out["ndcg@4"] == pytest.approx((d(1) + d(3)) / (d(0) + d(1)))
    # excluding item 1 moves item 2 to the top
    out = evaluate_topk(user_emb, item_emb, gt, csr([[1]], 5), ks=(1,))
    assert out["recall@1"] == pytest.approx(0.5) and out["ndcg@1"] == pytest.approx(1.0)


def test_excluded_ground_truth_is_counted_but_unreachable_unless_dropped():
    user_emb = np.array([[1.0]], dtype=np.float32)
    item_emb = np.array([[3.0], [2.0], [1.0]], dtype=np.float32)
    gt, exclude = csr([[0, 1]], 3), csr([[0]], 3)  # item 0: train and test (Yelp overlap)
    kept = evaluate_topk(user_emb, item_emb, gt, exclude, ks=(2,))
    assert kept["recall@2"] == pytest.approx(0.5)
    assert kept["ndcg@2"] == pytest.approx(d(0) / (d(0) + d(1)))
    dropped = evaluate_topk(user_emb, item_emb, gt, exclude, ks=(2,), drop_excluded_ground_truth=True)
    assert dropped["recall@2"] == 1.0 and dropped["ndcg@2"] == 1.0
    # a user whose whole ground truth is excluded is no longer evaluated once dropped
    only = evaluate_topk(user_emb, item_emb, csr([[0]], 3), exclude, ks=(2,), drop_excluded_ground_truth=True)
    assert only["n_users"] == 0 and math.isnan(only["recall@2"])


def test_users_without_ground_truth_are_not_evaluated_and_users_restricts():
    rng = np.random.default_rng(3)
    user_emb = rng.integers(-3, 4, (4, 3)).astype(np.float32)
    item_emb = rng.integers(-3, 4, (6, 3)).astype(np.float32)
    gt = csr([[1], [], [2, 3], [0]], 6)
    per_user = per_user_ranker_metrics(EmbeddingRanker(user_emb, item_emb), gt, None, ks=(2,))
    assert per_user["users"].tolist() == [0, 2, 3]
    only = evaluate_topk(user_emb, item_emb, gt, None, ks=(2,), users=[1, 2])
    assert only["n_users"] == 1
    assert only["recall@2"] == pytest.approx(per_user["recall@2"][1])


def test_ground_truth_beyond_the_model_is_an_error():
    emb = np.ones((2, 3), np.float32)
    with pytest.raises(InputError, match="ground_truth.*beyond the model"):
        evaluate_topk(emb, emb, csr([[0], [1], [0]], 2), None)
    with pytest.raises(InputError, match="exclude"):
        evaluate_topk(emb, emb, csr([[0], [1]], 2), csr([[0]], 3))
    with pytest.raises(InputError, match="users"):
        evaluate_topk(emb, emb, csr([[0], [1]], 2), None, users=[5])
    with pytest.raises(InputError, match="ks"):
        evaluate_topk(emb, emb, csr([[0], [1]], 2), None, ks=(0,))


# -- the independent implementation -------------------------------------------------


def pytrec_per_user(topk, gt_rows, ks):
    qrels = {str(u): {str(i): 1 for i in g} for u, g in enumerate(gt_rows) if len(g)}
    run = {}
    for u in qrels:
        ranked = [i for i in topk[int(u)] if i >= 0]
        run[u] = {str(i): float(len(ranked) - r) for r, i in enumerate(ranked)}  # strictly decreasing
    cut = ",".join(str(k) for k in ks)
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {f"ndcg_cut.{cut}", f"recall.{cut}"})
    return evaluator.evaluate(run)


def random_lists(rng, n_users, n_items, width):
    topk = np.stack([rng.permutation(n_items)[:width] for _ in range(n_users)])
    sizes = rng.integers(0, 2 * width, n_users)  # empty, < K and > K
    gt_rows = [rng.choice(n_items, size=s, replace=False) for s in sizes]
    return topk, gt_rows


def test_per_row_metrics_match_pytrec_eval():
    rng = np.random.default_rng(7)
    ks = (5, 10, 30)
    topk, gt_rows = random_lists(rng, n_users=80, n_items=60, width=30)
    ours = per_row_metrics(topk, csr(gt_rows, 60), ks)
    theirs = pytrec_per_user(topk, gt_rows, ks)
    assert len(theirs) == int((ours["n_gt"] > 0).sum()) > 60
    for u, vals in theirs.items():
        for k in ks:
            assert ours[f"recall@{k}"][int(u)] == pytest.approx(vals[f"recall_{k}"], abs=1e-12)
            assert ours[f"ndcg@{k}"][int(u)] == pytest.approx(vals[f"ndcg_cut_{k}"], abs=1e-12)


@pytest.mark.parametrize("backend", ["numba", "faiss"])
def test_evaluate_topk_matches_pytrec_eval_end_to_end(backend):
    """Ranking engine + exclusion + metrics vs brute force + pytrec_eval, per user and on average.

    Integer embeddings make every score exact in float32 and create many ties,
    so the tie rule (lower item id first) is exercised too.
    """
    rng = np.random.default_rng(11)
    n_users, n_items, ks = 40, 150, (20, 50, 100)
    user_emb = rng.integers(-3, 4, (n_users, 4)).astype(np.float32)
    item_emb = rng.integers(-3, 4, (n_items, 4)).astype(np.float32)
    exclude_rows = [rng.choice(n_items, size=rng.integers(0, 60), replace=False) for _ in range(n_users - 5)]
    gt_rows = [rng.choice(n_items, size=rng.integers(0, 130), replace=False) for _ in range(n_users)]
    exclude, gt = csr(exclude_rows, n_items), csr(gt_rows, n_items)  # exclude has fewer rows: no mask there

    per_user = per_user_ranker_metrics(EmbeddingRanker(user_emb, item_emb, backend=backend), gt, exclude, ks)
    means = evaluate_topk(user_emb, item_emb, gt, exclude, ks, backend=backend)
    theirs = pytrec_per_user(brute_topk(user_emb, item_emb, max(ks), exclude_rows), gt_rows, ks)

    assert per_user["users"].tolist() == sorted(int(u) for u in theirs)
    assert means["n_users"] == len(theirs)
    for c, u in enumerate(per_user["users"]):
        for k in ks:
            assert per_user[f"recall@{k}"][c] == pytest.approx(theirs[str(u)][f"recall_{k}"], abs=1e-12)
            assert per_user[f"ndcg@{k}"][c] == pytest.approx(theirs[str(u)][f"ndcg_cut_{k}"], abs=1e-12)
    for k in ks:
        assert means[f"recall@{k}"] == pytest.approx(np.mean([v[f"recall_{k}"] for v in theirs.values()]))
        assert means[f"ndcg@{k}"] == pytest.approx(np.mean([v[f"ndcg_cut_{k}"] for v in theirs.values()]))


def test_torch_embeddings_and_chunk_size_give_the_same_result():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    user_emb = rng.normal(size=(30, 4)).astype(np.float32)
    item_emb = rng.normal(size=(40, 4)).astype(np.float32)
    gt = csr([rng.choice(40, size=rng.integers(0, 8), replace=False) for _ in range(30)], 40)
    exclude = csr([rng.choice(40, size=5, replace=False) for _ in range(30)], 40)
    base = evaluate_topk(user_emb, item_emb, gt, exclude, ks=(5, 10))
    assert base["n_users"] > 20
    assert evaluate_topk(torch.from_numpy(user_emb), torch.from_numpy(item_emb), gt, exclude, ks=(5, 10)) == base
    assert evaluate_topk(user_emb, item_emb, gt, exclude, ks=(5, 10), chunk_size=7) == base
