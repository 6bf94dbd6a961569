"""A synthetic multi-view store whose cached features carry a known progress signal.

Frames are tiny 8x8 images: pixel (0, 0) holds the global frame number (two bytes), the rest of
channel 0 holds the true progress t/(L-1) plus noise, channel 2 a per-task constant. The
deterministic ``encode`` turns that into 16-d features: [hi/255, lo/255, tanh(W @ channel means)].
So a test can read back, from a feature alone, which frame it came from (rewind labels) and a
model can learn progress from features (training test).
"""
from __future__ import annotations

import numpy as np
import torch

from roboreward.data import Episode, EpisodeStore, FeatureSpec, Subtask
from roboreward.data.cache import cache_embeddings

CAMS = ("observation.images.front", "observation.images.wrist")
TASKS = ("pick the red cube", "push the blue cube")
FEATURE_KEY = "toy-encoder"
DIM = 16
_W = np.random.default_rng(123).standard_normal((DIM - 2, 4)).astype(np.float32)


def encode(frames) -> torch.Tensor:
    """uint8 (B, 8, 8, 3) -> (B, 16) float, deterministic."""
    x = np.asarray(frames).astype(np.float32)
    ids = x[:, 0, 0, :2] / 255.0
    body = x[:, 1:].reshape(len(x), -1, 3).mean(1) / 255.0
    mixed = np.tanh(np.concatenate([body, np.ones((len(x), 1), np.float32)], 1) @ _W.T * 2.0)
    return torch.from_numpy(np.concatenate([ids, mixed], 1))


def frame_id(features: torch.Tensor) -> torch.Tensor:
    """Global frame number written into a frame by ``build_toy_store``, read back from its feature."""
    return (features[..., 0] * 255).round().long() * 256 + (features[..., 1] * 255).round().long()


def build_toy_store(path, lengths=(24, 30, 27, 33, 21, 36, 29, 25), seed=0, state=True, success=None,
                    done_from: float | None = None) -> EpisodeStore:
    """``success``: per-episode success flags (default unlabelled). ``done_from``: also record a
    per-frame ``gt.success``, 1 from true progress ``done_from`` on in successful episodes."""
    rng = np.random.default_rng(seed)
    feats = {cam: FeatureSpec((8, 8, 3), "uint8", "rgb") for cam in CAMS}
    if state:
        feats["observation.state"] = FeatureSpec((3,), "float32", "low_dim")
    feats["gt.progress"] = FeatureSpec((), "float32", "target")
    if done_from is not None:
        feats["gt.success"] = FeatureSpec((), "float32", "target")
    store = EpisodeStore.create(path, feats, fps=10.0)
    start = 0
    for i, length in enumerate(lengths):
        progress = np.linspace(0.0, 1.0, length, dtype=np.float32)
        data = {}
        for v, cam in enumerate(CAMS):
            img = rng.integers(0, 40, (length, 8, 8, 3)).astype(np.int64)
            signal = progress if v == 0 else progress**2
            img[:, 1:, :, 0] = np.clip(signal[:, None, None] * 200 + rng.integers(0, 30, (length, 7, 8)), 0, 255)
            img[:, 1:, :, 2] = 60 if i % 2 == 0 else 180
            gid = start + np.arange(length)
            img[:, 0, 0, 0], img[:, 0, 0, 1] = gid // 256, gid % 256
            data[cam] = img.astype(np.uint8)
        if state:
            data["observation.state"] = np.stack([progress, 1 - progress, rng.standard_normal(length)], 1).astype(np.float32)
        data["gt.progress"] = progress
        if done_from is not None:
            ok = success is not None and bool(success[i])
            data["gt.success"] = ((progress >= done_from) & ok).astype(np.float32)
        cut = int(round(0.4 * length))
        third = length // 3
        annotations = {
            "sparse": [Subtask("reach", 0, cut), Subtask("grasp", cut, length)],
            "dense": [Subtask("approach", 0, third), Subtask("close", third, 2 * third), Subtask("lift", 2 * third, length)],
        }
        store.add_episode(Episode(data=data, task=TASKS[i % 2], annotations=annotations,
                                  success=None if success is None else bool(success[i])))
        start += length
    cache_embeddings(path, encode, FEATURE_KEY, batch_size=64, progress=False)
    return EpisodeStore(path)


