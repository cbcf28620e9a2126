"""Numba kernels (installed as `ccd_dist.kernels`).

Compiled with `parallel=True, cache=True`. Results never depend on the number
of threads: every random draw is a pure function of (seed, position).

- sampling: `sample_negatives` (BPR negatives with per-user exclusions)
- topk: masked top-K selection with certified canonical scores
- ranks: rank of candidate items among all items
- fullrank: full-row ranks and rank-weight accumulation for the ensemble
- subsets: uniform sampling without replacement from allowed pools (KD)
- metrics: hit and DCG counting for evaluation
- softmax: row exponentials with their sums, and the row softmax with its log-sum-exp
  (LWC-KD; NumPy, whose SIMD exp beats Numba's scalar one)
"""
from .fullrank import accumulate_rank_weights, rank_rows
from .metrics import count_hits_dcg
from .ranks import rank_of_candidates
from .sampling import sample_negatives
from .softmax import exp_rows_, softmax_rows_
from .subsets import sample_subset_bits
from .topk import masked_topk

__all__ = [
    "sample_negatives",
    "masked_topk",
    "rank_of_candidates",
    "rank_rows",
    "accumulate_rank_weights",
    "sample_subset_bits",
    "count_hits_dcg",
    "exp_rows_",
    "softmax_rows_",
]
