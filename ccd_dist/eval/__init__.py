"""Evaluation: Recall@K / NDCG@K, the continual protocol, the result matrix, LA / RA / H-mean.

See docs/metrics.md for the definitions and the deliberate choices.
"""
from .metrics import (
    DEFAULT_KS,
    EmbeddingRanker,
    average,
    evaluate_ranker,
    evaluate_topk,
    ground_truth_without,
    metric_names,
    per_row_metrics,
    per_user_ranker_metrics,
)
from .protocol import (
    EVAL_SPLITS,
    evaluate_block,
    evaluate_block_ranker,
    evaluate_new_users,
    evaluate_new_users_ranker,
    evaluate_stream,
    evaluate_stream_ranker,
    split_masks,
)
from .results import ResultMatrix, harmonic_mean, learning_average, retained_average

__all__ = [
    "DEFAULT_KS",
    "EVAL_SPLITS",
    "EmbeddingRanker",
    "ResultMatrix",
    "average",
    "evaluate_block",
    "evaluate_block_ranker",
    "evaluate_new_users",
    "evaluate_new_users_ranker",
    "evaluate_ranker",
    "evaluate_stream",
    "evaluate_stream_ranker",
    "evaluate_topk",
    "ground_truth_without",
    "harmonic_mean",
    "learning_average",
    "metric_names",
    "per_row_metrics",
    "per_user_ranker_metrics",
    "retained_average",
    "split_masks",
]
