"""The CCD continual evaluation protocol (§9 of the algorithm reference).

A model after block k is evaluated on every block j <= k with block j's own
splits only:
- test metric:  ground truth = test_j,  excluded = train_j + valid_j;
- valid metric: ground truth = valid_j, excluded = train_j + test_j.
New-user evaluation restricts block k's evaluation to ids in [U_{k-1}, U_k).

Deliberate departures from the authors' code (§12 B16): a block whose users or
items do not fit the model is an error instead of being skipped user by user,
and the full catalogue is ranked (no top-1000 truncation before masking).
"""
from __future__ import annotations

from ccd_dist.data.stream import Block, Stream

from .metrics import DEFAULT_KS, EmbeddingRanker, arg_error, canonical_binary, evaluate_ranker

EVAL_SPLITS = ("valid", "test")
_OTHER = {"test": "valid", "valid": "test"}


def split_masks(block: Block, split: str = "test") -> tuple:
    """(ground_truth, exclude) CSR matrices of `block` for the "test" or "valid" metric."""
    if split not in _OTHER:
        raise arg_error("split", f"unknown evaluation split {split!r}; expected one of {EVAL_SPLITS}")
    exclude = canonical_binary(block.train + block.split(_OTHER[split]), "exclude")
    return block.split(split), exclude


def _check_fits(ranker, block: Block) -> None:
    if block.n_users > ranker.n_users or block.n_items > ranker.n_items:
        raise arg_error(
            f"block {block.index}",
            f"has {block.n_users} users and {block.n_items} items but the model has {ranker.n_users} user "
            f"rows and {ranker.n_items} item rows; a model sized for block k can only be evaluated on "
            "blocks j <= k",
        )


def evaluate_block_ranker(
    ranker, block: Block, split: str = "test", users=None, *, ks=DEFAULT_KS, drop_excluded_ground_truth=False
) -> dict:
    """`evaluate_block` for any ranker object (see `EmbeddingRanker`)."""
    _check_fits(ranker, block)
    ground_truth, exclude = split_masks(block, split)
    return evaluate_ranker(
        ranker, ground_truth, exclude, ks, users=users, drop_excluded_ground_truth=drop_excluded_ground_truth
    )


def evaluate_block(
    user_emb,
    item_emb,
    block: Block,
    split: str = "test",
    users=None,
    *,
    ks=DEFAULT_KS,
    drop_excluded_ground_truth: bool = False,
    backend=None,
    chunk_size=None,
) -> dict:
    """Metrics of one block's "test" or "valid" split (optionally for `users` only)."""
    ranker = EmbeddingRanker(user_emb, item_emb, backend=backend, chunk_size=chunk_size)
    return evaluate_block_ranker(
        ranker, block, split, users, ks=ks, drop_excluded_ground_truth=drop_excluded_ground_truth
    )


def evaluate_new_users_ranker(
    ranker, stream: Stream, k: int, split: str = "test", *, ks=DEFAULT_KS, drop_excluded_ground_truth=False
) -> dict:
    """`evaluate_new_users` for any ranker object."""
    k = _check_block_index(stream, k, "k")
    return evaluate_block_ranker(
        ranker, stream[k], split, users=stream.new_users(k), ks=ks,
        drop_excluded_ground_truth=drop_excluded_ground_truth,
    )


def evaluate_new_users(
    user_emb,
    item_emb,
    stream: Stream,
    k: int,
    split: str = "test",
    *,
    ks=DEFAULT_KS,
    drop_excluded_ground_truth: bool = False,
    backend=None,
    chunk_size=None,
) -> dict:
    """Metrics on block k restricted to the users first seen in block k: [U_{k-1}, U_k).

    For k = 0 every user is new. Same options as `evaluate_block`.
    """
    ranker = EmbeddingRanker(user_emb, item_emb, backend=backend, chunk_size=chunk_size)
    return evaluate_new_users_ranker(
        ranker, stream, k, split, ks=ks, drop_excluded_ground_truth=drop_excluded_ground_truth
    )


def _check_block_index(stream: Stream, k, name: str) -> int:
    if not hasattr(k, "__index__"):
        raise arg_error(name, f"expected an integer block index, got {k!r}")
    k = int(k)
    if not 0 <= k < len(stream):
        raise arg_error(name, f"block index {k} outside the stream's 0..{len(stream) - 1}")
    return k


def evaluate_stream_ranker(
    ranker, stream: Stream, upto=None, *, splits=EVAL_SPLITS, ks=DEFAULT_KS, drop_excluded_ground_truth=False
) -> list:
    """`evaluate_stream` for any ranker object."""
    upto = len(stream) - 1 if upto is None else _check_block_index(stream, upto, "upto")
    for split in splits:
        if split not in _OTHER:
            raise arg_error("splits", f"unknown evaluation split {split!r}; expected one of {EVAL_SPLITS}")
    for j in range(upto + 1):
        _check_fits(ranker, stream[j])  # fail before any work, not at block j
    return [
        {
            split: evaluate_block_ranker(
                ranker, stream[j], split, ks=ks, drop_excluded_ground_truth=drop_excluded_ground_truth
            )
            for split in splits
        }
        for j in range(upto + 1)
    ]


def evaluate_stream(
    user_emb,
    item_emb,
    stream: Stream,
    upto=None,
    *,
    splits=EVAL_SPLITS,
    ks=DEFAULT_KS,
    drop_excluded_ground_truth: bool = False,
    backend=None,
    chunk_size=None,
) -> list:
    """Metrics of a model (after block `upto`, default the last) on blocks 0..upto.

    Returns a list indexed by block j of {"valid": metrics, "test": metrics};
    this is row `upto` of the continual result matrix (`ResultMatrix.record_row`).
    """
    ranker = EmbeddingRanker(user_emb, item_emb, backend=backend, chunk_size=chunk_size)
    return evaluate_stream_ranker(
        ranker, stream, upto, splits=splits, ks=ks, drop_excluded_ground_truth=drop_excluded_ground_truth
    )
