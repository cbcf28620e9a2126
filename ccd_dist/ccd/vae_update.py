"""Stage 3 for a Mult-VAE teacher member (§6.7): replay rows plus KL retention.

The reference's VAE path is broken at HEAD (bug B2); this follows the first
commit (``CL_VAE_expand``):

1. Grow the member to block k (``growth.grow_with_init``: the VAE's items
   grow; users are inputs, not parameters). A frozen copy of the block k-1
   member is kept as "before", with its own input rows.
2. Common interactions: the block k-1 train pairs whose user or whose item is
   active in block k (has an interaction in block k's train, valid or test).
3. Replay (§6.4): the student-side sources are sampled against the teacher's
   current ranks exactly as for the BPR-MF / LightGCN members
   (``teacher_update.make_teacher_sampler``); for a VAE only the pairs matter:
   the training rows are block k's train rows with every replay pair (u, i)
   set to max(R_ui, ``vae_replay_value``) (0.1). Users whose only row entries
   are replay pairs (old users inactive in block k) are trained too.
   ``vae_replay=false`` skips this step for VAE members only (block k's rows
   and the KL retention; BPR-MF / LightGCN members still replay).
4. Loss per batch of users: the Mult-VAE loss on those weighted rows (input
   and target the L2-normalised row, Gaussian noise, beta schedule: as
   ``MultVAE.vae_loss``) + ``kl_lambda`` x the mean, over the batch users with
   common interactions, of KL(before || present) = sum_{i in C_u} b_i (log b_i
   - log p_i), b / p the before / present softmax outputs at the user's common
   items C_u. "Before" is recomputed per batch from the frozen copy (encoder
   mean on its own rows), never stored as a users x items matrix.
5. Selection as for every stage; the replay set (hence the rows) is re-drawn
   right after each evaluation that follows an epoch other than the first.

KL fix: the reference calls ``KLDivLoss(log_target=True)`` on ``p.log() +
1e-8`` and ``b.log() + 1e-8``: the epsilon added outside the log cancels in
the difference and does not protect against log(0) = -inf once a softmax
entry underflows. Here both sides come straight from ``log_softmax``
(log-space, no epsilon needed, nothing can underflow to -inf), and the KL is
summed over C_u per user; the reference's "batchmean" on a 1-D per-user
tensor divided it by |C_u|, which is not a KL divergence.

Input rows at inference: ``MultVAE`` keeps 0/1 rows, so the returned model's
interactions are block k's train pairs plus the replay pairs of the selected
epoch's replay set, all with weight 1 (the reference feeds the 0.1-weighted
rows; for users whose row is only replay pairs the two coincide after the L2
normalisation). Evaluation during training uses the same 0/1 rows, so the
selected model is evaluated exactly as it is returned. The rank ensemble
(``pipeline.base.ensemble_stage``) then feeds every member the rows of
``teacher_update.member_graph`` (block k's train rows; with ``graph=cumulative``
idle users' history), without the replay pairs: a VAE member's own r[k][j] is
not what it contributes to the ensemble. Three consistent alternatives were
measured on Gowalla and each made the teacher worse (docs/architecture.md).
"""
from __future__ import annotations

import copy

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from ..models.graph import binary_csr
from ..models.vae import kl_weight
from ..training.loop import FitResult, fit
from .growth import grow_with_init
from .teacher_update import (
    TeacherUpdateConfig,
    _check_side,
    check_member,
    grown_only,
    make_teacher_sampler,
    resample_rule,
    side_sources,
)


def common_interactions(prev_train, block) -> sp.csr_matrix:
    """Block k-1 train pairs (U_{k-1} x I_{k-1}) whose user or item is active in block k (any split)."""
    r = binary_csr(prev_train)
    n_users, n_items = r.shape
    seen = binary_csr(block.train + block.valid + block.test)
    active_u = np.diff(seen.indptr)[:n_users] > 0
    active_i = np.bincount(seen.indices, minlength=seen.shape[1])[:n_items] > 0
    coo = r.tocoo()
    keep = active_u[coo.row] | active_i[coo.col]
    out = sp.csr_matrix((coo.data[keep], (coo.row[keep], coo.col[keep])), shape=r.shape)
    out.sort_indices()
    return out


