"""LWC-KD + PIW + the DEC cluster loss (§6.3-6.5, §8): the teacher's own continual regulariser.

Three pieces, also used by the ``lwckd`` student baseline:

``BeforeGraphs.from_train(prev_train)`` (``shared``: memoised per process)
    What block k-1 looked like, independent of any model (share it between the
    members of a teacher): the "before" users / items (ids with at least one
    block-(k-1) train interaction), the compact before-rating matrix Rb
    (before users x before items) and the binary UU / II graphs of §6.3 step 3.
``BeforeSnapshot.capture(model, prev_train)``
    The frozen old embeddings, taken before the model grows: the raw tables for
    BPR-MF; for LightGCN the per-layer outputs E^0..E^{L-1} propagated on the
    OLD (block k-1) graph. Tables are kept whole and indexed by entity id.
``LWCKDTerm(model, snapshot, graphs, present_items, ...)``
    A ``fit(batch_terms=...)`` term: lwckd_lambda * (UI + IU + UU + II) +
    cluster_lambda * cluster, with its own parameters (cluster centres, the
    PIW cluster-specific matrices and MLP) for ``fit(extra_params=...)``.

LWC-KD (§6.5). For an old target t (frozen embedding of a batch entity that is
a before entity) and the present embeddings n_j of a neighbour set,
p_j = softmax_j(t . n_j / T); the row term is sum_j r_j log p_j / (sum_j r_j +
1e-8) with the old-graph weights r_j, negated and averaged over the batch's
unique before users (UI, UU) or unique before positive items (IU, II):

- UI: old user vs present embeddings of all before items, r = the user's Rb row;
- IU: old item vs present embeddings of all before users, r = the item's Rb column;
- UU: old user vs present before users, r = the UU row;
- II: old item vs present before items, r = the II row.

sum_j r_j log p_j = (t . sum_j r_j n_j) / T - (sum_j r_j) logsumexp_j(t . n_j / T),
so only a row logsumexp needs the full [batch, n_before] score matrix
(``RowLogSumExp``: one product with a per-row bound folded in and one exp pass;
the exponentials are kept for the backward up to a memory budget, beyond it
recomputed in row chunks).

PIW (personalised imitation weights). G(e) = softmax_c(e . (mu_c W_c)) with
centres mu_c and a d x d matrix W_c per cluster (CSTM); the state
(G(old_u) - G(present_u))^2 goes through an MLP nc -> d -> 1 (ReLU, softplus);
weights are scaled to mean 1 over the batch users and multiply the UI and UU
row terms. Bug B3 fixed: the reference multiplies (B,) by (B, 1), a B x B
broadcast whose mean is mean(loss) x mean(weight) = mean(loss), so PIW does
nothing there; here the weights apply per user. ``piw_noop=True`` reproduces
the reference (mean(loss) x mean(weight), without the B x B matrix).

Cluster loss (DEC). Student-t soft assignment Q of the detached present item
embeddings (the items active in block k) to the trainable centres with
nu = n_present_items - 1, target P = Q^2 / (cluster frequency), row-normalised
and detached, loss KL(P || Q) averaged over items ("batchmean"); only the
centres learn from it. Q is computed in log space (a softmax over clusters of
-(nu+1)/2 log(1 + d^2/nu)), so far-away points cannot underflow to 0/0 as in
the reference, and P's rows are normalised exactly (the reference's 1e-8 in
that denominator leaves them summing to slightly less than 1, which makes the
"KL" slightly negative near a uniform assignment); otherwise identical.

LightGCN: every term is computed on layer outputs 0..L-1 (old outputs on the
old graph, present outputs on the block-k graph, with gradients) and averaged
with weight 1/L, with one set of centres per layer (initialised from random
before items' old layer outputs; BPR-MF: from random present items' present
rows) and one shared CSTM / MLP, as in the reference. Bug B4 fixed: the
reference indexes its full old per-layer tables with *compact* before indices;
here old and present rows are both looked up by entity id.

Differences from the reference worth knowing:
- before users are users with a block-(k-1) train interaction; the reference
  also lists users whose block-(k-1) train list is empty. Those rows have no
  UI / UU weight (their terms are 0); they only diluted the batch mean and the
  UU graph's average degree;
- UU / II (``cosine_graph``): cosine similarity of Rb rows computed as a sparse
  product in row chunks; the global threshold is found by the reference's
  bisection in (0.1, 0.9) aiming at an average degree of 10 +- 0.6 (strict
  ``>``, float32 comparisons, diagonal removed), run over the sorted similarity
  values above 0.1 instead of re-densifying the matrix at every step.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from ..errors import InputError
from ..kernels.softmax import exp_rows_
from ..models.graph import binary_csr
from .ensemble import csr_fingerprint

THRESHOLD_MIN = 0.1 + 1e-4
THRESHOLD_MAX = 0.9 - 1e-4
TARGET_DEGREE = 10.0
DEGREE_TOLERANCE = 0.6
MAX_SEARCH_STEPS = 100
LOG_EPS = 1e-8
INIT_STD = 0.01
SCORE_BUDGET = 1 << 23  # floats per score chunk when RowLogSumExp recomputes (32 MB)
CACHE_BUDGET = 1 << 27  # floats of softmax rows RowLogSumExp keeps for its backward (512 MB)


# ----------------------------------------------------------------------------- graphs
def _binary(mat) -> sp.csr_matrix:
    """0/1 CSR in float64 (cosine similarities are accumulated in double precision)."""
    return binary_csr(mat).astype(np.float64)


def _similarity_chunks(rows: sp.csr_matrix, chunk: int):
    """(start, off-diagonal cosine similarities of rows[start:start+chunk] vs all rows as CSR)."""
    counts = np.diff(rows.indptr).astype(np.float64)
    scale = np.divide(1.0, np.sqrt(counts), out=np.zeros_like(counts), where=counts > 0)
    normed = sp.diags(scale) @ rows
    normed_t = normed.T.tocsr()
    n = rows.shape[0]
    for start in range(0, n, chunk):
        sim = (normed[start:start + chunk] @ normed_t).tocsr()
        sim.sort_indices()
        r = np.repeat(np.arange(sim.shape[0]), np.diff(sim.indptr))
        sim.data[sim.indices == r + start] = 0.0  # the diagonal
        yield start, sim


def _degree_search(values: np.ndarray, n_rows: int) -> np.float32:
    """The reference's bisection (``sampling_for_graph``) over sorted float32 similarities."""
    lo, hi = THRESHOLD_MIN, THRESHOLD_MAX
    theta = np.float32((lo + hi) / 2.0)
    for _ in range(MAX_SEARCH_STEPS):
        mid = (lo + hi) / 2.0
        theta = np.float32(mid)
        degree = (len(values) - np.searchsorted(values, theta, side="right")) / max(n_rows, 1)
        if abs(degree - TARGET_DEGREE) < DEGREE_TOLERANCE:
            break
        if degree > TARGET_DEGREE:
            lo = mid
        else:
            hi = mid
    return theta


