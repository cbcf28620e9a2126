"""What the teacher-update benchmarks read from a finished `ccd` run, and their speed-up table."""
from __future__ import annotations

from pathlib import Path


def block_teacher_config(preset: str, k: int):
    """Block k's stage-3 config of `preset` under the ccd method (schedule applied)."""
    from ccd_dist.pipeline.config import block_schedule, preset_config
    from ccd_dist.pipeline.methods import apply_method

    cfg = preset_config(preset)
    apply_method(cfg, "ccd")
    return block_schedule(cfg, k).teacher


def student_side(run: Path, k: int) -> dict:
    """Block k's stability / plasticity proxies and updated student, as the run saved them."""
    from ccd_dist.models import Recommender

    su = Path(run) / f"block_{k}" / "student_update"
    return {n: Recommender.load(su / f"{n}.pt") for n in ("stability", "plasticity", "student")
            if (su / f"{n}.pt").exists()}


def previous_lists(run: Path, k: int):
    """E_{k-1}'s lists (the negative exclusions of block k)."""
    from ccd_dist.ccd.ensemble import TeacherLists

    return TeacherLists.load(Path(run) / f"block_{k - 1}" / "ensemble" / "lists.npz")


def row_scores(rows: list, split: str) -> tuple[float, float, float]:
    """(r[k][k], RA_k, H of the two) on Recall@20 of one evaluated row r[k][0..k].

    H equals the stream's H-mean at k = 1 only (LA_k averages r[i][i] over i = 1..k).
    """
    from ccd_dist.eval.results import harmonic_mean

    r = [row[split]["recall@20"] for row in rows]
    learned, retained = r[-1], sum(r) / len(r)
    return learned, retained, harmonic_mean(learned, retained)


def speedup_table(what: str, seconds: dict) -> list[str]:
    """Markdown rows: one per entry of `seconds`, with its speed-up over the first."""
    names = list(seconds)
    rows = [f"| {what} | s | speed-up |", "|---|---|---|"]
    rows += [f"| {n} | {seconds[n]:.1f} | {seconds[names[0]] / seconds[n]:.2f}x |" for n in names]
    return rows


def add_run_arguments(ap, preset: str, members: str = "member") -> None:
    """store, run, block, the member(s), --preset, --no-write: what every run-based benchmark takes."""
    ap.add_argument("store")
    ap.add_argument("run", type=Path)
    ap.add_argument("block", type=int)
    ap.add_argument(members, nargs="+" if members == "members" else None)
    ap.add_argument("--preset", default=preset)
    ap.add_argument("--no-write", action="store_true")