def replay_rows(train_k, users, items, value: float) -> sp.csr_matrix:
    """Block k's 0/1 train rows with every replay pair set to max(R_ui, value)."""
    r = binary_csr(train_k)
    replay = sp.csr_matrix((np.full(len(users), float(value), np.float32), (np.asarray(users), np.asarray(items))),
                           shape=r.shape)
    replay.sum_duplicates()
    replay.data[:] = float(value)  # duplicates stay one pair
    out = r.maximum(replay).tocsr()
    out.sort_indices()
    return out


def weighted_inputs(rows: sp.csr_matrix, users: np.ndarray, device):
    """L2-normalised weighted rows of `users` as (sparse COO [B, n_items], row pos, item ids, values)."""
    sub = rows[users]
    sub.sum_duplicates()  # canonical: sorted, unique (row, item) pairs
    coo = sub.tocoo()
    norms = np.sqrt(np.asarray(sub.multiply(sub).sum(axis=1), dtype=np.float64).reshape(-1))
    vals = (coo.data / np.where(norms > 0, norms, 1.0)[coo.row]).astype(np.float32)
    r = torch.from_numpy(coo.row.astype(np.int64)).to(device)
    c = torch.from_numpy(coo.col.astype(np.int64)).to(device)
    v = torch.from_numpy(vals).to(device)
    x = torch.sparse_coo_tensor(torch.stack([r, c]), v, (len(users), rows.shape[1]),
                                is_coalesced=True, check_invariants=False)  # rows of a canonical CSR
    return x, r, c, v


class RetentionVAE(nn.Module):
    """A Mult-VAE member seen by ``fit`` during its update: weighted replay rows + KL retention.

    Holds the member (``model``, optimised and saved by ``fit``) and, outside
    the module tree, the frozen block k-1 copy. ``set_interactions`` is a
    no-op: the rows are set by ``update_vae_member``.
    """

    kind = "vae"

    def __init__(self, model, before, common: sp.csr_matrix, kl_lambda: float):
        super().__init__()
        self.model = model
        self._before = [before]  # a list: not a submodule, so neither optimised nor saved
        self.common = common
        self.kl_lambda = float(kl_lambda)
        self.rows = None
        self.kl_total, self.kl_batches = 0.0, 0

    @property
    def n_users(self) -> int:
        return self.model.n_users

    @property
    def n_items(self) -> int:
        return self.model.n_items

    def set_interactions(self, train):
        return self

    def representations(self):
        return self.model.representations()

    def set_rows(self, rows: sp.csr_matrix) -> None:
        """Training rows (weighted) and, as 0/1, the member's inference rows."""
        self.rows = rows
        self.model.set_interactions(rows)

    def retention(self, users: np.ndarray, logp: torch.Tensor) -> torch.Tensor:
        """Mean over batch users with common interactions of KL(before || present) on those items."""
        before = self._before[0]
        pos = np.flatnonzero(users < self.common.shape[0])
        sub = self.common[users[pos]]
        has = np.diff(sub.indptr) > 0
        if not has.any():
            return logp.sum() * 0.0
        pos, sub = pos[has], sub[has]
        coo = sub.tocoo()
        dev = logp.device
        with torch.no_grad():
            x = before._inputs(users[pos])[0]
            log_b_all = torch.log_softmax(before.decoder(before.encode(x)[0]), dim=1)
        r = torch.from_numpy(coo.row.astype(np.int64)).to(dev)
        c = torch.from_numpy(coo.col.astype(np.int64)).to(dev)
        log_b = log_b_all[r, c]
        log_p = logp[torch.from_numpy(pos).to(dev)[r], c]
        per_user = torch.zeros(len(pos), device=dev).index_add(0, r, log_b.exp() * (log_b - log_p))
        return per_user.mean()

    def vae_loss(self, user_batch, step: int) -> torch.Tensor:
        model = self.model
        users = np.asarray(user_batch.cpu() if hasattr(user_batch, "cpu") else user_batch, dtype=np.int64)
        dev = model.decoder.weight.device
        x, rows, cols, vals = weighted_inputs(self.rows, users, dev)
        mu, logstd = model.encode(x)
        noise = torch.randn(mu.shape, generator=model._noise).to(dev)
        logp = torch.log_softmax(model.decoder(mu + noise * torch.exp(logstd)), dim=1)
        recon = torch.zeros(len(users), device=dev).index_add(0, rows, -logp[rows, cols] * vals)
        kl_prior = 0.5 * (mu.pow(2) + torch.exp(2 * logstd) - 2 * logstd - 1).sum(1)
        loss = (recon + kl_weight(step) * kl_prior).mean()
        if self.kl_lambda:
            kl = self.retention(users, logp)
            self.kl_total += float(kl.detach())
            self.kl_batches += 1
            loss = loss + self.kl_lambda * kl
        return loss

    def epoch_summary(self) -> dict:
        out = {"kl_retention": self.kl_total / max(self.kl_batches, 1)}
        self.kl_total, self.kl_batches = 0.0, 0
        return out