def cosine_graph(rows, chunk: int = 256) -> sp.csr_matrix:
    """Binary graph between the rows of a 0/1 matrix by thresholded cosine similarity (§6.3).

    Edge (a, b), a != b, iff float32(cos(row_a, row_b)) > theta, with theta the
    reference's bisection result (average degree 10 +- 0.6 if reachable within
    (0.1, 0.9); otherwise the threshold the 100 steps end on). Two passes of
    chunked sparse products: values above 0.1 for the search, then the edges.
    """
    rows = _binary(rows)
    n = rows.shape[0]
    floor = np.float32(THRESHOLD_MIN)
    kept = []
    for _, sim in _similarity_chunks(rows, chunk):
        v = sim.data.astype(np.float32)
        kept.append(v[v > floor])
    values = np.sort(np.concatenate(kept)) if kept else np.zeros(0, np.float32)
    theta = _degree_search(values, n)
    r_parts, c_parts = [], []
    for start, sim in _similarity_chunks(rows, chunk):
        keep = sim.data.astype(np.float32) > theta
        r = np.repeat(np.arange(sim.shape[0], dtype=np.int64), np.diff(sim.indptr)) + start
        r_parts.append(r[keep])
        c_parts.append(sim.indices[keep].astype(np.int64))
    r = np.concatenate(r_parts) if r_parts else np.zeros(0, np.int64)
    c = np.concatenate(c_parts) if c_parts else np.zeros(0, np.int64)
    graph = sp.csr_matrix((np.ones(len(r), np.float32), (r, c)), shape=(n, n))
    graph.sort_indices()
    return graph


