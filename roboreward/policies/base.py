"""The Policy API shared by BC policies: registry by name, ``config.json`` + ``model.safetensors``
checkpoints (never pickles), mirroring ``roboreward.rewards.base.RewardModel``.

- ``loss(batch) -> {"loss": ..., ...}``: for ``roboreward.training.fit``; per-sample losses are
  reduced with the batch's ``weight`` (RA-BC) by ``rabc.weighted_mean``.
- ``select_action(...) -> (B, H, A)``: an action chunk in dataset (LeRobot) units.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from ..config import ConfigError, from_dict
from ..errors import RoborewardError
from ..rewards.base import CONFIG_NAME, WEIGHTS_NAME, CheckpointError, _one_line


@dataclass
class PolicyConfig:
    """Base of every policy config; subclasses default ``type`` to their registered name."""

    type: str = ""
    """Registered policy name (``bc``, ...); selects the policy class."""

    def __post_init__(self):
        expected = _default_type(type(self))
        if not isinstance(self.type, str) or not self.type or (expected and self.type != expected):
            raise ConfigError(f"type is {self.type!r} but {type(self).__name__} is the config of {expected!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _default_type(config_class: type) -> str:
    for f in dataclasses.fields(config_class):
        if f.name == "type":
            return f.default if isinstance(f.default, str) else ""
    return ""


POLICIES: dict[str, type["Policy"]] = {}
"""Registered policies: name -> class."""


def register_policy(cls: type["Policy"]) -> type["Policy"]:
    """Class decorator: make ``cls`` buildable by ``make_policy`` and loadable by ``from_pretrained``."""
    if cls.name in POLICIES and POLICIES[cls.name] is not cls:
        raise TypeError(f"policy name {cls.name!r} is registered twice ({POLICIES[cls.name].__name__}, {cls.__name__})")
    if _default_type(cls.config_class) != cls.name:
        raise TypeError(f"{cls.__name__}.config_class must default its `type` field to {cls.name!r}")
    POLICIES[cls.name] = cls
    return cls


def _load_builtin_policies() -> None:
    import roboreward.policies  # noqa: F401  (registers the built-ins)


def policy_class(name: str) -> type["Policy"]:
    _load_builtin_policies()
    if name not in POLICIES:
        raise ConfigError(f"policy type {name!r} is not registered; use one of {sorted(POLICIES)}")
    return POLICIES[name]


def make_policy(config: PolicyConfig | dict[str, Any]) -> "Policy":
    """Build the registered policy named by ``config.type`` (a config object or a plain dict)."""
    if isinstance(config, dict):
        if "type" not in config:
            raise ConfigError("policy: needs a `type` naming a policy")
        config = from_dict(policy_class(str(config["type"])).config_class, config, "policy")
    return policy_class(config.type)(config)


class Policy(nn.Module):
    """Base of every policy; subclasses set ``name`` and ``config_class`` (checked at definition)."""

    name: ClassVar[str]
    config_class: ClassVar[type[PolicyConfig]]

    def __init_subclass__(cls, abstract: bool = False, **kwargs):
        super().__init_subclass__(**kwargs)
        if abstract:
            return
        if not isinstance(getattr(cls, "name", None), str) or not cls.name:
            raise TypeError(f"{cls.__name__} must set the class attribute `name` (a non-empty str) to be a Policy")
        config_class = getattr(cls, "config_class", None)
        if not (isinstance(config_class, type) and dataclasses.is_dataclass(config_class)
                and issubclass(config_class, PolicyConfig)):
            raise TypeError(f"{cls.__name__} must set the class attribute `config_class` to a PolicyConfig dataclass")

    def __init__(self, config: PolicyConfig):
        super().__init__()
        if not isinstance(config, self.config_class):
            raise RoborewardError(f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config

    def loss(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        return torch.device("cpu")

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into the folder ``path`` (created)."""
        from safetensors.torch import save_model

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / CONFIG_NAME).write_text(json.dumps(self.config.to_dict(), indent=2) + "\n")
        save_model(self, str(path / WEIGHTS_NAME))
        return path

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu") -> "Policy":
        """Load a folder written by ``save_pretrained`` (any registered type when called on Policy)."""
        from safetensors.torch import load_model

        path = Path(path)
        cfg_file = path / CONFIG_NAME
        if not cfg_file.is_file():
            raise CheckpointError(f"checkpoint {path}: missing {CONFIG_NAME}; pass a folder written by save_pretrained")
        try:
            data = json.loads(cfg_file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{cfg_file}: not valid JSON ({_one_line(exc)})") from None
        if not isinstance(data, dict) or not isinstance(data.get("type"), str):
            raise CheckpointError(f"{cfg_file}: needs a JSON object with a string `type` naming a policy")
        _load_builtin_policies()
        if data["type"] not in POLICIES:
            raise CheckpointError(f"{cfg_file}: type {data['type']!r} is not a registered policy ({sorted(POLICIES)})")
        model_cls = POLICIES[data["type"]]
        if cls is not Policy and not issubclass(model_cls, cls):
            raise CheckpointError(f"{cfg_file}: holds a {data['type']!r} policy, not {cls.name!r}")
        try:
            config = from_dict(model_cls.config_class, data, str(cfg_file))
        except RoborewardError as exc:
            raise CheckpointError(_one_line(exc)) from None
        model = model_cls(config)
        weights = path / WEIGHTS_NAME
        if not weights.is_file():
            raise CheckpointError(f"checkpoint {path}: missing {WEIGHTS_NAME}")
        try:
            missing, unexpected = load_model(model, str(weights), strict=False, device=str(map_location))
        except Exception as exc:  # safetensors raises its own types for truncated or mismatched files
            raise CheckpointError(f"{weights}: cannot be loaded into {data['type']!r} ({_one_line(exc)})") from None
        if missing or unexpected:
            detail = f"missing {sorted(missing)[:3]}" if missing else f"unexpected {sorted(unexpected)[:3]}"
            raise CheckpointError(f"{weights}: weights do not match the config ({detail}); was config.json edited?")
        return model.to(map_location).eval()
