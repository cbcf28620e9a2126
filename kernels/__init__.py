"""Numba kernels (installed as `ccd_dist.kernels`).

Compiled with `parallel=True, cache=True`. Results never depend on the number
of threads: every random draw is a pure function of (seed, position).
"""
from .metrics import count_hits_dcg
from .ranks import rank_of_candidates
from .sampling import sample_negatives
from .topk import masked_topk

__all__ = ["sample_negatives", "masked_topk", "rank_of_candidates", "count_hits_dcg"]
