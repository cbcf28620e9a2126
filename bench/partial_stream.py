"""Test H-mean of Recall@20 of the CCD student and teacher per finished block, read from the
stage metrics of a run that may still be running (results.json is written at the end).

Usage: python bench/partial_stream.py RUN_DIR [RUN_DIR ...]
"""
import json, sys
from pathlib import Path
h = lambda a, b: 2 * a * b / (a + b) if a + b else 0.0
for run in sys.argv[1:]:
    run = Path(run)
    la_s, la_t = [], []
    for k in range(1, 6):
        su, en = run / f"block_{k}/student_update/metrics.json", run / f"block_{k}/ensemble/metrics.json"
        out = [f"{run.name} D{k}"]
        if su.exists():
            r = [x["test"]["recall@20"] for x in json.loads(su.read_text())["student"]]
            la_s.append(r[-1]); out.append("student %.4f" % h(sum(la_s) / len(la_s), sum(r) / len(r)))
        if en.exists():
            pb = json.loads(en.read_text())["per_block"]
            r = [pb[j]["test"]["recall@20"] for j in range(k + 1)]
            la_t.append(r[-1]); out.append("teacher %.4f" % h(sum(la_t) / len(la_t), sum(r) / len(r)))
        if len(out) > 1:
            print("  ".join(out))
