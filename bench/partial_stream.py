"""Test H-mean of Recall@20 of the CCD student and teacher per finished block, read from the
stage metrics of a run that may still be running (results.json is written at the end).

Usage: python bench/partial_stream.py RUN_DIR [RUN_DIR ...]
"""
import json
import sys
from pathlib import Path

import numpy as np

from ccd_dist.eval.results import harmonic_mean, learning_average, retained_average


def stage_rows(run: Path, stage: str, read_row) -> np.ndarray:
    """r[k][j] (test Recall@20) from block_k/STAGE/metrics.json for k = 1.. while the file exists."""
    rows = []
    while (path := run / f"block_{len(rows) + 1}" / stage / "metrics.json").exists():
        rows.append(read_row(json.loads(path.read_text())))
    r = np.full((len(rows) + 1, len(rows) + 1), np.nan)  # row 0 (D0) is not needed for k >= 1
    for k, row in enumerate(rows, start=1):
        r[k, : len(row)] = row
    return r


def hmean(r: np.ndarray, k: int) -> float:
    return harmonic_mean(learning_average(r, k), retained_average(r, k))


def main() -> None:
    for run in map(Path, sys.argv[1:]):
        student = stage_rows(run, "student_update", lambda m: [x["test"]["recall@20"] for x in m["student"]])
        teacher = stage_rows(run, "ensemble", lambda m: [b["test"]["recall@20"] for b in m["per_block"]])
        for k in range(1, max(len(student), len(teacher))):
            out = [f"{run.name} D{k}"]
            if k < len(student):
                out.append(f"student {hmean(student, k):.4f}")
            if k < len(teacher):
                out.append(f"teacher {hmean(teacher, k):.4f}")
            print("  ".join(out))


if __name__ == "__main__":
    main()
