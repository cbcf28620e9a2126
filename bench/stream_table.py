"""Print, as Markdown, the per-block comparison of finished continual runs (docs/results.md).

Usage: python bench/stream_table.py RUN_DIR [RUN_DIR ...]

Table 1: test H-mean of Recall@20 / NDCG@20 after every block, student and
teacher, one column per run. Table 2: wall seconds per block and stage kind,
and the highest peak RSS of the run.
"""
import sys
from collections import defaultdict

from ccd_dist.eval.report import load_runs


def _fmt(x) -> str:
    return "-" if x is None or x != x else f"{x:.4f}"


def hmean_table(runs, metric: str) -> str:
    blocks = sorted({b for r in runs for b in r.results.blocks})
    head = [f"{r.label} {who}" for who in ("student", "teacher") for r in runs]
    lines = [f"| block | {' | '.join(head)} |", "|---" * (len(head) + 1) + "|"]
    for k in blocks:
        cells = []
        for who in ("student", "teacher"):
            for r in runs:
                entry = next((e for e in r.results.summary()["per_block"] if e["block"] == k), {})
                cells.append(_fmt(entry.get(who, {}).get("test", {}).get("hmean", {}).get(metric)))
        lines.append(f"| D{k} | {' | '.join(cells)} |")
    return "\n".join(lines)


def stage_kind(name: str) -> str:
    return "teacher update" if name.startswith("teacher/") else name.replace("_", " ")


def time_table(runs) -> str:
    lines = ["| run | block | stage | wall s | peak RSS MB |", "|---|---|---|---|---|"]
    for r in runs:
        totals = defaultdict(lambda: [0.0, 0.0])
        for st in r.results.stages:
            t = totals[(st["block"], stage_kind(st["stage"]))]
            t[0] += st["seconds"]
            t[1] = max(t[1], st.get("peak_rss_mb") or 0.0)
        for (k, kind), (sec, rss) in sorted(totals.items()):
            if k > 0:
                lines.append(f"| {r.label} | D{k} | {kind} | {sec:.0f} | {rss:.0f} |")
        cont = sum(sec for (k, _), (sec, _) in totals.items() if k > 0)
        lines.append(f"| {r.label} | D1-D5 | all | {cont:.0f} | {max(v[1] for v in totals.values()):.0f} |")
    return "\n".join(lines)


def main(paths) -> None:
    runs = load_runs(paths)
    for metric in ("recall@20", "ndcg@20"):
        print(f"Test H-mean of {metric} after each block:\n\n{hmean_table(runs, metric)}\n")
    print(f"Wall time and peak RSS per block and stage:\n\n{time_table(runs)}")


if __name__ == "__main__":
    main(sys.argv[1:])
