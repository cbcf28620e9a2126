"""The results.json of one run: every model's result matrix, stage costs and a stable summary.

The pipeline feeds `RunResults` as blocks finish and saves it after each one, so
a partial run always has a valid file. `summary` is the public interface other
tools read (``summary["student"]["test"]["hmean"]["recall@20"]``); it is
recomputed from the stored matrices on load, never trusted from the file.
Strict JSON: NaN is written as null. Format: docs/results-format.md.
"""
from __future__ import annotations

import json
import math
import numbers

from ccd_dist.errors import InputError
from ccd_dist.io import atomic_write_text, read_json

from .metrics import DEFAULT_KS, arg_error, check_ks
from .protocol import EVAL_SPLITS
from .results import ResultMatrix

FORMAT = "ccd-dist/results"
VERSION = 1
SUMMARY_MODELS = ("student", "teacher")
SUMMARY_KEYS = ("la", "ra", "hmean")


def json_safe(obj):
    """A copy of `obj` with NaN / inf (also numpy scalars) as None, so json.dumps is strict."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (bool, str)) or obj is None:
        return obj
    if isinstance(obj, numbers.Integral):
        return int(obj)
    if isinstance(obj, numbers.Real):
        x = float(obj)
        return x if math.isfinite(x) else None
    return obj


def _model_summary(rm: ResultMatrix, k: int) -> dict:
    """{split: {"la"|"ra"|"hmean": {metric: value after block k}}}."""
    out = {}
    for split in rm.splits:
        by_metric = rm.summary(split)
        out[split] = {key: {m: by_metric[m][key][k] for m in rm.metrics} for key in SUMMARY_KEYS}
    return out


class RunResults:
    """Result matrices per model name, stage timings, and which blocks are finished."""

    def __init__(self, n_blocks: int, method: str, preset=None, data=None, ks=DEFAULT_KS,
                 splits=EVAL_SPLITS, meta=None):
        if int(n_blocks) < 1:
            raise arg_error("n_blocks", f"expected at least one block, got {n_blocks}")
        if not isinstance(method, str) or not method:
            raise arg_error("method", f"expected a non-empty method name, got {method!r}")
        self.n_blocks = int(n_blocks)
        self.method = method
        self.preset = preset
        self.data = None if data is None else str(data)
        self.ks = check_ks(ks)
        self.splits = tuple(splits)
        self.meta = dict(meta or {})
        self.models: dict[str, ResultMatrix] = {}
        self.stages: list[dict] = []
        self._blocks: set[int] = set()

    # -- recording ---------------------------------------------------------------
    def _check_block(self, k, name="k") -> int:
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 0 <= k < self.n_blocks:
            raise arg_error(name, f"expected a block index in 0..{self.n_blocks - 1}, got {k!r}")
        return int(k)

    def model(self, name: str) -> ResultMatrix:
        """The result matrix of `name`, created empty on first use."""
        if not isinstance(name, str) or not name:
            raise arg_error("model_name", f"expected a non-empty model name, got {name!r}")
        if name not in self.models:
            self.models[name] = ResultMatrix(self.n_blocks, self.ks, self.splits, meta={"model": name})
        return self.models[name]

    def add_evaluation(self, model_name: str, k: int, per_block: list, new_users=None) -> None:
        """Record row k of `model_name` from `evaluate_stream` output (per_block[j][split] -> metrics).

        `new_users`, if given, maps split -> `evaluate_new_users` metrics of block k.
        Recording the same row again (a resumed run) overwrites it.
        """
        k = self._check_block(k)
        if new_users is not None and (
            not isinstance(new_users, dict) or not set(new_users) <= set(self.splits)
        ):
            raise arg_error("new_users", f"expected a dict split -> metrics with splits in {self.splits}")
        rm = self.model(model_name)
        rm.record_row(k, per_block)
        for split, metrics in (new_users or {}).items():
            rm.record_new_users(k, split, metrics)

    def add_stage(self, k: int, stage: str, seconds: float, peak_rss_mb=None) -> None:
        """Record the wall time and peak RSS of one stage of block k (replaces an earlier entry)."""
        k = self._check_block(k)
        if not isinstance(stage, str) or not stage:
            raise arg_error("stage", f"expected a non-empty stage name, got {stage!r}")
        entry = {
            "block": k,
            "stage": stage,
            "seconds": float(seconds),
            "peak_rss_mb": None if peak_rss_mb is None else float(peak_rss_mb),
        }
        self.stages = [s for s in self.stages if (s["block"], s["stage"]) != (k, stage)]
        self.stages.append(entry)

    def finish_block(self, k: int) -> None:
        """Mark block k finished: it enters `blocks` and the summary."""
        self._blocks.add(self._check_block(k))

    @property
    def blocks(self) -> list:
        return sorted(self._blocks)

    # -- summary -----------------------------------------------------------------
    def summary(self) -> dict:
        """LA / RA / H per split and metric of "student" and "teacher" (absent models: absent keys).

        Top level: the values after the last finished block; "per_block": one
        entry per finished block. Values are floats, NaN where something is missing.
        """
        names = [n for n in SUMMARY_MODELS if n in self.models]
        per_block = []
        for k in self.blocks:
            per_block.append({"block": k} | {n: _model_summary(self.models[n], k) for n in names})
        out = dict(per_block[-1]) if per_block else {}
        out.pop("block", None)
        out["per_block"] = per_block
        return out

    # -- JSON --------------------------------------------------------------------
    def to_dict(self) -> dict:
        return json_safe({
            "format": FORMAT,
            "version": VERSION,
            "method": self.method,
            "preset": self.preset,
            "data": self.data,
            "n_blocks": self.n_blocks,
            "blocks": self.blocks,
            "ks": list(self.ks),
            "splits": list(self.splits),
            "meta": self.meta,
            "models": {name: rm.to_dict() for name, rm in self.models.items()},
            "stages": sorted(self.stages, key=lambda s: s["block"]),
            "summary": self.summary(),
        })

    @classmethod
    def from_dict(cls, data, source="results") -> "RunResults":
        """Inverse of `to_dict`; "summary" is recomputed. Errors name `source` and the key."""
        def fail(where, message):
            raise InputError(message, path=source, where=where)

        if not isinstance(data, dict) or data.get("format") != FORMAT:
            fail("format", f"not a ccd-dist results file (expected format {FORMAT!r})")
        if data.get("version") != VERSION:
            fail("version", f"unsupported version {data.get('version')!r}, expected {VERSION}")
        for key in ("method", "n_blocks", "blocks", "models", "stages"):
            if key not in data:
                fail(key, f"missing key {key!r}")
        n = data["n_blocks"]
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            fail("n_blocks", f"expected a positive integer, got {n!r}")
        if not isinstance(data["method"], str) or not data["method"]:
            fail("method", f"expected a non-empty string, got {data['method']!r}")
        try:
            run = cls(n, data["method"], data.get("preset"), data.get("data"),
                      data.get("ks", DEFAULT_KS), data.get("splits", EVAL_SPLITS), data.get("meta"))
        except (TypeError, ValueError) as exc:  # InputError is a ValueError
            fail(getattr(exc, "where", None) or "ks/splits", str(exc))
        blocks = data["blocks"]
        if not isinstance(blocks, list) or any(
            isinstance(b, bool) or not isinstance(b, int) or not 0 <= b < n for b in blocks
        ):
            fail("blocks", f"expected a list of block indices in 0..{n - 1}, got {blocks!r}")
        run._blocks = set(blocks)
        if not isinstance(data["models"], dict):
            fail("models", "expected an object model name -> result matrix")
        for name, rm_data in data["models"].items():
            try:
                rm = ResultMatrix.from_dict(rm_data, source=f"{source}: models.{name}")
            except InputError:
                raise
            except (TypeError, ValueError, AttributeError) as exc:
                fail(f"models.{name}", f"malformed result matrix ({exc})")
            if rm.n_blocks != n:
                fail(f"models.{name}.n_blocks", f"expected {n} (the run's n_blocks), got {rm.n_blocks}")
            run.models[name] = rm
        if not isinstance(data["stages"], list):
            fail("stages", "expected a list of {block, stage, seconds, peak_rss_mb}")
        for i, st in enumerate(data["stages"]):
            if not isinstance(st, dict) or "block" not in st or "stage" not in st or "seconds" not in st:
                fail(f"stages[{i}]", "expected an object with block, stage, seconds, peak_rss_mb")
            try:
                rss = st.get("peak_rss_mb")
                seconds = math.nan if st["seconds"] is None else st["seconds"]
                run.add_stage(st["block"], st["stage"], seconds, rss)
            except (InputError, TypeError, ValueError) as exc:
                fail(f"stages[{i}]", f"bad stage entry ({exc})")
        return run

    def save(self, path) -> None:
        """Write strict JSON atomically (a crash never leaves a half-written results.json)."""
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True, allow_nan=False)
        atomic_write_text(path, text + "\n")

    @classmethod
    def load(cls, path) -> "RunResults":
        data = read_json(path, "a ccd-dist results.json")
        return cls.from_dict(data, source=path)
