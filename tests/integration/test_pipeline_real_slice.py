"""The base stage (teacher members, rank ensemble, KD) on a small slice of real Yelp D0."""
import dataclasses

import pytest
import scipy.sparse as sp

from ccd_dist.ccd.ensemble import build_rank_ensemble, evaluate_teacher, member_from_model, stream_cover
from ccd_dist.ccd.kd import KDConfig, distill
from ccd_dist.config import TrainConfig
from ccd_dist.data import Stream, import_ccd
from ccd_dist.models import build_model
from ccd_dist.training.loop import fit
from ccd_dist.training.static import block_evaluator
from conftest import shared_path  # tests/conftest.py (pytest puts tests/ on sys.path)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def yelp_slice():
    """The first 1,500 users of Yelp D0 with every item they touch (ids kept)."""
    stream = import_ccd(shared_path("ccd", "yelp"))
    block = stream[0]
    part = {name: sp.csr_matrix(block.split(name)[:1500]) for name in ("train", "valid", "test")}
    return Stream([dataclasses.replace(block, **part)])


def test_members_ensemble_and_kd_on_real_slice(yelp_slice):
    block = yelp_slice[0]
    cfg = TrainConfig(lr=5e-3, batch_size=1024, epochs=3, eval_every=1, patience=3, seed=0)
    members = []
    for seed in (0, 1):
        model = build_model("bpr", block.n_users, block.n_items, 32, seed=seed)
        fit(model, block.train, dataclasses.replace(cfg, seed=seed), block_evaluator(block, "valid", 1024))
        members.append(member_from_model(f"bpr_{seed}", model))
    lists = build_rank_ensemble(members, block.train, cover=stream_cover(yelp_slice, 0))
    teacher = evaluate_teacher(lists, yelp_slice, 0)[0]["test"]
    assert teacher["n_users"] > 1000 and teacher["recall@20"] > 0.02

    kd_cfg = KDConfig(epochs=2, eval_every=1, n_uninteresting_items=500, n_uninteresting_users=300)
    student = build_model("lightgcn", block.n_users, block.n_items, 8, seed=0)
    student, result = distill(student, block.train, lists, kd_cfg, evaluate=block_evaluator(block, "valid", 1024))
    history = result.history
    assert history[-1]["de_rrd_loss"] < history[0]["de_rrd_loss"]
    untrained = build_model("lightgcn", block.n_users, block.n_items, 8, seed=0).set_interactions(block.train)
    assert block_evaluator(block, "test", 1024)(student)["recall@20"] > \
        block_evaluator(block, "test", 1024)(untrained)["recall@20"]
