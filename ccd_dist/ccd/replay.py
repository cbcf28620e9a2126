"""Proxy-guided replay (§5.4, shared with the teacher's §6.4): sampling, merging, the training pass.

Sampling, for each user u of a source model X (a proxy, or the updated
student for the teacher) against a reference model W:

- candidates: X's top-``absolute`` items of u after the mask (the student
  masks u's block k-1 and block k train items; the teacher passes its own);
  rank_X = the position in that list (0..absolute-1);
- rank_W: W's rank of each candidate among *all* of W's items
  (``ccd_dist.ranking.rank_of``; 0 = best, ties by lower id);
- weight w = exp(eps * (rank_W - rank_X)): items the reference ranks much
  lower than the source (a "forgotten" item) are a little more likely;
- ``n_samples`` candidates without replacement with probability proportional
  to w (successive sampling, as ``torch.multinomial`` without replacement),
  by the Gumbel-top-k trick: the largest log w + Gumbel noise. The noise of
  (u, i) is a counter-based hash of (seed, u, i) (``ccd_dist.kernels._rng``),
  so a draw depends on neither the thread count nor the other users; rows
  with fewer candidates than ``n_samples`` take all of them;
- label: sigmoid of X's score of (u, i); ``label="softmax"`` gives X's softmax
  probability over all its items (for VAE sources), or pass a callable.

Scores, top lists and ranks all come from the ranking engine (user chunks,
never a users x items matrix). ``merge_replay`` unions several sets keeping
the max label per (user, item), as the reference's deduplication does.

``ReplayPass`` is the training pass (§5.5 step 2, §6.5 step 2) for
``ccd_dist.training.fit(extra_passes=...)``: per epoch e, the triples in a
fresh shuffled order, batches of ``batch_size``, loss = lambda_e *
BCE-with-logits(model's propagated score, soft label) summed over the batch,
one optimiser step per batch, with lambda_e = lambda0 * exp(-e / anneal_t).
Departures from the reference (§12 B15): the last batch keeps all its
triples (the reference's slice end -1 drops one); labels stay float32 (the
teacher's code casts them to float16).
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
from numba import njit, prange
from scipy.special import expit

from .. import ranking
from ..ranking._inputs import as_matrix
from ..errors import InputError
from ..kernels._rng import seed_key, sub_key
from ..models.reduce import stable_mean, stable_sum
from ..training.batches import epoch_seed, iter_batches

LABELS = ("sigmoid", "softmax")
_UNIT = 2.0 ** -53


@njit(parallel=True, cache=True)
def _gumbel_top(users, cand, ref_rank, eps, m, key, out_pos, out_count):
    """Per row: positions of the m largest eps*(ref_rank - pos) + Gumbel(seed, user, item), ascending."""
    n, a = cand.shape
    for r in prange(n):
        keys = np.full(a, -np.inf)
        valid = 0
        row_key = sub_key(key, users[r])
        for j in range(a):
            item = cand[r, j]
            if item < 0 or ref_rank[r, j] < 0:
                continue
            u = (np.float64(sub_key(row_key, item) >> np.uint64(11)) + 0.5) * _UNIT  # in (0, 1)
            keys[j] = eps * np.float64(ref_rank[r, j] - j) - np.log(-np.log(u))
            valid += 1
        take = min(m, valid)
        chosen = np.sort(np.argsort(-keys, kind="mergesort")[:take])
        out_count[r] = take
        for t in range(take):
            out_pos[r, t] = chosen[t]


def _log_partition(user_emb, item_emb, users) -> np.ndarray:
    """log sum_i exp(score(u, i)) over all items, per user (chunked, float64)."""
    out = np.empty(len(users), np.float64)
    at = 0
    for _ids, chunk in ranking.iter_score_chunks(user_emb, item_emb, users):
        c = chunk.astype(np.float64)
        top = c.max(axis=1)
        out[at:at + len(c)] = top + np.log(np.exp(c - top[:, None]).sum(axis=1))
        at += len(c)
    return out


def _labels(label, source_user, source_item, users, rows, items, scores) -> np.ndarray:
    """Soft labels of the sampled pairs (users[rows], items) whose source scores are `scores`."""
    if callable(label):
        out = np.asarray(label(users[rows], items, scores), dtype=np.float32)
        if out.shape != items.shape:
            raise InputError(f"the label callable returned shape {out.shape}, expected {items.shape}", where="label")
        return out
    if label == "sigmoid":
        return expit(scores.astype(np.float64)).astype(np.float32)
    if label == "softmax":
        lse = _log_partition(source_user, source_item, users)
        return np.exp(scores.astype(np.float64) - lse[rows]).astype(np.float32)
    raise InputError(f"label must be one of {LABELS} or a callable, got {label!r}", where="label")


def _check_users(users, n_rows: int) -> None:
    if users.size and (users.min() < 0 or users.max() >= n_rows):
        raise InputError(f"user ids must lie in [0, {n_rows}) (rows of both the source and the reference)",
                         where="users")


class ReplayCandidates:
    """One source's top-``absolute`` candidates per user (see ``sample_replay``).

    They do not depend on the reference, so a sampler that re-draws against a
    changing reference computes them once (``ReplaySampler``).
    """

    def __init__(self, source_user, source_item, users=None, mask_csr=None, absolute: int = 100):
        absolute = int(absolute)
        if absolute < 0:
            raise InputError(f"absolute must be >= 0, got {absolute}", where="replay")
        self.src_u, self.src_i = as_matrix(source_user, "source_user"), as_matrix(source_item, "source_item")
        n_rows = self.src_u.shape[0]
        users = np.arange(n_rows, dtype=np.int64) if users is None else np.asarray(users, dtype=np.int64)
        _check_users(users, n_rows)
        self.users = users
        if users.size and absolute and self.src_i.shape[0]:
            self.cand, self.scores = ranking.topk(self.src_u, self.src_i, absolute, exclude=mask_csr, users=users)
            self.cand = self.cand.astype(np.int64)
        else:
            self.cand = np.full((len(users), 0), -1, np.int64)
            self.scores = np.zeros((len(users), 0), np.float32)

    def check_reference(self, ref_u, ref_i) -> None:
        if ref_i.shape[0] < self.src_i.shape[0]:
            raise InputError(f"the reference has {ref_i.shape[0]} items, fewer than the source's "
                             f"{self.src_i.shape[0]}", where="reference_item")
        _check_users(self.users, min(self.src_u.shape[0], ref_u.shape[0]))

    def draw(self, ref_rank, n_samples: int, eps: float, seed: int, label="sigmoid"):
        """(users, items, labels): n_samples of the candidates weighted by `ref_rank` (their reference ranks)."""
        users, cand = self.users, self.cand
        if not users.size or n_samples == 0 or cand.shape[1] == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
        m = min(n_samples, cand.shape[1])
        pos = np.full((len(users), m), -1, np.int64)
        count = np.zeros(len(users), np.int64)
        _gumbel_top(users, np.ascontiguousarray(cand), np.ascontiguousarray(ref_rank, dtype=np.int64), float(eps),
                    m, seed_key(seed), pos, count)
        rows = np.repeat(np.arange(len(users)), count)
        cols = pos[pos >= 0]
        items = cand[rows, cols]
        labels = _labels(label, self.src_u, self.src_i, users, rows, items, self.scores[rows, cols])
        return users[rows], items, labels


def _check_draw_args(n_samples: int, label) -> int:
    n_samples = int(n_samples)
    if n_samples < 0:
        raise InputError(f"absolute and n_samples must be >= 0, got n_samples={n_samples}", where="replay")
    if not callable(label) and label not in LABELS:
        raise InputError(f"label must be one of {LABELS} or a callable, got {label!r}", where="label")
    return n_samples


def sample_replay(source_user, source_item, reference_user, reference_item, users=None, mask_csr=None,
                  absolute: int = 100, n_samples: int = 5, eps: float = 1e-4, seed: int = 0,
                  label="sigmoid"):
    """Replay triples of one source model (see the module docstring).

    source_* / reference_*: inner-product representations ([rows, d], numpy or
    torch; the two models may have different widths). users: user ids
    (default all source users), each < the rows of both models; mask_csr:
    optional users x items mask of items that are never candidates (rows or
    columns beyond the source are ignored). The reference needs at least as
    many items as the source. label: "sigmoid", "softmax" or a callable
    (user ids, item ids, source scores) -> labels.
    Returns (users int64, items int64, labels float32), grouped by user in
    the order of `users`, each user's items in source order.
    """
    n_samples = _check_draw_args(n_samples, label)
    ref_u, ref_i = as_matrix(reference_user, "reference_user"), as_matrix(reference_item, "reference_item")
    cands = ReplayCandidates(source_user, source_item, users, mask_csr, absolute if n_samples else 0)
    cands.check_reference(ref_u, ref_i)
    return cands.draw(_reference_ranks([cands], ref_u, ref_i)[0], n_samples, eps, seed, label)


def _reference_ranks(candidate_sets, ref_u, ref_i) -> list:
    """The reference's rank of every candidate of every set, from one pass over its score rows."""
    sets = [c for c in candidate_sets if c.cand.size]
    out = [np.zeros(c.cand.shape, np.int64) for c in candidate_sets]
    if not sets:
        return out
    width = max(c.cand.shape[1] for c in sets)
    users = np.concatenate([c.users for c in sets])
    items = np.concatenate([np.pad(c.cand, ((0, 0), (0, width - c.cand.shape[1])), constant_values=-1)
                            for c in sets])
    ranks = ranking.rank_of(ref_u, ref_i, users, items)
    at = 0
    for j, c in enumerate(candidate_sets):
        if c.cand.size:
            out[j] = ranks[at:at + len(c.users), :c.cand.shape[1]]
            at += len(c.users)
    return out


