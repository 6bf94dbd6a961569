"""Models over the store's feature cache (SARM, the baselines): their inputs, declared once in
``FeatureRewardConfig`` (filled from a store by ``from_store``), and whole episodes of cached
features as one ``progress`` batch (``episode_batch``)."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np
import torch

from ..config import ConfigError
from ..data.cache import cached_features
from ..data.schema import StoreError
from ..data.store import EpisodeStore
from ..errors import RoborewardError
from .base import RewardModelConfig, RewardStream
from .targets import selected_episodes


@dataclass
class FeatureRewardConfig(RewardModelConfig):
    """The inputs of a reward model that reads cached frozen-encoder features, per camera, plus an
    optional state vector, conditioned on the task string. ``from_store`` fills the data-derived
    ones; a subclass adds its own in ``store_fields``."""

    data_derived: ClassVar[tuple[str, ...]] = ("feature_key", "feature_dim", "tasks", "feature_copies")

    feature_key: str | None = None
    """Feature-cache key in the store (``features/<key>/<camera>``) the model was trained on; streams
    must be fed features from the same encoder."""
    cameras: list[str] = field(default_factory=lambda: ["observation.images.front"])
    """Camera keys, in view order; at least one. Their features are fused per frame."""
    feature_dim: int = 1280
    """Dimension of one camera's cached feature (efficientnet_lite0: 1280)."""
    state_key: str | None = None
    """Optional proprioceptive key (e.g. ``observation.state``) added to every frame; None = images only."""
    state_dim: int = 0
    """Size of ``state_key``'s vector; 0 exactly when ``state_key`` is None."""
    tasks: list[str] = field(default_factory=list)
    """Task strings of the data; each gets a learned embedding (the conditioning)."""
    feature_copies: list[str] = field(default_factory=list)
    """Training only: feature caches of the same frames under photometric augmentation
    (``data.augment_copies``); each training clip is read from ``feature_key`` or one of these.
    Recorded with the model as what it was trained on; inference reads ``feature_key`` alone."""

    def __post_init__(self):
        super().__post_init__()
        self.cameras = list(self.cameras)
        if not self.cameras or len(set(self.cameras)) != len(self.cameras):
            raise ConfigError(f"cameras must be one or more distinct camera keys, got {self.cameras}")
        self.tasks = list(self.tasks)
        self.feature_copies = list(self.feature_copies)
        if len(set(self.tasks)) != len(self.tasks):
            raise ConfigError("tasks must be distinct strings")
        for name, value, low in (("feature_dim", self.feature_dim, 1), ("state_dim", self.state_dim, 0)):
            if not isinstance(value, int) or value < low:
                raise ConfigError(f"{name} must be an int >= {low}, got {value!r}")
        if (self.state_key is None) != (self.state_dim == 0):
            raise ConfigError("state_dim must be > 0 exactly when state_key is set (state_key=None, state_dim=0 for images only)")

    def check_ready(self) -> None:
        """Raises when the data-derived fields a model needs are missing (filled by ``from_store``)."""
        if not self.tasks:
            raise ConfigError(f"tasks is empty; build the config with {type(self).__name__}.from_store(store, ...) or list the tasks")

    def store_fields(self, store: EpisodeStore, episodes: list[int]) -> dict[str, Any]:
        """Further data-derived fields of a subclass, from the training ``episodes`` of ``store``."""
        return {}

    @classmethod
    def from_store(cls, store: EpisodeStore, feature_key: str, episodes: Sequence[int] | None = None, **overrides: Any):
        """A config whose inputs (cameras, feature_dim, state_dim, tasks) come from ``store`` and its
        feature cache ``feature_key``, tasks from every episode, the subclass's ``store_fields`` from
        ``episodes`` (the training split; default all). ``overrides`` set any other field (a bad one
        is one ConfigError line)."""
        overrides = cls.check_overrides(dict(overrides), "model")
        state_key = overrides.get("state_key")
        if state_key is not None and "state_dim" not in overrides:
            store.array(state_key)  # raises naming the store's features
            overrides["state_dim"] = int(math.prod(store.features[state_key].shape))
        cfg = cls(**overrides)
        feats = cached_features(store, feature_key)
        cameras = cfg.cameras if "cameras" in overrides else list(store.cameras)
        fields: dict[str, Any] = {"feature_key": feature_key, "cameras": cameras, "feature_dim": int(feats[cameras[0]].shape[1])}
        # Every task of the store, not only the training split's: a held-out episode of a task the
        # split happens to miss must get an (untrained) embedding, not a crash at validation.
        fields["tasks"] = sorted(store.tasks)
        eps = list(range(store.n_episodes)) if episodes is None else list(episodes)
        fields.update(cfg.store_fields(store, eps))
        return replace(cfg, **fields)


