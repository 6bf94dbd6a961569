"""The per-frame model both baselines share: each camera's cached feature, layer-normalised and
projected by its own linear map, averaged over views, plus the projected state and a task
embedding, through an MLP to one logit per frame. No history: a frame's output depends on that
frame alone, so ``stream`` needs no buffer and equals ``progress`` by construction.

A baseline subclass says what the logit is trained to predict (``frame_targets``: one float per
frame of the store) and how it is trained (``frame_loss``); progress is ``sigmoid(logit)``.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from ...config import ConfigError
from ...data.sampler import ClipConfig, ClipDataset
from ...data.store import EpisodeStore
from ..base import RewardModel
from ..features import FeatureRewardConfig, FrameStream, batch_state, batch_views, task_ids

TARGET = "frame_target"


@dataclass
class FrameRewardConfig(FeatureRewardConfig):
    """Inputs: ``FeatureRewardConfig``. The per-frame network's size:"""

    hidden: int = 256
    """MLP width."""
    layers: int = 2
    """Hidden layers of the MLP (>= 1)."""
    dropout: float = 0.1
    """Dropout after each hidden layer, in [0, 1)."""

    def __post_init__(self):
        super().__post_init__()
        for name in ("hidden", "layers"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"{name} must be an int >= 1, got {getattr(self, name)!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")


class FrameDataset(Dataset):
    """Every frame of ``episodes`` as one training sample: ``features.<camera>`` (1, D), the state
    (1, S) if any, ``task``, and ``frame_target`` (1,) from ``targets`` (one float per store frame)."""

    def __init__(self, store: EpisodeStore, config: FrameRewardConfig, episodes: Sequence[int], targets: np.ndarray):
        config.check_ready()
        self.store, self.targets = store, targets
        self.clips = ClipDataset(store, ClipConfig(window=1, frame_gap=1, cameras=config.cameras,
                                                   low_dim=(config.state_key,) if config.state_key else (),
                                                   features=config.feature_key, feature_copies=config.feature_copies,
                                                   targets=False, features_in_memory=True),
                                 episodes)

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> dict:
        item = self.clips[i]
        frame = int(self.store.episode_starts[item["episode_index"]]) + int(item["frame_index"][-1])
        item[TARGET] = torch.tensor([self.targets[frame]], dtype=torch.float32)
        return item


class FrameRewardModel(RewardModel, abstract=True):
    """Base of the per-frame baselines (see the module docstring)."""

    config_class: ClassVar[type[FrameRewardConfig]]
    trains_on_feature_copies = True

    def __init__(self, config: FrameRewardConfig):
        super().__init__(config)
        config.check_ready()
        d, n_views = config.hidden, len(config.cameras)
        self.feature_norm = nn.LayerNorm(config.feature_dim, elementwise_affine=False)
        self.view_proj = nn.Parameter(torch.randn(n_views, config.feature_dim, d) / config.feature_dim**0.5)
        self.view_bias = nn.Parameter(torch.zeros(n_views, d))
        self.state_proj = nn.Linear(config.state_dim, d) if config.state_key else None
        self.task_embed = nn.Embedding(len(config.tasks), d)
        mlp: list[nn.Module] = []
        for _ in range(config.layers):
            mlp += [nn.GELU(), nn.Dropout(config.dropout), nn.Linear(d, d)]
        self.mlp = nn.Sequential(*mlp, nn.GELU(), nn.Linear(d, 1))

    # ------------------------------------------------------------------ what a subclass defines
    @classmethod
    def frame_targets(cls, store: EpisodeStore, config: FrameRewardConfig, episodes: list[int]) -> np.ndarray:
        """(n_frames,) float target of the logit's sigmoid at every frame of ``episodes`` (NaN elsewhere)."""
        raise NotImplementedError

    def frame_loss(self, logit: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    # ------------------------------------------------------------------ the network
    def logits(self, feats: torch.Tensor, state: torch.Tensor | None, task: torch.Tensor) -> torch.Tensor:
        """feats (B, T, V, D), state (B, T, S) or None, task ids (B,) -> (B, T) logits."""
        x = torch.einsum("btvd,vde->btve", self.feature_norm(feats), self.view_proj) + self.view_bias
        x = x.mean(dim=2) + self.task_embed(task)[:, None]
        if self.state_proj is not None and state is not None:
            x = x + self.state_proj(state)
        return self.mlp(x).squeeze(-1)

    def _inputs(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        feats = batch_views(batch, self.config, self.device, who=self.name)
        state = batch_state(batch, self.config, self.device)
        return feats, state, task_ids(self.config, batch["task"], feats.shape[0], self.device)

    # ------------------------------------------------------------------ the API
    @torch.no_grad()
    def progress(self, batch: dict[str, Any]) -> torch.Tensor:
        return torch.sigmoid(self.logits(*self._inputs(batch)))

    def loss(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        logit = self.logits(*self._inputs(batch))
        return self.frame_loss(logit, torch.as_tensor(batch[TARGET], device=self.device).float())

    def stream(self, n_envs: int, encoder: Any = None) -> FrameStream:
        return FrameStream(self, n_envs, encoder)

    @classmethod
    def training_samples(cls, store: EpisodeStore, config: FrameRewardConfig, episodes: list[int]) -> FrameDataset:
        return FrameDataset(store, config, episodes, cls.frame_targets(store, config, list(episodes)))
