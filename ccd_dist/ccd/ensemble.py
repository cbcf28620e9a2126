"""The teacher's rank ensemble (§3.2), computed in user chunks and kept as lists.

For each member m and user u, every item gets its descending rank r_m(u, i)
(0 = best, ties by lower item id, the user's training items *included*, as in
the reference). The ensemble score is the mean over members of

    w(r) = (r + 1) ** -0.05

(1 at the top, ~0.966 at rank 1, ~0.588 at Gowalla's last rank 40,987; the
reference reads w from a table of length 45,000 holding exactly these values).

The reference materialises the users x items matrix E (§12 B12). Here E exists
only one user chunk at a time and is reduced, while it is in memory, to:

- user side: each user's best-first E list, *unfiltered*, of length
  ``list_size + |cover(u)|`` (capped at the catalogue), where cover(u) are the
  items any later consumer may mask for u (block k's train items, and for
  evaluation the train/valid/test items of blocks 0..k). Removing any subset of
  cover(u) from that list still leaves its exact top ``list_size``: the KD
  interesting items (top-40 without block-k train, B1 fixed), the S_update /
  T_update exclusions (top-40 of E_k without block-k train) and the §9
  evaluation on blocks 0..k (top-100 with each block's masks) are all exact
  prefixes of it;
- item side: the top ``n_top_users`` users of every item by E, after removing
  the users who trained on it in the block (the IR-RRD interesting users),
  merged chunk by chunk (O(items x k) memory).

Scores are the ranking engine's canonical scores (exact, so every rank is
bit-reproducible), ranks come from the radix-sort kernel in
``ccd_dist.kernels.fullrank``.
"""
from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ..errors import InputError
from ..io import atomic_write_bytes
from ..ranking._inputs import as_matrix
from ..kernels.fullrank import (
    CanonicalScorer,
    ColumnTopK,
    accumulate_rank_weights,
    filter_prefixes,
    select_rows_varlen,
)

RANK_EXPONENT = 0.05
DEFAULT_LIST_SIZE = 100
DEFAULT_TOP_USERS = 40
FORMAT = "ccd-dist/teacher-lists"
FORMAT_VERSION = 1


def rank_weight_table(n_items: int, exponent: float = RANK_EXPONENT) -> np.ndarray:
    """w[r] = (r + 1) ** -exponent for r = 0..n_items-1, computed in float64, stored float32."""
    return (np.arange(1, n_items + 1, dtype=np.float64) ** -float(exponent)).astype(np.float32)


# ----------------------------------------------------------------------------- inputs
@dataclass
class Member:
    """One teacher member as its inner-product representations (score = <user, item>)."""

    name: str
    user_repr: np.ndarray
    item_repr: np.ndarray


def member_from_model(name: str, model) -> Member:
    """A Member from any ``ccd_dist.models`` recommender (its ``representations()``)."""
    users, items = model.representations()
    return Member(name, users, items)


def _binary_csr(mat, shape, name: str) -> sp.csr_matrix:
    """0/1 CSR of `shape` (smaller matrices are padded), sorted unique indices."""
    if not sp.issparse(mat):
        raise InputError(f"expected a scipy sparse users x items matrix, got {type(mat).__name__}", where=name)
    mat = sp.csr_matrix(mat, dtype=np.float32, copy=True)
    if mat.shape[0] > shape[0] or mat.shape[1] > shape[1]:
        raise InputError(f"shape {mat.shape} exceeds the ensemble's {shape}", where=name)
    mat.sum_duplicates()
    mat.eliminate_zeros()
    mat.data[:] = 1.0
    mat = sp.csr_matrix((mat.data, mat.indices, np.concatenate(
        [mat.indptr, np.full(shape[0] - mat.shape[0], mat.indptr[-1], dtype=mat.indptr.dtype)])), shape=shape)
    mat.sort_indices()
    mat.indptr = mat.indptr.astype(np.int64, copy=False)
    mat.indices = mat.indices.astype(np.int32, copy=False)
    return mat


def csr_fingerprint(mat) -> str:
    """A short hash of a binary CSR's pattern (checks that lists and a block belong together)."""
    mat = _binary_csr(mat, mat.shape, "train")
    h = hashlib.sha256()
    h.update(np.asarray(mat.shape, dtype=np.int64).tobytes())
    h.update(mat.indptr.tobytes())
    h.update(mat.indices.tobytes())
    return h.hexdigest()[:16]


