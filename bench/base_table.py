"""Print a run's base-stage results (members, ensemble, KD student, student without KD) as Markdown.

Usage: python bench/base_table.py RUN_DIR
"""
import json
import sys
from pathlib import Path


def main(run_dir: str) -> None:
    res = json.loads((Path(run_dir) / "base_results.json").read_text())
    rows = [(f"member {name}", m) for name, m in res["members"].items()]
    rows += [("rank ensemble", res["ensemble"]), ("KD student", res["kd_student"]),
             ("student without KD", res["plain_student"])]
    print("| model | test R@20 | test N@20 | valid R@20 | epochs | wall s | peak RSS MB |")
    print("|---|---|---|---|---|---|---|")
    for name, m in rows:
        print(f"| {name} | {m['test']['recall@20']:.4f} | {m['test']['ndcg@20']:.4f} | "
              f"{m['valid']['recall@20']:.4f} | {m.get('epochs', '-')} | {m['seconds']:.0f} | "
              f"{m.get('peak_rss_mb', float('nan')):.0f} |")


if __name__ == "__main__":
    main(sys.argv[1])
