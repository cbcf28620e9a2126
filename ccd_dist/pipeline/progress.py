"""Per-epoch progress lines for log files (tqdm bars only show on a terminal).

Members run in Ray actors (or in this process, where tqdm bars only show on a
terminal), so their epochs would otherwise be invisible in a log file for the
whole of a stage that can last an hour. Each member appends one JSON record per
epoch to its ``history.jsonl`` in the run directory; ``HistoryWatcher`` reads the
new complete lines from a driver thread every few seconds and prints one line
per epoch: member, epoch, losses, valid Recall@20 and the epoch's seconds.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path


def describe(name: str, record: dict) -> str:
    """One progress line for an epoch record of `fit` (unknown keys are left out)."""
    parts = [f"{key} {value:.4g}" for key, value in record.items()
             if key.endswith("loss") and isinstance(value, (int, float))]
    recall = (record.get("valid") or {}).get("recall@20")
    if isinstance(recall, (int, float)):
        parts.append(f"valid recall@20 {recall:.4f}")
    seconds = record.get("train_seconds")
    tail = f" ({seconds:.0f}s)" if isinstance(seconds, (int, float)) else ""
    return f"  {name} epoch {record.get('epoch', '?')}: {', '.join(parts) or 'no losses'}{tail}"


def epoch_printer(name: str, say):
    """A ``fit(log=...)`` callback printing one line per epoch of a stage run in this process."""
    return lambda record: say(describe(name, record))


class HistoryWatcher:
    """Prints the new epoch records of several ``history.jsonl`` files while a stage runs.

    Use as a context manager around the wait for the members; lines already in a
    file when the watcher starts are not repeated, a line still being written
    (no newline yet) waits for the next poll, and a last poll runs on exit.
    """

    def __init__(self, paths: dict, say, period: float = 15.0):
        self.paths = {name: Path(p) for name, p in paths.items()}
        self.say = say
        self.period = float(period)
        self.offsets = {name: (p.stat().st_size if p.exists() else 0) for name, p in self.paths.items()}
        self._stop = threading.Event()
        self._thread = None

    def poll(self) -> list[str]:
        """Progress lines for the records appended since the last poll (also printed)."""
        lines = []
        for name, path in self.paths.items():
            if not path.exists():
                continue
            with open(path, "rb") as fh:
                fh.seek(self.offsets[name])
                data = fh.read()
            complete = data[: data.rfind(b"\n") + 1]
            self.offsets[name] += len(complete)
            for raw in complete.splitlines():
                try:
                    record = json.loads(raw)
                except ValueError:
                    continue  # not ours to judge: the member's own log, shown best effort
                if isinstance(record, dict):
                    lines.append(describe(name, record))
        for line in lines:
            self.say(line)
        return lines

    def _loop(self) -> None:
        while not self._stop.wait(self.period):
            self.poll()

    def __enter__(self) -> "HistoryWatcher":
        self._thread = threading.Thread(target=self._loop, name="history-watcher", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.poll()
