"""`ccd-dist train`: train one model on one block of a store."""
from __future__ import annotations

import json
from pathlib import Path

from ..config import TrainJobConfig, apply_overrides, load_yaml
from ..errors import InputError


def register(sub) -> None:
    p = sub.add_parser("train", help="train one model on one block and write model.pt + metrics.json")
    p.add_argument("--data", required=True, help="store directory (see `ccd-dist data`)")
    p.add_argument("--model", choices=["bpr", "lightgcn", "vae"], help="model kind (config key model.kind)")
    p.add_argument("--block", type=int, default=0, help="block index to train on (default 0)")
    p.add_argument("--config", help="YAML file with config keys")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.lr=1e-3 (repeatable)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--force", action="store_true", help="replace an existing output directory")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from ..data import load_stream
    from .static import run_train_job

    cfg = TrainJobConfig()
    if args.config:
        load_yaml(cfg, args.config)
    if args.model:
        cfg.model.kind = args.model
    apply_overrides(cfg, args.overrides)
    if cfg.model.kind not in ("bpr", "lightgcn", "vae"):
        raise InputError(f"model.kind must be bpr, lightgcn or vae, got {cfg.model.kind!r}", path="--set")
    out = Path(args.out)
    if out.exists() and not args.force:
        raise InputError("output directory exists (use --force to replace it)", path=out)
    stream = load_stream(args.data)
    if not 0 <= args.block < len(stream.blocks):
        raise InputError(f"--block {args.block} out of range; the store has blocks 0..{len(stream.blocks) - 1}",
                         path=args.data)

    def log(record):
        extra = ""
        for split, key in (("valid", "valid"), ("test (monitor)", "monitor")):
            if record.get(key):
                extra += f" {split} recall@20={record[key]['recall@20']:.4f} ndcg@20={record[key]['ndcg@20']:.4f}"
        losses = " ".join(f"{k}={v:.4f}" for k, v in record.items() if k.endswith("_loss"))
        print(f"epoch {record['epoch']}: {losses} ({record['train_seconds']:.1f}s){extra}", flush=True)

    metrics = run_train_job(stream, args.block, cfg, out, force=args.force, log=log)
    summary = {k: metrics[k] for k in ("epochs", "best_epoch", "seconds", "peak_rss_mb")}
    summary["test"] = {k: round(v, 4) for k, v in metrics["test"].items() if "@" in k}
    print(json.dumps(summary, indent=2))
    return 0
