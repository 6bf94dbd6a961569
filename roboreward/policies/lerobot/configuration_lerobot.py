"""Config of LeRobot's own policies (ACT, Diffusion Policy) trained here: which store keys they read,
the fields of LeRobot's config to set (``lerobot``), and the dataset statistics LeRobot's
normaliser needs. ``lerobot_config()`` builds LeRobot's ``ACTConfig`` / ``DiffusionConfig``; the
trained policy is saved in LeRobot's own format (see ``modeling_lerobot``).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ...config import ConfigError
from ..base import PolicyConfig

if TYPE_CHECKING:
    from ...data.store import EpisodeStore

STAT_NAMES = ("mean", "std", "min", "max")
IMAGE_STAT_FRAMES = 512
"""Frames per camera (evenly spaced over the training episodes) for the per-channel image statistics."""
FIXED = ("type", "input_features", "output_features", "device", "normalization_mapping", "push_to_hub", "repo_id")
"""Fields of LeRobot's config this project sets itself (from the store) or never uses."""


def lerobot_classes(kind: str):
    """(LeRobot config class, LeRobot policy class) of ``act`` or ``diffusion``."""
    if kind == "act":
        from lerobot.policies.act.configuration_act import ACTConfig
        from lerobot.policies.act.modeling_act import ACTPolicy

        return ACTConfig, ACTPolicy
    if kind == "diffusion":
        try:
            from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig
            from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy
        except ImportError as exc:  # diffusers is LeRobot's `diffusion` extra
            raise ConfigError(f"LeRobot's DiffusionPolicy needs its `diffusion` extra ({exc}); "
                              "pip install 'lerobot[diffusion]'") from None
        return DiffusionConfig, DiffusionPolicy
    raise ConfigError(f"LeRobot policy type {kind!r} is not supported here; supported: act, diffusion")