def stream_cover(stream, upto: int) -> sp.csr_matrix:
    """Union of train, valid and test of blocks 0..upto at block upto's size.

    Passed as ``cover`` so the lists support the §9 evaluation on blocks 0..upto.
    """
    shape = (stream[upto].n_users, stream[upto].n_items)
    total = sp.csr_matrix(shape, dtype=np.float32)
    for j in range(upto + 1):
        for name in ("train", "valid", "test"):
            total = total + _binary_csr(stream[j].split(name), shape, f"block {j} {name}")
    return _binary_csr(total, shape, "cover")


# ----------------------------------------------------------------------------- output
@dataclass
class TeacherLists:
    """What stage 1 and later stages need from the ensemble E_k, without E_k itself.

    user_indptr/user_items/user_scores: per user, E's best-first list (unfiltered;
    see the module docstring for its length). item_users/item_scores:
    [n_items, n_top_users] best users per item without the block's train pairs,
    padded with -1 / -inf. Also a ranker for ``ccd_dist.eval`` (``topk``).
    """

    member_names: list
    n_users: int
    n_items: int
    list_size: int
    user_indptr: np.ndarray
    user_items: np.ndarray
    user_scores: np.ndarray
    item_users: np.ndarray
    item_scores: np.ndarray
    train_fingerprint: str = ""
    meta: dict = field(default_factory=dict)

    # ------------------------------------------------------------------ queries
    def topk_with_scores(self, k: int, exclude=None, users=None):
        """Best k items per user (E score desc, ties by lower id) skipping `exclude`.

        exclude: users x items sparse mask (may be smaller than the ensemble).
        Raises InputError where the stored list cannot certify the answer (a
        mask beyond the ``cover`` the lists were built with).
        """
        k = int(k)
        users = np.arange(self.n_users, dtype=np.int64) if users is None else np.asarray(users, dtype=np.int64)
        if users.size and (users.min() < 0 or users.max() >= self.n_users):
            raise InputError(f"user ids must lie in [0, {self.n_users})", where="users")
        if exclude is None:
            m_indptr, m_indices = np.zeros(1, np.int64), np.zeros(0, np.int32)
        else:
            mask = sp.csr_matrix(exclude)
            mask = mask[:, : self.n_items] if mask.shape[1] > self.n_items else mask
            mask = mask[: self.n_users] if mask.shape[0] > self.n_users else mask
            mask = _binary_csr(mask, (mask.shape[0], self.n_items), "exclude")
            m_indptr, m_indices = mask.indptr, mask.indices
        items, scores, short = filter_prefixes(self.user_indptr, self.user_items, self.user_scores, users,
                                               m_indptr, m_indices, k, self.n_items)
        if short.any():
            u = int(users[np.flatnonzero(short)[0]])
            raise InputError(
                f"the stored ensemble list of user {u} is too short for top-{k} under this mask "
                f"({int(short.sum())} users affected); build the lists with a `cover` that includes the mask",
                where="exclude",
            )
        return items, scores

    def topk(self, k: int, exclude=None, users=None) -> np.ndarray:
        """Ranker protocol of ``ccd_dist.eval``: int32 [len(users), k] item ids."""
        return self.topk_with_scores(k, exclude, users)[0]

    def top_csr(self, k: int, exclude=None, shape=None) -> sp.csr_matrix:
        """Each user's top-k (without `exclude`) as a 0/1 CSR, e.g. the negative-exclusion
        lists of the next block (§4, §5.1, §6.2); `shape` pads to a larger id space."""
        from .interesting import lists_to_csr

        mat = lists_to_csr(self.topk(k, exclude), self.n_items)
        if shape is None:
            return mat
        return _binary_csr(mat, tuple(shape), "shape")

    def interesting_items(self, train, n: int = 40) -> np.ndarray:
        """KD interesting items: each user's top-n of E without its block train items (B1 fixed)."""
        return self.topk(n, exclude=train)

    def interesting_users(self, n: int = 40) -> np.ndarray:
        """IR-RRD interesting users: each item's top-n users of E without its block-train users."""
        if n > self.item_users.shape[1]:
            raise InputError(f"only {self.item_users.shape[1]} top users per item were kept, asked for {n}",
                             where="n_top_users")
        return self.item_users[:, :n]

    # ------------------------------------------------------------------ persistence
    def save(self, path) -> None:
        """One .npz file, written atomically."""
        buf = io.BytesIO()
        np.savez(
            buf,
            format=np.array(FORMAT), version=np.array(FORMAT_VERSION),
            member_names=np.array([str(n) for n in self.member_names], dtype=np.str_),
            sizes=np.array([self.n_users, self.n_items, self.list_size], dtype=np.int64),
            user_indptr=self.user_indptr, user_items=self.user_items, user_scores=self.user_scores,
            item_users=self.item_users, item_scores=self.item_scores,
            train_fingerprint=np.array(self.train_fingerprint),
            meta_json=np.array(json.dumps(self.meta, sort_keys=True)),
        )
        atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path) -> "TeacherLists":
        path = Path(path)
        if not path.is_file():
            raise InputError("no such teacher-lists file (expected one written by TeacherLists.save)", path=path)
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except Exception as exc:  # noqa: BLE001 - any unreadable file is an input error
            raise InputError(f"not a readable .npz file ({type(exc).__name__}: {exc})", path=path) from exc
        needed = ("format", "version", "member_names", "sizes", "user_indptr", "user_items", "user_scores",
                  "item_users", "item_scores", "train_fingerprint", "meta_json")
        for key in needed:
            if key not in data:
                raise InputError(f"missing array {key!r}", path=path, where=key)
        if str(data["format"]) != FORMAT or int(data["version"]) != FORMAT_VERSION:
            raise InputError(f"expected format {FORMAT!r} version {FORMAT_VERSION}", path=path, where="format")
        n_users, n_items, list_size = (int(x) for x in data["sizes"])
        lists = cls(
            member_names=[str(x) for x in data["member_names"]], n_users=n_users, n_items=n_items,
            list_size=list_size, user_indptr=data["user_indptr"].astype(np.int64),
            user_items=data["user_items"].astype(np.int32), user_scores=data["user_scores"].astype(np.float32),
            item_users=data["item_users"].astype(np.int32), item_scores=data["item_scores"].astype(np.float32),
            train_fingerprint=str(data["train_fingerprint"]),
            meta=json.loads(str(data["meta_json"])),
        )
        problem = lists._consistency_problem()
        if problem:
            raise InputError(problem[1], path=path, where=problem[0])
        return lists

    def _consistency_problem(self):
        ip = self.user_indptr
        if ip.shape != (self.n_users + 1,) or ip[0] != 0 or np.any(np.diff(ip) < 0):
            return "user_indptr", f"expected a CSR row pointer with {self.n_users + 1} entries"
        if ip[-1] != len(self.user_items) or len(self.user_items) != len(self.user_scores):
            return "user_items", "user_items / user_scores do not match user_indptr"
        if self.user_items.size and (self.user_items.min() < 0 or self.user_items.max() >= self.n_items):
            return "user_items", f"item ids must lie in [0, {self.n_items})"
        if self.item_users.shape[0] != self.n_items or self.item_users.shape != self.item_scores.shape:
            return "item_users", f"expected [{self.n_items}, k] item_users and item_scores"
        if self.item_users.size and (self.item_users.min() < -1 or self.item_users.max() >= self.n_users):
            return "item_users", f"user ids must lie in [0, {self.n_users}) or be -1 padding"
        return None


