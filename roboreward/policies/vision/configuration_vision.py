"""Config of the visuomotor BC policy: the store's cameras and joint state in, an action chunk out,
with a trainable convolutional encoder per camera (spatial-softmax keypoints, as robomimic and
diffusion_policy pool their ResNet features) and the augmentation it trains with."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ...config import ConfigError
from ..base import PolicyConfig
from ..bc.configuration_bc import LOSSES, STD_FLOOR

if TYPE_CHECKING:
    from ...data.store import EpisodeStore


@dataclass
class VisionBCConfig(PolicyConfig):
    type: str = "vision_bc"
    """Registered name; always ``vision_bc``."""

    # ---------------------------------------------------------------- inputs
    cameras: list[str] = field(default_factory=list)
    """Camera keys of the store, in order; empty = every camera of the store (``from_store``)."""
    state_key: str = "observation.state"
    """Joint state input."""
    env_state_key: str | None = None
    """Optional privileged object state; None for a policy that can go to a real arm."""
    window: int = 1
    """Observation frames per sample (causal, ending at t)."""
    frame_gap: int = 1
    """Frames between the observation frames."""
    input_size: int = 0
    """Side the frames are resized to before the encoder (0 = as stored)."""

    # ---------------------------------------------------------------- outputs
    action_key: str = "action"
    horizon: int = 10
    """Actions predicted per step."""
    execute: int = 0
    """Actions of each chunk executed before the policy is asked again (0 = the whole chunk). A
    readout field: ``sim eval --execute`` or a loaded checkpoint may change it. Measured on
    pick_place (RA-BC layout, expert-only policy): 10 of 10 executed 27/30, 5 of 10 16/50, 2 of 10
    3/30: replanning every few steps from one frame switches between the demos' modes."""

    # ---------------------------------------------------------------- network
    channels: list[int] = field(default_factory=lambda: [32, 64, 128, 128])
    """Conv trunk widths; every layer but the last halves the resolution."""
    keypoints: int = 32
    """Spatial-softmax keypoints per camera (each gives an expected (x, y))."""
    hidden_dim: int = 256
    n_layers: int = 2
    dropout: float = 0.0
    loss: str = "l1"

    # ---------------------------------------------------------------- augmentation (training only)
    shift: int = 4
    """Random shift in pixels (pad by ``shift`` with edge pixels, crop back), DrQ's augmentation."""
    colour: float = 0.1
    """Per-sample brightness/contrast jitter amplitude (0 = none)."""

    # ---------------------------------------------------------------- data-derived
    image_shape: list[int] = field(default_factory=list)
    state_dim: int = 0
    env_state_dim: int = 0
    action_dim: int = 0
    state_mean: list[float] = field(default_factory=list)
    state_std: list[float] = field(default_factory=list)
    env_state_mean: list[float] = field(default_factory=list)
    env_state_std: list[float] = field(default_factory=list)
    action_mean: list[float] = field(default_factory=list)
    action_std: list[float] = field(default_factory=list)

    readout_fields: ClassVar[tuple[str, ...]] = ("execute",)
    data_derived: ClassVar[tuple[str, ...]] = (
        "image_shape", "state_dim", "env_state_dim", "action_dim", "state_mean", "state_std",
        "env_state_mean", "env_state_std", "action_mean", "action_std")
    pixels: ClassVar[bool] = True
    """Reads raw frames; no feature cache."""
    feature_key: ClassVar[None] = None

    def __post_init__(self):
        super().__post_init__()
        self.cameras, self.channels = list(self.cameras), [int(c) for c in self.channels]
        for name, low in (("window", 1), ("frame_gap", 1), ("horizon", 1), ("keypoints", 1), ("hidden_dim", 1),
                          ("n_layers", 1), ("shift", 0), ("input_size", 0), ("execute", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"{name} must be an int >= {low}, got {value!r}")
        if self.execute > self.horizon:
            raise ConfigError(f"execute {self.execute} exceeds horizon {self.horizon}")
        if not self.channels or min(self.channels) < 1:
            raise ConfigError(f"channels must be a non-empty list of ints >= 1, got {self.channels}")
        if self.input_size and self.input_size < 2 ** len(self.channels):
            raise ConfigError(f"input_size {self.input_size} is too small for {len(self.channels)} conv layers")
        if len(set(self.cameras)) != len(self.cameras):
            raise ConfigError(f"cameras must be distinct, got {self.cameras}")
        if self.loss not in LOSSES:
            raise ConfigError(f"loss {self.loss!r} is not one of {LOSSES}")
        if not 0.0 <= self.dropout < 1.0 or not 0.0 <= self.colour < 1.0:
            raise ConfigError("dropout and colour must be in [0, 1)")
        for name in ("state_mean", "state_std", "env_state_mean", "env_state_std", "action_mean", "action_std"):
            values = [float(v) for v in getattr(self, name)]
            setattr(self, name, values)
            if not all(math.isfinite(v) for v in values):
                raise ConfigError(f"{name} has non-finite values")

    def check_ready(self) -> None:
        if not self.state_mean or not self.action_mean or (self.cameras and not self.image_shape):
            raise ConfigError("the vision_bc config has no dataset statistics; build it with VisionBCConfig.from_store")
        if not self.cameras:
            raise ConfigError("vision_bc reads at least one camera")

    @classmethod
    def check_overrides(cls, overrides: dict[str, Any], where: str = "policy") -> dict[str, Any]:
        checked = super().check_overrides(overrides, where)
        try:
            cls(**checked)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        return checked

    @classmethod
    def from_store(cls, store: "EpisodeStore", feature_key: str | None = None, episodes: Sequence[int] | None = None,
                   **overrides: Any) -> "VisionBCConfig":
        """Cameras, sizes and statistics from ``store`` over ``episodes``; ``feature_key`` is ignored."""
        from ..data import low_dim_values, store_cameras

        overrides = cls.check_overrides(overrides)
        cameras = store_cameras(store, overrides.pop("cameras", None))
        fields: dict[str, Any] = {}
        for prefix, values in low_dim_values(store, overrides, episodes).items():
            fields[f"{prefix}_dim"] = int(values.shape[1])
            fields[f"{prefix}_mean"] = values.mean(0).tolist()
            fields[f"{prefix}_std"] = np.maximum(values.std(0), STD_FLOOR).tolist()
        shape = [int(s) for s in store.array(cameras[0]).shape[1:3]]
        for cam in cameras[1:]:
            if [int(s) for s in store.array(cam).shape[1:3]] != shape:
                raise ConfigError(f"cameras {cameras[0]} and {cam} have different frame sizes; record them at one size")
        return cls(**{**overrides, **fields, "cameras": cameras, "image_shape": shape})