class ReplaySampler:
    """Merged replay sets of several sources against one reference that may change between draws.

    sources: [(source_user, source_item, users, mask_csr, n_samples)]; source j
    draws with seed ``seed_of(round, j)``. Each source's candidates are
    computed once; each draw ranks all of them in one pass of the reference's
    score rows (``rank_of`` is exact per pair, so the sets equal separate
    ``sample_replay`` calls merged by ``merge_replay``).
    """

    def __init__(self, sources, *, absolute: int, eps: float, seed_of: Callable[[int, int], int], label="sigmoid"):
        self.plan = []
        for j, (src_u, src_i, users, mask, n) in enumerate(sources):
            n = _check_draw_args(n, label)
            if n > 0:
                self.plan.append((j, ReplayCandidates(src_u, src_i, users, mask, absolute), n))
        self.eps, self.seed_of, self.label = float(eps), seed_of, label

    def __call__(self, reference_user, reference_item, round_: int):
        ref_u, ref_i = as_matrix(reference_user, "reference_user"), as_matrix(reference_item, "reference_item")
        for _j, cands, _n in self.plan:
            cands.check_reference(ref_u, ref_i)
        ranks = _reference_ranks([c for _j, c, _n in self.plan], ref_u, ref_i)
        return merge_replay(*[cands.draw(rank, n, self.eps, self.seed_of(round_, j), self.label)
                              for (j, cands, n), rank in zip(self.plan, ranks)])


