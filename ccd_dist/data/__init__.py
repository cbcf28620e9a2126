"""Data layer: streams of blocks, the Parquet store, importers and synthetic data."""
from .stream import SPLITS, Block, Stream, interactions_to_csr

__all__ = ["SPLITS", "Block", "Stream", "interactions_to_csr"]