@dataclass
class BeforeGraphs:
    """Block k-1 as LWC-KD sees it (model independent; build once per block)."""

    n_users: int  # U_{k-1}
    n_items: int  # I_{k-1}
    user_ids: np.ndarray  # int64, sorted: users with a block-(k-1) train interaction
    item_ids: np.ndarray  # int64, sorted: items with a block-(k-1) train interaction
    rating: sp.csr_matrix  # Rb, compact [n_before_users, n_before_items], 0/1
    rating_t: sp.csr_matrix  # Rb^T
    uu: sp.csr_matrix  # compact [n_before_users, n_before_users], 0/1
    ii: sp.csr_matrix  # compact [n_before_items, n_before_items], 0/1

    @classmethod
    def from_train(cls, prev_train, chunk: int = 256) -> "BeforeGraphs":
        if not sp.issparse(prev_train):
            raise InputError(f"prev_train must be a scipy sparse matrix, got {type(prev_train).__name__}",
                             where="prev_train")
        r = _binary(prev_train)
        user_ids = np.flatnonzero(np.diff(r.indptr)).astype(np.int64)
        item_ids = np.flatnonzero(np.bincount(r.indices, minlength=r.shape[1])).astype(np.int64)
        rb = r[user_ids][:, item_ids].tocsr().astype(np.float32)
        rb.sort_indices()
        return cls(n_users=r.shape[0], n_items=r.shape[1], user_ids=user_ids, item_ids=item_ids,
                   rating=rb, rating_t=rb.T.tocsr(), uu=cosine_graph(rb, chunk), ii=cosine_graph(rb.T, chunk))

    @classmethod
    def shared(cls, prev_train) -> "BeforeGraphs":
        """``from_train``, memoised on the matrix's pattern for the last block seen.

        Every member of a teacher (and the lwckd student) needs the same graphs
        for block k; the UU / II cosine graphs take ~40 s on Gowalla D0, so a
        process builds them once per block instead of once per member.
        """
        key = csr_fingerprint(prev_train)
        if _SHARED.get("key") != key:
            _SHARED.clear()
            _SHARED.update(key=key, graphs=cls.from_train(prev_train))
        return _SHARED["graphs"]


_SHARED: dict = {}  # BeforeGraphs.shared: the last block's graphs in this process


# ----------------------------------------------------------------------------- layer outputs
def _graph_spmm(graph, x: np.ndarray) -> np.ndarray:
    return graph.spmm(np.ascontiguousarray(x, dtype=np.float32), np.empty(x.shape, np.float32))


class GraphSpMM(torch.autograd.Function):
    """y = A_hat x for LightGCN's symmetric normalised graph; backward A_hat g."""

    @staticmethod
    def forward(ctx, x, graph):
        ctx.graph = graph
        if x.device.type == "cpu":
            return torch.from_numpy(_graph_spmm(graph, x.detach().numpy()))
        return graph.torch_csr(x.device) @ x

    @staticmethod
    def backward(ctx, g):
        if g.device.type == "cpu":
            return torch.from_numpy(_graph_spmm(ctx.graph, g.detach().numpy())), None
        return ctx.graph.torch_csr(g.device) @ g, None


