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


def test_boundary_error_one_to_one_or_nearest():
    from types import SimpleNamespace as NS

    from roboreward.rewards.perceptual.modeling_perceptual import boundary_error

    subs = [NS(start=0), NS(start=10), NS(start=30)]
    store = NS(episodes={0: NS(annotations={"sparse": subs})})
    # As many steps as subtasks: step k against subtask k (|12 - 10| and |27 - 30|).
    assert boundary_error(store, [0], [[0, 12, 27]]) == {"boundary_error_frames": 2.5, "boundaries_compared": 2,
                                                         "boundary_match": "one-to-one"}
    # More steps: every annotated start against the nearest step start (10 -> 9, 30 -> 33).
    assert boundary_error(store, [0], [[0, 5, 9, 20, 33]]) == {"boundary_error_frames": 2.0, "boundaries_compared": 2,
                                                               "boundary_match": "nearest"}


def test_temperature_blends_steps_and_is_a_readout_field(tmp_path):
    import torch

    from roboreward.config import ConfigError
    from roboreward.rewards.features import episode_batch

    store = build_toy_store(tmp_path / "toy.zarr", success=[1] * 8)
    model = Perceptual(PerceptualConfig.from_store(store, FEATURE_KEY, n_steps=2, n_features=4))
    model.fit(store, range(8))
    batch = episode_batch(store, model.config, [0, 1])
    sharp = model.progress(batch)
    model.config.temperature = 4.0
    soft = model.progress(batch)
    # A softer assignment pulls every reading towards the middle of the step values, never past it.
    assert torch.all((soft - 0.5).abs() <= (sharp - 0.5).abs() + 1e-6) and not torch.allclose(soft, sharp)
    assert "temperature" in PerceptualConfig.readout_fields
    with pytest.raises(ConfigError, match="temperature must be a number in"):
        PerceptualConfig.from_store(store, FEATURE_KEY, temperature=0)


def test_smoothing_is_a_causal_moving_average_offline_and_streamed(tmp_path):
    from roboreward.config import ConfigError
    from roboreward.rewards.features import episode_batch

    store = build_toy_store(tmp_path / "toy.zarr", success=[1] * 8)
    model = Perceptual(PerceptualConfig.from_store(store, FEATURE_KEY, n_steps=3, n_features=4))
    model.fit(store, range(8))
    batch = episode_batch(store, model.config, [0, 1])
    raw = model.progress(batch).numpy()
    model.config.smooth_frames = 4.0
    smooth = model.progress(batch).numpy()
    # By hand: frame 0 keeps its reading, then a quarter of the way to each new reading.
    expect = raw.copy()
    for t in range(1, raw.shape[1]):
        expect[:, t] = expect[:, t - 1] + (raw[:, t] - expect[:, t - 1]) / 4
    np.testing.assert_allclose(smooth, expect, atol=1e-6)
    assert np.abs(np.diff(smooth, axis=1)).mean() < np.abs(np.diff(raw, axis=1)).mean()

    # The stream keeps each env's last value; a reset starts that env afresh on its next frame.
    n0 = int(batch["lengths"][0])
    stream = model.stream(2)
    feats = {k: v for k, v in batch.items() if k.startswith("features.")}
    got = []
    for t in range(n0):
        got.append(stream.step({k: v[:, t] for k, v in feats.items()}, batch["task"]).numpy())
    np.testing.assert_allclose(np.stack(got, 1), smooth[:, :n0], atol=1e-5)
    stream.reset(1)
    first = stream.step({k: v[1:, 0] for k, v in feats.items()}, batch["task"][1:], envs=[1])
    np.testing.assert_allclose(first.numpy(), raw[1:, 0], atol=1e-5)
    assert "smooth_frames" in PerceptualConfig.readout_fields
    with pytest.raises(ConfigError, match="smooth_frames must be a number in"):
        PerceptualConfig.from_store(store, FEATURE_KEY, smooth_frames=0.5)


def test_change_gate_after_smoothing_holds_still_frames_offline_and_streamed(tmp_path):
    import torch

    from roboreward.config import ConfigError
    from roboreward.rewards.features import episode_batch

    store = build_toy_store(tmp_path / "toy.zarr", success=[1] * 8)
    model = Perceptual(PerceptualConfig.from_store(store, FEATURE_KEY, n_steps=3, n_features=4, smooth_frames=4.0))
    model.fit(store, range(8))
    batch = episode_batch(store, model.config, [0, 1])
    # Freeze both episodes from frame 5 on for 6 frames: the smoothed reading keeps moving, the gated one may not.
    n = int(batch["lengths"].min())
    idx = torch.cat([torch.arange(6), torch.full((6,), 5), torch.arange(6, n)])
    frozen = {k: (v[:, idx] if torch.is_tensor(v) and v.dim() == 3 else v) for k, v in batch.items()}
    smooth = model.progress(frozen)
    model.config.readout_gate = 0.05
    gated = model.progress(frozen)
    assert torch.equal(gated[:, 5:12], gated[:, 5:6].expand(-1, 7))
    assert (smooth[:, 6:12] - smooth[:, 5:6]).abs().max() > 1e-4  # without the gate the average moves on
    stream = model.stream(2)
    feats = {k: v for k, v in frozen.items() if k.startswith("features.")}
    got = torch.stack([stream.step({k: v[:, t] for k, v in feats.items()}, frozen["task"]) for t in range(len(idx))], 1)
    torch.testing.assert_close(got, gated[:, : len(idx)], atol=1e-5, rtol=0)
    with pytest.raises(ConfigError, match="readout_gate must be in"):
        PerceptualConfig.from_store(store, FEATURE_KEY, readout_gate=-1)
