"""`ccd-dist run`: the CCD pipeline on a store or on the embedded synthetic stream."""
from __future__ import annotations

from pathlib import Path

from ..errors import InputError


def register(sub) -> None:
    p = sub.add_parser("run", help="run the CCD pipeline (base stage: teacher, ensemble, KD student)")
    p.add_argument("--data", help="store directory; default: the embedded synthetic stream")
    p.add_argument("--preset", choices=["synthetic", "yelp", "gowalla"],
                   help="hyper-parameter preset (default: synthetic without --data)")
    p.add_argument("--method", default="ccd", help="ccd (default), ccd-no-replay, ccd-no-proxies, "
                   "ccd-no-teacher-update, ft, lwckd or retrain")
    p.add_argument("--blocks", help="blocks to run, e.g. 0 or 0-5 (default: all blocks of the stream)")
    p.add_argument("--out", default="runs/ccd", help="run directory (default runs/ccd); rerun to resume")
    p.add_argument("--config", help="YAML file with config keys")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set student.dim=16 (repeatable)")
    p.add_argument("--executor", choices=["auto", "ray", "local"], help="where teacher members train")
    p.add_argument("--base-from", metavar="RUN_DIR",
                   help="reuse the D0 stage of another run (copied; stages whose fingerprint differs rerun)")
    p.set_defaults(func=_run)


def parse_blocks(text: str) -> list[int]:
    try:
        if "-" in text:
            lo, hi = (int(x) for x in text.split("-", 1))
            blocks = list(range(lo, hi + 1))
        else:
            blocks = [int(x) for x in text.split(",")]
    except ValueError:
        raise InputError(f"--blocks expects e.g. 0, 0-5 or 0,1,2; got {text!r}", path="--blocks") from None
    if not blocks or blocks[0] != 0 or blocks != list(range(blocks[0], blocks[-1] + 1)):
        raise InputError(f"--blocks must start at 0 and be contiguous; got {text!r}", path="--blocks")
    return blocks


def _run(args) -> int:
    from ..config import apply_overrides, load_yaml
    from ..data import load_stream, make_synthetic_stream
    from .artifacts import file_fingerprint, fingerprint
    from .base import format_base_table, run_base
    from .config import check_choices, preset_config

    if args.data:
        stream = load_stream(args.data)
        data_fp = file_fingerprint(Path(args.data) / "interactions.parquet")
        preset = args.preset or "synthetic"
    else:
        stream = make_synthetic_stream(seed=0)
        data_fp = fingerprint("synthetic-default", 0)
        preset = args.preset or "synthetic"
    blocks = parse_blocks(args.blocks) if args.blocks else list(range(len(stream)))
    if blocks[-1] >= len(stream):
        raise InputError(f"--blocks {args.blocks}: the stream has blocks 0..{len(stream) - 1}", path="--blocks")
    cfg = preset_config(preset)
    if args.config:
        load_yaml(cfg, args.config)
    if args.executor:
        cfg.executor.kind = args.executor
    from .methods import apply_method

    apply_method(cfg, args.method)
    apply_overrides(cfg, args.overrides)
    check_choices(cfg)
    if args.base_from:
        copy_base(Path(args.base_from), Path(args.out))
    if blocks == [0]:
        results = run_base(stream, cfg, args.out, data_fp, k=0)
        print(format_base_table(results))
        print(f"results: {Path(args.out) / 'base_results.json'}")
        return 0
    from ..eval.report import format_tables, load_runs
    from .runner import run_pipeline

    run_pipeline(stream, cfg, args.out, data_fp, blocks, method=args.method, data=args.data or "synthetic")
    print(format_tables(load_runs([args.out]), "recall@20"))
    print(f"results: {Path(args.out) / 'results.json'}  (ccd-dist report {args.out} for plots)")
    return 0


def copy_base(source: Path, out: Path) -> None:
    """Seed a run with another run's block-0 artifacts (teacher members, ensemble, KD).

    Methods compared on one stream share the same base stage; copying it saves
    retraining the teacher. Fingerprints still decide: a stage whose config
    differs from the source run's is recomputed.
    """
    import shutil

    src = source / "block_0"
    if not src.is_dir():
        raise InputError("no block_0 folder to reuse", path=source)
    if (out / "block_0").exists():
        return
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".block_0.copy"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    tmp.rename(out / "block_0")
