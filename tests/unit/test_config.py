import pytest

from ccd_dist.config import TrainJobConfig, apply_overrides, load_yaml, to_dict, valid_keys
from ccd_dist.errors import InputError


def test_overrides_are_typed():
    cfg = TrainJobConfig()
    apply_overrides(cfg, ["model.dim=16", "train.lr=5e-3", "model.kind=bpr", "train.epochs=3"])
    assert cfg.model.dim == 16 and isinstance(cfg.model.dim, int)
    assert cfg.train.lr == pytest.approx(5e-3)
    assert cfg.model.kind == "bpr"
    assert to_dict(cfg)["train"]["epochs"] == 3


def test_unknown_key_names_key_and_nearest():
    cfg = TrainJobConfig()
    with pytest.raises(InputError, match=r"train\.lrr.*train\.lr"):
        apply_overrides(cfg, ["train.lrr=1"])
    with pytest.raises(InputError, match="unknown config key 'optim.lr'"):
        apply_overrides(cfg, ["optim.lr=1"])


def test_bad_values_are_errors():
    cfg = TrainJobConfig()
    with pytest.raises(InputError, match="model.dim expects int"):
        apply_overrides(cfg, ["model.dim=1.5"])
    with pytest.raises(InputError, match="expected key=value"):
        apply_overrides(cfg, ["model.dim"])


def test_yaml_merge_and_errors(tmp_path):
    good = tmp_path / "c.yaml"
    good.write_text("model:\n  dim: 8\ntrain:\n  batch_size: 64\n")
    cfg = TrainJobConfig()
    load_yaml(cfg, good)
    assert (cfg.model.dim, cfg.train.batch_size) == (8, 64)
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  dimm: 8\n")
    with pytest.raises(InputError, match=r"bad\.yaml.*model\.dimm.*model\.dim"):
        load_yaml(TrainJobConfig(), bad)
    with pytest.raises(InputError, match="not found"):
        load_yaml(TrainJobConfig(), tmp_path / "missing.yaml")


def test_valid_keys_lists_leaves():
    keys = valid_keys(TrainJobConfig())
    for key in ["model.dim", "model.layers", "train.lr", "train.weight_decay", "train.batch_size",
                "train.negatives", "train.epochs", "train.eval_every", "train.seed"]:
        assert key in keys
