"""`ccd-dist data ...`: import, generate and inspect interaction stores."""
from __future__ import annotations

import json

from ..errors import InputError
from .import_ccd import import_ccd
from .import_lightgcn import import_lightgcn
from .import_log import import_log
from .stats import block_stats, format_report
from .store import check_output, load_stream, save_stream
from .synthetic import make_synthetic_stream


def _write(stream, out, force, id_maps=None) -> int:
    save_stream(stream, out, overwrite=force, id_maps=id_maps)
    n = sum(b.train.nnz + b.valid.nnz + b.test.nnz for b in stream.blocks)
    print(
        f"wrote {out}: {len(stream)} block(s), {stream[-1].n_users:,} users, "
        f"{stream[-1].n_items:,} items, {n:,} interactions"
    )
    print(format_report(stream))
    return 0


def _cmd_import_ccd(args) -> int:
    check_output(args.out, args.force)
    return _write(import_ccd(args.src_dir), args.out, args.force)


def _cmd_import_lightgcn(args) -> int:
    check_output(args.out, args.force)
    stream = import_lightgcn(args.train, args.test, valid_fraction=args.valid_fraction, seed=args.seed)
    return _write(stream, args.out, args.force)


def _cmd_import_log(args) -> int:
    check_output(args.out, args.force)
    stream, id_maps = import_log(
        args.file,
        k_core_min=args.k_core,
        base_fraction=args.base_fraction,
        n_incremental=args.blocks,
        seed=args.seed,
        user_col=args.user_col,
        item_col=args.item_col,
        time_col=args.time_col,
    )
    return _write(stream, args.out, args.force, id_maps=id_maps)


def _cmd_synth(args) -> int:
    check_output(args.out, args.force)
    if args.blocks < 0 or args.interactions_per_user <= 0:
        raise InputError("expected --blocks >= 0 and --interactions-per-user > 0", where="synth options")
    try:
        stream = make_synthetic_stream(
            n_users=args.users,
            n_items=args.items,
            n_blocks=args.blocks + 1,
            interactions_per_user=args.interactions_per_user,
            seed=args.seed,
        )
    except ValueError as exc:
        raise InputError(str(exc), where="synth options") from None
    return _write(stream, args.out, args.force)


def _cmd_stats(args) -> int:
    stream = load_stream(args.store)
    if args.json:
        payload = {
            "store": str(args.store),
            "blocks": block_stats(stream),
            "import_report": stream.meta.get("import_report", {}),
            "provenance": stream.meta.get("provenance", {}),
        }
        print(json.dumps(payload, indent=2, sort_keys=True))
    else:
        print(format_report(stream))
    return 0


def _force(p):
    p.add_argument("--force", action="store_true", help="replace OUT if it is an existing store")


def register(subparsers) -> None:
    """Add `data` and its sub-commands to the top-level `ccd-dist` parser."""
    data = subparsers.add_parser("data", help="import, generate and inspect interaction stores")
    sub = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    sub.required = True

    p = sub.add_parser("import-ccd", help="import the CCD paper's TASK_k.pickle blocks (Gowalla, Yelp)")
    p.add_argument("src_dir", metavar="SRC_DIR", help="folder with TASK_0.pickle ... TASK_5.pickle")
    p.add_argument("out", metavar="OUT", help="store directory to create")
    _force(p)
    p.set_defaults(func=_cmd_import_ccd)

    p = sub.add_parser("import-lightgcn", help="import LightGCN-style train.txt/test.txt as one block")
    p.add_argument("train", metavar="TRAIN")
    p.add_argument("test", metavar="TEST")
    p.add_argument("out", metavar="OUT")
    p.add_argument("--valid-fraction", type=float, default=0.0,
                   help="per-user share of train moved to valid, seeded (default 0: no valid split)")
    p.add_argument("--seed", type=int, default=0)
    _force(p)
    p.set_defaults(func=_cmd_import_lightgcn)

    p = sub.add_parser("import-log", help="import a CSV/Parquet log: k-core, chronological blocks, per-user split")
    p.add_argument("file", metavar="FILE", help="CSV (.csv, .tsv) or Parquet (.parquet, .pq)")
    p.add_argument("out", metavar="OUT")
    p.add_argument("--k-core", type=int, default=10, help="minimum interactions per user and item (default 10)")
    p.add_argument("--base-fraction", type=float, default=0.5, help="share of interactions in D0 (default 0.5)")
    p.add_argument("--blocks", type=int, default=5, help="number of incremental blocks after D0 (default 5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the per-user splits")
    p.add_argument("--user-col", default="user")
    p.add_argument("--item-col", default="item")
    p.add_argument("--time-col", default="timestamp")
    _force(p)
    p.set_defaults(func=_cmd_import_log)

    p = sub.add_parser("synth", help="generate a synthetic stream (the embedded default dataset)")
    p.add_argument("out", metavar="OUT")
    p.add_argument("--users", type=int, default=2000)
    p.add_argument("--items", type=int, default=1000)
    p.add_argument("--blocks", type=int, default=5, help="number of incremental blocks after D0 (default 5)")
    p.add_argument("--interactions-per-user", type=float, default=30.0,
                   help="average interactions per user over the whole stream (default 30)")
    p.add_argument("--seed", type=int, default=0)
    _force(p)
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser("stats", help="per-block table of a store")
    p.add_argument("store", metavar="STORE")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_cmd_stats)

