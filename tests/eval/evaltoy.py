"""A small store for evaluation tests: successful episodes whose cached features carry progress
0 -> 1, failed ones whose progress stalls at 0.4, and a tiny SARM trained on successes.

Frames are 8x8 images; channel 0 of rows 1..7 holds the true progress (x200) plus noise, channel 2
a per-task constant. ``encode`` maps them to 16-d features deterministically. ``gt.success`` holds
from the frame a success's progress reaches ``SUCCESS_AT`` on (a few frames before its end), as the
simulator's per-frame success check does once the object is placed."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import default_collate

from roboreward.data import Episode, EpisodeStore, FeatureSpec, Subtask
from roboreward.data.cache import cache_embeddings
from roboreward.rewards import RewardModel, RewardModelConfig
from roboreward.rewards.sarm import SARM, SARMConfig, SARMDataset

CAMS = ("observation.images.front", "observation.images.wrist")
TASKS = ("pick the red cube", "push the blue cube")
FEATURE_KEY = "evaltoy-encoder"
DIM = 16
_W = np.random.default_rng(7).standard_normal((DIM - 8, 4)).astype(np.float32)
# (length, success, quality): successes reach 1, failures stall at 0.4.
PLAN = [(24, True, "expert"), (30, True, "expert"), (27, True, "suboptimal"), (33, True, "expert"),
        (28, True, "expert"), (26, False, "failure"), (31, True, "suboptimal"), (25, False, "failure"),
        (29, True, "expert"), (22, False, "failure"), (26, True, "suboptimal"), (23, True, "expert")]
SUCCESS_AT = 0.9
TRAIN = [0, 1, 2, 3, 4, 6]
HELD_OUT = [5, 7, 8, 9, 10, 11]


def encode(frames) -> torch.Tensor:
    """uint8 (B, 8, 8, 3) -> (B, 16): row means of channel 0, then a fixed mix of channel means."""
    x = np.asarray(frames).astype(np.float32) / 255.0
    rows = x[:, :, :, 0].mean(2)
    body = x.reshape(len(x), -1, 3).mean(1)
    mixed = np.tanh(np.concatenate([body, np.ones((len(x), 1), np.float32)], 1) @ _W.T * 2.0)
    return torch.from_numpy(np.concatenate([rows, mixed], 1))


def build_eval_store(path, cache: bool = True) -> EpisodeStore:
    rng = np.random.default_rng(0)
    feats = {cam: FeatureSpec((8, 8, 3), "uint8", "rgb") for cam in CAMS}
    feats["observation.state"] = FeatureSpec((2,), "float32", "low_dim")
    feats["gt.progress"] = FeatureSpec((), "float32", "target")
    feats["gt.success"] = FeatureSpec((), "bool", "target")
    store = EpisodeStore.create(path, feats, fps=10.0)
    for i, (length, success, quality) in enumerate(PLAN):
        progress = np.linspace(0.0, 1.0 if success else 0.4, length, dtype=np.float32)
        data = {}
        for v, cam in enumerate(CAMS):
            img = rng.integers(0, 30, (length, 8, 8, 3)).astype(np.int64)
            signal = progress if v == 0 else np.sqrt(progress)
            img[:, :, :, 0] = np.clip(signal[:, None, None] * 200 + rng.integers(0, 20, (length, 8, 8)), 0, 255)
            img[:, :, :, 2] = 60 if i % 2 == 0 else 180
            data[cam] = img.astype(np.uint8)
        data["observation.state"] = np.stack([progress, rng.standard_normal(length)], 1).astype(np.float32)
        data["gt.progress"] = progress
        data["gt.success"] = (progress >= SUCCESS_AT) if success else np.zeros(length, bool)
        cut = int(round(0.4 * length))
        # A failure never gets past reaching (its progress stalls at the end of that stage).
        subtasks = [Subtask("reach", 0, cut), Subtask("grasp", cut, length)] if success else [Subtask("reach", 0, length)]
        annotations = {"sparse": subtasks}
        store.add_episode(Episode(data=data, task=TASKS[i % 2], success=success, quality=quality, annotations=annotations))
    if cache:
        cache_embeddings(path, encode, FEATURE_KEY, batch_size=64, progress=False)
    return EpisodeStore(path)


def tiny_config(store: EpisodeStore, **overrides) -> SARMConfig:
    base = dict(window=4, frame_gap=2, d_model=32, n_heads=2, n_layers=2, mlp_ratio=2, dropout=0.0, max_rewind=3,
                rewind_prob=0.5, perturb_prob=0.2)
    base.update(overrides)
    return SARMConfig.from_store(store, FEATURE_KEY, TRAIN, **base)


def train_tiny_sarm(store: EpisodeStore, steps: int = 60, seed: int = 0, **overrides) -> SARM:
    torch.manual_seed(seed)
    cfg = tiny_config(store, **overrides)
    ds = SARMDataset(store, cfg, TRAIN)
    data = default_collate([ds[i] for i in range(len(ds))])
    model = SARM(cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(ds), (48,), generator=gen)
        batch = {k: (v[idx] if torch.is_tensor(v) else [v[i] for i in idx]) for k, v in data.items()}
        loss = model.loss(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@dataclass
class ClockConfig(RewardModelConfig):
    type: str = "test_clock"
    """Not registered: a test-only model."""


class ClockModel(RewardModel):
    """Progress = elapsed share of the episode: the frame counter a reward model must beat."""

    name = "test_clock"
    config_class = ClockConfig

    def episode_progress(self, store, episodes, level=None, reverse=False):
        return [torch.linspace(0, 1, store.episodes[e].length) for e in episodes]
