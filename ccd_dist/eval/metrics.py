"""Recall@K and NDCG@K of full-catalogue top-K rankings (see docs/metrics.md).

Every user with at least one ground-truth item is evaluated: all items of the
model are ranked by ``ccd_dist.ranking.topk`` (chunked, never a users x items
matrix) with that user's excluded items removed, and the first K are compared
with the ground truth. Departures from the authors' code (§12 B16): no top-1000
truncation before masking, no silent skipping of users, no rounding.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ccd_dist.errors import InputError
from ccd_dist.kernels import count_hits_dcg

DEFAULT_KS = (20, 50, 100)


def arg_error(name: str, message: str) -> InputError:
    """InputError for a bad function argument: the message starts with its name."""
    err = InputError(f"{name}: {message}")
    err.where = name
    return err


def metric_names(ks=DEFAULT_KS) -> list:
    """Result keys in a fixed order: recall@K, ndcg@K for each K."""
    return [f"{name}@{k}" for k in ks for name in ("recall", "ndcg")]


def check_ks(ks) -> tuple:
    ks = tuple(int(k) for k in ks)
    if not ks or len(set(ks)) != len(ks) or min(ks) < 1:
        raise arg_error("ks", f"expected distinct positive cut-offs, got {list(ks)}")
    return ks


def canonical_binary(mat, name: str) -> sp.csr_matrix:
    """A 0/1 CSR copy with sorted, unique indices and no explicit zeros.

    Structural entries whose value is 0 are not interactions; repeated pairs
    count once. Keeps the caller's matrix untouched.
    """
    if not sp.issparse(mat):
        raise arg_error(name, f"expected a scipy sparse users x items matrix, got {type(mat).__name__}")
    mat = sp.csr_matrix(mat, dtype=np.float32, copy=True)
    mat.sum_duplicates()
    mat.eliminate_zeros()
    mat.data[:] = 1.0
    mat.sort_indices()
    mat.indptr = mat.indptr.astype(np.int64, copy=False)
    mat.indices = mat.indices.astype(np.int32, copy=False)
    return mat


def resize_csr(mat: sp.csr_matrix, n_rows: int, n_cols: int, name: str) -> sp.csr_matrix:
    """Pad a CSR matrix with empty rows / columns; never drops entries."""
    rows, cols = mat.shape
    if rows > n_rows or cols > n_cols:
        raise arg_error(name, f"shape {mat.shape} exceeds the allowed ({n_rows}, {n_cols})")
    indptr = np.concatenate([mat.indptr, np.full(n_rows - rows, mat.indptr[-1], dtype=mat.indptr.dtype)])
    return sp.csr_matrix((mat.data, mat.indices, indptr), shape=(n_rows, n_cols))


def ground_truth_without(ground_truth: sp.csr_matrix, exclude: sp.csr_matrix) -> sp.csr_matrix:
    """Ground truth minus the pairs that are also excluded (e.g. Yelp train/test overlap)."""
    gt = canonical_binary(ground_truth, "ground_truth")
    ex = canonical_binary(exclude, "exclude")
    ex = resize_csr(ex[: gt.shape[0], : gt.shape[1]], gt.shape[0], gt.shape[1], "exclude")
    kept = gt - gt.multiply(ex)
    return canonical_binary(sp.csr_matrix(kept), "ground_truth")


def per_row_metrics(topk_items, ground_truth_rows: sp.csr_matrix, ks=DEFAULT_KS) -> dict:
    """Recall@K / NDCG@K per row of `topk_items` against the aligned ground-truth rows.

    Recall@K = hits / |G| and NDCG@K = DCG@K / IDCG@K with binary gain,
    discount 1/log2(rank + 2) (0-based rank) and IDCG over min(|G|, K)
    positions. Rows with an empty ground truth get NaN. Also returns "n_gt".
    """
    ks = check_ks(ks)
    gt = canonical_binary(ground_truth_rows, "ground_truth")
    topk_items = np.asarray(topk_items)
    if gt.shape[0] != topk_items.shape[0]:
        raise arg_error(
            "ground_truth",
            f"{gt.shape[0]} ground-truth rows for {topk_items.shape[0]} top-K rows; they must be aligned",
        )
    hits, dcg, n_gt = count_hits_dcg(topk_items, gt.indptr, gt.indices, ks)
    ideal = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(max(ks)) + 2.0))])
    with np.errstate(divide="ignore", invalid="ignore"):
        out = {}
        for c, k in enumerate(ks):
            out[f"recall@{k}"] = np.where(n_gt > 0, hits[:, c] / n_gt, np.nan)
            out[f"ndcg@{k}"] = np.where(n_gt > 0, dcg[:, c] / ideal[np.minimum(n_gt, k)], np.nan)
    out["n_gt"] = n_gt
    return out


def average(per_row: dict, ks=DEFAULT_KS) -> dict:
    """Mean of each metric over the rows with ground truth, plus "n_users" (their count).

    NaN metrics when no row has ground truth.
    """
    names = metric_names(check_ks(ks))
    has_gt = np.asarray(per_row["n_gt"]) > 0
    n = int(has_gt.sum())
    out = {name: (float(np.mean(per_row[name][has_gt])) if n else float("nan")) for name in names}
    out["n_users"] = n
    return out


def _as_f32(emb, name: str) -> np.ndarray:
    if hasattr(emb, "detach"):  # a torch tensor
        emb = emb.detach().cpu().numpy()
    emb = np.ascontiguousarray(emb, dtype=np.float32)
    if emb.ndim != 2:
        raise arg_error(name, f"expected a 2-D [rows, dim] embedding table, got shape {emb.shape}")
    return emb


class EmbeddingRanker:
    """Ranks every item of an inner-product model through ``ccd_dist.ranking.topk``.

    The evaluation functions accept any object with ``n_users``, ``n_items``
    and ``topk(k, exclude, users) -> int32 [len(users), k]`` (ties by lower
    item id, -1 padding), so models that are not embedding pairs (a rank
    ensemble, a VAE) can be evaluated the same way.
    """

    def __init__(self, user_emb, item_emb, backend=None, chunk_size=None):
        self.user_emb = _as_f32(user_emb, "user_emb")
        self.item_emb = _as_f32(item_emb, "item_emb")
        if self.user_emb.shape[1] != self.item_emb.shape[1]:
            raise arg_error(
                "item_emb",
                f"user and item embeddings differ in width ({self.user_emb.shape[1]} vs {self.item_emb.shape[1]})",
            )
        self.backend = backend
        self.chunk_size = chunk_size

    @property
    def n_users(self) -> int:
        return self.user_emb.shape[0]

    @property
    def n_items(self) -> int:
        return self.item_emb.shape[0]

    def topk(self, k: int, exclude, users) -> np.ndarray:
        from ccd_dist import ranking  # looked up at call time: the one ranking engine

        options = {"chunk_size": self.chunk_size}
        if self.backend is not None:  # None: the ranking engine's default backend
            options["backend"] = self.backend
        items, _scores = ranking.topk(self.user_emb, self.item_emb, k, exclude=exclude, users=users, **options)
        return items


def per_user_ranker_metrics(
    ranker, ground_truth, exclude=None, ks=DEFAULT_KS, *, users=None, drop_excluded_ground_truth: bool = False
) -> dict:
    """Per-user metrics of `evaluate_ranker`; key "users" holds the evaluated ids."""
    ks = check_ks(ks)
    n_users, n_items = int(ranker.n_users), int(ranker.n_items)
    gt = canonical_binary(ground_truth, "ground_truth")
    if gt.shape[0] > n_users or gt.shape[1] > n_items:
        raise arg_error(
            "ground_truth",
            f"covers {gt.shape[0]} users x {gt.shape[1]} items but the model has only {n_users} user rows "
            f"and {n_items} item rows; ids beyond the model cannot be evaluated",
        )
    ex = None
    if exclude is not None:
        ex = canonical_binary(exclude, "exclude")
        if ex.shape[0] > n_users or ex.shape[1] > n_items:
            raise arg_error(
                "exclude",
                f"covers {ex.shape[0]} users x {ex.shape[1]} items but the model has only {n_users} user rows "
                f"and {n_items} item rows",
            )
        ex = resize_csr(ex, ex.shape[0], n_items, "exclude")
        if drop_excluded_ground_truth:
            gt = ground_truth_without(gt, ex)

    has_gt = np.diff(gt.indptr) > 0
    if users is None:
        eval_users = np.flatnonzero(has_gt).astype(np.int64)
    else:
        users = np.unique(np.asarray(users, dtype=np.int64))
        if len(users) and (users[0] < 0 or users[-1] >= gt.shape[0]):
            raise arg_error(
                "users", f"user ids must lie in [0, {gt.shape[0]}) (the ground-truth rows), got {users[0]}..{users[-1]}"
            )
        eval_users = users[has_gt[users]]

    k_max = max(ks)
    if len(eval_users):
        items = np.asarray(ranker.topk(k_max, ex, eval_users))
        if items.shape != (len(eval_users), k_max):
            raise ValueError(f"ranker returned shape {items.shape}, expected {(len(eval_users), k_max)}")
    else:
        items = np.empty((0, k_max), dtype=np.int32)
    out = per_row_metrics(items, gt[eval_users], ks)
    out["users"] = eval_users
    return out


def evaluate_ranker(
    ranker, ground_truth, exclude, ks=DEFAULT_KS, *, users=None, drop_excluded_ground_truth: bool = False
) -> dict:
    """`evaluate_topk` for any ranker object (see `EmbeddingRanker`)."""
    per_user = per_user_ranker_metrics(
        ranker, ground_truth, exclude, ks, users=users, drop_excluded_ground_truth=drop_excluded_ground_truth
    )
    return average(per_user, ks)


def evaluate_topk(
    user_emb,
    item_emb,
    ground_truth,
    exclude,
    ks=DEFAULT_KS,
    *,
    users=None,
    drop_excluded_ground_truth: bool = False,
    backend=None,
    chunk_size=None,
) -> dict:
    """Mean Recall@K / NDCG@K over users with ground truth, ranking all model items.

    ground_truth, exclude: users x items CSR (exclude may be None; it may be
    smaller than the model, missing rows / columns mean "nothing excluded").
    Ground-truth items that are also excluded stay in |G| (counted, never
    retrievable) unless `drop_excluded_ground_truth`; see docs/metrics.md.
    `users` restricts evaluation to those ids (e.g. new users).
    Returns {"recall@20": .., "ndcg@20": .., ..., "n_users": int}.
    """
    ranker = EmbeddingRanker(user_emb, item_emb, backend=backend, chunk_size=chunk_size)
    return evaluate_ranker(
        ranker, ground_truth, exclude, ks, users=users, drop_excluded_ground_truth=drop_excluded_ground_truth
    )
