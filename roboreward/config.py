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
    """``value`` as the declared type ``tp``, or a one-line ConfigError naming ``where``. Numbers may
    come as strings (PyYAML reads ``3e-4`` as one) but never as bools, and an int is never made
    from a fraction; ``list[X]`` / ``dict[K, V]`` need a list / mapping (bare ``list``/``dict``
    fields validate their own values)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(args[0], value, where) if len(args) == 1 else value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp in (int, float):
        number = value
        if isinstance(value, str):
            try:
                number = float(value) if tp is float else int(value)
            except ValueError:
                number = None
        if isinstance(number, bool) or not isinstance(number, (int, float)) or (
            tp is int and not float(number).is_integer()
        ):
            raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
        return tp(number)
    if tp is str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    args = typing.get_args(tp)
    if origin in (list, tuple) and args:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        item = args[0]
        items = [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict and args:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {_convert(args[0], k, f"{where} key"): _convert(args[1], v, f"{where}.{k}") for k, v in value.items()}
    return value


def check_fields(cls, data: dict, where: str = "config", derived: tuple[str, ...] = ()) -> dict:
    """``data`` with every value converted to its field's declared type; refuses, in one line, a key
    that ``cls`` does not declare (naming the allowed ones), a key in ``derived`` (filled from the
    data, so a value given here would be overwritten) and a value of the wrong type. Values are not
    otherwise validated: that is ``cls.__post_init__``'s job."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        allowed = sorted(set(fields) - set(derived))
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(allowed)}")
    given = sorted(set(data) & set(derived))
    if given:
        raise ConfigError(f"{where}.{given[0]} is read from the dataset; remove it (data-derived: {', '.join(derived)})")
    hints = typing.get_type_hints(cls)
    return {k: _convert(hints[k], v, f"{where}.{k}") for k, v in data.items()}


def from_dict(cls, data: dict | None, where: str = "config"):
    kwargs = check_fields(cls, {} if data is None else data, where)
    try:
        return cls(**kwargs)
    except RoborewardError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _merged(base: typing.Any, over: typing.Any) -> typing.Any:
    """``over`` laid on ``base``: mappings merge key by key (recursively), any other value replaces."""
    if not (isinstance(base, dict) and isinstance(over, dict)):
        return over
    out = dict(base)
    for key, value in over.items():
        out[key] = _merged(base[key], value) if key in base else value
    return out


def config_data(path: str | Path, _chain: tuple[Path, ...] = ()) -> typing.Any:
    """The parsed YAML of config file ``path`` with its ``base:`` resolved: a file that names
    ``base: other.yaml`` (relative to its own folder) is that file with this one's values laid
    over it, so a variant lists only what it changes (``configs/reward/sarm_nostate.yaml``)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config {path} not found" + (f" (the base of {_chain[-1]})" if _chain else ""))
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not (isinstance(data, dict) and "base" in data):
        return data
    data = dict(data)
    base = data.pop("base")
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{path}: base must be the file name of another config, got {base!r}")
    base_path = (path.parent / base).resolve()
    if base_path in (*_chain, path.resolve()):
        raise ConfigError(f"{path}: base {base!r} leads back to itself; a config cannot extend itself")
    return _merged(config_data(base_path, (*_chain, path.resolve())), data)


def load_config(cls, path: str | Path | None):
    """The dataclass ``cls`` from a YAML file (None: the embedded defaults), its ``base:`` resolved
    (``config_data``)."""
    if path is None:
        return cls()
    return from_dict(cls, config_data(path), where=str(path))