def episode_batch(store: EpisodeStore, config: Any, episodes: Sequence[int]) -> dict:
    """Whole episodes as one ``progress`` batch: ``features.<camera>`` (B, T_max, D) float32,
    the state key (B, T_max, S) if any, ``task`` [B], ``lengths`` (B,). Shorter episodes are padded
    at the end with their last frame; the causal model's outputs at real frames ignore the padding."""
    if config.feature_key is None:
        raise StoreError("config.feature_key is None; say which feature cache the model reads")
    feats = cached_features(store, config.feature_key)
    eps = selected_episodes(store, episodes)
    ranges = [store.episode_range(e) for e in eps]
    t_max = max(end - start for start, end in ranges)

    def padded(read) -> torch.Tensor:
        rows = []
        for start, end in ranges:
            x = np.asarray(read(start, end), dtype=np.float32).reshape(end - start, -1)
            rows.append(np.concatenate([x, np.repeat(x[-1:], t_max - len(x), 0)]))
        return torch.from_numpy(np.stack(rows))

    batch = {f"features.{cam}": padded(lambda s, e, cam=cam: feats[cam][s:e]) for cam in config.cameras}
    if config.state_key is not None:
        arr = store.array(config.state_key)
        batch[config.state_key] = padded(lambda s, e: arr[s:e])
    batch["task"] = [store.episodes[e].task for e in eps]
    batch["lengths"] = torch.tensor([end - start for start, end in ranges])
    return batch


def observation_features(observation: dict[str, Any], camera: str, n_envs: int, dim: int, encoder: Any = None) -> torch.Tensor:
    """One view's features (n_envs, dim) float for a stream step: ``features.<camera>`` as given, or
    raw uint8 frames ``<camera>`` (n_envs, H, W, 3) encoded once by ``encoder``."""
    value = observation.get(f"features.{camera}", observation.get(camera))
    if value is None:
        raise RoborewardError(f"observation has neither 'features.{camera}' nor {camera!r}")
    value = torch.as_tensor(np.asarray(value) if not torch.is_tensor(value) else value)
    if value.dtype == torch.uint8 and value.ndim == 4:
        if encoder is None:
            raise RoborewardError(f"{camera}: got raw frames but the stream has no encoder; pass model.stream(n, encoder=...)")
        value = encoder(value)  # the one encoder call for this view's new frames
    if tuple(value.shape) != (n_envs, dim):
        raise RoborewardError(f"{camera}: expected features ({n_envs}, {dim}), got {tuple(value.shape)}")
    return value.float()


def batch_views(batch: dict[str, Any], config: FeatureRewardConfig, device, prefix: str = "", who: str = "the model") -> torch.Tensor:
    """``<prefix>features.<camera>`` (..., D) of every configured camera stacked to (..., V, D) float
    on ``device``; a missing camera or a wrong feature size is one line."""
    views = []
    for cam in config.cameras:
        key = f"{prefix}features.{cam}"
        if key not in batch:
            raise RoborewardError(f"batch has no {key!r}; {who} reads cached features of cameras {config.cameras}")
        views.append(torch.as_tensor(batch[key], device=device).float())
    feats = torch.stack(views, dim=-2)
    if feats.shape[-1] != config.feature_dim:
        raise RoborewardError(f"features have dim {feats.shape[-1]}, the model expects feature_dim={config.feature_dim}")
    return feats


def batch_state(batch: dict[str, Any], config: FeatureRewardConfig, device, key: str | None = None,
                lead: int = 2) -> torch.Tensor | None:
    """The state vector ``key`` (default ``config.state_key``) as float (first ``lead`` dims kept,
    the rest flattened); None for a model without state."""
    if config.state_key is None:
        return None
    key = key or config.state_key
    if key not in batch:
        raise RoborewardError(f"batch has no {key!r}; the model was trained with state")
    x = torch.as_tensor(batch[key], device=device).float()
    return x.reshape(*x.shape[:lead], -1)


