"""What every learned component shares: a typed config named by ``type``, a registry by name, and
checkpoints as ``config.json`` + ``model.safetensors`` (never pickles: loading runs no code).

``RewardModel`` (rewards/base.py) and ``Policy`` (policies/base.py) are ``Pretrained`` modules,
each with its own ``Registry``; a new family (say, value functions) is one more pair of the same.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from .config import ConfigError, check_fields, from_dict
from .errors import RoborewardError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


class CheckpointError(RoborewardError):
    """A checkpoint folder that cannot be loaded; the message names the file and the fix."""


def one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def default_type(config_class: type) -> str:
    """The default of a config dataclass's ``type`` field: the name it is registered under."""
    for f in dataclasses.fields(config_class):
        if f.name == "type":
            return f.default if isinstance(f.default, str) else ""
    return ""


@dataclass
class TypedConfig:
    """Base of a component's config. Subclasses default ``type`` to their registered name and
    validate their own fields in ``__post_init__`` (calling ``super().__post_init__()``)."""

    type: str = ""
    """Registered name of the component; selects its class."""

    kind: ClassVar[str] = "component"
    data_derived: ClassVar[tuple[str, ...]] = ()
    """Fields that ``from_store`` fills from the data; given as an override they are refused, since
    they would be overwritten."""
    readout_fields: ClassVar[tuple[str, ...]] = ()
    """Fields that change how a trained model's outputs are read, not its weights: they may be
    overridden when a checkpoint is loaded (``from_pretrained(path, overrides=...)``), no retraining."""

    @classmethod
    def check_overrides(cls, overrides: dict[str, Any], where: str) -> dict[str, Any]:
        """``overrides`` (fields given by a user: a YAML section, ``from_store``'s keywords) with
        values converted to the declared types. A key the config does not have, a data-derived one
        or a value of the wrong type is one ConfigError line naming ``where``, the key and the
        allowed keys, instead of a TypeError from the constructor. Subclasses may check more
        without the data (value ranges), so a bad value fails before any data is read."""
        return check_fields(cls, overrides, where, cls.data_derived)

    def __post_init__(self):
        if not isinstance(self.type, str) or not self.type:
            raise ConfigError(f"type must be a registered {self.kind} name, got {self.type!r}")
        expected = default_type(type(self))
        if expected and self.type != expected:
            raise ConfigError(f"type is {self.type!r} but {type(self).__name__} is the config of {expected!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Registry:
    """Name -> class for one family of components. ``builtins`` is a module whose import registers
    the built-in ones (imported lazily, so base modules have no import cycle)."""

    def __init__(self, kind: str, short: str, builtins: str):
        self.kind, self.short, self.builtins = kind, short, builtins
        self.classes: dict[str, type] = {}

    def register(self, cls: type) -> type:
        """Class decorator: make ``cls`` buildable by ``make`` and loadable by ``from_pretrained``."""
        if cls.name in self.classes and self.classes[cls.name] is not cls:
            raise TypeError(f"{self.kind} name {cls.name!r} is registered twice ({self.classes[cls.name].__name__}, {cls.__name__})")
        if default_type(cls.config_class) != cls.name:
            raise TypeError(f"{cls.__name__}.config_class {cls.config_class.__name__} must default its `type` field to {cls.name!r}")
        self.classes[cls.name] = cls
        return cls

    def names(self) -> list[str]:
        importlib.import_module(self.builtins)
        return sorted(self.classes)

    def get(self, name: str) -> type:
        if name not in self.names():
            raise ConfigError(f"{self.short} type {name!r} is not registered; use one of {self.names()}")
        return self.classes[name]

    def config_from_dict(self, data: dict[str, Any], where: str) -> TypedConfig:
        """The typed config of the class named by ``data["type"]`` (YAML, CLI or config.json)."""
        if not isinstance(data, dict) or "type" not in data:
            raise ConfigError(f"{where}: needs a `type` naming a {self.kind}")
        return from_dict(self.get(str(data["type"])).config_class, data, where)

    def make(self, config: TypedConfig | dict[str, Any], where: str) -> nn.Module:
        if isinstance(config, dict):
            config = self.config_from_dict(config, where)
        return self.get(config.type)(config)


class Pretrained(nn.Module):
    """A registered module with a typed config and safetensors checkpoints. Family bases set
    ``registry`` and ``config_base`` and pass ``abstract=True``; concrete classes set ``name`` and
    ``config_class`` (checked when the class is defined)."""

    registry: ClassVar[Registry]
    config_base: ClassVar[type[TypedConfig]]
    name: ClassVar[str]
    config_class: ClassVar[type[TypedConfig]]

    def __init_subclass__(cls, abstract: bool = False, **kwargs):
        super().__init_subclass__(**kwargs)
        if abstract:
            return
        family = cls.config_base.__name__.removesuffix("Config")
        if not isinstance(getattr(cls, "name", None), str) or not cls.name:
            raise TypeError(f"{cls.__name__} must set the class attribute `name` (a non-empty str) to be a {family}")
        config_class = getattr(cls, "config_class", None)
        if not (isinstance(config_class, type) and dataclasses.is_dataclass(config_class)
                and issubclass(config_class, cls.config_base)):
            raise TypeError(f"{cls.__name__} must set the class attribute `config_class` to a {cls.config_base.__name__} dataclass")

    folder_format: ClassVar[str | None] = None
    """None: the folder is ``config.json`` (this project's config) + ``model.safetensors``. A class
    that saves in another library's format names it here and implements ``from_folder``."""

    @classmethod
    def from_folder(cls, path: Path, data: dict[str, Any], map_location: str | torch.device = "cpu"):
        raise NotImplementedError

    def load_weights(self, file: str | os.PathLike) -> None:
        """Load a ``model.safetensors`` written by ``save_pretrained`` into this module (strict);
        the training loop's resume calls it. Classes with their own folder format override it."""
        from safetensors.torch import load_model

        load_model(self, str(file), strict=True)

    def __init__(self, config: TypedConfig):
        super().__init__()
        if not isinstance(config, self.config_class):
            raise RoborewardError(f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

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
    def from_pretrained(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu",
                        overrides: dict[str, Any] | None = None):
        """Load a folder written by ``save_pretrained``. Called on a family base it builds whatever
        class the config's ``type`` names; called on a concrete class it also checks the type.
        ``overrides`` replaces config fields the class lists in ``readout_fields`` (how outputs are
        read, e.g. SARM's readout filter); any other field is refused, since the weights fix it."""
        from safetensors import safe_open
        from safetensors.torch import load_model

        registry, kind = cls.registry, cls.registry.kind
        path = Path(path)
        if not path.is_dir():
            raise CheckpointError(f"checkpoint {path}: no such folder; pass a folder written by save_pretrained")
        cfg_file = path / CONFIG_NAME
        if not cfg_file.is_file():
            raise CheckpointError(f"checkpoint {path}: missing {CONFIG_NAME}; not a folder written by save_pretrained")
        try:
            data = json.loads(cfg_file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{cfg_file}: not valid JSON ({one_line(exc)})") from None
        if not isinstance(data, dict) or not isinstance(data.get("type"), str):
            raise CheckpointError(f"{cfg_file}: needs a JSON object with a string `type` naming a {kind}")
        if data["type"] not in registry.names():
            raise CheckpointError(f"{cfg_file}: type {data['type']!r} is not a registered {kind} (registered: {registry.names()})")
        model_cls = registry.classes[data["type"]]
        if "name" in cls.__dict__ and not issubclass(model_cls, cls):
            raise CheckpointError(f"{cfg_file}: holds a {data['type']!r} model, not {cls.name!r}")
        if model_cls.folder_format is not None:
            # A class that keeps another library's folder layout (LeRobot's policies) reads it itself.
            if overrides:
                raise CheckpointError(f"checkpoint {path}: {data['type']!r} has no readout fields to override")
            model = model_cls.from_folder(path, data, map_location)
            model.checkpoint_path = str(path)
            return model.to(map_location).eval()
        if overrides:
            allowed = model_cls.config_class.readout_fields
            fixed = sorted(set(overrides) - set(allowed))
            if fixed:
                raise CheckpointError(
                    f"checkpoint {path}: {fixed[0]!r} is fixed by the trained weights and cannot be overridden; "
                    f"readout fields of {data['type']!r}: {', '.join(allowed) or 'none'}"
                )
            data = {**data, **overrides}
        try:
            config = from_dict(model_cls.config_class, data, str(cfg_file))
        except RoborewardError as exc:
            raise CheckpointError(one_line(exc)) from None
        model = model_cls(config)
        weights = path / WEIGHTS_NAME
        if not weights.is_file():
            pickles = sorted(p.name for p in path.iterdir() if p.suffix in (".pt", ".pth", ".bin", ".pkl", ".ckpt"))
            hint = (f" ({pickles[0]} is there, but pickled checkpoints are never loaded: they can run code; "
                    "save the weights as safetensors)") if pickles else ""
            raise CheckpointError(f"checkpoint {path}: missing {WEIGHTS_NAME}{hint}")
        try:
            with safe_open(str(weights), framework="pt") as f:
                shapes = {k: list(f.get_slice(k).get_shape()) for k in f.keys()}
        except Exception as exc:  # safetensors raises its own types for truncated or foreign files
            raise CheckpointError(f"{weights}: cannot be read as safetensors weights ({one_line(exc)})") from None
        for key, tensor in model.state_dict().items():
            if key in shapes and shapes[key] != list(tensor.shape):
                raise CheckpointError(
                    f"{weights}: tensor {key} has shape {shapes[key]} but config.json builds {list(tensor.shape)}; "
                    "was config.json edited?"
                )
        try:
            missing, unexpected = load_model(model, str(weights), strict=False, device=str(map_location))
        except Exception as exc:
            raise CheckpointError(f"{weights}: cannot be loaded into {data['type']!r} ({one_line(exc)})") from None
        if missing or unexpected:
            detail = f"missing {sorted(missing)[:3]}" if missing else f"unexpected {sorted(unexpected)[:3]}"
            raise CheckpointError(f"{weights}: weights do not match the config ({detail}); was config.json edited?")
        model.checkpoint_path = str(path)  # where it came from, for the records of annotate and eval
        return model.to(map_location).eval()
