"""A tiny synthetic store for policy tests: expert episodes whose progress rises to 1 and failure
episodes whose progress stalls then falls; state moves at a constant per-episode velocity and the
action is the next state (learnable from a 2-frame window); a feature cache from a deterministic
mean-colour encoder."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from roboreward.data import Episode, EpisodeStore, FeatureSpec
from roboreward.data.cache import cache_embeddings

CAMERA = "observation.images.front"
FEATURE_KEY = "mean-color"


def mean_color(frames) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3) mean colour in [0, 1]."""
    return torch.from_numpy(np.asarray(frames, np.float32).mean(axis=(1, 2)) / 255.0)


def toy_progress(length: int, failure: bool) -> np.ndarray:
    t = np.linspace(0.0, 1.0, length, dtype=np.float32)
    if not failure:
        return t
    # Rises to 0.4, stalls, then falls back: a failed grasp.
    p = np.minimum(t, 0.4)
    p[2 * length // 3 :] = np.linspace(0.4, 0.1, length - 2 * length // 3, dtype=np.float32)
    return p


def build_policy_store(path, lengths=(12, 9, 12, 10), failures=(False, False, True, True), seed=0) -> EpisodeStore:
    features = {
        CAMERA: FeatureSpec((8, 8, 3), "uint8", "rgb"),
        "observation.state": FeatureSpec((6,), "float32", "low_dim"),
        "action": FeatureSpec((6,), "float32", "low_dim"),
        "gt.progress": FeatureSpec((), "float32", "target"),
    }
    store = EpisodeStore.create(Path(path), features, fps=10.0, cameras=[CAMERA])
    for i, (n, failed) in enumerate(zip(lengths, failures)):
        rng = np.random.default_rng([seed, i])
        velocity = rng.uniform(-0.3, 0.3, 6).astype(np.float32)
        states = (rng.standard_normal(6).astype(np.float32) + np.arange(n + 1)[:, None] * velocity).astype(np.float32)
        store.add_episode(Episode(
            data={
                CAMERA: rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8),
                "observation.state": states[:n],
                "action": states[1:],
                "gt.progress": toy_progress(n, failed),
            },
            task="pick the cube",
            success=not failed,
            quality="failure" if failed else "expert",
        ))
    cache_embeddings(store.path, mean_color, FEATURE_KEY, batch_size=64, progress=False)
    return EpisodeStore(store.path)
