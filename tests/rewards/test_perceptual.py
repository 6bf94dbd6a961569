"""Perceptual rewards: exact step discovery on a sequence with known boundaries, the discriminative
feature choice, and the one-line errors of a fit that cannot work."""
from __future__ import annotations

import numpy as np
import pytest
from sarm_toy import FEATURE_KEY, build_toy_store

from roboreward.errors import RoborewardError
from roboreward.rewards.perceptual import Perceptual, PerceptualConfig, discriminative_features, segment_demo


def test_step_discovery_finds_known_boundaries_exactly():
    rng = np.random.default_rng(0)
    starts = [0, 13, 31, 40]
    means = rng.standard_normal((4, 6)) * 3
    x = np.concatenate([means[k] + 0.1 * rng.standard_normal((end - start, 6))
                        for k, (start, end) in enumerate(zip(starts, [*starts[1:], 57]))])
    assert segment_demo(x, 4) == starts
    # Brute force over every 3-cut split agrees that this is the least within-segment variance.
    def sse(bounds):
        edges = [*bounds, len(x)]
        return sum(((x[a:b] - x[a:b].mean(0)) ** 2).sum() for a, b in zip(edges[:-1], edges[1:]))
    best = min(((0, i, j, k) for i in range(1, 55) for j in range(i + 1, 56) for k in range(j + 1, 57)), key=sse)
    assert list(best) == starts
    with pytest.raises(RoborewardError, match="of 3 frames cannot be cut into 4 steps"):
        segment_demo(x[:3], 4)


def test_discriminative_features_pick_the_ones_that_separate_a_step():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((200, 10))
    steps = np.repeat([0, 1], 100)
    x[steps == 1, 7] += 5.0  # feature 7 alone tells step 1 from step 0
    chosen = discriminative_features(x, steps, 2, 1)
    assert chosen[:, 0].tolist() == [7, 7]


def test_fit_needs_expert_demos(tmp_path):
    store = build_toy_store(tmp_path / "toy.zarr", success=[0] * 8)
    model = Perceptual(PerceptualConfig.from_store(store, FEATURE_KEY, n_steps=2, n_features=4))
    with pytest.raises(RoborewardError, match="no expert or successful episode among the 8 training episodes"):
        model.fit(store, range(8))
    labelled = build_toy_store(tmp_path / "ok.zarr", success=[1] * 8)
    report = Perceptual(PerceptualConfig.from_store(labelled, FEATURE_KEY, n_steps=2, n_features=4)).fit(labelled, range(8))
    # The toy episodes are annotated reach / grasp (2 subtasks): the boundary error is measured.
    assert report["boundaries_compared"] == 8 and report["boundary_error_frames"] is not None


def test_training_seed_draws_which_demos_the_fit_uses(tmp_path):
    """Without a seed the fit takes the first `demos` experts; `reward train` passes its seed, which
    draws `demos` of them (in store order): seeds measure the spread over the choice of demos."""
    store = build_toy_store(tmp_path / "toy.zarr", success=[1] * 8)
    pick = lambda seed: Perceptual.demo_episodes(store, range(8), 3, seed)  # noqa: E731
    assert pick(None) == [0, 1, 2]
    draws = [pick(seed) for seed in range(4)]
    assert all(len(d) == 3 and d == sorted(d) and set(d) <= set(range(8)) for d in draws)
    assert pick(1) == draws[1] and len({tuple(d) for d in draws}) > 1  # reproducible, and the seed matters
    assert Perceptual.demo_episodes(store, range(8), 8, 5) == list(range(8))  # fewer experts than asked: all of them
