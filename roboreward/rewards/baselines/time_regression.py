"""Time regression: progress = t / (T - 1) regressed from one frame's features (the naive progress
model). It learns how far into a demonstration a frame usually is, so it pays for elapsed time
whatever happened: the baseline every stage-aware model must beat on failures and pauses."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ...data.store import EpisodeStore
from ..base import register_reward_model
from .frame import FrameRewardConfig, FrameRewardModel


@dataclass
class TimeRegressionConfig(FrameRewardConfig):
    type: str = "time_regression"
    """Registered name; always ``time_regression``."""


@register_reward_model
class TimeRegression(FrameRewardModel):
    name = "time_regression"
    config_class = TimeRegressionConfig

    @classmethod
    def frame_targets(cls, store: EpisodeStore, config: TimeRegressionConfig, episodes: list[int]) -> np.ndarray:
        target = np.full(store.n_frames, np.nan, np.float32)
        for e in episodes:
            start, end = store.episode_range(e)
            target[start:end] = np.linspace(0.0, 1.0, end - start, dtype=np.float32) if end - start > 1 else 1.0
        return target

    def frame_loss(self, logit: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        mse = F.mse_loss(torch.sigmoid(logit), target)
        return {"loss": mse, "progress_mse": mse.detach()}
