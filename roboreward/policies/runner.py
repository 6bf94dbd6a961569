"""The one loop-side view of a policy, for every loop that steps envs or arms (``sim eval``,
``deploy``): ``reset(i)`` and ``act(observation, ids)``, as LeRobot's ``reset`` / ``select_action``.

``PolicyRunner`` keeps, per env, the history the policy's observation window reads (encoded camera
features and low-dim vectors, the first frame repeated before the episode start) and the action
chunk being executed: a chunk of ``horizon`` predicted actions is executed for ``execute`` steps
before the policy is asked again. Each new camera frame is encoded once (all cameras of all envs
in one encoder call), or taken as given when the observation already carries ``features.<camera>``
(a loop that shares one encoding between policy and reward model).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..errors import RoborewardError


class PolicyRunner:
    def __init__(self, policy, n_envs: int = 1, execute: int | None = None, encoder: Any = None):
        cfg = policy.config
        self.policy, self.n_envs = policy.eval(), n_envs
        # A policy may return another chunk length than it trains on (Diffusion Policy: n_action_steps
        # of its horizon) and may name its own default (LeRobot's n_action_steps).
        chunk = int(getattr(policy, "execute_horizon", cfg.horizon))
        self.execute = execute or getattr(policy, "default_execute", None) or max(1, chunk // 2)
        if not 1 <= self.execute <= chunk:
            raise RoborewardError(f"execute must be in [1, chunk={chunk}], got {self.execute}")
        # A pixel policy encodes frames itself: its history keeps raw frames, not features.
        self.pixels = bool(getattr(cfg, "pixels", False))
        if encoder is None and cfg.feature_key and not self.pixels:
            from ..encoders import encoder_for_cache_key

            encoder = encoder_for_cache_key(cfg.feature_key)
        self.encoder = encoder
        self.cameras = list(cfg.cameras)
        self.state_key, self.env_key = cfg.state_key, getattr(cfg, "env_state_key", None)
        self.low_keys = [self.state_key] + ([self.env_key] if self.env_key else [])
        self.history = (cfg.window - 1) * cfg.frame_gap + 1
        self.offsets = np.arange(-(cfg.window - 1), 1) * cfg.frame_gap + self.history - 1
        self.hist: dict[str, list[list | None]] = {k: [None] * n_envs for k in self.low_keys + self.cameras}
        self.plan: list[list[np.ndarray]] = [[] for _ in range(n_envs)]

    @property
    def needs(self) -> list[str]:
        """Observation keys the policy reads (cameras as raw frames or ``features.<camera>``; a
        pixel policy reads raw frames only)."""
        return self.low_keys + self.cameras

    def reset(self, ids: int | Sequence[int] | None = None) -> None:
        ids = range(self.n_envs) if ids is None else ([ids] if isinstance(ids, int) else ids)
        for i in ids:
            for h in self.hist.values():
                h[i] = None
            self.plan[i] = []

    def _push(self, key: str, i: int, value: np.ndarray) -> None:
        h = self.hist[key][i]
        self.hist[key][i] = [value] * self.history if h is None else (h + [value])[-self.history:]

    def features(self, observation: dict[str, Any]) -> dict[str, np.ndarray]:
        """``features.<camera>`` (n, D) of every camera: as given, or encoded in one call."""
        out, raw = {}, []
        for cam in self.cameras:
            if f"features.{cam}" in observation:
                out[cam] = np.asarray(observation[f"features.{cam}"], np.float32)
            elif cam in observation:
                raw.append(cam)
            else:
                raise RoborewardError(f"observation has neither {cam!r} nor 'features.{cam}'; the policy reads cameras {self.cameras}")
        if raw:
            if self.encoder is None:
                raise RoborewardError("the policy reads cameras but has no feature_key to rebuild its encoder from")
            frames = [np.asarray(observation[c]) for c in raw]
            n = len(frames[0])
            feats = self.encoder(np.concatenate(frames)).float().cpu().numpy()
            for j, cam in enumerate(raw):
                out[cam] = feats[j * n:(j + 1) * n]
        return out

    def act(self, observation: dict[str, Any], ids: Sequence[int] | None = None) -> np.ndarray:
        """The next action (len(ids), A) of envs ``ids`` (default all), whose observation rows
        (in that order) are this step's."""
        ids = list(range(self.n_envs)) if ids is None else list(ids)
        for key in self.low_keys:
            if key not in observation:
                raise RoborewardError(f"observation has no {key!r}; the policy reads {self.low_keys}")
        if self.pixels:
            missing = [cam for cam in self.cameras if cam not in observation]
            if missing:
                raise RoborewardError(f"observation has no {missing[0]!r}; the policy reads camera frames {self.cameras}")
            feats = {cam: np.asarray(observation[cam]) for cam in self.cameras}
        else:
            feats = self.features(observation) if self.cameras else {}
        for row, i in enumerate(ids):
            for key in self.low_keys:
                self._push(key, i, np.asarray(observation[key][row], np.float32))
            for cam in self.cameras:
                self._push(cam, i, feats[cam][row])
        need = [i for i in ids if not self.plan[i]]
        if need:
            window = lambda key: torch.as_tensor(np.stack([np.stack(self.hist[key][i])[self.offsets] for i in need]))  # noqa: E731
            with torch.no_grad():
                chunk = self.policy.select_action({cam: window(cam) for cam in self.cameras} or None, window(self.state_key),
                                                  window(self.env_key) if self.env_key else None).cpu().numpy()
            for row, i in enumerate(need):
                self.plan[i] = list(chunk[row, : self.execute])
        return np.stack([self.plan[i].pop(0) for i in ids])
