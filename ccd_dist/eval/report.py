"""Compare finished (or partial) runs: summary tables, report.md and PNG plots.

Everything is read from each run's results.json (`RunResults`); nothing is
re-evaluated. Plots use matplotlib's Agg canvas directly (no pyplot, no global
backend switch) and every file is written atomically.
"""
from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass
from pathlib import Path

from ccd_dist.errors import InputError
from ccd_dist.io import atomic_write_bytes, atomic_write_text

from .run_results import SUMMARY_MODELS, RunResults

TABLE_METRICS = ("recall@20", "ndcg@20")
SPLIT = "test"


@dataclass
class Run:
    path: Path  # the results.json
    label: str  # unique name in tables and legends (the method, plus the folder if needed)
    results: RunResults

    @property
    def last_block(self):
        return self.results.blocks[-1] if self.results.blocks else None


def results_path(run_dir) -> Path:
    """RUN_DIR/results.json, or RUN_DIR itself when it is a file."""
    p = Path(run_dir)
    return p if p.is_file() else p / "results.json"


def load_runs(run_dirs) -> list:
    """Load every run; labels are the methods, disambiguated by folder name when repeated."""
    paths = [results_path(d) for d in run_dirs]
    loaded = [RunResults.load(p) for p in paths]
    methods = [r.method for r in loaded]
    labels = []
    for i, (p, r) in enumerate(zip(paths, loaded)):
        label = r.method if methods.count(r.method) == 1 else f"{r.method} ({p.parent.name})"
        labels.append(label)
    labels = [lab if labels.count(lab) == 1 else f"{lab} #{i + 1}" for i, lab in enumerate(labels)]
    return [Run(p, lab, r) for p, lab, r in zip(paths, labels, loaded)]


def check_metric(runs, metric: str) -> None:
    """Every run that has results must hold `metric`; otherwise name the file and the choices."""
    for run in runs:
        for rm in run.results.models.values():
            if metric not in rm.metrics:
                raise InputError(
                    f"--metric {metric!r} is not recorded; expected one of {rm.metrics}", path=run.path
                )


# -- numbers ---------------------------------------------------------------------
def _fmt(x, digits=4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.{digits}f}"


def _short(metric: str) -> str:
    name, _, k = metric.partition("@")
    return f"{name[0].upper()}@{k}"


def _table_metrics(run: Run, metric: str) -> list:
    present = set()
    for rm in run.results.models.values():
        present.update(rm.metrics)
    wanted = list(TABLE_METRICS) + ([metric] if metric not in TABLE_METRICS else [])
    return [m for m in wanted if m in present]


def md_table(headers, rows) -> str:
    """A Markdown table padded to align in a terminal too."""
    cells = [list(map(str, headers))] + [list(map(str, r)) for r in rows]
    widths = [max(len(row[c]) for row in cells) for c in range(len(headers))]
    line = lambda row: "| " + " | ".join(v.ljust(w) for v, w in zip(row, widths)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), sep] + [line(r) for r in cells[1:]])


def _stage_totals(run: Run) -> tuple:
    secs = [s["seconds"] for s in run.results.stages if not math.isnan(s["seconds"])]
    rss = [s["peak_rss_mb"] for s in run.results.stages if s["peak_rss_mb"] is not None]
    return (sum(secs) if secs else None), (max(rss) if rss else None)


def comparison_table(runs, metric: str) -> str:
    """One row per run: student and teacher LA / RA / H after its last finished block."""
    headers = ["run", "preset", "blocks done"]
    for model in SUMMARY_MODELS:
        headers += [f"{model} {key}" for key in ("LA", "RA", "H")]
    headers += ["total stage s", "max peak RSS MB"]
    rows = []
    for run in runs:
        res = run.results
        summ = res.summary()
        done = f"{len(res.blocks)}/{res.n_blocks}"
        row = [run.label, res.preset or "-", done]
        for model in SUMMARY_MODELS:
            vals = summ.get(model, {}).get(SPLIT)
            row += [_fmt(vals[key][metric]) if vals else "-" for key in ("la", "ra", "hmean")]
        secs, rss = _stage_totals(run)
        row += [_fmt(secs, 0), _fmt(rss, 0)]
        rows.append(row)
    return md_table(headers, rows)


