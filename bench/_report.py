"""Write one benchmark's results into its own section of docs/benchmarks.md.

Each benchmark owns the text between `<!-- bench:NAME -->` and
`<!-- /bench:NAME -->`; rerunning it replaces only that section.
"""
from __future__ import annotations

import platform
import re
import sys
from datetime import datetime, timezone
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
HEADER = "# Benchmarks\n\nEvery section is written by the script named in it; rerun that command to refresh it.\n"


def machine() -> str:
    import os

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def write_section(name: str, title: str, command: str, body: str) -> None:
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    section = (
        f"<!-- bench:{name} -->\n## {title}\n\n"
        f"Command: `{command}`  \nRun: {stamp} on {machine()}\n\n{body.strip()}\n<!-- /bench:{name} -->\n"
    )
    text = DOC.read_text(encoding="utf-8") if DOC.exists() else HEADER
    pattern = re.compile(rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->\n", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _m: section, text)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    sys.path.insert(0, str(DOC.parents[1]))
    from ccd_dist.io import atomic_write_text

    atomic_write_text(DOC, text)


def table(rows: list[dict]) -> str:
    """A Markdown table from a list of dicts with the same keys."""
    if not rows:
        return ""
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        lines.append("| " + " | ".join(str(row[k]) for k in keys) + " |")
    return "\n".join(lines)
