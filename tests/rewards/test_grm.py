"""GRM: hop labels and chaining against hand-computed values, the two-hot target, the pair balance,
the three reading modes and their fusion on an episode with known progress, and one-shot adaptation."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sarm_toy import FEATURE_KEY, TASKS, build_toy_store

from roboreward.config import ConfigError
from roboreward.errors import RoborewardError
from roboreward.rewards import RewardModel
from roboreward.rewards.features import episode_batch
from roboreward.rewards.grm import GRM, GRMConfig, GRMPairs, chain, hop_label, state_progress, two_hot

SMALL = dict(d_model=32, n_heads=2, n_layers=1, dropout=0.0, hop_bins=11, pairs_per_episode=200, incremental_gap=3)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return build_toy_store(tmp_path_factory.mktemp("grm") / "toy.zarr", success=[1, 1, 0, 1, 1, 0, 1, 0])


def test_hop_labels_and_chaining_hand_computed():
    # forward: (0.6 - 0.2) / (1 - 0.2) = 0.5; backward: (0.3 - 0.6) / 0.6 = -0.5; from 1 forward: 0
    np.testing.assert_allclose(hop_label([0.2, 0.6, 1.0, 0.0], [0.6, 0.3, 1.0, 0.0]), [0.5, -0.5, 0.0, 0.0])
    torch.testing.assert_close(chain(torch.tensor([0.2, 0.6]), torch.tensor([0.5, -0.5])), torch.tensor([0.6, 0.3]))
    p, q = np.random.default_rng(0).random((2, 100))
    torch.testing.assert_close(chain(torch.tensor(p), torch.tensor(hop_label(p, q))), torch.tensor(q), rtol=0, atol=1e-9)
    target = two_hot(torch.tensor([0.1, -1.0, 1.0]), 11)
    centres = torch.linspace(-1, 1, 11)
    torch.testing.assert_close((target * centres).sum(-1), torch.tensor([0.1, -1.0, 1.0]))
    assert torch.allclose(target.sum(-1), torch.ones(3))


def test_state_progress_has_equal_mass_per_subtask(store):
    phi = state_progress(store, [0])
    start, end = store.episode_range(0)
    cut = int(round(0.4 * (end - start)))  # reach [0, cut), grasp [cut, end): each half of Phi
    assert phi[start] == 0.0 and phi[start + cut] == pytest.approx(0.5) and phi[end - 1] == pytest.approx(1.0)


def test_pairs_are_balanced_over_hop_bins_and_hold_zero_hops(store):
    cfg = GRMConfig.from_store(store, FEATURE_KEY, episodes=range(6), **SMALL)
    pairs = GRMPairs(store, cfg, range(6))
    hops = np.array([float(pairs[i]["hop"]) for i in range(1000)])
    assert 0.02 < np.mean(hops == 0) < 0.15  # 5% drawn as zero hops, plus pairs whose two frames share Phi
    assert np.mean(hops < -0.2) > 0.15 and np.mean(hops > 0.2) > 0.15  # backward hops are not rare
    again = pairs[7]
    assert float(again["hop"]) == float(pairs[7]["hop"])  # item i is the same every time


def test_anchored_pairs_hop_from_the_reference_itself_with_its_label(store):
    cfg = GRMConfig.from_store(store, FEATURE_KEY, episodes=range(6), anchor_share=0.5, **SMALL)
    pairs = GRMPairs(store, cfg, range(6))
    cam = cfg.cameras[0]
    table = torch.from_numpy(np.asarray(pairs.frames.feats[0][cam], np.float32))
    n_start = n_goal = 0
    for i in range(400):
        item = pairs[i]
        before = item[f"before.features.{cam}"]
        after = int(torch.nonzero((table == item[f"after.features.{cam}"]).all(-1))[0])  # the after frame's index
        phi_after = float(pairs.phi[after])
        if torch.equal(before, item[f"start.features.{cam}"]):
            n_start += 1
            assert float(item["hop"]) == pytest.approx(phi_after, abs=1e-6)  # from Phi 0: the frame's progress
        elif torch.equal(before, item[f"goal.features.{cam}"]):
            n_goal += 1
            assert float(item["hop"]) == pytest.approx(phi_after - 1.0, abs=1e-6)  # from Phi 1: what is left, negative
    # half the pairs are anchored, half of those on each reference (a few unanchored ones start at their own start)
    assert 0.18 < n_start / 400 < 0.35 and 0.18 < n_goal / 400 < 0.32
    with pytest.raises(ConfigError, match="anchor_share"):
        GRMConfig.from_store(store, FEATURE_KEY, episodes=range(6), anchor_share=1.0, **SMALL)


@pytest.mark.parametrize("mode", ["forward", "backward", "incremental", "fused"])
def test_reading_modes_recover_known_progress_from_exact_hops(store, mode, monkeypatch):
    cfg = GRMConfig.from_store(store, FEATURE_KEY, episodes=range(6), mode=mode, **SMALL)
    model = GRM(cfg).eval()
    batch = episode_batch(store, cfg, [1])
    t = int(batch["lengths"][0])
    phi = torch.linspace(0, 1, t)[None] ** 1.5  # known progress of the episode
    g = cfg.incremental_gap
    prev = torch.cat([phi[:, :1].expand(1, g), phi[:, : t - g]], 1)

    def exact(tokens, task, chunk=8192):
        step = torch.tensor(hop_label(prev.numpy(), phi.numpy()), dtype=torch.float32)
        step[:, :g] = 0.0
        return {"forward": phi.clone(), "backward": phi.clone(), "step": step}

    monkeypatch.setattr(model, "readings", exact)
    torch.testing.assert_close(model.progress(batch), phi, rtol=0, atol=1e-5)


def test_conservative_fusion_moves_little_where_the_anchored_readings_disagree(store):
    cfg = GRMConfig.from_store(store, FEATURE_KEY, episodes=range(6), consistency_alpha=4.0, **SMALL)
    model = GRM(cfg)
    prev = torch.tensor([0.5, 0.5])
    agree = model.combine(torch.tensor([0.8, 0.8]), torch.tensor([0.8, 0.2]), torch.tensor([0.8, 0.8]), prev)
    # Where forward and backward agree the value moves to their mean; where they disagree, barely.
    assert agree[0] == pytest.approx(0.8) and 0.5 <= float(agree[1]) < 0.52


def test_median_fusion_ignores_one_fooled_mode(store):
    model = GRM(GRMConfig.from_store(store, FEATURE_KEY, episodes=range(6), fusion="median", **SMALL))
    # Env 0: forward fooled low at the end; env 1: backward fooled high at the start.
    forward, backward, incremental = torch.tensor([0.2, 0.1]), torch.tensor([1.0, 1.0]), torch.tensor([0.8, 0.15])
    torch.testing.assert_close(model.combine(forward, backward, incremental, torch.tensor([0.5, 0.5])), torch.tensor([0.8, 0.15]))
    assert model.combine(forward, backward, incremental, None).tolist() == pytest.approx([0.8, 0.15])


def test_one_shot_adaptation_adds_the_task_and_refuses_what_cannot_adapt(store, tmp_path):
    cfg = GRMConfig.from_store(store, FEATURE_KEY, episodes=[0, 2, 4], **SMALL)
    base = GRM(cfg)
    base.set_references(store, [0, 2, 4])
    base.config.tasks = [TASKS[0]]  # a base model that never saw the second task
    base = GRM(base.config)
    base.set_references(store, [0, 2, 4])
    adapted = RewardModel.from_pretrained(base.adapt(store, 1, tmp_path / "adapted", steps=20, progress=False))
    assert adapted.config.tasks == [TASKS[0], TASKS[1]]
    assert adapted.progress(episode_batch(store, adapted.config, [3])).shape[0] == 1  # the new task now reads
    with pytest.raises(RoborewardError, match="task 'push the blue cube' was not in the training data"):
        base.progress(episode_batch(store, adapted.config, [3]))
    with pytest.raises(RoborewardError, match="episode 99"):
        base.adapt(store, 99, tmp_path / "x", steps=1, progress=False)
    from roboreward.rewards.baselines import TimeRegression, TimeRegressionConfig

    # With state: the adapted model reads the cameras only unless told to keep the state; the base's
    # shared weights carry over either way (here unchanged: no fine-tuning steps).
    cfg = GRMConfig.from_store(store, FEATURE_KEY, episodes=[0, 2, 4], state_key="observation.state", **SMALL)
    cfg.tasks = [TASKS[0]]
    stated = GRM(cfg)
    stated.set_references(store, [0, 2, 4])
    cameras_only = RewardModel.from_pretrained(stated.adapt(store, 1, tmp_path / "cams", steps=0, progress=False))
    kept = RewardModel.from_pretrained(stated.adapt(store, 1, tmp_path / "kept", steps=0, progress=False, keep_state=True))
    assert cameras_only.config.state_key is None and cameras_only.state_proj is None
    assert kept.config.state_key == "observation.state"
    torch.testing.assert_close(kept.state_proj.weight, stated.state_proj.weight)
    torch.testing.assert_close(kept.ref_state[0], stated.ref_state[0])
    for m in (cameras_only, kept):
        torch.testing.assert_close(m.view_proj, stated.view_proj)
        torch.testing.assert_close(m.head.weight, stated.head.weight)
    batch = episode_batch(store, cameras_only.config, [3])
    assert "observation.state" not in batch and cameras_only.progress(batch).shape == (1, store.episodes[3].length)

    other = TimeRegression(TimeRegressionConfig.from_store(store, FEATURE_KEY))
    with pytest.raises(RoborewardError, match="cannot adapt from one demonstration"):
        other.adapt(store, 1, tmp_path / "y")


def test_change_gate_stream_equals_offline_and_holds_still_frames(store):
    torch.manual_seed(0)
    cfg = GRMConfig.from_store(store, FEATURE_KEY, episodes=range(6), readout_gate=0.05, state_key="observation.state", **SMALL)
    model = GRM(cfg).eval()
    model.set_references(store, range(6))
    batch = episode_batch(store, cfg, [2])
    index = torch.tensor(list(range(12)) + [11] * 10)  # frames 0..11, then frame 11 held
    held = {k: v[:, index] if torch.is_tensor(v) and k != "lengths" else v for k, v in batch.items()}
    offline = model.progress(held)[0]
    assert torch.equal(offline[12:], offline[11].expand(10))
    stream = model.stream(1)
    online = [stream.step({k: v[:, t] for k, v in held.items() if torch.is_tensor(v) and k != "lengths"}, held["task"])[0]
              for t in range(len(index))]
    torch.testing.assert_close(torch.stack(online), offline, rtol=0, atol=1e-5)


def test_smoothing_readout_is_the_moving_average_of_progress_offline_and_streamed(store):
    torch.manual_seed(0)
    cfg = GRMConfig.from_store(store, FEATURE_KEY, episodes=range(6), state_key="observation.state", **SMALL)
    model = GRM(cfg).eval()
    model.set_references(store, range(6))
    batch = episode_batch(store, cfg, [2])
    raw = model.progress(batch)[0]
    model.config.smooth_frames = 4.0
    smoothed = model.progress(batch)[0]
    expected = [raw[0]]
    for value in raw[1:]:
        expected.append(expected[-1] + (value - expected[-1]) / 4)
    torch.testing.assert_close(smoothed, torch.stack(expected), rtol=0, atol=1e-6)
    assert (smoothed.diff().abs().max() < raw.diff().abs().max()) or raw.diff().abs().max() == 0
    model.config.readout_gate = 0.05  # the gate after the smoothing, streamed over two episodes with a reset
    stream = model.stream(1)
    for e in (2, 4):
        one = episode_batch(store, cfg, [e])
        offline = model.progress(one)[0]
        stream.reset(0)
        online = [stream.step({k: v[:, t] for k, v in one.items() if torch.is_tensor(v) and k != "lengths"}, one["task"])[0]
                  for t in range(store.episodes[e].length)]
        torch.testing.assert_close(torch.stack(online), offline, rtol=0, atol=1e-5)
    with pytest.raises(ConfigError, match="smooth_frames must be a number in \\[1, 1000\\]"):
        GRMConfig.from_store(store, FEATURE_KEY, episodes=range(6), smooth_frames=0.5, **SMALL)


def test_reward_adapt_command_saves_its_readout_and_inputs(store, tmp_path):
    """``reward adapt`` as a user runs it: the adapted model keeps the readout fields passed to it
    (so online use reads it that way) and drops the joint state unless told to keep it."""
    import os
    import subprocess
    import sys

    cfg = GRMConfig.from_store(store, FEATURE_KEY, episodes=[0, 2, 4], state_key="observation.state", **SMALL)
    cfg.tasks = [TASKS[0]]
    base = GRM(cfg)
    base.set_references(store, [0, 2, 4])
    base.save_pretrained(tmp_path / "base")
    out = tmp_path / "adapted"
    proc = subprocess.run([sys.executable, "-m", "roboreward.cli", "reward", "adapt", "--model", str(tmp_path / "base"),
                           "--dataset", str(store.path), "--episode", "1", "--out", str(out), "--steps", "2",
                           "--readout", "smooth_frames=8"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr
    adapted = RewardModel.from_pretrained(out)
    assert adapted.config.smooth_frames == 8 and adapted.config.state_key is None
    assert adapted.config.tasks == [TASKS[0], TASKS[1]]