def update_vae_member(model, spec_kind: str, stream, k: int, student_side: dict, teacher_lists_prev,
                      cfg: TeacherUpdateConfig, evaluate, *, log=None) -> tuple:
    """Update one Mult-VAE teacher member on block k (see the module docstring); returns (model, FitResult).

    teacher_lists_prev is accepted for a uniform signature; a VAE has no
    negatives to exclude. The member passed in is not modified.
    """
    check_member(model, spec_kind, stream, k, ("vae",))
    prev, block = stream[k - 1], stream[k]
    if cfg.epochs <= 0:
        return grown_only(model, block, block.train, cfg)
    sources = side_sources(student_side, cfg, k)
    _check_side(sources, stream, k)

    before = copy.deepcopy(model).eval()
    for p in before.parameters():
        p.requires_grad_(False)
    if before.interactions is None:
        before.set_interactions(prev.train)
    teacher = copy.deepcopy(model)
    for p in teacher.parameters():
        p.requires_grad_(True)
    grow_with_init(teacher, block.train, block.n_users, block.n_items, cfg.init_topk, cfg.random_init)
    wrapper = RetentionVAE(teacher, before, common_interactions(prev.train, block), cfg.kl_lambda)

    replay = cfg.replay and cfg.vae_replay and sources
    sampler = make_teacher_sampler(stream, k, cfg, sources) if replay else None
    state = {"round": 0, "epoch": -1, "rows_at": {}}

    def draw() -> None:
        teacher.eval()
        users, items, _labels = sampler(teacher, state["round"])  # labels are unused by a VAE
        state["round"] += 1
        wrapper.set_rows(replay_rows(block.train, users, items, cfg.vae_replay_value))

    if sampler is not None:
        draw()
    else:
        wrapper.set_rows(binary_csr(block.train))
    train_pattern = binary_csr(wrapper.rows)

    def marker(_model, _optimizer, epoch: int) -> dict:
        state["epoch"] = epoch
        return {**wrapper.epoch_summary(), "replay_rows_nnz": int(wrapper.rows.nnz)}

    rule = resample_rule(cfg)
    last = cfg.epochs - 1

    def evaluate_then_redraw(m) -> dict:
        metrics = evaluate(m)
        state["rows_at"][state["epoch"] + 1] = wrapper.rows
        if sampler is not None and rule(state["epoch"]) and state["epoch"] < last:
            draw()
        return metrics

    wrapper.train()
    result: FitResult = fit(wrapper, train_pattern, cfg.train_config(),
                            evaluate_then_redraw if evaluate is not None else None,
                            extra_passes=(marker,), log=log)
    rows = state["rows_at"].get(result.best_epoch)
    if rows is not None:
        teacher.set_interactions(rows)
    return teacher.eval(), result