def n_kd_layers(model) -> int:
    """Layers LWC-KD regularises: 0..L-1 for LightGCN (the last is skipped), the raw tables otherwise."""
    return max(int(getattr(model, "layers", 0)), 1) if model.kind == "lightgcn" else 1


def layer_tables(model) -> list:
    """Joint [n_users + n_items, d] outputs E^0..E^{n-1} (``n_kd_layers``), differentiable."""
    if model.kind not in ("bpr", "lightgcn"):
        raise InputError(f"LWC-KD needs a BPR-MF or LightGCN model, got {model.kind!r}", where="model")
    e = model.embedding.weight
    out = [e]
    if model.kind == "lightgcn":
        graph = model._graph()
        for _ in range(n_kd_layers(model) - 1):
            out.append(GraphSpMM.apply(out[-1], graph))
    return out


@dataclass
class BeforeSnapshot:
    """Frozen old per-layer tables, indexed by entity id (B4 fixed)."""

    users: list  # per layer, float32 [U_{k-1}, d]
    items: list  # per layer, float32 [I_{k-1}, d]

    @property
    def n_layers(self) -> int:
        return len(self.users)

    @classmethod
    def capture(cls, model, prev_train=None) -> "BeforeSnapshot":
        """Take the snapshot before the model grows; LightGCN propagates on `prev_train`'s graph
        (the model's current graph when None)."""
        if prev_train is not None and model.kind == "lightgcn":
            model.set_interactions(prev_train)
        with torch.no_grad():
            tables = [t.detach().clone() for t in layer_tables(model)]
        u = model.n_users
        return cls(users=[t[:u] for t in tables], items=[t[u:] for t in tables])


