"""Loss reductions that give the same bits on any torch thread count."""
import numpy as np
import pytest
import torch

from ccd_dist.models.reduce import SERIAL_LIMIT, stable_mean, stable_sum
from thread_counts import all_threads, losses_and_gradients


def per_thread_count(fn, x, counts=(1, 2, 2, 2)):
    out = []
    for threads in counts:
        with all_threads(threads):
            out.append(fn(x))
    return out


def test_plain_sum_of_a_large_tensor_changes_with_the_thread_count():
    """Why stable_sum exists: if torch ever stops splitting, this reminds us it is no longer needed."""
    gen = torch.Generator().manual_seed(0)
    differs = 0
    for _ in range(20):
        x = torch.randn(1024, 40, generator=gen) * 50
        a, b = per_thread_count(torch.sum, x, counts=(1, 2))
        differs += not torch.equal(a, b)
    assert differs > 0


@pytest.mark.parametrize("shape", [(1024, 40), (3, 70001), (SERIAL_LIMIT * 40 + 7,), (5, 7)])
def test_stable_sum_is_the_same_on_every_thread_count_and_is_the_sum(shape):
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        x = torch.randn(*shape, generator=gen) * 50
        sums = per_thread_count(stable_sum, x)
        assert all(torch.equal(sums[0], s) for s in sums[1:])
        exact = float(np.sum(x.numpy(), dtype=np.float64))
        assert float(sums[0]) == pytest.approx(exact, rel=1e-5, abs=1e-2)


def test_stable_mean_and_its_gradient_on_every_thread_count():
    x = (torch.randn(2048, 33, generator=torch.Generator().manual_seed(2)) * 3).requires_grad_(True)
    runs = losses_and_gradients(lambda: stable_mean(torch.exp(x)), (x,))
    assert all(torch.equal(runs[0][0], loss) and torch.equal(runs[0][1][0], g[0]) for loss, g in runs[1:])
    assert float(runs[0][0]) == pytest.approx(float(torch.exp(x.detach()).double().mean()), rel=1e-5)
    assert stable_mean(torch.zeros(0)).item() == 0.0
