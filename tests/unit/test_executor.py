"""Executors: the same worker gives the same numbers in-process and as a Ray actor."""
import numpy as np
import pytest

from ccd_dist.ccd.teacher import MemberSpec, MemberWorker, base_teacher_config
from ccd_dist.data import make_synthetic_stream
from ccd_dist.distributed.executor import InProcessExecutor, make_executor


@pytest.fixture(scope="module")
def block():
    return make_synthetic_stream(n_users=80, n_items=50, n_blocks=2, interactions_per_user=12, seed=3)[0]


def _train(executor, block, specs):
    cfg = base_teacher_config(epochs=2, batch_size=256, eval_every=1)
    ref = executor.put(block)
    handles = [executor.start(MemberWorker, spec) for spec in specs]
    metrics = executor.call_all(handles, "train_base", ref, cfg)
    reps = executor.call_all(handles, "representations")
    return metrics, reps


def test_in_process_members_train_and_are_deterministic(block):
    specs = [MemberSpec("bpr", 8, 0), MemberSpec("lightgcn", 8, 1)]
    m1, r1 = _train(InProcessExecutor(threads=1), block, specs)
    m2, r2 = _train(InProcessExecutor(threads=2), block, specs)
    assert [m["name"] for m in m1] == ["bpr_0", "lightgcn_1"]
    for a, b in zip(r1, r2):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    assert m1[0]["test"]["recall@20"] == m2[0]["test"]["recall@20"]


def test_unknown_executor_is_an_error():
    from ccd_dist.errors import InputError

    with pytest.raises(InputError, match="executor must be"):
        make_executor("spark")


def _pool_train(kind, block):
    from ccd_dist.pipeline.config import preset_config
    from ccd_dist.pipeline.pool import TeacherPool

    cfg = preset_config("synthetic")
    cfg.teacher.members = ["bpr-8-0", "vae-8-2", "lightgcn-8-1-2"]  # more members than the 2 CPUs
    cfg.executor.kind = kind
    train_cfg = base_teacher_config(epochs=2, batch_size=256, eval_every=1)
    with TeacherPool(cfg) as pool:
        ref = pool.put(block)
        calls = [(name, "train_base", (ref, train_cfg), {}) for name in ("bpr_0", "vae_2", "lightgcn_1")]
        metrics = dict(pool.run(calls))
        reps = {name: pool.call(name, "representations") for name in metrics}
    return metrics, reps


@pytest.mark.ray
def test_ray_actors_match_in_process_with_more_members_than_cpus(block, ray_session):
    """Regression: actors that each held a whole CPU for life left the third member
    unschedulable on a 2-CPU Ray, and the run waited forever."""
    local_metrics, local_reps = _pool_train("local", block)
    ray_metrics, ray_reps = _pool_train("ray", block)
    assert set(ray_metrics) == {"bpr_0", "vae_2", "lightgcn_1"}
    for name in local_reps:
        np.testing.assert_array_equal(local_reps[name][0], ray_reps[name][0])
        np.testing.assert_array_equal(local_reps[name][1], ray_reps[name][1])
        assert local_metrics[name]["test"] == ray_metrics[name]["test"]