# ----------------------------------------------------------------------------- LWC-KD rows
class ScoreBuffers:
    """Reusable buffers for ``RowLogSumExp``'s [rows, N] score / softmax matrices.

    A fresh 50-300 MB tensor per call costs about as much in page faults as the
    product that fills it, and a teacher update makes hundreds of calls of a few
    sizes; kept buffers are reused instead. Owned by one ``LWCKDTerm`` (freed with it).
    """

    def __init__(self, max_free: int = 16):
        self.free: list = []
        self.max_free = max_free

    def take(self, rows: int, cols: int, dtype=torch.float32) -> tuple:
        """(buffer, [rows, cols] view of it); give the buffer back when done."""
        need = rows * cols
        fits = [i for i, b in enumerate(self.free) if b.numel() >= need and b.dtype == dtype]
        if fits:
            buf = self.free.pop(min(fits, key=lambda i: self.free[i].numel()))
        else:
            buf = torch.empty(need + need // 4, dtype=dtype)  # headroom: batch sizes vary a little
        return buf, buf[:need].view(rows, cols)

    def give(self, buf) -> None:
        self.free.append(buf)
        if len(self.free) > self.max_free:
            self.free.remove(min(self.free, key=lambda b: b.numel()))


PRECISIONS = ("float32", "bfloat16")
SAFE_SHIFT = 40.0  # entries >= -2 x 40: exp stays above float32's smallest normal (1e-38)


def _converted(x, dtype, buffers):
    """(buffer or None, the matrix `x` in `dtype`, in a pooled buffer when there is a pool)."""
    if buffers is None or x.device.type != "cpu":
        return None, x.to(dtype)
    buf, out = buffers.take(x.shape[0], x.shape[1], dtype)
    return buf, out.copy_(x)


def _shifted_scores(t, n, scale: float, out, dtype, buffers=None):
    """scale * <t_r, n_j> - shift_r, and shift_r, with every entry <= 0 (no overflow in exp).

    shift_r = scale |t_r| max_j |n_j| bounds row r from above (Cauchy-Schwarz), so
    no max pass over the matrix is needed; in float32 it is folded into the product.
    Should a bound be so loose that a row could underflow (> SAFE_SHIFT), the
    row's exact max is used instead.
    """
    ts = t * scale
    shift = ts.norm(dim=1) * n.norm(dim=1).max() if len(n) else t.new_zeros(len(t))
    if dtype == torch.float32 or t.dtype != torch.float32:
        scores = torch.addmm(-shift[:, None], ts, n.T, **({"out": out} if out is not None else {}))
    else:  # bf16 operands, the shift applied in float32
        low_buf, low = buffers.take(len(t), len(n), dtype) if buffers is not None else (None, None)
        low = torch.mm(ts.to(dtype), n.to(dtype).T, **({"out": low} if low is not None else {}))
        scores = out.copy_(low) if out is not None else low.float()
        scores.sub_(shift[:, None])
        if low_buf is not None:
            buffers.give(low_buf)
    if len(n) and len(t) and float(shift.max()) > SAFE_SHIFT:
        top = scores.amax(dim=1)
        scores.sub_(top[:, None])
        shift = shift + top
    return scores, shift


def _exp_scores(t, n, scale: float, buffers=None, dtype=torch.float32):
    """(buffer or None, e [B, N], row sums of e [B], logsumexp per row [B]); softmax rows = e / sums."""
    if t.device.type == "cpu" and t.dtype == torch.float32:
        buf, out = buffers.take(t.shape[0], n.shape[0]) if buffers is not None else (None, None)
        scores, shift = _shifted_scores(t, n, scale, out, dtype, buffers)
        total = torch.from_numpy(exp_rows_(scores.numpy()))  # in place: scores become e
        return buf, scores, total, shift + torch.log(total)
    scores, shift = _shifted_scores(t, n, scale, None, dtype)
    e = torch.exp(scores)
    total = e.sum(dim=1)
    return None, e, total, shift + torch.log(total)


class RowLogSumExp(torch.autograd.Function):
    """logsumexp_j(scale * <t_r, n_j>) per row r, with its gradients.

    The backward needs the softmax rows p_r (d lse_r / d t_r = scale * sum_j p_rj n_j,
    d / d n_j = scale * sum_r p_rj t_r). The forward makes them as e_r / total_r
    with e_r = exp(scale * <t_r, n> - shift_r) (``_shifted_scores``): one product
    and one exp pass, the division folded into the backward's row scaling. They
    are kept for the backward when they fit in ``CACHE_BUDGET`` floats, otherwise
    computed again chunk by chunk (memory O(chunk x N)). With `buffers` no fresh
    [B, N] allocation per call: this term is most of a teacher update's time on CPU.
    `dtype` bfloat16 rounds the operands of the three products (the exp and the
    sums stay float32): faster on CPUs with bf16 instructions (bench/bench_lwckd.py).
    """

    @staticmethod
    def forward(ctx, t, n, scale: float, buffers=None, dtype=torch.float32):
        rows, cols = t.shape[0], n.shape[0]
        keep = rows * cols <= CACHE_BUDGET and any(ctx.needs_input_grad[:2])
        chunk = max(rows, 1) if keep else max(1, SCORE_BUDGET // max(cols, 1))
        out = torch.empty(rows, dtype=t.dtype, device=t.device)
        kept = None
        for s in range(0, rows, chunk):
            buf, e, total, lse = _exp_scores(t[s:s + chunk], n, scale, buffers, dtype)
            out[s:s + chunk] = lse
            if keep:
                kept = (buf, e, total)
            elif buf is not None:
                buffers.give(buf)
        ctx.save_for_backward(t, n)
        ctx.scale, ctx.chunk, ctx.kept, ctx.buffers, ctx.dtype = scale, chunk, kept, buffers, dtype
        return out

    @staticmethod
    def backward(ctx, g):
        t, n = ctx.saved_tensors
        scale, chunk, buffers, dtype = ctx.scale, ctx.chunk, ctx.buffers, ctx.dtype
        gt = torch.zeros_like(t) if ctx.needs_input_grad[0] else None
        gn = torch.zeros_like(n) if ctx.needs_input_grad[1] else None
        rounded = dtype != torch.float32 and t.dtype == torch.float32
        n_low = n.to(dtype) if rounded else n
        kept, ctx.kept = ctx.kept, None  # scaled in place below: usable once
        for s in range(0, t.shape[0], chunk):
            tc = t[s:s + chunk]
            buf, p, total = kept if kept is not None else _exp_scores(tc, n, scale, buffers, dtype)[:3]
            p.mul_((g[s:s + chunk] * scale / total)[:, None])  # e -> g * scale * softmax
            low_buf, p_low = _converted(p, dtype, buffers) if rounded else (None, p)
            if gt is not None:
                gt[s:s + chunk] = p_low @ n_low
            if gn is not None and rounded:
                gn.add_(p_low.T @ tc.to(dtype))
            elif gn is not None:
                gn.addmm_(p.T, tc)
            for b in (buf, low_buf):
                if b is not None:
                    buffers.give(b)
        return gt, gn, None, None, None


def neighbour_log_likelihood(target, neighbours, weights: sp.csr_matrix, temperature: float,
                             buffers: ScoreBuffers | None = None, dtype=torch.float32):
    """Per row r: sum_j w_rj log softmax_j(<target_r, neighbours_j> / T) / (sum_j w_rj + 1e-8).

    target [B, d] (old, frozen), neighbours [N, d] (present, with grad),
    weights: scipy CSR [B, N]. Rows without weight give 0. buffers, dtype: see ``RowLogSumExp``.
    """
    dev = neighbours.device
    coo = weights.tocoo()
    rows = torch.from_numpy(coo.row.astype(np.int64)).to(dev)
    cols = torch.from_numpy(coo.col.astype(np.int64)).to(dev)
    w = torch.from_numpy(coo.data.astype(np.float32)).to(dev)
    b = target.shape[0]
    # index_select, not [cols]: the backward of advanced indexing with repeated ids
    # accumulates in an order that depends on the thread count
    dots = (target.index_select(0, rows) * neighbours.index_select(0, cols)).sum(-1) / temperature
    weighted = torch.zeros(b, device=dev, dtype=neighbours.dtype).index_add(0, rows, w * dots)
    total = torch.from_numpy(np.asarray(weights.sum(axis=1), dtype=np.float32).reshape(-1)).to(dev)
    lse = torch.zeros(b, device=dev, dtype=neighbours.dtype)
    active = torch.nonzero(total > 0).reshape(-1)
    if len(active):
        active_lse = RowLogSumExp.apply(target[active], neighbours, 1.0 / temperature, buffers, dtype)
        lse = lse.index_copy(0, active, active_lse)
    return (weighted - total * lse) / (total + LOG_EPS)


# ----------------------------------------------------------------------------- PIW and DEC
class PIW(nn.Module):
    """Personalised imitation weights: CSTM (nc x d x d) and the state MLP nc -> d -> 1."""

    def __init__(self, n_clusters: int, dim: int, gen: torch.Generator):
        super().__init__()
        self.cstm = nn.Parameter(torch.randn(n_clusters, dim, dim, generator=gen) * INIT_STD)
        first, second = nn.Linear(n_clusters, dim), nn.Linear(dim, 1)
        with torch.no_grad():
            for layer in (first, second):
                bound = 1.0 / np.sqrt(layer.in_features)  # torch's default bias range, seeded
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen) * INIT_STD)
                layer.bias.copy_((torch.rand(layer.bias.shape, generator=gen) * 2 - 1) * bound)
        self.mlp = nn.Sequential(first, nn.ReLU(), second, nn.Softplus())

    def assignment(self, emb, centres):
        """G(e) = softmax over clusters c of <e, mu_c W_c>."""
        return torch.softmax(emb @ torch.einsum("cd,cde->ce", centres, self.cstm).T, dim=1)

    def forward(self, old, present, centres):
        """Per-user weights [B], mean 1 over the batch."""
        state = (self.assignment(old, centres) - self.assignment(present, centres)) ** 2
        w = self.mlp(state).squeeze(-1)
        return w / (w.sum() + LOG_EPS) * w.shape[0]


