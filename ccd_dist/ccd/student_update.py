"""Stage 2: the continual update of the student on block k (§5, ``Run/S_update.py``).

Inputs: the distilled student D (trained on block k-1 from E_{k-1}, sized
U_{k-1} x I_{k-1}, holding its block k-1 interactions), the proxies built at
block k-1 (None at k = 1), the stream, and E_{k-1} as ``TeacherLists``.

1. Proxies (§5.2, ``proxies``): S and P, frozen, on D's block k-1 graph.
2. Negative exclusion (§5.1) for the old users (ids < U_{k-1}): the top-n of
   E_{k-1} without the user's block k-1 train items, the top-n of D, and at
   k >= 2 the top-n of S and of P (n = ``n_exclude`` = 40; D, S, P unfiltered).
   New users exclude only their own positives (as every BPR pass does).
3. The student: a copy of D grown to U_k x I_k with §5.3 rows for the new
   ids (``growth.grow_with_init``), every parameter trainable, block k's graph.
4. Replay set (§5.4): for every old user, each source's top-``absolute``
   items without the user's block k-1 and block k train items, sampled with
   ``replay.ReplaySampler`` against the reference ranks; sets merged with the
   max label. Sources: S when ``use_stability`` (``s_samples`` each); P when
   ``use_plasticity`` and k >= 2, or at k = 1 when P is the only proxy on
   (``p_samples``; at k = 1 S = P = D, so with both on only S is used, as in
   the reference). With both proxies off and replay on, D itself is the
   source (``s_samples``): replay without proxies.
5. Training (§5.5) through ``ccd_dist.training.fit``: per epoch a BPR pass
   over block k (fresh negatives outside the exclusions), then the replay
   pass (``replay.ReplayPass``: lambda_e = replay_lambda * exp(-e / anneal_t),
   summed BCE-with-logits on the propagated scores, batches of batch_size,
   the last batch complete: B15 fixed).

Evaluation schedule: the loop's rule - after epoch 1, every ``eval_every``
epochs, and after the last epoch (the reference evaluates only epochs 1 and
6 of 10 (B7), so epochs 7-10 and its last re-sampled replay set never count;
here the last epoch is evaluated too and can be selected). Patience counts
evaluations. With ``resample_after_eval`` the replay set is re-drawn after
each evaluation that follows an epoch other than the first (the reference's
``epoch > 0``), before the next epoch's replay pass.

Replay reference (B6): ``replay_reference="distilled"`` ranks candidates with
D, fixed for the stage, as the reference code does (fidelity; re-sampling then
only redraws); ``"current"`` uses the student being trained at the time of
each draw (what the teacher update does).

Ablations / baselines through flags:
- CCD without replay: ``replay=False``;
- without proxies: ``use_stability=use_plasticity=False`` (no S / P, no S / P
  exclusions; replay, if on, from D);
- the ``ft`` baseline (growth init + plain BPR fine-tuning on block k):
  ``finetune_config()`` = replay off, proxies off, ``exclusion=False`` (only
  the user's own positives are excluded, no teacher lists needed). `distilled`
  is then simply the previous block's model.

The reference updates the student once per block (B20), and so does this.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import numpy as np

from .. import ranking
from ..config import TrainConfig
from ..errors import InputError
from ..training.batches import epoch_seed
from ..models.base import numpy_representations as _reps
from ..training.loop import FitResult, fit
from .growth import check_previous_block_size, check_update_block, grow_with_init
from .interesting import lists_to_csr, union
from .proxies import frozen_copy, next_proxy
from .replay import ReplayPass, ReplaySampler

REFERENCES = ("distilled", "current")


@dataclass
class StudentUpdateConfig(TrainConfig):
    """Stage-2 hyper-parameters; defaults from ``Run/S_update.py`` (§7.1); per-block values in §7.2."""

    # Optimisation keys (lr, weight_decay, batch_size, ...) come from TrainConfig;
    # these are this stage's defaults for them.
    epochs: int = 10
    eval_every: int = 5
    patience: int = 2

    replay: bool = True  # --rl
    use_stability: bool = True  # --US
    use_plasticity: bool = True  # --UP
    exclusion: bool = True  # §5.1 exclusions beyond the user's positives (False: ft baseline)
    n_exclude: int = 40
    absolute: int = 100  # --ab
    s_samples: int = 5  # --ss
    p_samples: int = 5  # --ps
    s_weight: float = 0.9  # --sw
    p_weight: float = 0.9  # --pw
    eps: float = 1e-4
    replay_lambda: float = 0.5
    anneal_t: float = 10.0
    init_topk: int = 20
    random_init: bool = False
    replay_reference: str = "distilled"  # distilled (fidelity, B6) | current
    resample_after_eval: bool = True
    select_over: str = "block"  # block: valid of block k | seen: mean over blocks 0..k (--eaa)


def finetune_config(**overrides) -> StudentUpdateConfig:
    """The ``ft`` baseline: growth init + BPR on block k; no replay, proxies or extra exclusions."""
    base = dict(replay=False, use_stability=False, use_plasticity=False, exclusion=False)
    base.update(overrides)
    return StudentUpdateConfig(**base)


@dataclass
class StudentUpdateResult:
    student: object  # grown to U_k x I_k, best evaluated state
    stability: object  # S built at this block (U_{k-1} x I_{k-1}, frozen) or None when off
    plasticity: object  # P likewise
    fit_result: FitResult
    replay_size: int  # triples in the first replay set (0 without replay)


def _top_csr(reps, n: int, shape) -> object:
    items, _ = ranking.topk(reps[0], reps[1], n)
    return lists_to_csr(items, shape[1]) if items.size else None


def _check_inputs(distilled, stream, k: int, cfg: StudentUpdateConfig, teacher_lists_prev) -> None:
    check_update_block(stream, k, "student update")
    if cfg.replay_reference not in REFERENCES:
        raise InputError(f"replay_reference must be one of {REFERENCES}, got {cfg.replay_reference!r}",
                         where="replay_reference")
    if getattr(distilled, "kind", None) not in ("bpr", "lightgcn"):
        raise InputError(f"the student must be BPR-MF or LightGCN, got {getattr(distilled, 'kind', None)!r}",
                         where="distilled")
    check_previous_block_size(distilled, stream, k, "the distilled student", "distilled")
    if cfg.exclusion:
        if teacher_lists_prev is None:
            raise InputError(f"the §5.1 exclusion needs E_{k - 1}'s teacher lists (or exclusion=False)",
                             where="teacher_lists_prev")
        check_previous_block_size(teacher_lists_prev, stream, k, "teacher lists", "teacher_lists_prev")


def negative_exclusion(stream, k: int, teacher_lists_prev, models, n: int = 40):
    """§5.1 exclusion lists at block k's size: E_{k-1}'s top-n without block k-1 train, plus the
    unfiltered top-n of each model in `models` (D, and S / P from k = 2). Old users only."""
    shape = (stream[k].n_users, stream[k].n_items)
    mats = [teacher_lists_prev.top_csr(n, exclude=stream[k - 1].train, shape=shape)]
    mats += [_top_csr(_reps(m), n, shape) for m in models]
    return union(shape, *mats)


def replay_sources(cfg: StudentUpdateConfig, k: int, distilled, stability, plasticity) -> list:
    """[(name, model, n_samples)] per §5.4's rule (see the module docstring)."""
    sources = []
    if cfg.use_stability:
        sources.append(("stability", stability, cfg.s_samples))
    if cfg.use_plasticity and (k >= 2 or not cfg.use_stability):
        sources.append(("plasticity", plasticity, cfg.p_samples))
    if not cfg.use_stability and not cfg.use_plasticity:
        sources.append(("distilled", distilled, cfg.s_samples))
    return [s for s in sources if s[2] > 0]


