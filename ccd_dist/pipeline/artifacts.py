"""Run directory and stage artifacts: one folder per block and stage, with a fingerprint.

A stage writes its outputs into its folder, then `done.json` last (atomically).
`done.json` holds the stage's fingerprint: a hash of its config and of the
fingerprints of its inputs. A stage whose `done.json` exists with the same
fingerprint is finished and is skipped on a rerun; anything else in the folder
is a leftover of an interrupted attempt and is cleared before the stage reruns.

Layout (stable; `docs/architecture.md`):

    RUN/config.json                 resolved config
    RUN/block_K/STAGE/...           outputs of STAGE for block K
    RUN/block_K/STAGE/done.json     {"fingerprint": ..., "inputs": {...}, "outputs": {...}}
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from ..io import atomic_write_json


def fingerprint(*parts) -> str:
    """Stable short hash of JSON-serialisable parts (configs, upstream fingerprints)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def file_fingerprint(path) -> str:
    """Hash of a file's bytes, for inputs such as a store's meta or table."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


class RunDir:
    def __init__(self, root):
        self.root = Path(root)

    def stage(self, block: int, stage: str) -> Path:
        return self.root / f"block_{block}" / stage

    def done_record(self, block: int, stage: str) -> dict | None:
        path = self.stage(block, stage) / "done.json"
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            return None

    def is_done(self, block: int, stage: str, fp: str) -> bool:
        record = self.done_record(block, stage)
        return record is not None and record.get("fingerprint") == fp

    def begin(self, block: int, stage: str) -> Path:
        """Fresh folder for a stage that is about to run (clears a partial attempt)."""
        path = self.stage(block, stage)
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
        return path

    def finish(self, block: int, stage: str, fp: str, outputs: dict | None = None) -> None:
        atomic_write_json(self.stage(block, stage) / "done.json", {"fingerprint": fp, "outputs": outputs or {}})
