"""Import the CCD authors' block pickles (`TASK_0.pickle` ... `TASK_5.pickle`).

Each pickle holds `train_dict`, `valid_dict`, `test_dict` (user -> item list)
and, for Yelp, `num_base_block_users` / `num_base_block_items`. They are read
with the allow-list unpickler (nothing in them is executed).

Id-space totals per block (§1.3): the stored `num_base_block_*` fields where a
file has them (Yelp), otherwise the cumulative maximum id + 1 over the train,
valid and test splits of blocks 0..k (Gowalla). Repeated (user, item) pairs
inside a split are kept once; pairs in both train and test of a block (Yelp)
are kept in both. Both are counted in the store's import report.
"""
from __future__ import annotations

import hashlib
import re
from itertools import chain
from pathlib import Path

import numpy as np

from ..errors import InputError
from .assemble import assemble_stream
from .safe_pickle import safe_load
from .stream import SPLITS, Stream

SPLIT_KEYS = {"train": "train_dict", "valid": "valid_dict", "test": "test_dict"}
TOTAL_KEYS = ("num_base_block_users", "num_base_block_items")
_INT_TYPES = (int, np.integer)


def find_task_files(src_dir) -> list:
    """TASK_0.pickle, TASK_1.pickle, ... in block order; they must be contiguous from 0."""
    src = Path(src_dir)
    if not src.is_dir():
        raise InputError("not a directory (expected a folder with TASK_0.pickle, TASK_1.pickle, ...)", src)
    found = {}
    for p in src.iterdir():
        m = re.fullmatch(r"TASK_(\d+)\.pickle", p.name)
        if m:
            found[int(m.group(1))] = p
    if not found:
        raise InputError("no TASK_k.pickle files found (expected TASK_0.pickle, TASK_1.pickle, ...)", src)
    missing = [k for k in range(max(found) + 1) if k not in found]
    if missing:
        raise InputError(f"TASK_{missing[0]}.pickle is missing; blocks must be numbered 0..{max(found)}", src)
    return [found[k] for k in sorted(found)]


def _is_int(x) -> bool:
    return isinstance(x, _INT_TYPES) and not isinstance(x, (bool, np.bool_))


def _split_arrays(mapping, path, key):
    """{user: [item, ...]} -> (users, items) int64 arrays, strictly type-checked."""
    if not isinstance(mapping, dict):
        raise InputError(f"expected a dict of user id -> list of item ids, got {type(mapping).__name__}", path, f"key {key!r}")
    for user, its in mapping.items():
        if not _is_int(user) or user < 0:
            raise InputError(f"user id {user!r} is not a non-negative integer", path, f"key {key!r}")
        if not isinstance(its, list):
            raise InputError(f"user {user}: expected a list of item ids, got {type(its).__name__}", path, f"key {key!r}")
    all_items = list(chain.from_iterable(mapping.values()))
    if not all(map(_is_int, all_items)) or (all_items and min(all_items) < 0):
        for user, its in mapping.items():
            bad = [x for x in its if not _is_int(x) or x < 0]
            if bad:
                raise InputError(
                    f"user {user}: item id {bad[0]!r} is not a non-negative integer", path, f"key {key!r}"
                )
    lengths = np.fromiter(map(len, mapping.values()), dtype=np.int64, count=len(mapping))
    users = np.repeat(np.fromiter(mapping.keys(), dtype=np.int64, count=len(mapping)), lengths)
    items = np.array(all_items, dtype=np.int64)
    return users, items


def read_task_file(path):
    """One block: ({split: (users, items)}, stored totals or None, extra report)."""
    data = safe_load(path)
    if not isinstance(data, dict):
        raise InputError(f"expected a dict with keys {list(SPLIT_KEYS.values())}, got {type(data).__name__}", path)
    missing = [k for k in SPLIT_KEYS.values() if k not in data]
    if missing:
        raise InputError(f"missing keys {missing}; found {sorted(map(str, data))}", path)
    parts = {split: _split_arrays(data[key], path, key) for split, key in SPLIT_KEYS.items()}
    stored = None
    if any(k in data for k in TOTAL_KEYS):
        for k in TOTAL_KEYS:
            if k not in data or not _is_int(data[k]) or data[k] < 0:
                raise InputError(f"expected a non-negative integer, got {data.get(k)!r}", path, f"key {k!r}")
        stored = (int(data[TOTAL_KEYS[0]]), int(data[TOTAL_KEYS[1]]))
    empty_keys = sum(1 for its in data["train_dict"].values() if not its)
    max_key = max((max(data[key], default=-1) for key in SPLIT_KEYS.values()), default=-1)
    return parts, stored, {"train_keys_without_items": empty_keys, "max_user_key": int(max_key)}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def derive_totals(parts, stored, files, max_user_keys=None) -> list:
    """Per-block (n_users, n_items) per §1.3: stored fields, else cumulative max id + 1.

    User ids count as seen when they are keys of a split dict even with an empty
    item list (Gowalla has many such train keys), as in the reference totals.
    """
    totals = []
    max_u = max_i = -1
    prev = (0, 0)
    for k, split_arrays in enumerate(parts):
        if max_user_keys is not None:
            max_u = max(max_u, max_user_keys[k])
        for users, items in split_arrays.values():
            if len(users):
                max_u = max(max_u, int(users.max()))
                max_i = max(max_i, int(items.max()))
        observed = (max_u + 1, max_i + 1)
        if stored[k] is None:
            total = observed
        else:
            total = stored[k]
            if total[0] < observed[0] or total[1] < observed[1]:
                raise InputError(
                    f"stored totals {total} (users, items) are smaller than the ids seen up to this block "
                    f"{observed}; expected totals >= max id + 1",
                    files[k],
                    f"keys {TOTAL_KEYS}",
                )
        if total[0] < prev[0] or total[1] < prev[1]:
            raise InputError(
                f"totals {total} shrink after block {k - 1}'s {prev}; ids must only grow", files[k]
            )
        totals.append(total)
        prev = total
    return totals


def import_ccd(src_dir) -> Stream:
    """Read a CCD dataset folder into a Stream (no files written)."""
    files = find_task_files(src_dir)
    parts, stored, extra = [], [], []
    for path in files:
        p, s, e = read_task_file(path)
        parts.append(p)
        stored.append(s)
        extra.append(e)
    totals = derive_totals(parts, stored, files, [e["max_user_key"] for e in extra])
    as_stored = [{split: int(len(p[split][0])) for split in SPLITS} for p in parts]
    meta = {
        "provenance": {
            "importer": "import-ccd",
            "sources": [{"path": str(f.resolve()), "sha256": _sha256(f)} for f in files],
            "options": {},
            "totals_from": ["stored num_base_block_*" if s else "cumulative max id + 1" for s in stored],
        },
        "import_report": {
            "counts_as_stored": as_stored,
            "train_keys_without_items": [e["train_keys_without_items"] for e in extra],
        },
        "id_maps": None,
    }
    return assemble_stream(parts, totals, meta, sources=[str(f) for f in files])
