"""Import LightGCN-style `train.txt` / `test.txt` into a one-block store.

Each line is `user item item ...` with 0-based integer ids; a line with only a
user id is a user without items; blank lines are skipped. The id space is
max id + 1 over both files. The files have no validation split: with
`valid_fraction` F > 0, every user with at least two train items moves
min(max(int(F n), 1), n - 1) of them, chosen with the seed, from train to valid
(each user keeps at least one train item). With F = 0 valid is empty.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np

from ..errors import InputError
from .assemble import assemble_stream, unique_sorted
from .splitting import carve_valid
from .stream import Stream

_ALLOWED_BYTES = re.compile(rb"[0-9 \t\r\n]*")
_NEGATIVE = re.compile(rb"-\d+")


def _raise_bad_line(data: bytes, path: Path):
    """Slow path, only on bad input: find the first offending line and token."""
    for lineno, line in enumerate(data.splitlines(), start=1):
        bad = next((t for t in line.split() if not t.isdigit()), None)
        if bad is not None:
            what = "negative id" if _NEGATIVE.fullmatch(bad) else "non-integer token"
            raise InputError(
                f"{what} {bad.decode(errors='replace')!r}; expected `user item item ...` "
                "with non-negative integer ids",
                path,
                f"line {lineno}",
            )
    raise InputError("unexpected characters; expected digits, spaces, tabs and newlines", path)


def read_adjacency_file(path):
    """(users, items, user ids listed) from a `user item item ...` file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError("file not found (expected a `user item item ...` text file)", path) from None
    except IsADirectoryError:
        raise InputError("is a directory (expected a `user item item ...` text file)", path) from None
    if not _ALLOWED_BYTES.fullmatch(data):
        _raise_bad_line(data, path)
    lines = [line for line in data.splitlines() if line.strip()]
    if not lines:
        raise InputError("empty file; expected at least one `user item item ...` line", path)
    counts = np.fromiter(map(len, map(bytes.split, lines)), dtype=np.int64, count=len(lines))
    try:
        tokens = np.fromiter(map(int, data.split()), dtype=np.int64)
    except OverflowError:
        raise InputError("an id does not fit in 64 bits; expected ids below 2**31", path) from None
    starts = np.r_[0, np.cumsum(counts)[:-1]].astype(np.int64)
    listed = tokens[starts]
    is_item = np.ones(len(tokens), dtype=bool)
    is_item[starts] = False
    users = np.repeat(listed, counts - 1)
    items = tokens[is_item]
    if len(items) == 0:
        raise InputError("no interactions; expected at least one item id after a user id", path)
    return users, items, listed


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def import_lightgcn(train_path, test_path, valid_fraction: float = 0.0, seed: int = 0) -> Stream:
    """Read LightGCN train/test files into a one-block Stream (no files written)."""
    if not 0.0 <= valid_fraction < 1.0:
        raise InputError(f"valid fraction {valid_fraction} is out of range; expected 0 <= F < 1", where="--valid-fraction")
    train_path, test_path = Path(train_path), Path(test_path)
    tr_u, tr_i, tr_listed = read_adjacency_file(train_path)
    te_u, te_i, te_listed = read_adjacency_file(test_path)
    n_users = int(max(tr_listed.max(), te_listed.max())) + 1
    n_items = int(max(tr_i.max(), te_i.max() if len(te_i) else -1)) + 1

    # Dedupe train first so a repeated pair cannot land in both train and valid.
    pairs = unique_sorted(tr_u * n_items + tr_i)
    train_dups = len(tr_u) - len(pairs)
    tr_u, tr_i = pairs // n_items, pairs % n_items
    moved = carve_valid(tr_u, tr_i, valid_fraction, np.random.default_rng(seed))
    parts = [{
        "train": (tr_u[~moved], tr_i[~moved]),
        "valid": (tr_u[moved], tr_i[moved]),
        "test": (te_u, te_i),
    }]
    meta = {
        "provenance": {
            "importer": "import-lightgcn",
            "sources": [{"path": str(p.resolve()), "sha256": _sha256(p)} for p in (train_path, test_path)],
            "options": {"valid_fraction": valid_fraction, "seed": seed},
        },
        "id_maps": None,
    }
    stream = assemble_stream(parts, [(n_users, n_items)], meta, sources=[str(train_path)])
    # train was de-duplicated before the carve; report those repeats as train's
    stream.meta["import_report"]["duplicates_dropped"][0]["train"] = int(train_dups)
    return stream
