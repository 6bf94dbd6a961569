"""Success classifier: P(success | frame), the kind of reward LeRobot's reward classifier gives.
Frame labels: the simulator's per-frame ``gt.success`` where the store has it; else, in episodes
marked successful, the last ``success_tail`` of the frames (0 elsewhere and in failures). Progress
is the probability, so it says "done or not", not how far along a task is."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ...config import ConfigError
from ...data.store import EpisodeStore
from ...errors import RoborewardError
from ..base import register_reward_model
from .frame import FrameRewardConfig, FrameRewardModel

GT_SUCCESS = "gt.success"


@dataclass
class SuccessClassifierConfig(FrameRewardConfig):
    type: str = "success_classifier"
    """Registered name; always ``success_classifier``."""
    success_tail: float = 0.1
    """Without ``gt.success`` in the store: the fraction of a successful episode's last frames
    labelled success, in (0, 1]."""

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 < self.success_tail <= 1.0:
            raise ConfigError(f"success_tail must be in (0, 1], got {self.success_tail}")


@register_reward_model
class SuccessClassifier(FrameRewardModel):
    name = "success_classifier"
    config_class = SuccessClassifierConfig

    @classmethod
    def frame_targets(cls, store: EpisodeStore, config: SuccessClassifierConfig, episodes: list[int]) -> np.ndarray:
        """(n_frames,) 1.0 success / 0.0 not, NaN outside ``episodes``."""
        tail = config.success_tail
        labels = np.full(store.n_frames, np.nan, np.float32)
        flags = np.asarray(store.array(GT_SUCCESS)[: store.n_frames]).reshape(-1) if GT_SUCCESS in store.features else None
        if flags is None and not any(store.episodes[e].success for e in episodes):
            raise RoborewardError(
                f"{store.path}: no training episode is marked successful and the store has no {GT_SUCCESS}, so a success "
                "classifier has no positive frame; record Episode(success=...) or a per-frame gt.success"
            )
        for e in episodes:
            start, end = store.episode_range(e)
            if flags is not None:
                labels[start:end] = flags[start:end] > 0.5
            else:
                labels[start:end] = 0.0
                if store.episodes[e].success:
                    labels[end - max(1, int(round(tail * (end - start)))): end] = 1.0
        return labels

    def frame_loss(self, logit: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        bce = F.binary_cross_entropy_with_logits(logit, target)
        acc = ((logit > 0).float() == target).float().mean()
        return {"loss": bce, "bce": bce.detach(), "accuracy": acc.detach()}
