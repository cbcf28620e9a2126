"""Import a raw interaction log (CSV or Parquet: user, item, timestamp) as a block stream.

The rules, in order:

1. Read the three named columns. Ids may be strings or integers (integers
   must be >= 0; floats only when integral); timestamps may be numbers,
   Parquet timestamps/dates or ISO-8601 strings.
2. Sort chronologically; ties keep input order (stable sort).
3. Keep the first occurrence of each repeated (user, item) pair.
4. Iterative k-core: drop users and items with fewer than k interactions
   until every remaining one has at least k.
5. Chronological blocks: the first `base_fraction` of the interactions form the
   base block D0, the rest is cut into `n_incremental` blocks of equal size
   (sizes differ by at most one).
6. Integer ids in order of first appearance, so every id that is new in block k
   is larger than all ids of earlier blocks; the raw -> int maps are kept.
7. Inside each block, the per-user train / valid / test split of §1.2
   (`splitting.split_block`, seeded per block with (seed, k)).

The id-space total of block k is the number of ids that appeared in blocks
0..k before the split (§1.3), so an entity whose only interactions the split
dropped still owns its id.
"""
from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from ..errors import InputError
from .assemble import assemble_stream
from .splitting import split_block

PARQUET_SUFFIXES = (".parquet", ".pq")


class _Rows:
    """Names a row the way the user sees it: a CSV line or a Parquet row."""

    def __init__(self, path: Path, is_csv: bool):
        self.path, self.is_csv = path, is_csv

    def where(self, row: int, column: str) -> str:
        pos = f"line {row + 2}" if self.is_csv else f"row {row + 1}"
        return f"{pos}, column {column!r}"

    def error(self, message: str, row: int, column: str) -> InputError:
        return InputError(message, self.path, self.where(row, column))


def read_table(path, columns) -> tuple:
    """The log as a pyarrow Table with `columns`, plus a row namer for errors."""
    path = Path(path)
    expect = f"a CSV or Parquet file with columns {list(columns)}"
    if not path.exists():
        raise InputError(f"file not found (expected {expect})", path)
    if path.is_dir():
        raise InputError(f"is a directory (expected {expect})", path)
    is_csv = path.suffix.lower() not in PARQUET_SUFFIXES
    try:
        if is_csv:
            delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
            table = pcsv.read_csv(path, parse_options=pcsv.ParseOptions(delimiter=delimiter))
        else:
            table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        kind = "CSV" if is_csv else "Parquet"
        raise InputError(f"cannot read as {kind}: {exc}", path) from None
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise InputError(
            f"missing columns {missing}; found {table.column_names}. "
            "Name the columns with --user-col / --item-col / --time-col",
            path,
        )
    if table.num_rows == 0:
        raise InputError(f"no rows; expected {expect} and at least one row", path)
    return table.select(list(columns)), _Rows(path, is_csv)


def _first_null(arr) -> int:
    return int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])


def encode_ids(column, name: str, rows: _Rows):
    """Raw id column -> (codes, labels): labels[codes] are the raw ids."""
    arr = column.combine_chunks()
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if arr.null_count:
        raise rows.error("empty value; expected an id", _first_null(arr), name)
    if pa.types.is_floating(arr.type):
        values = arr.to_numpy()
        bad = np.flatnonzero(~np.isfinite(values) | (values != np.round(values)))
        if len(bad):
            raise rows.error(
                f"non-integer id {values[bad[0]].item()!r}; expected integer or string ids", int(bad[0]), name
            )
        arr = pa.array(values.astype(np.int64))
    if pa.types.is_integer(arr.type):
        values = arr.to_numpy()
        bad = np.flatnonzero(values < 0)
        if len(bad):
            raise rows.error(f"negative id {int(values[bad[0]])}; expected ids >= 0", int(bad[0]), name)
        arr = arr.cast(pa.int64())
    elif not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        raise InputError(
            f"column {name!r} has type {arr.type}; expected integer or string ids", rows.path
        )
    encoded = arr.dictionary_encode()
    return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64), encoded.dictionary