# ----------------------------------------------------------------------------- computation
def default_chunk(n_items: int) -> int:
    """Users per chunk: ~128 MB of float64 scores plus two float32 buffers of half that
    (~400 users for Gowalla; larger chunks amortise BLAS and per-chunk costs)."""
    return int(min(2048, max(16, (128 << 20) // (8 * max(n_items, 1)))))


def build_rank_ensemble(
    members,
    train,
    *,
    cover=None,
    list_size: int = DEFAULT_LIST_SIZE,
    n_top_users: int = DEFAULT_TOP_USERS,
    exponent: float = RANK_EXPONENT,
    chunk_size: int | None = None,
    meta: dict | None = None,
    progress=None,
) -> TeacherLists:
    """The rank ensemble E_k of `members` for block k, reduced to ``TeacherLists``.

    members: sequence of ``Member`` (representations with at least n_users /
    n_items rows; extra rows, e.g. a VAE's future items, are ignored).
    train: block k's train CSR; its shape (U_k, I_k) is the ensemble's size.
    cover: optional sparse matrix (or list of them) of further (user, item)
    pairs later consumers may mask, e.g. ``stream_cover(stream, k)`` for the
    evaluation on blocks 0..k. progress: optional callable(done_users, total).
    """
    members = list(members)
    if not members:
        raise InputError("the ensemble needs at least one member", where="members")
    n_users, n_items = (int(x) for x in train.shape)
    train = _binary_csr(train, (n_users, n_items), "train")
    tables = []
    for m in members:
        users = as_matrix(m.user_repr, f"{m.name}.user_repr")
        items = as_matrix(m.item_repr, f"{m.name}.item_repr")
        if users.shape[0] < n_users or items.shape[0] < n_items:
            raise InputError(
                f"member {m.name!r} has {users.shape[0]} user and {items.shape[0]} item rows, the block needs "
                f"{n_users} and {n_items}", where="members")
        if users.shape[1] != items.shape[1]:
            raise InputError(f"member {m.name!r}: user width {users.shape[1]} != item width {items.shape[1]}",
                             where="members")
        tables.append((users[:n_users], CanonicalScorer(items[:n_items])))

    covered = train.copy()
    for extra in ([] if cover is None else cover if isinstance(cover, (list, tuple)) else [cover]):
        covered = covered + _binary_csr(extra, (n_users, n_items), "cover")
    covered = _binary_csr(covered, (n_users, n_items), "cover")
    lengths = np.minimum(n_items, int(list_size) + np.diff(covered.indptr)).astype(np.int64)

    table = rank_weight_table(n_items, exponent)
    chunk = int(chunk_size or default_chunk(n_items))
    rows = min(chunk, max(n_users, 1))
    buf64 = np.empty((rows, n_items), np.float64)
    buf32 = np.empty((rows, n_items), np.float32)
    sums = np.empty((rows, n_items), np.float32)
    top_users = ColumnTopK(n_items, n_top_users)
    parts = []
    timing = dict.fromkeys(("score", "rank", "user_lists", "item_lists"), 0.0)
    started = time.perf_counter()
    for start in range(0, n_users, chunk):
        stop = min(n_users, start + chunk)
        c = stop - start
        acc = sums[:c]
        acc.fill(0.0)
        for users, scorer in tables:
            t0 = time.perf_counter()
            scores = scorer.scores(users[start:stop], buf64, buf32)
            t1 = time.perf_counter()
            accumulate_rank_weights(scores, acc, table)
            timing["score"] += t1 - t0
            timing["rank"] += time.perf_counter() - t1
        t0 = time.perf_counter()
        np.divide(acc, np.float32(len(tables)), out=acc)
        parts.append(select_rows_varlen(acc, lengths[start:stop]))
        t1 = time.perf_counter()
        sub = train[start:stop]
        top_users.add(acc, start, sub.indptr, sub.indices)
        timing["user_lists"] += t1 - t0
        timing["item_lists"] += time.perf_counter() - t1
        if progress is not None:
            progress(stop, n_users)

    counts = np.concatenate([np.diff(p[0]) for p in parts]) if parts else np.zeros(0, np.int64)
    indptr = np.zeros(n_users + 1, np.int64)
    np.cumsum(counts, out=indptr[1:])
    item_users, item_scores = top_users.result()
    info = {"exponent": float(exponent), "seconds": round(time.perf_counter() - started, 3), "chunk_size": chunk,
            "seconds_by_step": {k: round(v, 3) for k, v in timing.items()}}
    info.update(meta or {})
    return TeacherLists(
        member_names=[m.name for m in members], n_users=n_users, n_items=n_items, list_size=int(list_size),
        user_indptr=indptr,
        user_items=np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.int32),
        user_scores=np.concatenate([p[2] for p in parts]) if parts else np.zeros(0, np.float32),
        item_users=item_users, item_scores=item_scores, train_fingerprint=csr_fingerprint(train), meta=info,
    )


def evaluate_teacher(lists: TeacherLists, stream, upto: int, **kwargs) -> list:
    """§9 metrics of the ensemble after block `upto` on blocks 0..upto.

    The lists must have been built with ``cover=stream_cover(stream, upto)``.
    Returns ``ccd_dist.eval.evaluate_stream_ranker``'s per-block list.
    """
    from ..eval import evaluate_stream_ranker

    return evaluate_stream_ranker(lists, stream, upto, **kwargs)
