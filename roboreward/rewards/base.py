"""The one RewardModel API: every reward model (SARM, GRM, perceptual, baselines) implements it, and
every consumer (shaping, RA-BC, eval, deploy) takes any model through it.

- ``progress(batch) -> (B, T)`` in [0, 1]: offline, over whole clips or episodes.
- ``stream(n_envs) -> RewardStream``: online, one new frame per env per ``step``; old frames are
  never re-encoded (streams keep per-env buffers of cached features).
- ``loss(batch) -> {"loss": ..., ...}``: training; zero-shot models do not override it.
- ``save_pretrained(path)`` / ``from_pretrained(path)``: a folder with ``config.json`` and
  ``model.safetensors``. Never pickles: a checkpoint is data, loading it never runs code.

Models register by name (``@register_reward_model``) and are built from their config's ``type``
(``make_reward_model(config)``), so ``--reward.type=sarm`` works from the CLI and YAML.
"""
from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from ..config import ConfigError, from_dict
from ..errors import RoborewardError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


class CheckpointError(RoborewardError):
    """A checkpoint folder that cannot be loaded; the message names the file and the fix."""


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@dataclass
class RewardModelConfig:
    """Base of every reward model's config. Subclasses override ``type`` with their registered name
    and validate their own fields in ``__post_init__`` (calling ``super().__post_init__()``)."""

    type: str = ""
    """Registered reward model name (``sarm``, ...); selects the model class."""

    def __post_init__(self):
        if not isinstance(self.type, str) or not self.type:
            raise ConfigError(f"type must be a registered reward model name, got {self.type!r}")
        expected = _default_type(type(self))
        if expected and self.type != expected:
            raise ConfigError(f"type is {self.type!r} but {type(self).__name__} is the config of {expected!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _default_type(config_class: type) -> str:
    for f in dataclasses.fields(config_class):
        if f.name == "type":
            return f.default if isinstance(f.default, str) else ""
    return ""


REWARD_MODELS: dict[str, type["RewardModel"]] = {}
"""Registered reward models: name -> class."""


def register_reward_model(cls: type["RewardModel"]) -> type["RewardModel"]:
    """Class decorator: make ``cls`` buildable by ``make_reward_model`` and loadable by ``from_pretrained``."""
    if cls.name in REWARD_MODELS and REWARD_MODELS[cls.name] is not cls:
        raise TypeError(f"reward model name {cls.name!r} is registered twice ({REWARD_MODELS[cls.name].__name__}, {cls.__name__})")
    if _default_type(cls.config_class) != cls.name:
        raise TypeError(
            f"{cls.__name__}.config_class {cls.config_class.__name__} must default its `type` field to {cls.name!r}"
        )
    REWARD_MODELS[cls.name] = cls
    return cls


def _load_builtin_models() -> None:
    # Importing the package registers the built-in models; done lazily so base.py has no cycle.
    import roboreward.rewards  # noqa: F401


def reward_model_class(name: str) -> type["RewardModel"]:
    _load_builtin_models()
    if name not in REWARD_MODELS:
        raise ConfigError(f"reward type {name!r} is not registered; use one of {sorted(REWARD_MODELS)}")
    return REWARD_MODELS[name]


def reward_config_from_dict(data: dict[str, Any], where: str = "reward") -> RewardModelConfig:
    """The typed config of the model named by ``data["type"]`` (YAML, CLI or config.json)."""
    if not isinstance(data, dict) or "type" not in data:
        raise ConfigError(f"{where}: needs a `type` naming a reward model")
    cls = reward_model_class(str(data["type"]))
    return from_dict(cls.config_class, data, where)


def make_reward_model(config: RewardModelConfig | dict[str, Any]) -> "RewardModel":
    """Build the registered model named by ``config.type`` (a config object or a plain dict)."""
    if isinstance(config, dict):
        config = reward_config_from_dict(config)
    return reward_model_class(config.type)(config)


class RewardStream:
    """Online reward for ``n_envs`` parallel environments.

    ``step(observation, task)`` takes one new frame per env (cached features or raw frames, per
    the model) and returns progress (n_envs,); ``reset(i)`` forgets env i's history (call it when
    env i starts a new episode, before stepping it).
    """

    def __init__(self, n_envs: int):
        if not isinstance(n_envs, int) or n_envs < 1:
            raise RoborewardError(f"n_envs must be an int >= 1, got {n_envs!r}")
        self.n_envs = n_envs

    def _env_ids(self, i: int | Sequence[int] | None) -> list[int]:
        ids = list(range(self.n_envs)) if i is None else ([int(i)] if isinstance(i, int) else [int(j) for j in i])
        for j in ids:
            if not 0 <= j < self.n_envs:
                raise RoborewardError(f"env index {j} is out of range [0, {self.n_envs})")
        return ids

    def _tasks(self, task: str | Sequence[str]) -> list[str]:
        tasks = [task] * self.n_envs if isinstance(task, str) else list(task)
        if len(tasks) != self.n_envs:
            raise RoborewardError(f"got {len(tasks)} tasks for {self.n_envs} envs; pass one string or one per env")
        return tasks

    def reset(self, i: int | Sequence[int] | None = None) -> None:
        raise NotImplementedError

    def step(self, observation: dict[str, Any], task: str | Sequence[str]) -> torch.Tensor:
        raise NotImplementedError


class RewardModel(nn.Module):
    """Base of every reward model. Subclasses set ``name`` and ``config_class`` (checked when the
    subclass is defined) and implement ``progress`` and ``stream``; trainable ones also ``loss``.

    Optional methods that consumers look for (``roboreward.rewards.annotate``, ``roboreward.eval``):
    - ``stage_probs(batch, level) -> (B, T, K)``: stage probabilities, for stage accuracy;
    - ``episode_progress(store, episodes, level=None, reverse=False) -> list[(T_e,)]``: whole-episode
      progress for a model that does not read the store's feature cache through ``progress``.

    Pass ``abstract=True`` in the class statement for an intermediate base without a name.
    """

    name: ClassVar[str]
    config_class: ClassVar[type[RewardModelConfig]]

    def __init_subclass__(cls, abstract: bool = False, **kwargs):
        super().__init_subclass__(**kwargs)
        if abstract:
            return
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise TypeError(f"{cls.__name__} must set the class attribute `name` (a non-empty str) to be a RewardModel")
        config_class = getattr(cls, "config_class", None)
        if not (isinstance(config_class, type) and dataclasses.is_dataclass(config_class)
                and issubclass(config_class, RewardModelConfig)):
            raise TypeError(
                f"{cls.__name__} must set the class attribute `config_class` to a RewardModelConfig dataclass"
            )

    def __init__(self, config: RewardModelConfig):
        super().__init__()
        if not isinstance(config, self.config_class):
            raise RoborewardError(
                f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}"
            )
        self.config = config

    # ------------------------------------------------------------------ the API
    def progress(self, batch: dict[str, Any]) -> torch.Tensor:
        """(B, T) progress in [0, 1] for every frame of whole clips or episodes."""
        raise NotImplementedError

    def stream(self, n_envs: int) -> RewardStream:
        """An online reward for ``n_envs`` environments."""
        raise NotImplementedError

    def loss(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Training losses; ``"loss"`` is the one to minimise, the other keys are for logging."""
        raise RoborewardError(f"reward model {self.name!r} is zero-shot; it has no training loss")

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    # ------------------------------------------------------------------ checkpoints
    def save_pretrained(self, path: str | os.PathLike) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into the folder ``path`` (created)."""
        from safetensors.torch import save_model

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / CONFIG_NAME).write_text(json.dumps(self.config.to_dict(), indent=2) + "\n")
        # save_model (not save_file) because it handles tied/shared tensors.
        save_model(self, str(path / WEIGHTS_NAME))
        return path

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu") -> "RewardModel":
        """Load a folder written by ``save_pretrained``. Called on ``RewardModel`` it builds whatever
        model the config's ``type`` names; called on a subclass it also checks the type matches."""
        from safetensors import safe_open
        from safetensors.torch import load_model

        path = Path(path)
        if not path.is_dir():
            raise CheckpointError(f"checkpoint {path}: no such folder; pass a folder written by save_pretrained")
        cfg_file = path / CONFIG_NAME
        if not cfg_file.is_file():
            raise CheckpointError(f"checkpoint {path}: missing {CONFIG_NAME}; not a folder written by save_pretrained")
        try:
            data = json.loads(cfg_file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{cfg_file}: not valid JSON ({_one_line(exc)})") from None
        if not isinstance(data, dict) or not isinstance(data.get("type"), str):
            raise CheckpointError(f"{cfg_file}: needs a JSON object with a string `type` naming a reward model")
        _load_builtin_models()
        if data["type"] not in REWARD_MODELS:
            raise CheckpointError(
                f"{cfg_file}: type {data['type']!r} is not a registered reward model (registered: {sorted(REWARD_MODELS)})"
            )
        model_cls = REWARD_MODELS[data["type"]]
        if cls is not RewardModel and not issubclass(model_cls, cls):
            raise CheckpointError(f"{cfg_file}: holds a {data['type']!r} model, not {cls.name!r}")
        try:
            config = from_dict(model_cls.config_class, data, str(cfg_file))
        except RoborewardError as exc:
            raise CheckpointError(_one_line(exc)) from None
        model = model_cls(config)
        weights = path / WEIGHTS_NAME
        if not weights.is_file():
            raise CheckpointError(f"checkpoint {path}: missing {WEIGHTS_NAME}")
        try:
            with safe_open(str(weights), framework="pt") as f:
                shapes = {k: list(f.get_slice(k).get_shape()) for k in f.keys()}
        except Exception as exc:  # safetensors raises its own types for truncated or foreign files
            raise CheckpointError(f"{weights}: cannot be read as safetensors weights ({_one_line(exc)})") from None
        for key, tensor in model.state_dict().items():
            if key in shapes and shapes[key] != list(tensor.shape):
                raise CheckpointError(
                    f"{weights}: tensor {key} has shape {shapes[key]} but config.json builds {list(tensor.shape)}; "
                    "was config.json edited?"
                )
        try:
            missing, unexpected = load_model(model, str(weights), strict=False, device=str(map_location))
        except Exception as exc:
            raise CheckpointError(f"{weights}: cannot be loaded into {data['type']!r} ({_one_line(exc)})") from None
        if missing or unexpected:
            detail = f"missing {sorted(missing)[:3]}" if missing else f"unexpected {sorted(unexpected)[:3]}"
            raise CheckpointError(f"{weights}: weights do not match the config ({detail}); was config.json edited?")
        return model.to(map_location).eval()
