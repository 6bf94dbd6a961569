"""Typed configs from YAML: dataclasses, nested, with one-line errors for unknown or bad fields.

``load_config(DemoConfig, "configs/demo.yaml")`` reads with yaml.safe_load (never executes
anything), rejects keys the dataclass does not declare (naming the allowed ones), converts scalars
to the declared types, and lets ``__post_init__`` validation speak for the values.
"""
from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import yaml

from .errors import RoborewardError


class ConfigError(RoborewardError):
    pass


def _convert(tp, value, where: str):
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(args[0], value, where) if len(args) == 1 else value
    if tp in (int, float, str, bool):
        if tp is bool and not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        try:
            return tp(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}") from None
    return value


def from_dict(cls, data: dict | None, where: str = "config"):
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(sorted(fields))}")
    hints = typing.get_type_hints(cls)
    kwargs = {k: _convert(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except RoborewardError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def load_config(cls, path: str | Path | None):
    """The dataclass ``cls`` from a YAML file (None: the embedded defaults)."""
    if path is None:
        return cls()
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config {path} not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return from_dict(cls, data, where=str(path))
