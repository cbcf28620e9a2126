"""The continual result matrix r[k][j] and the LA / RA / H-mean summaries.

r[k][j] is a metric of the model after block k on block j (j <= k; NaN above
the diagonal and wherever nothing was recorded). The paper's summary metrics
are reconstructed (§9, unverified), so the whole matrix is stored and any
variant can be recomputed from it:
- LA_k (learning average, plasticity) = mean over i = 1..k of r[i][i];
  LA_0 = r[0][0] (the mean over an empty range is undefined);
- RA_k (retained average, stability) = mean over j = 0..k of r[k][j];
- H_k = 2 LA_k RA_k / (LA_k + RA_k), 0 when both are 0.
A missing entry makes the summary NaN rather than silently averaging fewer blocks.
"""
from __future__ import annotations

import math

import numpy as np

from ccd_dist.errors import InputError
from ccd_dist.io import atomic_write_json, read_json

from .metrics import DEFAULT_KS, arg_error, check_ks, metric_names
from .protocol import EVAL_SPLITS

FORMAT = "ccd-dist/result-matrix"
VERSION = 1


def _square(r) -> np.ndarray:
    r = np.asarray(r, dtype=np.float64)
    if r.ndim != 2 or r.shape[0] != r.shape[1]:
        raise ValueError(f"expected a square block x block matrix, got shape {r.shape}")
    return r


def _index(r: np.ndarray, k: int) -> int:
    if not 0 <= k < r.shape[0]:
        raise ValueError(f"block index {k} outside 0..{r.shape[0] - 1}")
    return int(k)


def learning_average(r, k: int) -> float:
    """LA_k = mean of r[i][i] for i = 1..k; LA_0 = r[0][0]."""
    r = _square(r)
    k = _index(r, k)
    if k == 0:
        return float(r[0, 0])
    return float(np.mean(np.diag(r)[1 : k + 1]))


def retained_average(r, k: int) -> float:
    """RA_k = mean of r[k][j] for j = 0..k."""
    r = _square(r)
    k = _index(r, k)
    return float(np.mean(r[k, : k + 1]))


def harmonic_mean(la: float, ra: float) -> float:
    """H = 2 LA RA / (LA + RA); 0 when LA + RA = 0; NaN if either is NaN."""
    if math.isnan(la) or math.isnan(ra):
        return float("nan")
    if la + ra == 0:
        return 0.0
    return 2.0 * la * ra / (la + ra)


def _nan_to_none(x):
    return None if isinstance(x, float) and math.isnan(x) else x


def _matrix_to_json(r: np.ndarray) -> list:
    return [[_nan_to_none(float(v)) for v in row] for row in r]


