"""Stage 3: the update of one BPR-MF / LightGCN teacher member on block k (§6, ``Run/T_update.py``).

Inputs: the member after block k-1 (sized U_{k-1} x I_{k-1}), the stream,
the student side of block k (``student_side``: "stability" / "plasticity"
proxies built at block k, sized for block k-1 and frozen; "student", the
student updated on block k), and E_{k-1} as ``TeacherLists``.

1. Negative exclusion (§6.2), at block k's size: the top-n of E_{k-1} without
   the user's block k-1 train items; the top-n of S and of P (when used as
   replay sources) without the user's block k-1 and block k train items (the
   reference's "already filtered" FS / FP); the unfiltered top-n of the updated
   student (n = ``n_exclude`` = 40).
2. The before state (§6.3): ``lwckd.BeforeGraphs`` (before ids, Rb, UU, II;
   model independent: pass ``before_graphs`` to share it between members) and
   ``lwckd.BeforeSnapshot`` of the member on its block k-1 graph.
3. Growth (§6.3): a copy of the member grown to U_k x I_k with the §5.3 rows
   computed from its own tables (``growth.grow_with_init``), block k's graph
   (or, with ``graph="cumulative"``, blocks 0..k's: ``member_graph``).
4. Replay set (§6.4): for each source X in S, P (old users, candidates without
   block k-1 / k train items) and the updated student (all users, unfiltered),
   ``replay.ReplaySampler`` against the *current* teacher's ranks with
   ``s_samples`` / ``p_samples`` / ``cl_samples`` draws per user, labels
   sigmoid(X's score); sets merged with the max label. P follows §5.4's k = 1
   rule (at k = 1 P = S, used only when S is off).
5. Training (§6.5) through ``ccd_dist.training.fit``: per epoch a BPR pass
   over block k (1 negative outside the exclusions) whose mini-batch loss adds
   the LWC-KD + PIW + cluster term (``lwckd.LWCKDTerm``; its centres, CSTM and
   MLP are optimised with the model), then the replay pass
   (``replay.ReplayPass``): lambda_e = replay_lambda * exp(-e / temperature)
   (the annealing temperature is LWC-KD's T, as in the reference), summed
   BCE-with-logits on the propagated scores, labels float32 (B15: the
   reference casts them to float16), the last batch complete. The replay set
   is re-drawn with the teacher of that time after each evaluation that
   follows an epoch other than the first (at the start of the next replay
   pass, as the student update does).

Evaluation and selection are the loop's (valid Recall@20 of block k after
epoch 1, every ``eval_every`` epochs and after the last; patience in
evaluations; B7). ``epochs = 0`` only grows the member (the "without teacher
update" ablation still needs block k's size for the ensemble). The member
passed in is not modified; a member of the wrong
size is an error (never a silent random start, B9). Mult-VAE members go
through ``vae_update.update_vae_member`` (same signature; this function
dispatches there for ``spec_kind="vae"``).

Flags for ablations: ``use_stability`` / ``use_plasticity`` / ``use_student``
(student-side sources and their exclusions), ``replay``, ``use_lwckd``,
``use_piw``, ``piw_noop`` (bug B3 as in the reference), ``exclusion``.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .. import ranking
from ..config import TrainConfig
from ..errors import InputError
from ..models.graph import binary_csr
from ..training.batches import epoch_seed
from ..models.base import numpy_representations as _reps
from ..training.loop import FitResult, fit
from .growth import check_previous_block_size, check_update_block, grow_with_init
from .interesting import lists_to_csr, union
from .lwckd import BeforeGraphs, BeforeSnapshot, LWCKDTerm
from .replay import ReplayPass, ReplaySampler

SIDE_KEYS = ("stability", "plasticity", "student")
GRAPHS = ("block", "cumulative")


@dataclass
class TeacherUpdateConfig(TrainConfig):
    """Stage-3 hyper-parameters; defaults from ``Run/T_update.py`` (§7.1); per-block values in §7.2."""

    # Optimisation keys (lr, weight_decay, batch_size, ...) come from TrainConfig;
    # these are this stage's defaults for them.
    epochs: int = 10
    eval_every: int = 5
    patience: int = 2

    temperature: float = 5.0  # --T: LWC-KD softmax temperature and the replay annealing
    n_clusters: int = 10  # --nc
    lwckd_lambda: float = 0.01
    cluster_lambda: float = 1.0
    use_lwckd: bool = True
    use_piw: bool = True
    piw_noop: bool = False  # True: bug B3 as in the reference (PIW has no effect)
    lwckd_precision: str = "float32"  # float32 | bfloat16: operands of LWC-KD's [batch, n_before] products
    eps: float = 1e-4
    absolute: int = 100  # --ab
    s_samples: int = 5  # --ss
    p_samples: int = 5  # --ps
    cl_samples: int = 5  # --cs
    replay: bool = True  # --rl
    replay_lambda: float = 0.5
    resample_after_eval: bool = True
    use_stability: bool = True  # --US
    use_plasticity: bool = True  # --UP
    use_student: bool = True  # --UCL
    exclusion: bool = True
    n_exclude: int = 40
    init_topk: int = 20
    random_init: bool = False
    vae_replay_value: float = 0.1  # VAE_replay_learning_value
    vae_replay: bool = True  # False: Mult-VAE members train on block k's rows + KL retention, no replay pairs
    kl_lambda: float = 1.0
    graph: str = "block"  # LightGCN members propagate on: block (block k's train, §1.4) | cumulative (blocks 0..k)
    select_over: str = "block"  # block: valid of block k | seen: mean over blocks 0..k (--eaa)


def member_graph(stream, k: int, graph: str, kind: str):
    """The interactions a member of `kind` holds at block k.

    ``graph="block"`` is the reference (§1.4): block k's train edges, so an old
    user without block-k interactions is an isolated LightGCN node and the
    member's ranking of old blocks collapses although its weights still rank
    them well on their own graph (docs/results.md). ``"cumulative"`` is a
    deliberate departure: the teacher is the server-side system, which keeps the
    history. A LightGCN member propagates on the union of train splits 0..k; a
    Mult-VAE member, whose input is a user's row, is fed block k's row where the
    user has one and the user's rows of blocks 0..k-1 where the user is idle in
    block k (an empty row would give every idle user the same ranking; a whole
    history for an active user would push old items into block k's ranking).
    For a VAE this is its input in the rank ensemble; during its update it
    trains on block k's rows plus the replay pairs unless ``vae_replay=false``
    (``vae_update``). BPR-MF ignores the graph.
    """
    if graph not in GRAPHS:
        raise InputError(f"graph must be one of {GRAPHS}, got {graph!r}", where="teacher_update.graph")
    if graph == "cumulative" and kind == "lightgcn":
        return stream.train_upto(k)
    if graph == "cumulative" and kind == "vae":
        return idle_users_history(stream, k)
    return stream[k].train


def idle_users_history(stream, k: int) -> sp.csr_matrix:
    """Block k's train rows, and for users without block-k train interactions their rows of blocks 0..k-1."""
    block = binary_csr(stream[k].train)
    idle = (np.diff(block.indptr) == 0).astype(np.float32)
    return binary_csr(block + sp.diags(idle) @ stream.train_upto(k))


# ----------------------------------------------------------------------------- student side
def side_sources(student_side: dict, cfg: TeacherUpdateConfig, k: int) -> list:
    """[(name, model, n_samples, filtered)] of the student side that the teacher uses (§6.1, §5.4 rule)."""
    side = dict(student_side or {})
    unknown = set(side) - set(SIDE_KEYS)
    if unknown:
        raise InputError(f"unknown student_side keys {sorted(unknown)}; expected {SIDE_KEYS}", where="student_side")
    wanted = []
    if cfg.use_stability:
        wanted.append(("stability", cfg.s_samples, True))
    if cfg.use_plasticity and (k >= 2 or not cfg.use_stability):
        wanted.append(("plasticity", cfg.p_samples, True))
    if cfg.use_student:
        wanted.append(("student", cfg.cl_samples, False))
    sources = []
    for name, n, filtered in wanted:
        model = side.get(name)
        if model is None:
            raise InputError(f"use_{'student' if name == 'student' else name} is on but student_side[{name!r}] "
                             "is missing", where="student_side")
        sources.append((name, model, n, filtered))
    return sources


def _check_side(sources, stream, k: int) -> None:
    prev, block = stream[k - 1], stream[k]
    for name, model, _n, _f in sources:
        want = (block.n_users, block.n_items) if name == "student" else (prev.n_users, prev.n_items)
        if (model.n_users, model.n_items) != want:
            raise InputError(f"student_side[{name!r}] is {model.n_users} x {model.n_items}, expected {want[0]} x "
                             f"{want[1]}", where="student_side")


def source_mask(stream, k: int):
    """Items never offered by S / P: the user's block k-1 and block k train items (FS / FP)."""
    block = stream[k]
    return union((block.n_users, block.n_items), stream[k - 1].train, block.train)


def negative_exclusion(stream, k: int, teacher_lists_prev, side_reps, n: int = 40):
    """§6.2 exclusion lists at block k's size (see the module docstring).

    side_reps: [(representations, filtered)] of the student-side sources.
    """
    block = stream[k]
    shape = (block.n_users, block.n_items)
    mats = []
    if teacher_lists_prev is not None:
        mats.append(teacher_lists_prev.top_csr(n, exclude=stream[k - 1].train, shape=shape))
    mask = source_mask(stream, k)
    for (users, items), filtered in side_reps:
        top, _ = ranking.topk(users, items, n, exclude=mask if filtered else None)
        if top.size:
            mats.append(lists_to_csr(top, items.shape[0]))
    return union(shape, *mats)


def make_teacher_sampler(stream, k: int, cfg: TeacherUpdateConfig, sources, label="sigmoid"):
    """sampler(model, round) -> merged replay set against `model`'s current ranks (§6.4)."""
    prev, block = stream[k - 1], stream[k]
    mask = source_mask(stream, k)
    plan = []
    for _name, model, n, filtered in sources:
        users = np.arange(prev.n_users if filtered else block.n_users, dtype=np.int64)
        plan.append((*_reps(model), users, mask if filtered else None, n))
    draw = ReplaySampler(plan, absolute=cfg.absolute, eps=cfg.eps, label=label,
                         seed_of=lambda round_, j: epoch_seed(cfg.seed, round_, 30 + j))
    return lambda model, round_: draw(*_reps(model), round_)


def resample_rule(cfg: TeacherUpdateConfig):
    """True after an epoch e that was evaluated, other than the first (the reference's ``epoch > 0``)."""
    every = max(cfg.eval_every, 1)
    return lambda e: cfg.resample_after_eval and e > 0 and e % every == 0


def check_member(model, spec_kind: str, stream, k: int, kinds) -> None:
    """The member must be the block k-1 model of the expected kind (B9: no silent restart)."""
    if model is None:
        raise InputError(f"no block {k - 1} model for the teacher update (a failed load must stop the run)",
                         where="model")
    check_update_block(stream, k, "teacher update")
    if spec_kind not in kinds or getattr(model, "kind", None) != spec_kind:
        raise InputError(f"expected a {spec_kind!r} member of kind {kinds}, got {getattr(model, 'kind', None)!r}",
                         where="model")
    check_previous_block_size(model, stream, k, "the member", "model")


def active_items(block) -> np.ndarray:
    """Items with a block-k train interaction (the "present items" of PIW / the cluster loss)."""
    return np.flatnonzero(np.bincount(block.train.indices, minlength=block.n_items)).astype(np.int64)


def grown_only(model, block, graph, cfg: TeacherUpdateConfig) -> tuple:
    """``epochs = 0`` ("CCD without teacher update"): a copy grown to block k, nothing trained."""
    teacher = copy.deepcopy(model)
    grow_with_init(teacher, block.train, block.n_users, block.n_items, cfg.init_topk, cfg.random_init, graph)
    return teacher.eval(), FitResult(epochs_run=0)


# ----------------------------------------------------------------------------- the update
def update_teacher_member(model, spec_kind: str, stream, k: int, student_side: dict, teacher_lists_prev,
                          cfg: TeacherUpdateConfig, evaluate, *, before_graphs: BeforeGraphs | None = None,
                          log=None) -> tuple:
    """Update one teacher member on block k (see the module docstring); returns (model, FitResult).

    evaluate(model) -> metrics selects the model (None: the last state is kept).
    """
    if spec_kind == "vae":
        from .vae_update import update_vae_member

        return update_vae_member(model, spec_kind, stream, k, student_side, teacher_lists_prev, cfg, evaluate,
                                 log=log)
    check_member(model, spec_kind, stream, k, ("bpr", "lightgcn"))
    prev, block = stream[k - 1], stream[k]
    graph = member_graph(stream, k, cfg.graph, model.kind)
    if cfg.epochs <= 0:
        return grown_only(model, block, graph, cfg)
    sources = side_sources(student_side, cfg, k)
    _check_side(sources, stream, k)

    exclude = None
    if cfg.exclusion:
        if teacher_lists_prev is not None:
            check_previous_block_size(teacher_lists_prev, stream, k, "teacher lists", "teacher_lists_prev")
        exclude = negative_exclusion(stream, k, teacher_lists_prev, [(_reps(m), f) for _, m, _, f in sources],
                                     cfg.n_exclude)

    teacher = copy.deepcopy(model)
    for p in teacher.parameters():
        p.requires_grad_(True)
    terms, params, passes = (), (), []
    if cfg.use_lwckd:
        graphs = before_graphs if before_graphs is not None else BeforeGraphs.shared(prev.train)
        check_previous_block_size(graphs, stream, k, "before_graphs", "before_graphs")
        snapshot = BeforeSnapshot.capture(teacher, member_graph(stream, k - 1, cfg.graph, model.kind))
    grow_with_init(teacher, block.train, block.n_users, block.n_items, cfg.init_topk, cfg.random_init, graph)
    teacher.train()
    if cfg.use_lwckd:
        term = LWCKDTerm(teacher, snapshot, graphs, active_items(block), temperature=cfg.temperature,
                         n_clusters=cfg.n_clusters, lwckd_lambda=cfg.lwckd_lambda, cluster_lambda=cfg.cluster_lambda,
                         use_piw=cfg.use_piw, piw_noop=cfg.piw_noop, seed=cfg.seed, precision=cfg.lwckd_precision)
        terms, params = (term,), tuple(term.parameters())
        passes.append(lambda _m, _o, _e: term.epoch_summary())
    if cfg.replay and sources:
        replay_pass = ReplayPass(make_teacher_sampler(stream, k, cfg, sources), lambda0=cfg.replay_lambda,
                                 anneal_t=cfg.temperature, batch_size=cfg.batch_size, seed=cfg.seed,
                                 resample_after=resample_rule(cfg), reduction=cfg.loss_reduction)
        replay_pass.ensure(teacher)  # drawn against the grown teacher, before any training
        passes.insert(0, replay_pass)
    result: FitResult = fit(teacher, block.train, cfg.train_config(), evaluate, exclude=exclude, graph=graph,
                            batch_terms=terms, extra_passes=tuple(passes), extra_params=params, log=log)
    return teacher, result
