"""Shared fixtures: small real zarr episode stores on disk, built from seeded random data."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from roboreward.data import Episode, EpisodeStore, FeatureSpec, Subtask

CAMERAS = ("observation.images.front", "observation.images.wrist")
JOINTS = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]


def store_features(image_size: int = 16) -> dict[str, FeatureSpec]:
    """Two 16x16 cameras, state/action (6,), one ground-truth target."""
    feats = {cam: FeatureSpec((image_size, image_size, 3), "uint8", "rgb") for cam in CAMERAS}
    feats["observation.state"] = FeatureSpec((6,), "float32", "low_dim", [f"{j}.pos" for j in JOINTS])
    feats["action"] = FeatureSpec((6,), "float32", "low_dim", [f"{j}.pos" for j in JOINTS])
    feats["gt.progress"] = FeatureSpec((), "float32", "target")
    return feats


def random_episode(index: int, length: int, image_size: int = 16, seed: int = 0) -> Episode:
    """A deterministic episode: same (index, length, image_size, seed) -> same arrays."""
    rng = np.random.default_rng([seed, index])
    data = {cam: rng.integers(0, 256, (length, image_size, image_size, 3), dtype=np.uint8) for cam in CAMERAS}
    data["observation.state"] = rng.standard_normal((length, 6)).astype(np.float32)
    data["action"] = rng.standard_normal((length, 6)).astype(np.float32)
    data["gt.progress"] = np.linspace(0.0, 1.0, length, dtype=np.float32)
    half, third = length // 2, length // 3
    annotations = {
        "sparse": [Subtask("reach", 0, half), Subtask("grasp", half, length)],
        "dense": [Subtask("approach", 0, third), Subtask("close gripper", third, 2 * third), Subtask("lift", 2 * third, length)],
    }
    return Episode(
        data=data,
        task=f"pick the cube {index % 2}",
        success=index % 3 != 2,
        quality="expert" if index % 3 != 2 else "failure",
        annotations=annotations,
    )


def build_store(
    path,
    n_episodes: int = 3,
    image_size: int = 16,
    lengths: list[int] | None = None,
    seed: int = 0,
    fps: float = 10.0,
) -> tuple[EpisodeStore, list[Episode]]:
    """Create a store at ``path`` with ``n_episodes`` random episodes; returns it (open for append)
    and the episodes written, for exact comparisons."""
    lengths = lengths if lengths is not None else [7 + 3 * i for i in range(n_episodes)]
    assert len(lengths) == n_episodes
    store = EpisodeStore.create(Path(path), store_features(image_size), fps=fps, robot_type="so101_follower")
    episodes = [random_episode(i, n, image_size, seed) for i, n in enumerate(lengths)]
    for ep in episodes:
        store.add_episode(ep)
    return store, episodes


@pytest.fixture(scope="session")
def make_store():
    """``make_store(path, n_episodes=3, image_size=16, lengths=None, seed=0)`` -> (store, episodes)."""
    return build_store


@pytest.fixture
def make_episode():
    """``make_episode(index, length, image_size=16, seed=0)`` -> a deterministic Episode."""
    return random_episode


@pytest.fixture
def store_path(tmp_path, make_store) -> Path:
    """A valid 3-episode store (lengths 7, 10, 13) on disk."""
    path = tmp_path / "store.zarr"
    make_store(path)
    return path
