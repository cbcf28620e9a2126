"""Stage 1: a fresh student distilled from the teacher ensemble (§4, ``Run/KD.py``).

Per epoch, through ``ccd_dist.training.fit``:

1. BPR over block k's train pairs, 1 negative per positive drawn outside the
   user's positives, exclusion list and interesting items; each mini-batch loss
   also gets ``urrd_lambda`` x DE-RRD over the batch's unique users (a
   ``batch_terms`` hook, so it shares the BPR optimiser step as in the
   reference);
2. an IR-RRD pass over all item ids in shuffled batches of ``ir_batch_size``,
   ``ir_lambda`` x the same loss with users and items swapped, one step each;
3. with ``rrd_idle_users``, a DE-RRD pass over the users who have no block-k
   train interaction (``IdleUserRRDPass``; off in the reference, where such
   users get no user-side KD at all);
4. evaluation / early stopping as the loop does for every stage.

DE-RRD / IR-RRD use the relaxed ranking loss (a Plackett-Luce likelihood of
the interesting list ranked above the sampled uninteresting entries)::

    -sum_rows [ sum_k S1_k - sum_k log( sum_{l>=k} e^{S1_l} + sum_j e^{S2_j} + 1e-8 ) ]

with every score clipped at 10 from above. Uninteresting scores come from the
row against the *whole* catalogue ([batch, n_items] product, masked by the
sample; ``MaskedExpSum``), not from gathering [batch, n_uninteresting, d]
embeddings.

Deliberate choices (see also ``interesting``):
- the RRD scores use the raw layer-0 tables for LightGCN, as the reference does
  (the BPR term uses propagated embeddings); BPR-MF has only raw tables;
- interesting lists exclude block-k train items / users (B1 fixed), pools are
  capped at their size (B17 fixed);
- the BPR loss is the model's own (softplus of the score difference); the
  reference clamps sigmoid to [1e-4, 0.9999] (B15), which only stops gradients
  of saturated pairs;
- rows whose interesting list has fewer than n entries (tiny catalogues) use
  the entries they have; the reference would include train items.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..config import TrainConfig
from ..errors import InputError
from ..kernels.subsets import clip_scale_rows
from ..models.reduce import stable_sum
from ..ranking._blas import fixed_split_matmul
from ..training.batches import epoch_seed
from ..training.loop import FitResult, fit
from .ensemble import TeacherLists, csr_fingerprint
from .interesting import RRDTargets, UninterestingSampler, build_targets, union

SCORE_CLIP = 10.0
LOG_EPS = 1e-8


@dataclass
class KDConfig(TrainConfig):
    """Stage-1 hyper-parameters; defaults from ``Run/KD.py`` / ``run.sh`` (Gowalla samples)."""

    # Optimisation keys (lr, weight_decay, batch_size, ...) come from TrainConfig;
    # these are this stage's defaults for them.
    lr: float = 5e-3
    batch_size: int = 1024
    epochs: int = 10
    eval_every: int = 5
    patience: int = 2

    urrd_lambda: float = 0.01
    ir_lambda: float = 0.01
    n_interesting: int = 40
    n_uninteresting_items: int = 30000  # nui; Yelp 10000
    n_uninteresting_users: int = 19500  # nuu; Yelp 11500
    resample_every: int = 10
    ir_batch_size: int = 1024
    # DE-RRD for users without a block-k train interaction (idle users): the reference
    # (False) distils users only inside BPR batches, so a user who was active before
    # block k but not in it gets no user-side KD at all; True adds a pass over them.
    rrd_idle_users: bool = False


def _plackett_luce(s1, exp_sum2, s1_valid=None) -> torch.Tensor:
    """The loss from clipped interesting scores s1 [B, K] and sum_j e^{S2_j} per row [B]."""
    e1 = torch.exp(s1)
    if s1_valid is not None:
        valid = s1_valid.to(s1.dtype)
        e1 = e1 * valid
    below = torch.flip(torch.cumsum(torch.flip(e1, [1]), 1), [1]) + exp_sum2[:, None]
    terms = s1 - torch.log(below + LOG_EPS)
    if s1_valid is not None:
        terms = terms * valid
    return -stable_sum(terms)


def relaxed_ranking_loss(s1, s2, s1_valid=None, s2_mask=None) -> torch.Tensor:
    """Summed relaxed ranking loss of DE-RRD (see the module docstring), from explicit scores.

    s1: [B, K] scores of the interesting entries in teacher order; s2: [B, M]
    scores of uninteresting candidates. s1_valid (bool [B, K], a prefix per
    row) drops padded interesting slots; s2_mask (bool [B, M]) selects which
    candidates count (None: all).
    """
    e2 = torch.exp(torch.clamp(s2, max=SCORE_CLIP))
    if s2_mask is not None:
        e2 = e2 * s2_mask.to(s2.dtype)
    return _plackett_luce(torch.clamp(s1, max=SCORE_CLIP), e2.sum(1), s1_valid)


class ExpSumWorkspace:
    """Preallocated [max_rows, n] float32 buffers for ``MaskedExpSum`` on CPU.

    Allocating a fresh [1024, 40k] tensor per batch costs more than the maths
    (page faults), so each RRD term keeps one workspace: the scores buffer and
    the 0/1 sample mask. The next forward reuses the buffer, so a forward's
    backward must run before it (checked).
    """

    def __init__(self, max_rows: int, n_cols: int):
        self.scores = np.empty((max_rows, n_cols), np.float32)
        self.keep = np.empty((max_rows, n_cols), np.float32)
        self.generation = 0


class MaskedExpSum(torch.autograd.Function):
    """sum_j keep_rj * exp(min(<rows_r, table_j>, 10)) per row, with its gradients.

    Same value and gradients as the plain torch expression, without the half
    dozen [B, n] temporaries: on CPU the scores live in the workspace and are
    turned in place into exponentials, then into the backward's coefficients
    (``clip_scale_rows``). A clipped entry is recognised by its exponential,
    so scores within 1e-6 below the clip are treated as clipped too (no
    gradient), a negligible difference. ws=None: plain torch (any device).
    """

    CLIPPED = float(np.exp(SCORE_CLIP) * (1.0 - 2.0**-20))

    @staticmethod
    def forward(ctx, rows, table, keep, ws):
        b = rows.shape[0]
        if ws is None:
            e = rows @ table.T
            e.clamp_(max=SCORE_CLIP).exp_().mul_(keep)
        else:
            e_np = ws.scores[:b]
            fixed_split_matmul(rows.detach().numpy(), table.detach().numpy().T, out=e_np)
            e = torch.from_numpy(e_np)
            e.clamp_(max=SCORE_CLIP)
            np.exp(e_np, out=e_np)  # NumPy's SIMD float32 exp: ~2x torch's here
            e.mul_(keep)
            ws.generation += 1
            ctx.generation = ws.generation
        ctx.save_for_backward(rows, table)
        ctx.e, ctx.ws = e, ws
        return e.sum(1)

    @staticmethod
    def backward(ctx, grad):
        rows, table = ctx.saved_tensors
        e, ws = ctx.e, ctx.ws
        ctx.e = None
        if ws is None:
            g = e.masked_fill_(e >= MaskedExpSum.CLIPPED, 0.0).mul_(grad[:, None])
            return g @ table, g.T @ rows, None, None
        if ctx.generation != ws.generation:
            raise RuntimeError("ExpSumWorkspace reused before the backward of the previous forward")
        e_np = e.numpy()
        clip_scale_rows(e_np, grad.detach().numpy(), MaskedExpSum.CLIPPED)
        grad_rows = torch.from_numpy(fixed_split_matmul(e_np, table.detach().numpy()))
        grad_table = torch.from_numpy(fixed_split_matmul(e_np.T, rows.detach().numpy()))
        return grad_rows, grad_table, None, None


def rrd_loss(rows, table, interesting, valid, keep, ws=None) -> torch.Tensor:
    """Relaxed ranking loss of `rows` [B, d] against every row of `table` [n, d].

    interesting: int64 [B, K] ids into table (teacher order; padded slots any
    id with valid False); keep: float32 [B, n], 1 where a candidate is an
    uninteresting sample of the row; ws: optional CPU ``ExpSumWorkspace``.
    """
    # index_select, not table[interesting]: the backward of a gather with repeated
    # ids accumulates in a thread-count dependent order (docs/architecture.md)
    picked = table.index_select(0, interesting.reshape(-1)).view(*interesting.shape, table.shape[1])
    s1 = torch.clamp((rows[:, None, :] * picked).sum(-1), max=SCORE_CLIP)
    return _plackett_luce(s1, MaskedExpSum.apply(rows, table, keep, ws), valid)


def rrd_tables(model):
    """(user table, item table) with grad on which RRD scores are computed.

    The raw layer-0 tables (``user_table`` / ``item_table``) for BPR-MF and
    LightGCN: the reference's choice for LightGCN. A model may define
    ``rrd_tables()`` to override.
    """
    if hasattr(model, "rrd_tables"):
        return model.rrd_tables()
    if hasattr(model, "user_table") and hasattr(model, "item_table"):
        return model.user_table, model.item_table
    raise InputError(f"KD students need layer-0 user/item tables (BPR-MF or LightGCN), got {type(model).__name__}",
                     where="student")


def _interesting_rows(lists: np.ndarray, ids: torch.Tensor, device):
    """Interesting ids of rows `ids` with pads replaced by 0, and the valid mask."""
    rows = torch.from_numpy(lists[ids.cpu().numpy()].astype(np.int64)).to(device)
    valid = rows >= 0
    return rows.clamp(min=0), valid


def _rrd_batch(rows, table, lists, ids, keep_fn, ws_holder, max_rows):
    """RRD loss of the rows `ids` (their embeddings `rows`) against all of `table`."""
    idx, valid = _interesting_rows(lists, ids, table.device)
    if table.device.type == "cpu":
        if ws_holder[0] is None:
            ws_holder[0] = ExpSumWorkspace(max_rows, table.shape[0])
        ws = ws_holder[0]
        keep = torch.from_numpy(keep_fn(ids.numpy(), ws.keep))
    else:
        ws = None
        keep = torch.from_numpy(keep_fn(ids.numpy(), np.empty((len(ids), table.shape[0]), np.float32)))
        keep = keep.to(table.device)
    return rrd_loss(rows, table, idx, valid, keep, ws)


class DERRDTerm:
    """The user-side DE-RRD term added to each BPR mini-batch (``fit(batch_terms=...)``)."""

    def __init__(self, targets: RRDTargets, sampler: UninterestingSampler, cfg: KDConfig):
        self.targets, self.sampler, self.cfg = targets, sampler, cfg
        self.total, self.batches = 0.0, 0
        self._ws = [None]

    def __call__(self, model, users, pos, neg, epoch) -> torch.Tensor:
        self.sampler.ensure(epoch // max(self.cfg.resample_every, 1))
        user_w, item_w = rrd_tables(model)
        uniq = torch.unique(torch.as_tensor(users).cpu())
        rows = user_w[uniq.to(user_w.device)]
        loss = self.cfg.urrd_lambda * _rrd_batch(rows, item_w, self.targets.interesting_items, uniq,
                                                 self.sampler.user_keep, self._ws, self.cfg.batch_size)
        self.total += float(loss.detach())
        self.batches += 1
        return loss

    def epoch_summary(self) -> dict:
        out = {"de_rrd_loss": self.total / max(self.batches, 1)}
        self.total, self.batches = 0.0, 0
        return out


def _rrd_steps(model, optimizer, order: np.ndarray, side: str, lam: float, lists, keep_fn, ws_holder,
               batch_size: int) -> float:
    """lam x RRD for the ids of `order` in batches, one optimiser step each; returns the mean batch loss.

    side "user": user rows against every item (DE-RRD); "item": item rows against
    every user (IR-RRD).
    """
    total, batches = 0.0, 0
    for start in range(0, len(order), batch_size):
        ids = torch.from_numpy(order[start:start + batch_size])
        optimizer.zero_grad(set_to_none=True)
        user_w, item_w = rrd_tables(model)
        table, other = (user_w, item_w) if side == "user" else (item_w, user_w)
        loss = lam * _rrd_batch(table[ids.to(table.device)], other, lists, ids, keep_fn, ws_holder, batch_size)
        loss.backward()
        optimizer.step()
        total += float(loss.detach())
        batches += 1
    return total / max(batches, 1)


class IRRRDPass:
    """The item-side IR-RRD pass, one optimiser step per batch of items (``fit(extra_passes=...)``)."""

    def __init__(self, targets: RRDTargets, sampler: UninterestingSampler, cfg: KDConfig, user_term=None):
        self.targets, self.sampler, self.cfg, self.user_term = targets, sampler, cfg, user_term
        self._ws = [None]

    def __call__(self, model, optimizer, epoch) -> dict:
        self.sampler.ensure(epoch // max(self.cfg.resample_every, 1))
        order = np.random.default_rng(epoch_seed(self.cfg.seed, epoch, 7)).permutation(self.targets.n_items)
        out = {"ir_rrd_loss": _rrd_steps(model, optimizer, order, "item", self.cfg.ir_lambda,
                                         self.targets.interesting_users, self.sampler.item_keep, self._ws,
                                         self.cfg.ir_batch_size)}
        if self.user_term is not None:
            out.update(self.user_term.epoch_summary())
        return out


class IdleUserRRDPass:
    """DE-RRD over the users with no block-k train interaction, one optimiser step per batch.

    In the reference such users (active in older blocks only) never appear in a
    BPR batch, so the fresh student learns them only through IR-RRD's interesting
    users: their rows stay near random and the student forgets them, which the
    teacher ensemble does not. Same loss, lambda and sampler as the batch DE-RRD.
    """

    def __init__(self, targets: RRDTargets, sampler: UninterestingSampler, cfg: KDConfig, train):
        self.targets, self.sampler, self.cfg = targets, sampler, cfg
        self.users = np.flatnonzero(np.diff(train.indptr) == 0).astype(np.int64)
        self._ws = [None]

    def __call__(self, model, optimizer, epoch) -> dict:
        self.sampler.ensure(epoch // max(self.cfg.resample_every, 1))
        order = self.users[np.random.default_rng(epoch_seed(self.cfg.seed, epoch, 11)).permutation(len(self.users))]
        return {"idle_rrd_loss": _rrd_steps(model, optimizer, order, "user", self.cfg.urrd_lambda,
                                            self.targets.interesting_items, self.sampler.user_keep, self._ws,
                                            self.cfg.batch_size)}


def distill(student, train, lists: TeacherLists, cfg: KDConfig, *, exclude=None, evaluate=None, log=None,
            graph=None):
    """Train `student` (freshly built, U_k x I_k) on block k by KD from `lists` (E_k).

    train: block k's train CSR; exclude: the per-user exclusion lists (CSR, may
    be None at k = 0 or smaller than the block), see §4 "Negative exclusion".
    evaluate(model) -> metrics drives model selection (``fit``).
    graph: the interactions a LightGCN student propagates on (default `train`).
    Returns (student, FitResult); the student holds the best evaluated state.
    """
    if lists.train_fingerprint and lists.train_fingerprint != csr_fingerprint(train):
        raise InputError("the teacher lists were built with a different train matrix than this block's",
                         where="teacher")
    if (student.n_users, student.n_items) != tuple(train.shape):
        raise InputError(f"student is {student.n_users} x {student.n_items}, the block {train.shape}",
                         where="student")
    rrd_tables(student)  # fail early for unsupported students
    targets = build_targets(lists, train, exclude, cfg.n_interesting)
    sampler = UninterestingSampler(targets, cfg.n_uninteresting_items, cfg.n_uninteresting_users, cfg.seed)
    bpr_exclude = union(tuple(train.shape), exclude, targets.interesting_item_csr())
    user_term = DERRDTerm(targets, sampler, cfg)
    passes = (IRRRDPass(targets, sampler, cfg, user_term),)
    if cfg.rrd_idle_users:
        passes += (IdleUserRRDPass(targets, sampler, cfg, train),)
    result: FitResult = fit(
        student, train, cfg.train_config(), evaluate, exclude=bpr_exclude,
        batch_terms=(user_term,), extra_passes=passes, log=log, graph=graph,
    )
    return student, result