@dataclass
class LeRobotPolicyConfig(PolicyConfig):
    type: str = ""
    """``act`` or ``diffusion`` (LeRobot's names)."""
    cameras: list[str] = field(default_factory=list)
    """Camera keys of the store the policy reads (LeRobot's ``observation.images.<name>``); empty =
    every camera of the store (``from_store``)."""
    state_key: str = "observation.state"
    """Proprioceptive input (LeRobot's ``observation.state``)."""
    env_state_key: str | None = None
    """Optional privileged object state (``observation.environment_state``); sim stores only."""
    action_key: str = "action"
    """Action key (LeRobot units: joint positions in degrees, gripper 0..100)."""
    lerobot: dict[str, Any] = field(default_factory=dict)
    """Fields of LeRobot's ACTConfig / DiffusionConfig (e.g. ``chunk_size``, ``dim_model``,
    ``down_dims``). ``pretrained_backbone_weights`` defaults to null here: torchvision's ImageNet
    weights would be downloaded, and nothing may be at run time."""

    image_shape: list[int] = field(default_factory=list)
    """(H, W) of the store's frames (filled by ``from_store``)."""
    state_dim: int = 0
    env_state_dim: int = 0
    action_dim: int = 0
    stats: dict[str, dict[str, list]] = field(default_factory=dict)
    """Per key: mean/std/min/max (images per channel), as LeRobot's dataset stats (``from_store``)."""

    data_derived: ClassVar[tuple[str, ...]] = ("image_shape", "state_dim", "env_state_dim", "action_dim", "stats")
    pixels: ClassVar[bool] = True
    """The policy encodes raw camera frames itself (no feature cache)."""
    feature_key: ClassVar[None] = None
    frame_gap: ClassVar[int] = 1
    """LeRobot's observation and action indices are consecutive frames."""

    def __post_init__(self):
        super().__post_init__()
        self.cameras = list(self.cameras)
        if len(set(self.cameras)) != len(self.cameras):
            raise ConfigError(f"cameras must be distinct, got {self.cameras}")
        if not isinstance(self.lerobot, dict):
            raise ConfigError(f"lerobot must be a mapping of LeRobot {self.type} config fields, got {self.lerobot!r}")
        cfg_cls, _ = lerobot_classes(self.type)
        names = [f.name for f in dataclasses.fields(cfg_cls) if f.init]
        for key in self.lerobot:
            if key in FIXED:
                raise ConfigError(f"lerobot.{key} is set from the store here; remove it")
            if key not in names:
                raise ConfigError(f"lerobot.{key} is not a field of LeRobot's {cfg_cls.__name__}; fields: "
                                  f"{', '.join(n for n in names if n not in FIXED)}")
        if self.env_state_key is None and self.env_state_dim:
            raise ConfigError("env_state_dim is set without env_state_key")
        if self.stats:
            for key, values in self.stats.items():
                missing = [s for s in STAT_NAMES if s not in values]
                if missing:
                    raise ConfigError(f"stats[{key!r}] lacks {missing}; build the config with from_store")
                if not all(math.isfinite(float(v)) for s in STAT_NAMES for v in np.ravel(values[s])):
                    raise ConfigError(f"stats[{key!r}] has non-finite values")

    # ------------------------------------------------------------------ what the dataset and runner read
    def lerobot_config(self):
        """LeRobot's config object for these inputs (its own validation runs here); built once."""
        key = repr((self.type, self.cameras, self.state_key, self.env_state_key, self.lerobot, self.image_shape,
                    self.state_dim, self.env_state_dim, self.action_dim))
        cached = self.__dict__.get("_lerobot_cache")
        if cached is None or cached[0] != key:
            cached = (key, self._build_lerobot_config())
            self.__dict__["_lerobot_cache"] = cached
        return cached[1]

    def _build_lerobot_config(self):
        from lerobot.configs.types import FeatureType, PolicyFeature

        cfg_cls, _ = lerobot_classes(self.type)
        h, w = self.image_shape or (0, 0)
        inputs = {self.state_key: PolicyFeature(FeatureType.STATE, (self.state_dim,))}
        if self.env_state_key:
            inputs[self.env_state_key] = PolicyFeature(FeatureType.ENV, (self.env_state_dim,))
        for cam in self.cameras:
            inputs[cam] = PolicyFeature(FeatureType.VISUAL, (3, h, w))
        outputs = {"action": PolicyFeature(FeatureType.ACTION, (self.action_dim,))}
        fields = {"pretrained_backbone_weights": None, **self.lerobot}
        for key, value in list(fields.items()):
            if isinstance(value, list):  # YAML gives lists where LeRobot declares tuples
                fields[key] = tuple(value)
        try:
            return cfg_cls(input_features=inputs, output_features=outputs, device="cpu", **fields)
        except (ValueError, TypeError, NotImplementedError) as exc:
            raise ConfigError(f"LeRobot's {cfg_cls.__name__} refuses these settings: {str(exc).splitlines()[0]}") from None

    @property
    def window(self) -> int:
        """Observation frames per sample: LeRobot's ``n_obs_steps``."""
        return int(self.lerobot_config().n_obs_steps)

    @property
    def horizon(self) -> int:
        """Actions per training sample (LeRobot's ``action_delta_indices``)."""
        return len(self.lerobot_config().action_delta_indices)

    @property
    def action_start(self) -> int:
        """Offset of the first action of a training sample from the current frame."""
        return int(self.lerobot_config().action_delta_indices[0])

    def check_ready(self) -> None:
        if not self.stats or not self.image_shape and self.cameras or not self.state_dim or not self.action_dim:
            raise ConfigError(f"the {self.type} policy config has no dataset statistics; build it with from_store(store, ...)")

    @classmethod
    def check_overrides(cls, overrides: dict[str, Any], where: str = "policy") -> dict[str, Any]:
        checked = super().check_overrides(overrides, where)
        try:
            probe = cls(**checked)
            # LeRobot's own checks of its fields (e.g. n_action_steps <= chunk_size) on placeholder
            # inputs, so a bad value fails before any data is read.
            probe.state_dim, probe.action_dim, probe.image_shape = 1, 1, [96, 96]
            probe.cameras = probe.cameras or ["observation.images.probe"]
            probe.env_state_dim = 1 if probe.env_state_key else 0
            probe.lerobot_config()
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        return checked

    @classmethod
    def from_store(cls, store: "EpisodeStore", feature_key: str | None = None, episodes: Sequence[int] | None = None,
                   **overrides: Any) -> "LeRobotPolicyConfig":
        """Inputs and statistics from ``store`` over ``episodes`` (the training split); ``feature_key``
        is ignored (the policy reads pixels). A camera the store lacks is one line."""
        from ..data import low_dim_values, store_cameras

        overrides = cls.check_overrides(overrides)
        cameras = store_cameras(store, overrides.pop("cameras", None))
        eps = list(range(store.n_episodes)) if episodes is None else [int(e) for e in episodes]
        stats: dict[str, dict[str, list]] = {}
        dims: dict[str, int] = {}
        keys = {"state": overrides.get("state_key", "observation.state"), "env_state": overrides.get("env_state_key"),
                "action": "action"}  # LeRobot's stats key for actions is always its output feature's name
        for name, values in low_dim_values(store, overrides, eps).items():
            dims[f"{name}_dim"] = int(values.shape[1])
            stats[keys[name]] = {"mean": values.mean(0).tolist(), "std": values.std(0).tolist(),
                                 "min": values.min(0).tolist(), "max": values.max(0).tolist()}
        frames = np.concatenate([np.arange(*store.episode_range(e)) for e in eps])
        pick = np.unique(np.linspace(0, len(frames) - 1, min(IMAGE_STAT_FRAMES, len(frames))).round().astype(int))
        shape: list[int] = []
        for cam in cameras:
            arr = store.array(cam)
            shape = [int(arr.shape[1]), int(arr.shape[2])]
            pixels = np.stack([np.asarray(arr[int(t)]) for t in frames[pick]]).astype(np.float64) / 255.0  # (N, H, W, 3)
            per_channel = pixels.reshape(-1, 3)
            stats[cam] = {s: getattr(per_channel, s)(0).reshape(3, 1, 1).tolist() for s in STAT_NAMES}
        return cls(**{**overrides, "cameras": cameras, "image_shape": shape, "stats": stats, **dims})


@dataclass
class ACTWrapperConfig(LeRobotPolicyConfig):
    type: str = "act"
    """LeRobot's ACT (Action Chunking Transformer)."""


@dataclass
class DiffusionWrapperConfig(LeRobotPolicyConfig):
    type: str = "diffusion"
    """LeRobot's Diffusion Policy."""
