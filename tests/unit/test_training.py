"""The shared training loop and the `ccd-dist train` job."""
import json

import numpy as np
import pytest

from ccd_dist.cli import main
from ccd_dist.config import TrainConfig, TrainJobConfig
from ccd_dist.data import make_synthetic_stream, save_stream
from ccd_dist.errors import InputError
from ccd_dist.training.static import block_evaluator, selection_evaluator, train_on_block


@pytest.fixture(scope="module")
def stream():
    return make_synthetic_stream(n_users=200, n_items=300, n_blocks=2, interactions_per_user=20, seed=5)


@pytest.fixture(scope="module")
def store(stream, tmp_path_factory):
    path = tmp_path_factory.mktemp("store") / "synth"
    save_stream(stream, path)
    return path


def _job(kind, epochs=6, **train):
    cfg = TrainJobConfig()
    cfg.model.kind, cfg.model.dim = kind, 16
    cfg.train = TrainConfig(lr=0.01, batch_size=256, epochs=epochs, eval_every=2, patience=10, seed=1, **train)
    return cfg


@pytest.mark.parametrize("kind", ["bpr", "lightgcn", "vae"])
def test_training_beats_the_untrained_model(stream, kind):
    from ccd_dist.models import build_model
    from ccd_dist.training.static import block_evaluator

    block = stream[0]
    untrained = build_model(kind, block.n_users, block.n_items, 16, seed=1).set_interactions(block.train)
    test0 = block_evaluator(block, "test", 64)(untrained)
    model, result, test = train_on_block(block, _job(kind, epochs=8))
    assert result.epochs_run == 8 and result.best_epoch in (1, 3, 5, 7, 8)
    assert test["recall@20"] > test0["recall@20"] + 0.05
    assert [r["epoch"] for r in result.history] == list(range(1, 9))
    assert [r["epoch"] for r in result.history if "valid" in r] == [1, 3, 5, 7, 8]


def test_same_seed_same_numbers(stream):
    _, r1, t1 = train_on_block(stream[0], _job("lightgcn", epochs=3))
    _, r2, t2 = train_on_block(stream[0], _job("lightgcn", epochs=3))
    assert t1 == t2
    assert [h["bpr_loss"] for h in r1.history] == [h["bpr_loss"] for h in r2.history]


def test_early_stopping_restores_best_state(stream):
    cfg = _job("bpr", epochs=30)
    cfg.train.patience = 1
    cfg.train.eval_every = 1
    cfg.train.lr = 0.2  # overshoots quickly, so validation stops improving
    model, result, _ = train_on_block(stream[0], cfg)
    assert result.epochs_run < 30
    assert result.epochs_run == result.best_epoch + 1
    users, items = model.representations()
    from ccd_dist.training.static import block_evaluator

    assert block_evaluator(stream[0], "valid", 64)(model)["recall@20"] == pytest.approx(result.best_metric)


def test_block_without_valid_split_monitors_test(stream):
    import dataclasses

    import scipy.sparse as sp

    block = dataclasses.replace(stream[0], valid=sp.csr_matrix(stream[0].valid.shape, dtype=np.float32))
    _, result, test = train_on_block(block, _job("bpr", epochs=4))
    assert result.best_epoch == -1  # nothing selected on test
    assert result.history[-1]["monitor"] == test


def test_train_cli_writes_model_and_metrics(store, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["train", "--data", str(store), "--model", "bpr", "--set", "train.epochs=2",
               "--set", "model.dim=8", "--set", "train.batch_size=128", "--out", str(out)])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["test"]) >= {"recall@20", "ndcg@20", "recall@50", "ndcg@100"}
    assert metrics["epochs"] == 2 and metrics["seconds"] > 0
    assert json.loads((out / "config.json").read_text())["model"]["dim"] == 8
    assert (out / "model.pt").exists()


def test_train_cli_rejects_unknown_key_without_writing(store, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["train", "--data", str(store), "--model", "bpr", "--set", "train.epoch=2", "--out", str(out)])
    assert rc == 2
    assert "train.epoch" in capsys.readouterr().err
    assert not out.exists()
    rc = main(["train", "--data", str(store), "--block", "7", "--out", str(out)])
    assert rc == 2 and not out.exists()


def test_selection_over_seen_blocks_averages_the_valid_splits(stream):
    """select_over="seen" (the reference's --eaa) scores an epoch by the mean over blocks 0..k."""
    model, _, _ = train_on_block(stream.blocks[1], _job("bpr", epochs=2))
    per_block = [block_evaluator(stream.blocks[j], "valid", 64)(model) for j in (0, 1)]
    seen = selection_evaluator(stream, 1, "seen", 64)(model)
    assert set(seen) == set(per_block[1])
    for name, value in seen.items():
        assert value == pytest.approx((per_block[0][name] + per_block[1][name]) / 2)
    assert per_block[0]["recall@20"] != per_block[1]["recall@20"]  # the average is not one block's value
    assert selection_evaluator(stream, 1, "block", 64)(model) == per_block[1]
    with pytest.raises(InputError, match="select_over"):
        selection_evaluator(stream, 1, "all", 64)