def merge_replay(*sets):
    """Union of replay sets (users, items, labels) with the max label per (user, item), sorted by (user, item)."""
    sets = [s for s in sets if s is not None]
    if not sets:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    u = np.concatenate([np.asarray(s[0], np.int64) for s in sets])
    i = np.concatenate([np.asarray(s[1], np.int64) for s in sets])
    y = np.concatenate([np.asarray(s[2], np.float32) for s in sets])
    if not len(u):
        return u, i, y
    order = np.lexsort((-y, i, u))  # per (u, i), the largest label first
    u, i, y = u[order], i[order], y[order]
    first = np.ones(len(u), bool)
    first[1:] = (u[1:] != u[:-1]) | (i[1:] != i[:-1])
    return u[first], i[first], y[first]


# ----------------------------------------------------------------------------- training
def pair_logits(model, users, items) -> torch.Tensor:
    """Differentiable scores <user, item> from the model's training representations.

    Propagated embeddings for LightGCN (only the pairs' L-hop frontier), raw
    rows for BPR-MF: the logits the reference feeds to BCE-with-logits.
    """
    if not hasattr(model, "pair_scores"):
        raise InputError(f"replay learning with logits needs a BPR-MF or LightGCN model, got {model.kind!r}",
                         where="model")
    return model.pair_scores(users, items)


def annealed_lambda(lambda0: float, epoch: int, anneal_t: float) -> float:
    """lambda_e = lambda0 * exp(-e / anneal_t), e the 0-based epoch (§5.5; the teacher uses anneal_t = 5)."""
    return float(lambda0) * math.exp(-epoch / float(anneal_t))


class ReplayPass:
    """A ``fit`` extra pass: annealed BCE-with-logits on a replay set that can be re-drawn.

    sampler(model, round) -> (users, items, labels) draws the set; it is
    called before the first epoch's pass (round 0) and again before the pass
    that follows an epoch e with ``resample_after(e)`` true (rounds 1, 2, ...),
    so with a "current model" reference the ranks are the model's at that time.
    """

    def __init__(self, sampler: Callable, *, lambda0: float, anneal_t: float, batch_size: int, seed: int,
                 resample_after: Callable[[int], bool] | None = None, reduction: str = "sum"):
        if reduction not in ("sum", "mean"):
            raise InputError(f"reduction must be 'sum' or 'mean', got {reduction!r}", where="reduction")
        self.sampler, self.lambda0, self.anneal_t = sampler, float(lambda0), float(anneal_t)
        self.batch_size, self.seed, self.reduction = int(batch_size), int(seed), reduction
        self.resample_after = resample_after or (lambda epoch: False)
        self.data = None
        self.rounds = 0
        self._due = True
        self.sizes: list[int] = []

    def ensure(self, model) -> tuple:
        """The current replay set, drawn now if due."""
        if self._due:
            was_training = model.training
            model.eval()
            self.data = tuple(np.asarray(x) for x in self.sampler(model, self.rounds))
            model.train(was_training)
            self.sizes.append(len(self.data[0]))
            self.rounds += 1
            self._due = False
        return self.data

    def __call__(self, model, optimizer, epoch: int) -> dict:
        users, items, labels = self.ensure(model)
        lam = annealed_lambda(self.lambda0, epoch, self.anneal_t)
        total, batches = 0.0, 0
        for u, i, y in iter_batches((users, items, labels.astype(np.float32)), self.batch_size,
                                    epoch_seed(self.seed, epoch, 11)):
            optimizer.zero_grad(set_to_none=True)
            logits = pair_logits(model, u, i)
            per_pair = torch.nn.functional.binary_cross_entropy_with_logits(
                logits, y.to(logits.device), reduction="none")
            loss = lam * (stable_sum(per_pair) if self.reduction == "sum" else stable_mean(per_pair))
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
            batches += 1
        if self.resample_after(epoch):
            self._due = True
        return {"replay_loss": total / max(batches, 1), "replay_lambda": lam, "replay_size": int(len(users))}