def dec_cluster_loss(items, centres, nu: float):
    """KL(P || Q) batchmean of DEC's Student-t assignment of `items` (detached) to `centres`."""
    z = items.detach()
    d2 = ((z * z).sum(1, keepdim=True) - 2.0 * z @ centres.T + (centres * centres).sum(1)[None, :]).clamp_min(0.0)
    log_q = torch.log_softmax(-(nu + 1.0) / 2.0 * torch.log1p(d2 / nu), dim=1)
    q = log_q.exp()
    with torch.no_grad():
        p = q * q / (q.sum(0, keepdim=True) + LOG_EPS)
        p = p / p.sum(1, keepdim=True)  # > 0: every row has a q >= 1 / n_clusters
    return torch.nn.functional.kl_div(log_q, p, reduction="batchmean")


# ----------------------------------------------------------------------------- the batch term
class LWCKDTerm(nn.Module):
    """lwckd_lambda * (UI + IU + UU + II) + cluster_lambda * cluster for each BPR mini-batch.

    Build it after the model has grown to block k (and has block k's
    interactions): ``present_items`` are the ids active in block k (cluster
    loss, BPR-MF centre initialisation). Pass ``term.parameters()`` to
    ``fit(extra_params=...)``.
    """

    def __init__(self, model, snapshot: BeforeSnapshot, graphs: BeforeGraphs, present_items, *,
                 temperature: float = 5.0, n_clusters: int = 10, lwckd_lambda: float = 0.01,
                 cluster_lambda: float = 1.0, use_piw: bool = True, piw_noop: bool = False, seed: int = 0,
                 precision: str = "float32"):
        super().__init__()
        if precision not in PRECISIONS:
            raise InputError(f"lwckd_precision must be one of {PRECISIONS}, got {precision!r}",
                             where="lwckd_precision")
        self.dtype = getattr(torch, precision)
        if snapshot.n_layers != n_kd_layers(model):
            raise InputError(f"snapshot has {snapshot.n_layers} layers, the model needs {n_kd_layers(model)}",
                             where="snapshot")
        if (snapshot.users[0].shape[0], snapshot.items[0].shape[0]) != (graphs.n_users, graphs.n_items):
            raise InputError(f"snapshot covers {snapshot.users[0].shape[0]} users x {snapshot.items[0].shape[0]} "
                             f"items, the before graphs {graphs.n_users} x {graphs.n_items}", where="snapshot")
        if model.n_users < graphs.n_users or model.n_items < graphs.n_items:
            raise InputError("grow the model to block k before building the LWC-KD term", where="model")
        dev = model.embedding.weight.device
        self.temperature, self.lwckd_lambda, self.cluster_lambda = float(temperature), lwckd_lambda, cluster_lambda
        self.use_piw, self.piw_noop = bool(use_piw), bool(piw_noop)
        self.buffers = ScoreBuffers()
        self.graphs = graphs
        self.old_users = [t.to(dev) for t in snapshot.users]
        self.old_items = [t.to(dev) for t in snapshot.items]
        self.user_pos = np.full(graphs.n_users, -1, np.int64)
        self.user_pos[graphs.user_ids] = np.arange(len(graphs.user_ids))
        self.item_pos = np.full(graphs.n_items, -1, np.int64)
        self.item_pos[graphs.item_ids] = np.arange(len(graphs.item_ids))
        self.user_ids_t = torch.from_numpy(graphs.user_ids).to(dev)
        self.item_ids_t = torch.from_numpy(graphs.item_ids).to(dev)
        present = np.unique(np.asarray(present_items, dtype=np.int64))
        self.present_items_t = torch.from_numpy(present).to(dev)
        self.nu = float(max(len(present) - 1, 1))
        gen = torch.Generator().manual_seed(int(seed))
        rng = np.random.default_rng(int(seed))
        self.piw = PIW(n_clusters, model.dim, gen).to(dev) if self.use_piw else None
        centres = []
        if self.use_piw:
            for layer in range(snapshot.n_layers):
                if model.kind == "bpr":  # present items' present rows
                    pool, table = present, model.item_table.detach()
                else:  # before items' old layer outputs
                    pool, table = graphs.item_ids, self.old_items[layer]
                if len(pool) == 0:
                    raise InputError("no items to initialise the cluster centres from", where="present_items")
                pick = pool[rng.choice(len(pool), n_clusters, replace=len(pool) < n_clusters)]
                centres.append(nn.Parameter(table[torch.from_numpy(pick).to(dev)].clone()))
        self.centres = nn.ParameterList(centres)
        self.totals = dict.fromkeys(("ui", "iu", "uu", "ii", "cluster"), 0.0)
        self.batches = 0

    def _batch_entities(self, ids, pos_map):
        ids = np.unique(torch.as_tensor(ids).detach().cpu().numpy().astype(np.int64))
        ids = ids[ids < len(pos_map)]
        ids = ids[pos_map[ids] >= 0]
        return ids, pos_map[ids]

    def layer_terms(self, layer: int, present_users, present_items, users, items):
        """(UI, IU, UU, II, cluster) of one layer for batch before users / items (ids, compact)."""
        g, T, buf, dt = self.graphs, self.temperature, self.buffers, self.dtype
        zero = torch.zeros((), dtype=present_users.dtype, device=present_users.device)
        ui = iu = uu = ii = zero
        n_users_p = present_users[self.user_ids_t]
        n_items_p = present_items[self.item_ids_t]
        u_ids, u_pos = users
        if len(u_ids):
            ut = torch.from_numpy(u_ids).to(present_users.device)
            t_u = self.old_users[layer][ut]
            ui_rows = neighbour_log_likelihood(t_u, n_items_p, g.rating[u_pos], T, buf, dt)
            uu_rows = neighbour_log_likelihood(t_u, n_users_p, g.uu[u_pos], T, buf, dt)
            if self.piw is not None:
                w = self.piw(t_u, present_users[ut], self.centres[layer])
                if self.piw_noop:  # B3 as in the reference: mean over a (B, B) broadcast
                    ui, uu = -ui_rows.mean() * w.mean(), -uu_rows.mean() * w.mean()
                else:
                    ui, uu = -(ui_rows * w).mean(), -(uu_rows * w).mean()
            else:
                ui, uu = -ui_rows.mean(), -uu_rows.mean()
        i_ids, i_pos = items
        if len(i_ids):
            t_i = self.old_items[layer][torch.from_numpy(i_ids).to(present_items.device)]
            iu = -neighbour_log_likelihood(t_i, n_users_p, g.rating_t[i_pos], T, buf, dt).mean()
            ii = -neighbour_log_likelihood(t_i, n_items_p, g.ii[i_pos], T, buf, dt).mean()
        cluster = zero
        if self.piw is not None:
            cluster = dec_cluster_loss(present_items[self.present_items_t], self.centres[layer], self.nu)
        return ui, iu, uu, ii, cluster

    def forward(self, model, users, pos, neg=None, epoch=0):
        tables = layer_tables(model)
        users_b = self._batch_entities(users, self.user_pos)
        items_b = self._batch_entities(pos, self.item_pos)
        n = len(tables)
        parts = [0.0] * 5
        for layer, table in enumerate(tables):
            terms = self.layer_terms(layer, table[: model.n_users], table[model.n_users:], users_b, items_b)
            parts = [p + t / n for p, t in zip(parts, terms)]
        ui, iu, uu, ii, cluster = parts
        for key, value in zip(("ui", "iu", "uu", "ii", "cluster"), parts):
            self.totals[key] += float(value.detach())
        self.batches += 1
        return self.lwckd_lambda * (ui + iu + uu + ii) + self.cluster_lambda * cluster

    def epoch_summary(self) -> dict:
        """Mean of each term over the batches since the last call (for the training log)."""
        out = {f"lwckd_{k}": v / max(self.batches, 1) for k, v in self.totals.items()}
        self.totals = dict.fromkeys(self.totals, 0.0)
        self.batches = 0
        return out