def _parse_iso_strings(arr, name: str, rows: _Rows) -> np.ndarray:
    """Slow path for strings pyarrow cannot cast in one go (mixed zones or bad values)."""
    out = np.empty(len(arr), dtype=np.float64)
    for row, text in enumerate(arr.to_pylist()):
        try:
            dt = datetime.fromisoformat(text.strip())
        except ValueError:
            raise rows.error(
                f"unparsable timestamp {text!r}; expected a number or an ISO-8601 date/time", row, name
            ) from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        out[row] = dt.timestamp()
    return out


def parse_times(column, name: str, rows: _Rows) -> np.ndarray:
    """Timestamp column -> an orderable numpy array (numbers kept, dates as ns)."""
    arr = column.combine_chunks()
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if arr.null_count:
        raise rows.error("empty value; expected a timestamp", _first_null(arr), name)
    if pa.types.is_integer(arr.type):
        return arr.to_numpy().astype(np.int64)
    if pa.types.is_floating(arr.type):
        values = arr.to_numpy()
        bad = np.flatnonzero(~np.isfinite(values))
        if len(bad):
            raise rows.error(f"unparsable timestamp {values[bad[0]].item()!r}; expected a finite number", int(bad[0]), name)
        return values.astype(np.float64)
    if pa.types.is_timestamp(arr.type):
        return arr.cast(pa.int64()).to_numpy()
    if pa.types.is_date(arr.type):
        return arr.cast(pa.timestamp("s")).cast(pa.int64()).to_numpy()
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        for target in (pa.timestamp("ns"), pa.timestamp("ns", tz="UTC")):
            try:
                return pc.cast(arr, target).cast(pa.int64()).to_numpy()
            except pa.ArrowInvalid:
                pass
        return _parse_iso_strings(arr, name, rows)
    raise InputError(f"column {name!r} has type {arr.type}; expected numbers, dates or ISO-8601 strings", rows.path)


def first_occurrence_mask(keys: np.ndarray) -> np.ndarray:
    """True at the first position of each distinct key."""
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    first = order[np.r_[True, sorted_keys[1:] != sorted_keys[:-1]]] if len(keys) else order
    mask = np.zeros(len(keys), dtype=bool)
    mask[first] = True
    return mask


def k_core(users: np.ndarray, items: np.ndarray, k: int):
    """Mask of interactions kept by the iterative k-core filter, and the number of rounds."""
    keep = np.ones(len(users), dtype=bool)
    if k <= 1:
        return keep, 0
    rounds = 0
    while True:
        rounds += 1
        u_count = np.bincount(users[keep], minlength=int(users.max()) + 1)
        i_count = np.bincount(items[keep], minlength=int(items.max()) + 1)
        ok = keep & (u_count[users] >= k) & (i_count[items] >= k)
        if np.array_equal(ok, keep):
            return keep, rounds
        keep = ok


def first_appearance_ids(codes: np.ndarray):
    """Renumber codes by order of first appearance: (new ids, code of each new id)."""
    first = np.flatnonzero(first_occurrence_mask(codes))  # positions, already in time order
    code_of_id = codes[first]
    lookup = np.empty(int(codes.max()) + 1, dtype=np.int64)
    lookup[code_of_id] = np.arange(len(code_of_id))
    return lookup[codes], code_of_id


