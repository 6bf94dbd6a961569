"""The zarr episode store's schema: what a store holds and how its root attributes describe it.

Layout (diffusion_policy's ReplayBuffer layout, on zarr 3)::

    store.zarr/
      data/<key>            time-major arrays, all episodes concatenated (T_total, ...)
      meta/episode_ends     int64 (n_episodes,), exclusive end frame of each episode
      features/<encoder>/<camera>   cached frozen-encoder features (see cache.py)
      zarr.json             root attributes: the versioned schema below

Root attribute ``roboreward`` (a dict)::

    schema_version: int           SCHEMA_VERSION
    fps: float                    control / recording rate
    robot_type: str               e.g. "so101_follower"
    features: {key: {shape, dtype, kind, names}}   per-frame shape (without time)
    cameras: [key, ...]           the rgb feature keys, in view order
    episodes: [{task, success, quality, length, annotations: {sparse: [[name, start, end]], dense: [...]},
                info (optional, free-form JSON; absent when empty)}]

``episodes`` is the commit record: an episode exists once its entry is in the root attributes.
Arrays may run ahead of it after an interrupted write; readers ignore that tail and writers drop it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ..errors import RoborewardError

SCHEMA_VERSION = 1
ATTRS_KEY = "roboreward"
KINDS = ("rgb", "low_dim", "target")
"""Feature kinds: ``rgb`` camera frames (uint8 HxWx3), ``low_dim`` state/action vectors,
``target`` per-frame ground truth from a simulator (progress, stage...), never a model input."""
ANNOTATION_LEVELS = ("sparse", "dense")
QUALITIES = ("expert", "suboptimal", "failure", "unknown")

Kind = Literal["rgb", "low_dim", "target"]


class StoreError(RoborewardError):
    """A store, episode or argument that does not match the schema. The message is one line that
    names the array or episode, the problem and the fix."""


@dataclass(frozen=True)
class Subtask:
    """One annotated subtask: frames [start, end) of its episode (end exclusive)."""

    name: str
    start: int
    end: int

    def to_json(self) -> list:
        return [self.name, int(self.start), int(self.end)]

    @classmethod
    def from_json(cls, value: Any) -> "Subtask":
        if not (isinstance(value, (list, tuple)) and len(value) == 3):
            raise StoreError(f"annotation {value!r} is not [name, start_frame, end_frame]")
        name, start, end = value
        return cls(str(name), int(start), int(end))


@dataclass(frozen=True)
class FeatureSpec:
    """Shape and type of one per-frame feature, declared once and shared by store, models and envs."""

    shape: tuple[int, ...]
    dtype: str
    kind: Kind
    names: list[str] | None = None
    """Per-dimension names for low_dim features (LeRobot's ``names``), e.g. ``shoulder_pan.pos``."""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise StoreError(f"feature kind {self.kind!r} is not one of {KINDS}")
        if self.kind == "rgb" and (len(self.shape) != 3 or self.shape[2] != 3 or self.dtype != "uint8"):
            raise StoreError(f"rgb features must be uint8 (H, W, 3), got {self.dtype} {self.shape}")
        np.dtype(self.dtype)  # raises on a bad dtype name

    def to_json(self) -> dict:
        out = {"shape": list(self.shape), "dtype": self.dtype, "kind": self.kind}
        if self.names is not None:
            out["names"] = list(self.names)
        return out

    @classmethod
    def from_json(cls, value: dict) -> "FeatureSpec":
        return cls(tuple(int(s) for s in value["shape"]), str(value["dtype"]), value["kind"], value.get("names"))


@dataclass
class Episode:
    """One demonstration in memory: what a demonstrator, an importer or a deploy recorder produces
    and what ``StoreWriter.add_episode`` takes.

    ``data`` maps feature keys (LeRobot names: ``observation.state``, ``action``,
    ``observation.images.<camera>``; ground truth under ``gt.*``) to time-major arrays of equal length.
    """

    data: dict[str, np.ndarray]
    task: str
    success: bool | None = None
    quality: str = "unknown"
    annotations: dict[str, list[Subtask]] = field(default_factory=dict)
    """``{"sparse": [...], "dense": [...]}``; each list sorted, non-overlapping, inside the episode."""
    info: dict[str, Any] = field(default_factory=dict)
    """Free-form JSON metadata of the episode (e.g. ``{"visual": ...}``, the appearance a generator
    drew); stored with the episode's entry, left out of it when empty."""

    @property
    def length(self) -> int:
        lengths = {len(v) for v in self.data.values()}
        if len(lengths) != 1:
            detail = ", ".join(f"{k}={len(v)}" for k, v in self.data.items())
            raise StoreError(f"episode arrays differ in length ({detail}); every key needs one entry per frame")
        return lengths.pop()


@dataclass
class EpisodeInfo:
    """Per-episode metadata kept in the root attributes (the commit record)."""

    task: str
    length: int
    success: bool | None = None
    quality: str = "unknown"
    annotations: dict[str, list[Subtask]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    """Free-form JSON metadata (``Episode.info``). Left out of the entry when empty, so stores without
    it are unchanged; readers that predate it ignore the key (``from_json`` reads known keys only)."""

    def to_json(self) -> dict:
        out = {
            "task": self.task,
            "length": int(self.length),
            "success": self.success,
            "quality": self.quality,
            "annotations": {lvl: [s.to_json() for s in subs] for lvl, subs in self.annotations.items()},
        }
        if self.info:
            out["info"] = self.info
        return out

    @classmethod
    def from_json(cls, value: dict) -> "EpisodeInfo":
        return cls(
            task=str(value["task"]),
            length=int(value["length"]),
            success=value.get("success"),
            quality=str(value.get("quality", "unknown")),
            annotations={
                lvl: [Subtask.from_json(s) for s in subs] for lvl, subs in value.get("annotations", {}).items()
            },
            info=dict(value.get("info") or {}),
        )


def check_info(info: Any, where: str) -> dict:
    """``info`` as the JSON it is stored as (tuples become lists, numpy scalars are refused), or a
    StoreError naming the problem; checked before any write."""
    import json

    if not isinstance(info, dict):
        raise StoreError(f"{where}: info must be a dict of JSON values, got {type(info).__name__}")
    try:
        return json.loads(json.dumps(info, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise StoreError(f"{where}: info is not JSON ({exc}); use plain str/int/float/bool/list/dict values") from None


def check_annotations(annotations: dict[str, list[Subtask]], length: int, where: str) -> None:
    """Raise StoreError unless every level is known and its subtasks are sorted, non-overlapping,
    non-empty and inside [0, length)."""
    for level, subs in annotations.items():
        if level not in ANNOTATION_LEVELS:
            raise StoreError(f"{where}: unknown annotation level {level!r}; use one of {ANNOTATION_LEVELS}")
        prev_end = 0
        for i, s in enumerate(subs):
            if s.start < 0 or s.end > length:
                raise StoreError(
                    f"{where}: {level} subtask {i} '{s.name}' [{s.start}, {s.end}) lies outside the episode "
                    f"[0, {length}); fix its frame indices"
                )
            if s.end <= s.start:
                raise StoreError(f"{where}: {level} subtask {i} '{s.name}' is empty or reversed [{s.start}, {s.end})")
            if s.start < prev_end:
                raise StoreError(
                    f"{where}: {level} subtask {i} '{s.name}' starts at {s.start}, before the previous one ends "
                    f"({prev_end}); subtasks must be sorted and must not overlap"
                )
            prev_end = s.end
