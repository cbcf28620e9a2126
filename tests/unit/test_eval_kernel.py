"""count_hits_dcg against a plain-Python reference on random inputs."""
import math

import numpy as np
import pytest

from ccd_dist.kernels import count_hits_dcg


def reference(topk, gt_rows, ks):
    hits = np.zeros((len(topk), len(ks)), dtype=np.int64)
    dcg = np.zeros((len(topk), len(ks)))
    for u, row in enumerate(topk):
        gt = set(gt_rows[u])
        for c, k in enumerate(ks):
            for r, item in enumerate(row[:k]):
                if item in gt:
                    hits[u, c] += 1
                    dcg[u, c] += 1.0 / math.log2(r + 2)
    return hits, dcg, np.array([len(set(g)) for g in gt_rows])


def random_case(rng, n, width, n_items):
    topk = np.full((n, width), -1, dtype=np.int32)
    gt_rows = []
    for u in range(n):
        filled = rng.integers(0, width + 1)  # some rows padded with -1
        topk[u, :filled] = rng.choice(n_items, size=filled, replace=False)
        size = rng.integers(0, 3 * width)  # empty, smaller and larger than the width
        gt_rows.append(np.sort(rng.choice(n_items, size=min(size, n_items), replace=False)))
    indptr = np.concatenate([[0], np.cumsum([len(g) for g in gt_rows])]).astype(np.int64)
    indices = np.concatenate(gt_rows).astype(np.int32) if gt_rows else np.zeros(0, np.int32)
    return topk, gt_rows, indptr, indices


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_reference_on_random_inputs(seed):
    rng = np.random.default_rng(seed)
    topk, gt_rows, indptr, indices = random_case(rng, n=60, width=12, n_items=30)
    ks = [12, 1, 5]  # any order; columns follow it
    hits, dcg, n_gt = count_hits_dcg(topk, indptr, indices, ks)
    ref_hits, ref_dcg, ref_n = reference(topk, gt_rows, ks)
    np.testing.assert_array_equal(hits, ref_hits)
    np.testing.assert_allclose(dcg, ref_dcg, rtol=1e-12, atol=0)
    np.testing.assert_array_equal(n_gt, ref_n)
    assert hits.sum() > 0 and (n_gt == 0).any()  # the case exercises hits and empty rows


def test_padding_never_hits_and_inputs_are_cast():
    topk = np.array([[-1, 3, -1]], dtype=np.int64)
    hits, dcg, n_gt = count_hits_dcg(topk, [0, 2], np.array([0, 3], dtype=np.int64), (3,))
    assert hits.tolist() == [[1]] and n_gt.tolist() == [2]
    assert dcg[0, 0] == pytest.approx(1 / math.log2(3))


@pytest.mark.parametrize(
    "ks, match",
    [((0,), r"\[1, 3\]"), ((4,), r"\[1, 3\]"), ((2, 2), "distinct"), ((), "distinct")],
)
def test_bad_cutoffs_are_rejected(ks, match):
    with pytest.raises(ValueError, match=match):
        count_hits_dcg(np.zeros((1, 3), np.int32), [0, 0], np.zeros(0, np.int32), ks)


def test_misaligned_ground_truth_is_rejected():
    with pytest.raises(ValueError, match="n \\+ 1"):
        count_hits_dcg(np.zeros((2, 3), np.int32), [0, 0], np.zeros(0, np.int32), (1,))
