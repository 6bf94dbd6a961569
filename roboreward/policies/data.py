"""PolicyDataset: every frame of the selected episodes as (observation window, action chunk, weight),
for every policy trained here (the feature-cache BC, the pixel BC, LeRobot's ACT and Diffusion).

Observations come from ``ClipDataset``: a causal window of cached image features, or of raw
camera frames for a policy that encodes pixels itself (``config.pixels``), plus the low-dim keys.
The action chunk is ``action[t + s .. t + s + horizon - 1]`` with ``s = config.action_start``
(0 for BC and ACT; ``1 - n_obs_steps`` for Diffusion Policy, whose chunk starts at the oldest
observation, as LeRobot's ``action_delta_indices``). Steps outside the episode repeat its first or
last action and are flagged in ``action_is_pad`` (LeRobot's name), so the loss can ignore them.

The dataset reads only these attributes of the policy config: ``window``, ``frame_gap``,
``cameras``, ``feature_key``, ``state_key``, ``env_state_key``, ``action_key``, ``horizon`` and,
when present, ``pixels`` and ``action_start``.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..data.sampler import ClipConfig, ClipDataset
from ..data.store import EpisodeStore
from .rabc import RABCError


def episode_values(store: EpisodeStore, key: str, episodes: Sequence[int]) -> np.ndarray:
    """Every frame of ``episodes`` of the low-dim array ``key`` as (frames, dim) float64: what a
    policy config's dataset statistics are computed over."""
    arr = store.array(key)  # raises naming the store's features
    values = np.concatenate([np.asarray(arr[slice(*store.episode_range(e))], np.float64) for e in episodes])
    return values.reshape(len(values), -1)


def low_dim_values(store: EpisodeStore, overrides: dict, episodes: Sequence[int] | None) -> dict[str, np.ndarray]:
    """The values a policy config's statistics come from, keyed ``state``, ``action`` and (when the
    overrides name an ``env_state_key``) ``env_state``; keys from the overrides or the defaults."""
    eps = list(range(store.n_episodes)) if episodes is None else [int(e) for e in episodes]
    keys = {"state": overrides.get("state_key", "observation.state"), "action": overrides.get("action_key", "action")}
    if overrides.get("env_state_key"):
        keys["env_state"] = overrides["env_state_key"]
    return {name: episode_values(store, key, eps) for name, key in keys.items()}


def store_cameras(store: EpisodeStore, cameras: Sequence[str] | None) -> list[str]:
    """The cameras a pixel policy reads: those given (each checked against the store) or all."""
    from ..config import ConfigError

    cameras = list(cameras or store.cameras)
    missing = [c for c in cameras if c not in store.cameras]
    if missing:
        raise ConfigError(f"the policy reads camera {missing[0]!r} but the store has {store.cameras}")
    return cameras


class PolicyDataset(Dataset):
    """Items: ``features.<camera>`` (window, D) float32 per camera (or, for a pixel policy,
    ``<camera>`` uint8 (window, H, W, 3)), ``<state_key>`` (window, S),
    ``<env_state_key>`` (window, E) when the policy reads one,
    ``action`` (horizon, A), ``action_is_pad`` (horizon,) bool, ``weight`` () float32 (1 without
    weights), ``index`` (global frame), ``episode_index``.

    ``weights``: one RA-BC weight per frame of the whole store (``rabc.weights_for_store``), or None.
    ``frames_in_memory``: a pixel policy's frames are read into RAM once (``ClipConfig.images_in_memory``);
    else ``chunk_cache_mb`` of decoded chunks are kept (``ClipConfig.chunk_cache_mb``).
    """

    def __init__(self, store: EpisodeStore | str, config, episodes: Sequence[int] | None = None,
                 weights: np.ndarray | None = None, frames_in_memory: bool = False, chunk_cache_mb: float = 0.0):
        self.store = store if isinstance(store, EpisodeStore) else EpisodeStore(store)
        self.config = config
        self.pixels = bool(getattr(config, "pixels", False))
        # Read once: a config may derive these (LeRobot's from its own config object).
        self.action_start = int(getattr(config, "action_start", 0))
        self.horizon = int(config.horizon)
        clip = ClipConfig(window=config.window, frame_gap=config.frame_gap, cameras=list(config.cameras),
                          low_dim=(config.state_key,) + ((config.env_state_key,) if config.env_state_key else ()),
                          features=config.feature_key if config.cameras and not self.pixels else None, targets=False,
                          features_in_memory=True, images_in_memory=frames_in_memory,
                          chunk_cache_mb=0.0 if frames_in_memory else chunk_cache_mb)
        self.clips = ClipDataset(self.store, clip, episodes)
        starts = self.store.episode_starts[self.clips.episodes]
        ends = self.store.episode_ends[self.clips.episodes]
        # Same frame order as ClipDataset: episodes in the order given, frames in time order.
        self._frames = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends)])
        self._start_of = np.repeat(starts, ends - starts)
        self._end_of = np.repeat(ends, ends - starts)
        assert len(self._frames) == len(self.clips)
        if weights is not None:
            weights = np.asarray(weights, dtype=np.float32)
            if weights.shape != (self.store.n_frames,):
                raise RABCError(f"weights must be one per store frame ({self.store.n_frames},), got {weights.shape}")
            if not np.isfinite(weights).all() or weights.min() < 0:
                raise RABCError("weights must be finite and >= 0")
        self.weights = weights
        self.store.array(config.action_key)  # raises naming the store's features
        self._actions = None

    def __len__(self) -> int:
        return len(self._frames)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_actions"] = None
        return state

    def __getitem__(self, i: int) -> dict:
        if self._actions is None:
            n = self.store.n_frames
            self._actions = np.asarray(self.store.array(self.config.action_key)[:n], np.float32).reshape(n, -1)
        clip = self.clips[i]
        t, start, end = int(self._frames[i]), int(self._start_of[i]), int(self._end_of[i])
        raw = t + self.action_start + np.arange(self.horizon)
        low_dim = [k for k in (self.config.state_key, self.config.env_state_key) if k]
        cams = set(self.config.cameras) if self.pixels else set()
        item = {k: v for k, v in clip.items() if k.startswith("features.") or k in low_dim or k in cams}
        for k in low_dim:
            item[k] = item[k].float()
        item["action"] = torch.from_numpy(self._actions[np.clip(raw, start, end - 1)])
        item["action_is_pad"] = torch.from_numpy((raw >= end) | (raw < start))
        item["weight"] = torch.tensor(1.0 if self.weights is None else float(self.weights[t]), dtype=torch.float32)
        item["index"] = t
        item["episode_index"] = clip["episode_index"]
        return item