def make_replay_sampler(stream, k: int, cfg: StudentUpdateConfig, distilled, sources):
    """sampler(model, round) -> merged replay set of the old users (``ReplayPass``'s sampler)."""
    prev, block = stream[k - 1], stream[k]
    mask = union((block.n_users, block.n_items), prev.train, block.train)
    users = np.arange(prev.n_users, dtype=np.int64)
    fixed_ref = _reps(distilled) if cfg.replay_reference == "distilled" else None
    draw = ReplaySampler([(*_reps(model), users, mask, n) for _name, model, n in sources], absolute=cfg.absolute,
                         eps=cfg.eps, seed_of=lambda round_, j: epoch_seed(cfg.seed, round_, 20 + j))

    def sampler(model, round_: int):
        return draw(*(fixed_ref if fixed_ref is not None else _reps(model)), round_)

    return sampler


def update_student(distilled, prev_stability, prev_plasticity, stream, k: int, teacher_lists_prev,
                   cfg: StudentUpdateConfig, evaluate, *, log=None) -> StudentUpdateResult:
    """Update the student on block k (see the module docstring); `distilled` is not modified.

    evaluate(model) -> metrics selects the model as in every stage (None: no
    selection, the last state is kept). prev_stability / prev_plasticity: the
    proxies this function returned at block k-1 (None at k = 1).
    """
    _check_inputs(distilled, stream, k, cfg, teacher_lists_prev)
    prev, block = stream[k - 1], stream[k]
    dist = frozen_copy(distilled)
    if dist.interactions is None:
        dist.set_interactions(prev.train)  # D's own graph: block k-1

    stability = next_proxy(prev_stability, dist, cfg.s_weight, k, "stability") if cfg.use_stability else None
    plasticity = next_proxy(prev_plasticity, dist, cfg.p_weight, k, "plasticity") if cfg.use_plasticity else None

    exclude = None
    if cfg.exclusion:
        proxies = [m for m in (stability, plasticity) if m is not None] if k >= 2 else []
        exclude = negative_exclusion(stream, k, teacher_lists_prev, [dist, *proxies], cfg.n_exclude)

    student = copy.deepcopy(dist)
    for p in student.parameters():
        p.requires_grad_(True)
    grow_with_init(student, block.train, block.n_users, block.n_items, cfg.init_topk, cfg.random_init)
    student.train()

    passes, replay_size = (), 0
    if cfg.replay:
        sources = replay_sources(cfg, k, dist, stability, plasticity)
        if sources:
            every = max(cfg.eval_every, 1)
            replay_pass = ReplayPass(
                make_replay_sampler(stream, k, cfg, dist, sources), lambda0=cfg.replay_lambda,
                anneal_t=cfg.anneal_t, batch_size=cfg.batch_size, seed=cfg.seed, reduction=cfg.loss_reduction,
                resample_after=lambda e: cfg.resample_after_eval and e > 0 and e % every == 0,
            )
            replay_size = len(replay_pass.ensure(student)[0])
            passes = (replay_pass,)

    result = fit(student, block.train, cfg.train_config(), evaluate, exclude=exclude, extra_passes=passes, log=log)
    return StudentUpdateResult(student, stability, plasticity, result, replay_size)


def config_for_block(cfg: StudentUpdateConfig, **per_block) -> StudentUpdateConfig:
    """A copy of `cfg` with one block's schedule values (e.g. §7.2: absolute, s_samples, ...)."""
    return dataclasses.replace(cfg, **per_block)
