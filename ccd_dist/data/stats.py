"""Per-block statistics of a stream: what `ccd-dist data stats` prints.

Two notions of "new" entity are reported, because the reference numbers use both:

- `new_users` / `new_items`: ids allocated in block k, U_k - U_{k-1} (the rows
  the embedding tables grow by);
- `new_users_seen` / `new_items_seen`: distinct ids occurring in block k's
  interactions that are larger than every id occurring in an earlier block.

They differ when ids were allocated for entities whose interactions the split
filter dropped (Yelp items, §1.3) or for users that are keys with an empty
train list in the CCD pickles (Gowalla users).
"""
from __future__ import annotations

import numpy as np

from .assemble import unique_sorted
from .stream import SPLITS, Stream

COLUMNS = (
    ("block", "block"),
    ("users", "users"),
    ("new_users", "+users"),
    ("new_users_seen", "+users seen"),
    ("items", "items"),
    ("new_items", "+items"),
    ("new_items_seen", "+items seen"),
    ("train", "train"),
    ("valid", "valid"),
    ("test", "test"),
    ("test_users", "test users"),
    ("train_test_overlap", "train&test"),
    ("train_valid_overlap", "train&valid"),
)


def _occurring(block):
    """Distinct user ids and item ids occurring in any split of a block."""
    users = [np.flatnonzero(np.diff(block.split(s).indptr)) for s in SPLITS]
    items = [block.split(s).indices for s in SPLITS]
    return unique_sorted(np.concatenate(users)), unique_sorted(np.concatenate(items))


def block_stats(stream: Stream) -> list:
    """One dict per block with the COLUMNS keys (plain ints)."""
    rows = []
    prev_u = prev_i = 0
    seen_u = seen_i = -1
    for block in stream.blocks:
        users, items = _occurring(block)
        train, valid, test = block.train, block.valid, block.test
        rows.append(
            {
                "block": block.index,
                "users": int(block.n_users),
                "new_users": int(block.n_users - prev_u),
                "new_users_seen": int(np.count_nonzero(users > seen_u)),
                "items": int(block.n_items),
                "new_items": int(block.n_items - prev_i),
                "new_items_seen": int(np.count_nonzero(items > seen_i)),
                "train": int(train.nnz),
                "valid": int(valid.nnz),
                "test": int(test.nnz),
                "test_users": int(len(block.test_users())),
                "train_test_overlap": int(train.multiply(test).nnz),
                "train_valid_overlap": int(train.multiply(valid).nnz),
            }
        )
        prev_u, prev_i = block.n_users, block.n_items
        if len(users):
            seen_u = max(seen_u, int(users[-1]))
        if len(items):
            seen_i = max(seen_i, int(items[-1]))
    return rows


def format_table(rows, columns=COLUMNS) -> str:
    """Plain-text table, numbers right-aligned with thousands separators."""
    header = [title for _, title in columns]
    body = [[f"{row[key]:,}" if key != "block" else f"D{row[key]}" for key, _ in columns] for row in rows]
    widths = [max(len(h), *(len(r[j]) for r in body)) for j, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in body]
    return "\n".join(lines)


def format_report(stream: Stream) -> str:
    """The stats table plus the import report's duplicate counts, if any."""
    text = format_table(block_stats(stream))
    report = stream.meta.get("import_report", {})
    dups = report.get("duplicates_dropped")
    if dups and any(any(d.values()) for d in dups):
        lines = ["", "repeated (user, item) pairs dropped at import (kept once):"]
        lines.append(format_table(
            [{"block": k, **{s: d.get(s, 0) for s in SPLITS}} for k, d in enumerate(dups)],
            (("block", "block"), ("train", "train"), ("valid", "valid"), ("test", "test")),
        ))
        text += "\n" + "\n".join(lines)
    return text