def block_bounds(n: int, base_fraction: float, n_incremental: int) -> np.ndarray:
    """Start offsets of the blocks, plus n at the end."""
    if n_incremental == 0:
        return np.array([0, n])
    n_base = int(base_fraction * n)
    rest = [len(part) for part in np.array_split(np.arange(n - n_base), n_incremental)]
    return np.cumsum([0, n_base, *rest])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def import_log(
    path,
    k_core_min: int = 10,
    base_fraction: float = 0.5,
    n_incremental: int = 5,
    seed: int = 0,
    user_col: str = "user",
    item_col: str = "item",
    time_col: str = "timestamp",
):
    """Read, filter and split a log; returns (Stream, id_maps) without writing files."""
    if k_core_min < 0:
        raise InputError(f"k-core {k_core_min} is negative; expected k >= 0", where="--k-core")
    if n_incremental < 0:
        raise InputError(f"{n_incremental} incremental blocks; expected >= 0", where="--blocks")
    if n_incremental > 0 and not 0.0 < base_fraction < 1.0:
        raise InputError(f"base fraction {base_fraction}; expected 0 < F < 1", where="--base-fraction")
    path = Path(path)
    table, rows = read_table(path, (user_col, item_col, time_col))
    u_codes, u_labels = encode_ids(table.column(user_col), user_col, rows)
    i_codes, i_labels = encode_ids(table.column(item_col), item_col, rows)
    times = parse_times(table.column(time_col), time_col, rows)
    n_read = len(times)

    order = np.argsort(times, kind="stable")
    u_codes, i_codes, times = u_codes[order], i_codes[order], times[order]
    first = first_occurrence_mask(u_codes * len(i_labels) + i_codes)
    n_dups = int(n_read - first.sum())
    u_codes, i_codes, times = u_codes[first], i_codes[first], times[first]

    keep, rounds = k_core(u_codes, i_codes, k_core_min)
    u_codes, i_codes, times = u_codes[keep], i_codes[keep], times[keep]
    if len(u_codes) == 0:
        raise InputError(
            f"no interactions left after the {k_core_min}-core filter ({n_read} rows read, "
            f"{n_dups} repeated pairs); expected users and items with >= {k_core_min} interactions. "
            "Lower --k-core",
            path,
        )
    users, user_code_of_id = first_appearance_ids(u_codes)
    items, item_code_of_id = first_appearance_ids(i_codes)

    bounds = block_bounds(len(users), base_fraction, n_incremental)
    parts, totals, split_reports, time_ranges = [], [], [], []
    for k in range(len(bounds) - 1):
        lo, hi = int(bounds[k]), int(bounds[k + 1])
        if hi <= lo:
            raise InputError(
                f"block {k} is empty: {len(users)} interactions remain after filtering, too few for "
                f"{n_incremental} incremental blocks with base fraction {base_fraction}; expected at least "
                "one interaction per block. Use fewer --blocks or a lower --k-core",
                path,
            )
        split, report = split_block(users[lo:hi], items[lo:hi], np.random.default_rng([seed, k]))
        parts.append(split)
        split_reports.append(report)
        totals.append((int(users[:hi].max()) + 1, int(items[:hi].max()) + 1))
        time_ranges.append([times[lo].item(), times[hi - 1].item()])

    id_maps = {"user": u_labels.take(pa.array(user_code_of_id)), "item": i_labels.take(pa.array(item_code_of_id))}
    meta = {
        "provenance": {
            "importer": "import-log",
            "sources": [{"path": str(path.resolve()), "sha256": _sha256(path)}],
            "options": {
                "k_core": k_core_min,
                "base_fraction": base_fraction,
                "blocks": n_incremental,
                "seed": seed,
                "user_col": user_col,
                "item_col": item_col,
                "time_col": time_col,
            },
        },
        "import_report": {
            "rows_read": n_read,
            "log_repeated_pairs_dropped": n_dups,
            "k_core_rounds": rounds,
            "k_core_pairs_dropped": int(len(keep) - keep.sum()),
            "interactions_after_filter": int(len(users)),
            "block_interactions": [int(bounds[k + 1] - bounds[k]) for k in range(len(bounds) - 1)],
            "block_time_range": time_ranges,
            "split": split_reports,
        },
    }
    stream = assemble_stream(parts, totals, meta, sources=[str(path)] * len(parts))
    return stream, id_maps
