"""BC policy config: the inputs it reads (cached image features, state), the action chunk it
predicts and the dataset statistics it normalises with. Everything a checkpoint needs to rebuild
the policy is here, so ``config.json`` + ``model.safetensors`` is a complete checkpoint."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ...config import ConfigError
from ..base import PolicyConfig

if TYPE_CHECKING:
    from ...data.store import EpisodeStore

LOSSES = ("l1", "mse")
STD_FLOOR = 1e-3
"""Smallest std used to normalise: a joint that never moves in the data (std 0) must not blow up."""


@dataclass
class BCConfig(PolicyConfig):
    type: str = "bc"
    """Registered name; always ``bc``."""

    # ---------------------------------------------------------------- inputs
    feature_key: str | None = None
    """Feature-cache key (``features/<key>/<camera>``); None = state only (no cameras)."""
    cameras: list[str] = field(default_factory=list)
    """Camera keys whose cached features are inputs, in order; empty exactly when feature_key is None."""
    feature_dim: int = 0
    """Dimension of one camera's cached feature; 0 exactly when there are no cameras."""
    state_key: str = "observation.state"
    """Proprioceptive input key of the store."""
    state_dim: int = 6
    """Size of the state vector."""
    env_state_key: str | None = None
    """Optional privileged object state (``observation.environment_state`` in sim stores, as in
    LeRobot's sim datasets); None = not an input. Real arms have no such feature."""
    env_state_dim: int = 0
    """Size of the environment state (filled by ``from_store``); 0 exactly when env_state_key is None."""
    window: int = 1
    """Observation frames per sample (causal, ending at t; 1 = the current frame only)."""
    frame_gap: int = 1
    """Frames between consecutive observation frames."""

    # ---------------------------------------------------------------- outputs
    action_key: str = "action"
    """Action key of the store (LeRobot units: joint positions)."""
    action_dim: int = 6
    """Size of one action."""
    horizon: int = 10
    """Actions predicted per step (the chunk t .. t+horizon-1); also RA-BC's chunk for the deltas."""

    # ---------------------------------------------------------------- network and loss
    hidden_dim: int = 256
    """MLP width."""
    n_layers: int = 3
    """Hidden layers of the MLP (>= 1)."""
    dropout: float = 0.0
    """Dropout after each hidden layer, in [0, 1)."""
    loss: str = "l1"
    """Per-element loss on normalised actions: ``l1`` (ACT's) or ``mse``."""

    # ---------------------------------------------------------------- dataset statistics
    state_mean: list[float] = field(default_factory=list)
    """Per-dimension mean of the state over the training episodes (filled by ``from_store``)."""
    state_std: list[float] = field(default_factory=list)
    """Per-dimension std of the state (floored at STD_FLOOR)."""
    action_mean: list[float] = field(default_factory=list)
    """Per-dimension mean of the actions over the training episodes."""
    action_std: list[float] = field(default_factory=list)
    """Per-dimension std of the actions (floored at STD_FLOOR)."""
    env_state_mean: list[float] = field(default_factory=list)
    """Per-dimension mean of the environment state (empty without one)."""
    env_state_std: list[float] = field(default_factory=list)
    """Per-dimension std of the environment state (floored at STD_FLOOR)."""

    data_derived: ClassVar[tuple[str, ...]] = (
        "feature_key", "feature_dim", "state_dim", "action_dim", "env_state_dim", "state_mean", "state_std",
        "action_mean", "action_std", "env_state_mean", "env_state_std",
    )

    def __post_init__(self):
        super().__post_init__()
        self.cameras = list(self.cameras)
        for name, low in (("feature_dim", 0), ("state_dim", 1), ("window", 1), ("frame_gap", 1), ("action_dim", 1),
                          ("horizon", 1), ("hidden_dim", 1), ("n_layers", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"{name} must be an int >= {low}, got {value!r}")
        if (self.feature_key is None) != (not self.cameras) or (not self.cameras) != (self.feature_dim == 0):
            raise ConfigError(
                "feature_key, cameras and feature_dim go together: all set (image features) or "
                "None/[]/0 (state only)"
            )
        if (self.env_state_key is None) != (self.env_state_dim == 0):
            raise ConfigError("env_state_key and env_state_dim go together: build the config with BCConfig.from_store")
        if len(set(self.cameras)) != len(self.cameras):
            raise ConfigError(f"cameras must be distinct, got {self.cameras}")
        if self.loss not in LOSSES:
            raise ConfigError(f"loss {self.loss!r} is not one of {LOSSES}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        for name, dim in (("state_mean", self.state_dim), ("state_std", self.state_dim),
                          ("action_mean", self.action_dim), ("action_std", self.action_dim),
                          ("env_state_mean", self.env_state_dim), ("env_state_std", self.env_state_dim)):
            values = [float(v) for v in getattr(self, name)]
            setattr(self, name, values)
            if values and (len(values) != dim or not all(math.isfinite(v) for v in values)):
                raise ConfigError(f"{name} must be {dim} finite numbers, got {len(values)}")
            if values and name.endswith("std") and min(values) <= 0:
                raise ConfigError(f"{name} must be > 0, got {values}")

    def check_ready(self) -> None:
        """The dataset statistics a policy needs; filled by ``from_store``."""
        names = ["state_mean", "state_std", "action_mean", "action_std"]
        names += ["env_state_mean", "env_state_std"] if self.env_state_key else []
        for name in names:
            if not getattr(self, name):
                raise ConfigError(f"{name} is empty; build the config with BCConfig.from_store(store, ...)")

    @classmethod
    def check_overrides(cls, overrides: dict[str, Any], where: str = "policy") -> dict[str, Any]:
        """Keys and types (``TypedConfig.check_overrides``), then the values: a probe config with
        placeholders for the data-derived fields runs ``__post_init__`` now, before any data is read
        or cached."""
        checked = super().check_overrides(overrides, where)
        probe = dict(checked)
        if probe.get("cameras"):
            probe.update(feature_key="probe", feature_dim=1)
        if probe.get("env_state_key"):
            probe["env_state_dim"] = 1
        try:
            cls(**probe)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        return checked

    @classmethod
    def from_store(
        cls,
        store: "EpisodeStore",
        feature_key: str | None = None,
        episodes: Sequence[int] | None = None,
        **overrides: Any,
    ) -> "BCConfig":
        """A config whose data fields (cameras, feature_dim, state/action dims and statistics) come
        from ``store`` and its feature cache ``feature_key`` (None: state only); statistics over
        ``episodes`` (the training split; default all). ``overrides`` set any other field;
        ``cameras=[]`` makes a policy without image inputs even when ``feature_key`` is given.
        A bad override is one ConfigError line (``check_overrides``)."""
        from ...data.cache import cached_features
        from ..data import low_dim_values

        overrides = cls.check_overrides(overrides)

        fields: dict[str, Any] = {}
        for prefix, values in low_dim_values(store, overrides, episodes).items():
            fields[f"{prefix}_dim"] = int(values.shape[1])
            fields[f"{prefix}_mean"] = values.mean(0).tolist()
            fields[f"{prefix}_std"] = np.maximum(values.std(0), STD_FLOOR).tolist()
        if feature_key is not None and overrides.get("cameras", None) != []:
            feats = cached_features(store, feature_key)
            cameras = list(overrides.pop("cameras", None) or store.cameras)
            fields.update(feature_key=feature_key, cameras=cameras, feature_dim=int(feats[cameras[0]].shape[1]))
        return cls(**{**overrides, **fields})
