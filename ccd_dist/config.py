"""Typed configuration: dataclass schemas, YAML presets and `--set key=value` overrides.

Layering (lowest to highest): schema defaults < preset / YAML file < command line.
An unknown key is an error that names the key and the nearest valid one, so a
typo never silently runs with a default.
"""
from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError


# ----------------------------------------------------------------------------- schemas
@dataclass
class ModelConfig:
    kind: str = "lightgcn"  # bpr | lightgcn | vae
    dim: int = 64
    layers: int = 2  # LightGCN propagation layers


@dataclass
class TrainConfig:
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 2048
    negatives: int = 1
    epochs: int = 100
    eval_every: int = 1
    patience: int = 10  # evaluations without improvement before stopping
    seed: int = 0
    loss_reduction: str = "sum"  # sum (authors' code, B15) | mean
    select_metric: str = "recall@20"  # on the valid split of the trained block
    eval_chunk: int = 4096

    def train_config(self) -> "TrainConfig":
        """Just the optimisation settings (stage configs extend this class with their own keys)."""
        return TrainConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(TrainConfig)})


@dataclass
class TrainJobConfig:
    """`ccd-dist train`: one model on one block."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# ----------------------------------------------------------------------------- mechanics
def _field_types(cls) -> dict:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _nearest(key: str, options) -> str:
    match = difflib.get_close_matches(key, list(options), n=1, cutoff=0.4)
    return f"; did you mean {match[0]!r}?" if match else ""


def valid_keys(cfg) -> list:
    """All dotted leaf keys of a config tree, e.g. ['model.dim', 'train.lr', ...]."""
    keys = []
    for name, typ in _field_types(type(cfg)).items():
        value = getattr(cfg, name)
        if dataclasses.is_dataclass(value):
            keys += [f"{name}.{k}" for k in valid_keys(value)]
        else:
            keys.append(name)
    return keys


def _coerce(value, typ, key: str, source: str):
    """Convert a YAML value or a command-line string to the field's type."""
    origin = typing.get_origin(typ)
    if origin is typing.Union:  # Optional[X]
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        typ = args[0]
        origin = typing.get_origin(typ)
    if origin in (list, tuple):
        (inner,) = typing.get_args(typ)[:1] or (str,)
        if isinstance(value, str):
            value = [v for v in value.split(",") if v != ""]
        if not isinstance(value, (list, tuple)):
            raise InputError(f"{key} expects a list, got {value!r}", path=source)
        return [_coerce(v, inner, key, source) for v in value]
    try:
        if typ is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if typ is int:
            if isinstance(value, bool):
                raise ValueError
            as_float = float(value)
            if as_float != int(as_float):
                raise ValueError
            return int(as_float)
        if typ is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if typ is str:
            return str(value)
    except (TypeError, ValueError):
        raise InputError(f"{key} expects {typ.__name__}, got {value!r}", path=source) from None
    return value


def set_key(cfg, dotted: str, value, source: str = "--set") -> None:
    """Set one dotted key in place, with type checking and a helpful unknown-key error."""
    parts = dotted.split(".")
    node = cfg
    for depth, part in enumerate(parts):
        types = _field_types(type(node))
        if part not in types:
            prefix = ".".join(parts[:depth])
            options = [f"{prefix}.{k}" if prefix else k for k in types]
            raise InputError(
                f"unknown config key {dotted!r}{_nearest(dotted, valid_keys(cfg) or options)}",
                path=source,
            )
        current = getattr(node, part)
        if depth == len(parts) - 1:
            if dataclasses.is_dataclass(current):
                if not isinstance(value, dict):
                    raise InputError(f"{dotted} is a section; set one of its keys", path=source)
                merge_dict(current, value, source, prefix=dotted)
            else:
                setattr(node, part, _coerce(value, types[part], dotted, source))
            return
        if not dataclasses.is_dataclass(current):
            raise InputError(f"{'.'.join(parts[:depth + 1])} is not a section", path=source)
        node = current


def merge_dict(cfg, data: dict, source: str, prefix: str = "") -> None:
    """Merge a nested dict (e.g. parsed YAML) into the config tree."""
    if not isinstance(data, dict):
        raise InputError(f"expected a mapping at {prefix or 'top level'}, got {type(data).__name__}", path=source)
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        node = cfg
        for part in prefix.split(".") if prefix else []:
            node = getattr(node, part)
        sub = getattr(node, str(key), None)
        if dataclasses.is_dataclass(sub) and isinstance(value, dict):
            merge_dict(cfg, value, source, prefix=dotted)
        else:
            set_key(cfg, dotted, value, source)


def apply_overrides(cfg, overrides) -> None:
    """Apply `key=value` strings from the command line."""
    for item in overrides or []:
        if "=" not in item:
            raise InputError(f"expected key=value, got {item!r}", path="--set")
        key, value = item.split("=", 1)
        set_key(cfg, key.strip(), value.strip(), source="--set")


def load_yaml(cfg, path) -> None:
    import yaml

    path = Path(path)
    if not path.exists():
        raise InputError("config file not found", path=path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise InputError(f"not valid YAML: {exc}", path=path) from None
    merge_dict(cfg, data, str(path))


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)