def task_ids(config: FeatureRewardConfig, tasks: Sequence[str] | str, n: int, device, hint: str = "") -> torch.Tensor:
    """Per-sample ids (n,) of ``tasks`` (one string for all, or one per sample) in ``config.tasks``;
    a task the model never saw is one line naming the known ones."""
    index = {t: i for i, t in enumerate(config.tasks)}
    tasks = [tasks] * n if isinstance(tasks, str) else list(tasks)
    unknown = [t for t in tasks if t not in index]
    if unknown:
        raise RoborewardError(f"task {unknown[0]!r} was not in the training data; known tasks: {config.tasks}{hint}")
    return torch.tensor([index[t] for t in tasks], dtype=torch.long, device=device)


# ---------------------------------------------------------------------------- the change gate
def scene_change(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """(...) RMS difference of the layer-normalised features (..., V, D) of two frames, mean over views."""
    norm = lambda x: torch.nn.functional.layer_norm(x.float(), x.shape[-1:])  # noqa: E731
    return (norm(after) - norm(before)).pow(2).mean(-1).sqrt().mean(-1)


def gate_step(previous: torch.Tensor, reading: torch.Tensor, change: torch.Tensor, scale: float, floor: float) -> torch.Tensor:
    """One step of the change gate: ``previous`` progress moves towards this frame's ``reading`` by
    min(1, (change - floor) / scale) of the way (all tensors (B,))."""
    return previous + ((change - floor) / scale).clamp(0.0, 1.0) * (reading - previous)


def gate_sequence(reading: torch.Tensor, feats: torch.Tensor, scale: float, floor: float = 0.0) -> torch.Tensor:
    """(B, T) progress of whole episodes after the change gate: frame 0 keeps its reading, frame t
    moves from t-1's gated value as far as the scene changed (``scene_change`` of (B, T, V, D)
    features); ``scale`` 0 (or one frame, nothing to gate): the reading unchanged. Streams apply
    ``gate_step`` frame by frame."""
    if scale == 0 or reading.shape[1] < 2:
        return reading
    change = scene_change(feats[:, :-1], feats[:, 1:])
    out = [reading[:, 0]]
    for t in range(1, reading.shape[1]):
        out.append(gate_step(out[-1], reading[:, t], change[:, t - 1], scale, floor))
    return torch.stack(out, 1)


def smooth_step(previous: torch.Tensor, reading: torch.Tensor, frames: float) -> torch.Tensor:
    """One step of the causal smoothing readout: an exponential moving average of progress with a
    time constant of ``frames`` frames, ``previous + (reading - previous) / frames`` (1 = none)."""
    return previous + (reading - previous) / frames


def smooth_sequence(reading: torch.Tensor, frames: float) -> torch.Tensor:
    """(B, T) progress of whole episodes after the smoothing readout: frame 0 keeps its reading,
    frame t moves from t-1's value by 1 / ``frames`` of the way to its reading (``smooth_step``);
    ``frames`` 1: the reading unchanged. Streams apply ``smooth_step`` frame by frame."""
    if frames == 1 or reading.shape[1] < 2:
        return reading
    out = [reading[:, 0]]
    for t in range(1, reading.shape[1]):
        out.append(smooth_step(out[-1], reading[:, t], frames))
    return torch.stack(out, 1)


def readout_sequence(reading: torch.Tensor, feats: torch.Tensor, config: Any) -> torch.Tensor:
    """(B, T) progress of whole episodes after the readouts over time a config sets: the moving
    average (``smooth_frames``), then the change gate (``readout_gate``, ``gate_floor``) on
    (B, T, V, D) features. Streams apply the same frame by frame with ``ReadoutOverTime``."""
    value = smooth_sequence(reading, config.smooth_frames)
    return gate_sequence(value, feats, config.readout_gate, config.gate_floor)


class ReadoutOverTime:
    """Per-env state of the readouts over time, applied one frame at a time as ``readout_sequence``
    applies them to whole episodes: each env's value moves from its last one by ``smooth_step``
    (``smooth_frames`` > 1), then, with ``gate`` > 0, only as far as the scene changed since its last
    frame (``gate_step`` on ``scene_change``). An env at its episode's first frame keeps its reading."""

    def __init__(self, n_envs: int, smooth_frames: float = 1.0, gate: float = 0.0, gate_floor: float = 0.0,
                 device: Any = "cpu"):
        self.smooth_frames, self.gate, self.gate_floor = smooth_frames, gate, gate_floor
        self.value = torch.zeros(n_envs, device=device)  # the smoothed reading
        self.gated = torch.zeros(n_envs, device=device)  # what the gate lets through
        self.last: torch.Tensor | None = None  # (n_envs, V, D) features of each env's last frame

    @property
    def active(self) -> bool:
        """Whether there is anything to apply (else ``step`` returns the reading as it is)."""
        return self.smooth_frames != 1 or bool(self.gate)

    def step(self, ids: torch.Tensor, reading: torch.Tensor, first: torch.Tensor,
             feats: torch.Tensor | None = None) -> torch.Tensor:
        """(n,) output for envs ``ids`` from their (n,) ``reading``; ``first`` (n,) marks envs at
        their episode's first frame; ``feats`` (n, V, D), needed only with the gate."""
        value = reading
        if self.smooth_frames != 1:
            value = torch.where(first, reading, smooth_step(self.value[ids], reading, self.smooth_frames))
            self.value[ids] = value
        if not self.gate:
            return value
        if self.last is None:
            self.last = torch.zeros(len(self.value), *feats.shape[1:], device=self.value.device)
        change = scene_change(self.last[ids], feats)
        out = torch.where(first, value, gate_step(self.gated[ids], value, change, self.gate, self.gate_floor))
        self.gated[ids], self.last[ids] = out, feats
        return out


def check_smooth(config: Any) -> None:
    """The smoothing readout field (``smooth_frames``) of a config, in one line if bad."""
    value = config.smooth_frames
    if isinstance(value, bool) or not (isinstance(value, (int, float)) and 1 <= value <= 1000):
        raise ConfigError(f"smooth_frames must be a number in [1, 1000] (frames; 1 = no smoothing), got {value!r}")


def check_gate(config: Any) -> None:
    """The change-gate readout fields (``readout_gate``, ``gate_floor``) of a config, in one line if bad."""
    for name in ("readout_gate", "gate_floor"):
        if not 0.0 <= getattr(config, name) < 10.0:
            raise ConfigError(f"{name} must be in [0, 10) (an RMS feature change; 0 = off), got {getattr(config, name)}")


class FrameStream(RewardStream):
    """Online progress of a model that reads one frame at a time (the baselines, perceptual
    rewards): each step reads (or encodes once) the new frame of each env as a one-frame
    ``progress`` batch. The model's readout over time, as its ``progress`` applies it to whole
    episodes, is applied frame by frame (``ReadoutOverTime``: the moving average, then the change
    gate). ``reset`` starts an env afresh (its next frame keeps its own reading). With neither there
    is nothing to remember."""

    def __init__(self, model: Any, n_envs: int, encoder: Any = None, smooth_frames: float = 1.0,
                 gate: float = 0.0, gate_floor: float = 0.0):
        super().__init__(n_envs)
        self.model, self.encoder = model, encoder
        self.readout = ReadoutOverTime(n_envs, smooth_frames, gate, gate_floor)
        self.fresh = torch.ones(n_envs, dtype=torch.bool)

    def reset(self, i: int | Sequence[int] | None = None) -> None:
        self.fresh[self._env_ids(i)] = True

    @torch.no_grad()
    def step(self, observation: dict[str, Any], task: str | Sequence[str],
             envs: Sequence[int] | None = None) -> torch.Tensor:
        cfg = self.model.config
        n = len(self._env_ids(envs))
        batch: dict[str, Any] = {
            f"features.{cam}": observation_features(observation, cam, n, cfg.feature_dim, self.encoder)[:, None]
            for cam in cfg.cameras
        }
        if cfg.state_key is not None:
            if cfg.state_key not in observation:
                raise RoborewardError(f"observation has no {cfg.state_key!r}; the model was trained with state")
            batch[cfg.state_key] = torch.as_tensor(observation[cfg.state_key]).float().reshape(n, 1, -1)
        batch["task"] = self._tasks(task, n)
        reading = self.model.progress(batch)[:, 0]  # one frame: the readout over time has no past to use
        if not self.readout.active:
            return reading
        ids = torch.tensor(self._env_ids(envs))
        fresh = self.fresh[ids]
        self.fresh[ids] = False
        feats = batch_views(batch, cfg, "cpu")[:, 0] if self.readout.gate else None  # (n, V, D)
        return self.readout.step(ids, reading.cpu(), fresh, feats).to(reading.device)