def run_table(run: Run, metric: str) -> str:
    """After each finished block: student and teacher LA / RA / H for R@20, N@20 (and `metric`)."""
    metrics = _table_metrics(run, metric)
    headers = ["block", "model"] + [f"{_short(m)} {key}" for m in metrics for key in ("LA", "RA", "H")]
    rows = []
    for entry in run.results.summary()["per_block"]:
        for model in SUMMARY_MODELS:
            if model not in entry:
                continue
            vals = entry[model][SPLIT]
            rows.append([entry["block"], model] + [_fmt(vals[key][m]) for m in metrics
                                                   for key in ("la", "ra", "hmean")])
    if not rows:
        return "(no finished block with student or teacher results)"
    return md_table(headers, rows)


def models_table(run: Run, metric: str) -> str:
    """Every recorded model after the last finished block: LA / RA / H and new users, for `metric`."""
    k = run.last_block
    if k is None or not run.results.models:
        return "(no finished block)"
    rows = []
    for name, rm in sorted(run.results.models.items()):
        s = rm.summary(SPLIT)[metric]
        new = rm.new_users[SPLIT][k] if SPLIT in rm.new_users else None
        rows.append([name, _fmt(s["la"][k]), _fmt(s["ra"][k]), _fmt(s["hmean"][k]),
                     _fmt(new.get(metric) if new else None)])
    return md_table(["model", "LA", "RA", "H", f"new users (block {k})"], rows)


def format_tables(runs, metric: str) -> str:
    """The text printed by `ccd-dist report`."""
    parts = [f"## Summary after the last finished block ({SPLIT}, {metric})", "",
             comparison_table(runs, metric)]
    for run in runs:
        res = run.results
        parts += ["", f"## {run.label}: {run.path}",
                  f"method {res.method}, preset {res.preset or '-'}, data {res.data or '-'}, "
                  f"blocks done {res.blocks or 'none'} of 0..{res.n_blocks - 1}", "",
                  run_table(run, metric)]
    return "\n".join(parts)


