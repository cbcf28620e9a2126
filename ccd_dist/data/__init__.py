"""Data layer: streams of blocks, the Parquet store, importers and synthetic data.

Typical use::

    from ccd_dist.data import load_stream, make_synthetic_stream
    stream = load_stream("stores/gowalla")        # written by `ccd-dist data import-ccd`
    tiny = make_synthetic_stream(n_users=60, n_items=40, n_blocks=3, seed=0)
"""
from .import_ccd import import_ccd
from .import_lightgcn import import_lightgcn
from .import_log import import_log
from .safe_pickle import safe_load
from .stats import block_stats, format_report
from .store import load_id_map, load_stream, read_meta, save_stream
from .stream import SPLITS, Block, Stream, interactions_to_csr
from .synthetic import default_stream, make_synthetic_stream


def open_stream(path=None) -> Stream:
    """The store at `path`, or the embedded default (the synthetic stream) when None."""
    return default_stream() if path is None else load_stream(path)


__all__ = [
    "SPLITS",
    "Block",
    "Stream",
    "interactions_to_csr",
    "load_stream",
    "save_stream",
    "read_meta",
    "load_id_map",
    "open_stream",
    "make_synthetic_stream",
    "default_stream",
    "import_ccd",
    "import_lightgcn",
    "import_log",
    "safe_load",
    "block_stats",
    "format_report",
]