def _matrix_from_json(rows, n: int, where: str) -> np.ndarray:
    try:
        r = np.array([[np.nan if v is None else float(v) for v in row] for row in rows], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise arg_error(where, f"expected a {n} x {n} list of numbers or null ({exc})") from None
    if r.shape != (n, n):
        raise arg_error(where, f"expected a {n} x {n} matrix, got shape {r.shape}")
    return r


class ResultMatrix:
    """r[k][j] for every split and metric, plus evaluated-user counts and new-user results."""

    def __init__(self, n_blocks: int, ks=DEFAULT_KS, splits=EVAL_SPLITS, meta=None):
        if int(n_blocks) < 1:
            raise arg_error("n_blocks", f"expected at least one block, got {n_blocks}")
        self.n_blocks = int(n_blocks)
        self.ks = check_ks(ks)
        self.splits = tuple(splits)
        self.metrics = metric_names(self.ks)
        self.meta = dict(meta or {})
        n = self.n_blocks
        self.values = {s: {m: np.full((n, n), np.nan) for m in self.metrics} for s in self.splits}
        self.n_users = {s: np.full((n, n), np.nan) for s in self.splits}
        self.new_users = {s: [None] * n for s in self.splits}

    # -- recording ---------------------------------------------------------------
    def _check_kj(self, k: int, j: int) -> None:
        if not 0 <= j <= k < self.n_blocks:
            raise arg_error(
                "ResultMatrix",
                f"need 0 <= j <= k < {self.n_blocks} (a model after block k is evaluated on blocks j <= k), "
                f"got k={k}, j={j}",
            )

    def _check_split(self, split: str) -> None:
        if split not in self.splits:
            raise arg_error("split", f"unknown split {split!r}; this matrix holds {self.splits}")

    def _check_metrics(self, metrics: dict) -> None:
        missing = [m for m in self.metrics if m not in metrics]
        if missing:
            raise arg_error("metrics", f"metrics dict lacks {missing}")

    def record(self, k: int, j: int, split: str, metrics: dict) -> None:
        """Store the metrics of the model after block k on block j's `split`."""
        self._check_kj(k, j)
        self._check_split(split)
        self._check_metrics(metrics)
        for m in self.metrics:
            self.values[split][m][k, j] = float(metrics[m])
        self.n_users[split][k, j] = float(metrics.get("n_users", np.nan))

    def record_row(self, k: int, per_block: list) -> None:
        """Store row k from `evaluate_stream` output: per_block[j][split] -> metrics."""
        if len(per_block) != k + 1:
            raise arg_error("per_block", f"row {k} needs results for blocks 0..{k}, got {len(per_block)}")
        for j, by_split in enumerate(per_block):
            for split, metrics in by_split.items():
                self.record(k, j, split, metrics)

    def record_new_users(self, k: int, split: str, metrics: dict) -> None:
        """Store the new-user metrics of block k (model after block k)."""
        self._check_kj(k, k)
        self._check_split(split)
        self._check_metrics(metrics)
        self.new_users[split][k] = {m: _nan_to_none(float(metrics[m])) for m in self.metrics} | {
            "n_users": int(metrics.get("n_users", 0))
        }

    # -- reading -----------------------------------------------------------------
    def matrix(self, split: str = "test", metric: str = "recall@20") -> np.ndarray:
        """A copy of r[k][j] for one split and metric (NaN where not recorded)."""
        self._check_split(split)
        if metric not in self.metrics:
            raise arg_error("metric", f"unknown metric {metric!r}; expected one of {self.metrics}")
        return self.values[split][metric].copy()

    def summary(self, split: str = "test") -> dict:
        """{metric: {"la": [LA_0..], "ra": [RA_0..], "hmean": [H_0..]}}, one entry per block k."""
        out = {}
        for m in self.metrics:
            r = self.matrix(split, m)
            la = [learning_average(r, k) for k in range(self.n_blocks)]
            ra = [retained_average(r, k) for k in range(self.n_blocks)]
            out[m] = {"la": la, "ra": ra, "hmean": [harmonic_mean(a, b) for a, b in zip(la, ra)]}
        return out

    # -- JSON --------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Plain JSON-serialisable dict (NaN written as null)."""
        summaries = {}
        for s in self.splits:
            summaries[s] = {
                m: {key: [_nan_to_none(v) for v in vals] for key, vals in by_key.items()}
                for m, by_key in self.summary(s).items()
            }
        return {
            "format": FORMAT,
            "version": VERSION,
            "n_blocks": self.n_blocks,
            "ks": list(self.ks),
            "splits": list(self.splits),
            "metrics": list(self.metrics),
            "meta": self.meta,
            "results": {s: {m: _matrix_to_json(self.values[s][m]) for m in self.metrics} for s in self.splits},
            "n_users": {s: _matrix_to_json(self.n_users[s]) for s in self.splits},
            "new_users": {s: list(self.new_users[s]) for s in self.splits},
            "summary": summaries,
        }

    @classmethod
    def from_dict(cls, data: dict, source="result matrix") -> "ResultMatrix":
        """Inverse of `to_dict`; the "summary" entry is recomputed, not read."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise InputError(f"not a result matrix (expected format {FORMAT!r})", path=source, where="format")
        if data.get("version") != VERSION:
            raise InputError(
                f"unsupported version {data.get('version')!r}, expected {VERSION}", path=source, where="version"
            )
        try:
            rm = cls(data["n_blocks"], data["ks"], data["splits"], data.get("meta"))
            for s in rm.splits:
                for m in rm.metrics:
                    rm.values[s][m] = _matrix_from_json(data["results"][s][m], rm.n_blocks, f"results.{s}.{m}")
                rm.n_users[s] = _matrix_from_json(data["n_users"][s], rm.n_blocks, f"n_users.{s}")
                new = list(data["new_users"][s])
                if len(new) != rm.n_blocks:
                    raise InputError(f"expected {rm.n_blocks} entries", path=source, where=f"new_users.{s}")
                rm.new_users[s] = new
        except KeyError as exc:
            raise InputError(f"missing key {exc.args[0]!r}", path=source) from None
        except InputError as exc:
            if exc.path is None:  # an argument-style error from a nested check: add the file
                raise InputError(str(exc), path=source) from None
            raise
        return rm

    def save(self, path) -> None:
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path) -> "ResultMatrix":
        data = read_json(path, "a result-matrix JSON")
        return cls.from_dict(data, source=path)
