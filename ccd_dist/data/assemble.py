"""Turn per-block (user, item) arrays into a validated Stream, counting what changed.

Every importer ends here, so duplicate handling and overlap accounting are the
same for all of them: repeated (user, item) pairs inside one split are kept
once (the number dropped is reported per block and split), and pairs that sit
in two splits of the same block for the same user (Yelp: train and test) are
kept in both and counted.
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError
from .stream import SPLITS, Block, Stream, interactions_to_csr

OVERLAPS = (("train", "test"), ("train", "valid"), ("valid", "test"))
MAX_IDS = 2**31 - 1  # the store keeps ids as int32


def unique_sorted(values) -> np.ndarray:
    """Sorted distinct values; sort-based, much faster than np.unique's hashing on wide int ranges."""
    values = np.sort(np.asarray(values), kind="stable")
    if len(values) < 2:
        return values
    return values[np.r_[True, values[1:] != values[:-1]]]


def _check_ids(ids, total, what, block, split, source):
    if len(ids) == 0:
        return
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 0:
        raise InputError(f"block {block} {split}: negative {what} id {lo}; expected ids >= 0", source)
    if hi >= total:
        raise InputError(
            f"block {block} {split}: {what} id {hi} is outside the block's id space "
            f"[0, {total}); expected ids below the total up to this block",
            source,
        )


def assemble_stream(parts, totals, meta=None, sources=None) -> Stream:
    """Build a Stream from raw per-block interactions.

    parts:   list over blocks of {split: (users, items)} integer arrays (splits may be absent);
    totals:  list over blocks of (n_users, n_items), the id-space size up to that block;
    meta:    provenance dict; an `import_report` with duplicates and overlaps is added;
    sources: optional per-block file names used in error messages.
    """
    if len(parts) != len(totals):
        raise ValueError("one (n_users, n_items) total is needed per block")
    if not parts:
        raise InputError("no blocks to import; expected at least one block")
    meta = dict(meta or {})
    report = dict(meta.get("import_report", {}))
    duplicates, overlaps = [], []
    blocks = []
    for k, (split_arrays, (n_users, n_items)) in enumerate(zip(parts, totals)):
        source = sources[k] if sources else None
        if n_users > MAX_IDS or n_items > MAX_IDS:
            raise InputError(
                f"block {k}: {n_users} users / {n_items} items; expected fewer than 2**31 ids", source
            )
        mats, dropped = {}, {}
        for split in SPLITS:
            users, items = split_arrays.get(split, (np.empty(0, np.int64), np.empty(0, np.int64)))
            users = np.asarray(users, dtype=np.int64)
            items = np.asarray(items, dtype=np.int64)
            _check_ids(users, n_users, "user", k, split, source)
            _check_ids(items, n_items, "item", k, split, source)
            mats[split] = interactions_to_csr(users, items, n_users, n_items)
            dropped[split] = int(len(users) - mats[split].nnz)
        duplicates.append(dropped)
        overlaps.append({f"{a}_{b}": int(mats[a].multiply(mats[b]).nnz) for a, b in OVERLAPS})
        blocks.append(Block(index=k, **mats))
    report["duplicates_dropped"] = duplicates
    report["overlap"] = overlaps
    meta["import_report"] = report
    stream = Stream(blocks=blocks, meta=meta)
    try:
        stream.validate()
    except ValueError as exc:
        raise InputError(str(exc), sources[0] if sources else None) from None
    return stream