# -- plots -----------------------------------------------------------------------
def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def plot_hmean(runs, metric: str) -> bytes:
    """H-mean after each finished block, one line per run; panels: student, teacher."""
    fig = _figure(11, 4.2)
    axes = fig.subplots(1, len(SUMMARY_MODELS), squeeze=False)[0]
    for ax, model in zip(axes, SUMMARY_MODELS):
        drawn = 0
        for run in runs:
            pts = [(e["block"], e[model][SPLIT]["hmean"][metric])
                   for e in run.results.summary()["per_block"] if model in e]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, marker="o", label=run.label)
                drawn += 1
        ax.set_title(f"{model}: H-mean of {SPLIT} {metric}")
        ax.set_xlabel("after block")
        ax.set_ylabel("H-mean")
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize="small")
            ax.xaxis.get_major_locator().set_params(integer=True)
        else:
            ax.text(0.5, 0.5, f"no {model} results", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    return _png(fig)


def plot_heatmap(run: Run, model: str, metric: str) -> bytes:
    """r[k][j] of `model` over the finished blocks (rows: after block k; columns: block j)."""
    import numpy as np

    n = run.last_block + 1
    r = run.results.models[model].matrix(SPLIT, metric)[:n, :n]
    fig = _figure(max(4.5, 1.5 + 0.9 * n), max(3.5, 1.0 + 0.8 * n))
    ax = fig.subplots()
    im = ax.imshow(np.ma.masked_invalid(r), cmap="viridis", origin="upper")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    for k in range(n):
        for j in range(n):
            if not math.isnan(r[k, j]):
                bright = im.norm(r[k, j]) > 0.6  # dark text on the light end of viridis
                ax.text(j, k, f"{r[k, j]:.3f}", ha="center", va="center", fontsize=8,
                        color="black" if bright else "white")
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xlabel("evaluated on block j")
    ax.set_ylabel("model after block k")
    ax.set_title(f"{run.label} {model}: {SPLIT} {metric}", fontsize=9)
    fig.tight_layout()
    return _png(fig)


def plot_stages(run: Run) -> bytes:
    """Wall time and peak RSS per (block, stage), as horizontal bars in run order."""
    stages = run.results.stages
    labels = [f"{s['block']}: {s['stage']}" for s in stages]
    secs = [s["seconds"] for s in stages]
    rss = [math.nan if s["peak_rss_mb"] is None else s["peak_rss_mb"] for s in stages]
    fig = _figure(11, 1.2 + 0.3 * len(stages))
    ax_t, ax_m = fig.subplots(1, 2, sharey=True)
    ys = range(len(stages))
    ax_t.barh(ys, secs, color="tab:blue")
    ax_m.barh(ys, rss, color="tab:orange")
    ax_t.set_yticks(list(ys), labels, fontsize=8)
    ax_t.invert_yaxis()
    ax_t.set_xlabel("seconds")
    ax_m.set_xlabel("peak RSS (MB)")
    ax_t.set_title(f"{run.label}: time per stage", fontsize=9)
    ax_m.set_title("peak RSS of the process up to the stage", fontsize=9)
    fig.tight_layout()
    return _png(fig)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "run"


def _run_section(run: Run, index: int, metric: str, put) -> list:
    """report.md lines for one run: all models' summary, heat maps, stage costs."""
    stem = f"run{index}_{_slug(run.label)}"
    md = [f"## {run.label}: details", "",
          f"All models after the last finished block ({SPLIT}, {metric}):", "", models_table(run, metric), ""]
    if run.last_block is None:
        return md + ["No finished block yet.", ""] + _stages_section(run, stem, put)
    for model in SUMMARY_MODELS:
        if model in run.results.models:
            name = put(f"{stem}_{model}_r_{_slug(metric)}.png", plot_heatmap(run, model, metric))
            md += [f"r[k][j] of the {model}:", "", f"![{run.label} {model}]({name})", ""]
        else:
            md += [f"No {model} results in this run.", ""]
    return md + _stages_section(run, stem, put)


def _stages_section(run: Run, stem: str, put) -> list:
    if not run.results.stages:
        return ["No stage timings in this run.", ""]
    name = put(f"{stem}_stages.png", plot_stages(run))
    return ["Time and peak RSS per stage:", "", f"![{run.label} stages]({name})", ""]


def write_report(runs, out_dir, metric: str = "recall@20") -> list:
    """Write report.md and the PNGs into out_dir; return the written paths (report.md first)."""
    check_metric(runs, metric)
    out = Path(out_dir)
    written = []

    def put(name: str, data: bytes) -> str:
        atomic_write_bytes(out / name, data)
        written.append(out / name)
        return name

    md = ["# ccd-dist report", "",
          f"Split: {SPLIT}. LA / RA / H-mean as defined in docs/metrics.md §3 "
          "(LA_0 = r[0][0]; a missing entry gives '-').", "", "## Runs", ""]
    for run in runs:
        res = run.results
        md.append(f"- **{run.label}**: `{run.path}` (method {res.method}, preset {res.preset or '-'}, "
                  f"data `{res.data or '-'}`, blocks done {res.blocks or 'none'} of 0..{res.n_blocks - 1})")
    md += ["", format_tables(runs, metric), ""]
    hmean = put(f"hmean_{_slug(metric)}.png", plot_hmean(runs, metric))
    md += [f"## H-mean after each block ({metric})", "", f"![H-mean]({hmean})", ""]
    for i, run in enumerate(runs, start=1):
        md += _run_section(run, i, metric, put)
    atomic_write_text(out / "report.md", "\n".join(md))
    return [out / "report.md"] + written
