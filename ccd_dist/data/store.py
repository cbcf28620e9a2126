"""The on-disk store: one Parquet interaction table plus `meta.json`.

Layout of a store directory:

- `interactions.parquet`: `user:int32, item:int32, block:int16,
  split:dictionary<int8, string>` (train / valid / test), one row per distinct
  (user, item) pair of a block's split, sorted by block, split, user, item.
- `meta.json`: format name and version, per-block totals (`n_users`,
  `n_items`) and row counts, provenance (importer, sources, options) and the
  importer's report (duplicates dropped, split overlaps, ...).
- optional `user_ids.parquet` / `item_ids.parquet`: `id:int32, raw` mapping the
  integer ids back to the raw ids of an imported log.

A store is written into a temporary sibling directory and renamed into place
only when complete (`ccd_dist.io.atomic_directory`), so a failed import never
leaves a partial store. Reading needs pyarrow and numpy only.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .. import __version__ as _version
from ..errors import InputError
from ..io import atomic_directory
from .stream import SPLITS, Block, Stream, interactions_to_csr

FORMAT = "ccd-dist-store"
FORMAT_VERSION = 1
INTERACTIONS = "interactions.parquet"
META = "meta.json"
ID_MAP_FILES = {"user": "user_ids.parquet", "item": "item_ids.parquet"}
COLUMNS = ("user", "item", "block", "split")


def is_store(path) -> bool:
    """True when `path` is a directory holding a ccd-dist store's meta.json."""
    meta = Path(path) / META
    if not meta.is_file():
        return False
    try:
        return json.loads(meta.read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def check_output(path, overwrite: bool) -> Path:
    """Fail early, before any work, when `path` cannot receive a new store."""
    path = Path(path)
    if path.exists():
        if not overwrite:
            raise FileExistsError(f"{path}: already exists (pass overwrite=True / --force to replace it)")
        if not is_store(path):
            raise InputError(
                "refusing to replace it: it is not a ccd-dist store (no meta.json with "
                f'"format": "{FORMAT}"); remove it yourself or choose another output',
                path,
            )
    return path


def _interaction_table(stream: Stream) -> pa.Table:
    users, items, blocks, splits = [], [], [], []
    for block in stream.blocks:
        for s, name in enumerate(SPLITS):
            mat = block.split(name).tocsr()
            mat.sum_duplicates()
            mat.sort_indices()
            counts = np.diff(mat.indptr)
            users.append(np.repeat(np.arange(mat.shape[0], dtype=np.int32), counts))
            items.append(mat.indices.astype(np.int32, copy=False))
            blocks.append(np.full(mat.nnz, block.index, dtype=np.int16))
            splits.append(np.full(mat.nnz, s, dtype=np.int8))
    split_col = pa.DictionaryArray.from_arrays(
        pa.array(np.concatenate(splits), type=pa.int8()), pa.array(list(SPLITS), type=pa.string())
    )
    return pa.table(
        {
            "user": pa.array(np.concatenate(users), type=pa.int32()),
            "item": pa.array(np.concatenate(items), type=pa.int32()),
            "block": pa.array(np.concatenate(blocks), type=pa.int16()),
            "split": split_col,
        }
    )


def _store_meta(stream: Stream, id_maps) -> dict:
    meta = {k: v for k, v in stream.meta.items() if k not in ("store_path",)}
    meta["format"] = FORMAT
    meta["format_version"] = FORMAT_VERSION
    meta.setdefault("provenance", {})
    meta["provenance"].setdefault("ccd_dist_version", _version)
    meta["n_blocks"] = len(stream)
    meta["blocks"] = [
        {
            "index": b.index,
            "n_users": int(b.n_users),
            "n_items": int(b.n_items),
            "counts": {name: int(b.split(name).nnz) for name in SPLITS},
        }
        for b in stream.blocks
    ]
    meta["id_maps"] = {kind: ID_MAP_FILES[kind] for kind in sorted(id_maps)} if id_maps else None
    return meta


def _id_map_table(raw, n_ids: int, kind: str) -> pa.Table:
    raw = pa.array(raw) if not isinstance(raw, (pa.Array, pa.ChunkedArray)) else raw
    if len(raw) != n_ids:
        raise ValueError(f"{kind} id map has {len(raw)} entries, expected {n_ids}")
    return pa.table({"id": pa.array(np.arange(n_ids, dtype=np.int32)), "raw": raw})


def save_stream(stream: Stream, path, overwrite: bool = False, id_maps=None) -> Path:
    """Write `stream` as a store directory at `path`, atomically.

    `id_maps` optionally maps "user" / "item" to the raw ids in integer-id
    order (a list or pyarrow array of length n_users / n_items of the last block).
    With `overwrite`, an existing store (and only a store) is replaced.
    """
    path = check_output(path, overwrite)
    stream.validate()
    id_maps = dict(id_maps or {})
    unknown = set(id_maps) - set(ID_MAP_FILES)
    if unknown:
        raise ValueError(f"unknown id map kinds {sorted(unknown)}; expected 'user' and/or 'item'")
    last = stream.blocks[-1]
    map_tables = {
        kind: _id_map_table(raw, last.n_users if kind == "user" else last.n_items, kind)
        for kind, raw in id_maps.items()
    }
    table = _interaction_table(stream)
    meta = _store_meta(stream, id_maps)
    with atomic_directory(path, overwrite=overwrite) as tmp:
        pq.write_table(table, tmp / INTERACTIONS, compression="zstd")
        for kind, tab in map_tables.items():
            pq.write_table(tab, tmp / ID_MAP_FILES[kind], compression="zstd")
        (tmp / META).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def read_meta(path) -> dict:
    """Read and check a store's meta.json."""
    path = Path(path)
    meta_path = path / META
    if not path.exists():
        raise InputError("store not found (expected a directory written by `ccd-dist data import-*`)", path)
    if not path.is_dir():
        raise InputError("is not a directory (expected a ccd-dist store directory)", path)
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError("missing meta.json (expected a ccd-dist store directory)", path) from None
    except ValueError as exc:
        raise InputError(f"not valid JSON: {exc}", meta_path) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise InputError(f'expected "format": "{FORMAT}"', meta_path, "key 'format'")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise InputError(
            f"unsupported format_version {version!r}; this ccd-dist reads version {FORMAT_VERSION}",
            meta_path,
            "key 'format_version'",
        )
    blocks = meta.get("blocks")
    if not isinstance(blocks, list) or not blocks:
        raise InputError("expected a non-empty list of blocks", meta_path, "key 'blocks'")
    for k, b in enumerate(blocks):
        ok = isinstance(b, dict) and b.get("index") == k
        ok = ok and all(isinstance(b.get(f), int) and b[f] >= 0 for f in ("n_users", "n_items"))
        if not ok:
            raise InputError(
                "expected {index: k, n_users: int >= 0, n_items: int >= 0, counts: {...}}",
                meta_path,
                f"key 'blocks[{k}]'",
            )
    return meta


def _split_codes(column: pa.ChunkedArray, path: Path) -> np.ndarray:
    """Split column -> codes in SPLITS order, whatever the stored dictionary order."""
    arr = column.combine_chunks()
    if not pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_encode()
    names = arr.dictionary.to_pylist()
    unknown = [n for n in names if n not in SPLITS]
    if unknown:
        raise InputError(f"unknown split names {unknown}; expected {list(SPLITS)}", path, "column 'split'")
    if arr.null_count:
        raise InputError("null split values; expected train/valid/test", path, "column 'split'")
    lookup = np.array([SPLITS.index(n) for n in names], dtype=np.int8)
    return lookup[arr.indices.to_numpy(zero_copy_only=False)]


def _int_column(table: pa.Table, name: str, path: Path) -> np.ndarray:
    col = table.column(name)
    if not pa.types.is_integer(col.type):
        raise InputError(f"expected an integer column, found {col.type}", path, f"column {name!r}")
    if col.null_count:
        raise InputError("null values; expected integers", path, f"column {name!r}")
    return col.to_numpy()


def load_stream(path) -> Stream:
    """Read a store directory back into a validated Stream (pyarrow only, no pandas)."""
    path = Path(path)
    meta = read_meta(path)
    table_path = path / INTERACTIONS
    if not table_path.is_file():
        raise InputError(f"missing {INTERACTIONS} (expected a ccd-dist store directory)", path)
    try:
        table = pq.read_table(table_path)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"cannot read Parquet: {exc}", table_path) from None
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        raise InputError(
            f"missing columns {missing}; found {table.column_names}, expected {list(COLUMNS)}", table_path
        )
    users = _int_column(table, "user", table_path)
    items = _int_column(table, "item", table_path)
    block_ids = _int_column(table, "block", table_path)
    splits = _split_codes(table.column("split"), table_path)

    n_blocks = len(meta["blocks"])
    if len(block_ids) and (block_ids.min() < 0 or block_ids.max() >= n_blocks):
        raise InputError(
            f"block values outside [0, {n_blocks}) (meta.json lists {n_blocks} blocks)", table_path, "column 'block'"
        )
    key = block_ids.astype(np.int64) * len(SPLITS) + splits
    if len(key) > 1 and np.any(key[1:] < key[:-1]):
        order = np.argsort(key, kind="stable")
        key, users, items = key[order], users[order], items[order]
    bounds = np.searchsorted(key, np.arange(n_blocks * len(SPLITS) + 1))

    blocks = []
    for k, info in enumerate(meta["blocks"]):
        n_users, n_items = info["n_users"], info["n_items"]
        mats = {}
        for s, name in enumerate(SPLITS):
            lo, hi = bounds[k * len(SPLITS) + s], bounds[k * len(SPLITS) + s + 1]
            u, i = users[lo:hi], items[lo:hi]
            where = f"block {k} {name}"
            if hi > lo and (u.min() < 0 or i.min() < 0):
                raise InputError("negative ids; expected ids >= 0", table_path, where)
            if hi > lo and (u.max() >= n_users or i.max() >= n_items):
                raise InputError(
                    f"ids beyond the block's totals ({n_users} users, {n_items} items in meta.json)",
                    table_path,
                    where,
                )
            mats[name] = interactions_to_csr(u, i, n_users, n_items)
            expected = info.get("counts", {}).get(name)
            if expected is not None and expected != hi - lo:
                raise InputError(f"{hi - lo} rows, but meta.json records {expected}", table_path, where)
            if mats[name].nnz != hi - lo:
                raise InputError("repeated (user, item) rows; expected each pair once", table_path, where)
        blocks.append(Block(index=k, **mats))
    stream_meta = dict(meta)
    stream_meta["store_path"] = str(path)
    stream = Stream(blocks=blocks, meta=stream_meta)
    try:
        stream.validate()
    except ValueError as exc:
        raise InputError(str(exc), path / META) from None
    return stream


def load_id_map(path, kind: str) -> pa.Array:
    """Raw ids in integer-id order ("user" or "item") of a store imported from a log."""
    if kind not in ID_MAP_FILES:
        raise ValueError(f"kind must be 'user' or 'item', got {kind!r}")
    path = Path(path)
    meta = read_meta(path)
    if not meta.get("id_maps") or kind not in meta["id_maps"]:
        raise InputError(f"this store has no {kind} id map (only `import-log` stores have one)", path)
    table = pq.read_table(path / meta["id_maps"][kind])
    ids = table.column("id").to_numpy()
    if not np.array_equal(ids, np.arange(len(ids))):
        raise InputError("ids are not 0..n-1 in order", path / meta["id_maps"][kind], "column 'id'")
    return table.column("raw").combine_chunks()
