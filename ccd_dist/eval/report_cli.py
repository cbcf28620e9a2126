"""`ccd-dist report RUN_DIR [RUN_DIR ...]`: tables, report.md and plots from runs' results.json."""
from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "report",
        help="summarise one or more runs (results.json): tables, report.md and PNG plots",
    )
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                   help="run directory holding results.json (or the results.json file itself)")
    p.add_argument("--out", help="output folder (default: the first RUN_DIR's report/ folder)")
    p.add_argument("--metric", default="recall@20",
                   help="metric of the plots and the summary row, e.g. ndcg@20 (default recall@20)")
    p.set_defaults(func=_cmd_report)


def default_out(first_run_dir) -> Path:
    p = Path(first_run_dir)
    return (p.parent if p.is_file() else p) / "report"


def _cmd_report(args) -> int:
    from .report import format_tables, load_runs, write_report  # matplotlib only when needed

    runs = load_runs(args.run_dirs)
    out = Path(args.out) if args.out else default_out(args.run_dirs[0])
    paths = write_report(runs, out, args.metric)
    print(format_tables(runs, args.metric))
    print(f"\nwrote {paths[0]} and {len(paths) - 1} plot(s) in {out}")
    return 0
