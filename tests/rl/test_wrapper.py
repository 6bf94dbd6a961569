"""The shaping wrappers on real sim envs with a real (untrained, deterministic) SARM reading the
rendered cameras: the vector wrapper's rewards equal per-env streaming with each env's history
reset exactly when that env restarts; terms are logged; bad inputs are one line."""
from __future__ import annotations

import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3.common.vec_env import DummyVecEnv

sys.path.insert(0, str(Path(__file__).parents[1] / "rewards"))
from sarm_toy import FEATURE_KEY, TASKS, build_toy_store, encode  # noqa: E402

from roboreward.errors import RoborewardError  # noqa: E402
from roboreward.rewards import SARMConfig, make_reward_model  # noqa: E402
from roboreward.rl.envs import POLICY_KEYS, make_env  # noqa: E402
from roboreward.shaping import (ModelPotential, OraclePotential, ShapedReward, ShapedRewardVecEnv,  # noqa: E402
                                ShapingConfig)

TASK = TASKS[0]
GAMMA = 0.9


class Recorder(gym.Wrapper):
    """Keeps every observation the env hands out, with what produced it."""

    def __init__(self, env):
        super().__init__(env)
        self.events = []

    def reset(self, **kw):
        obs, info = self.env.reset(**kw)
        self.events.append(("reset", obs, info, False))
        return obs, info

    def step(self, action):
        obs, r, term, trunc, info = self.env.step(action)
        self.events.append(("step", obs, info, term))
        return obs, r, term, trunc, info


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    store = build_toy_store(tmp_path_factory.mktemp("wrap") / "toy.zarr")
    cfg = SARMConfig.from_store(store, FEATURE_KEY, window=4, frame_gap=2, d_model=32, n_heads=2, n_layers=1,
                                      mlp_ratio=2, dropout=0.0, max_rewind=2)
    torch.manual_seed(0)
    return make_reward_model(cfg).eval()


def _envs(lengths, cameras=("front", "wrist")):
    recorders = []

    def factory(n):
        def make():
            rec = Recorder(make_env("pick_place", cameras, 16, max_episode_steps=n))
            recorders.append(rec)
            return rec
        return make

    return DummyVecEnv([factory(n) for n in lengths]), recorders


def _reference(model, events):
    """Per-env streaming of one env's frames, history reset at each of its episode starts: the
    (Phi(s), Phi(s'), terminated) of every step."""
    stream = model.stream(1, encoder=encode)
    cams = model.config.cameras
    out, phi = [], None
    for kind, obs, _, term in events:
        value = float(stream.step({c: obs[c][None] for c in cams}, TASK)[0]) if kind == "step" else None
        if kind == "reset":
            stream.reset(0)
            phi = float(stream.step({c: obs[c][None] for c in cams}, TASK)[0])
        else:
            out.append((phi, value, term))
            phi = value
    return out


def test_vector_wrapper_equals_per_env_streaming(model):
    venv, recs = _envs([4, 7])
    env = ShapedRewardVecEnv(venv, ShapingConfig(scheme="pbrs", gamma=GAMMA),
                             ModelPotential(model, 2, TASK, encoder=encode), POLICY_KEYS)
    env.seed(3)
    obs = env.reset()
    assert obs.shape == (2, env.observation_space.shape[0]) and obs.dtype == np.float32
    rng = np.random.default_rng(0)
    got = [[], []]
    ends = [0, 0]
    for _ in range(16):
        obs, rew, dones, infos = env.step(rng.uniform(-1, 1, (2, 6)).astype(np.float32))
        for i in range(2):
            t = infos[i]["reward_terms"]
            assert set(t) >= {"progress", "potential", "shaping", "r_gold", "success", "reward"}
            assert rew[i] == pytest.approx(t["reward"], abs=1e-6)
            got[i].append((t["potential"], t["progress"], rew[i]))
            if dones[i]:
                ends[i] += 1
                assert "episode_terms" in infos[i]
                assert infos[i]["terminal_observation"].shape == obs[i].shape  # in the policy's space
    env.close()
    assert ends == [16 // 4, 16 // 7]  # both envs auto-reset, at different steps
    for i in range(2):
        ref = _reference(model, recs[i].events)
        assert len(ref) == 16
        for (phi, phi_next, rew), (rphi, rnext, term) in zip(got[i], ref):
            assert phi == pytest.approx(rphi, abs=1e-5) and phi_next == pytest.approx(rnext, abs=1e-5)
            assert rew == pytest.approx(GAMMA * (0.0 if term else rnext) - rphi, abs=1e-5)


def test_single_env_wrapper_matches(model):
    rec = Recorder(make_env("pick_place", ("front", "wrist"), 16, max_episode_steps=5))
    env = ShapedReward(rec, ShapingConfig(scheme="naive", gamma=GAMMA), ModelPotential(model, 1, TASK, encoder=encode),
                       POLICY_KEYS)
    env.reset(seed=1)
    rng = np.random.default_rng(1)
    rewards, done = [], False
    while not done:
        _, r, term, trunc, info = env.step(rng.uniform(-1, 1, 6).astype(np.float32))
        rewards.append(r)
        done = term or trunc
    assert info["episode_terms"]["length"] == 5
    ref = _reference(model, rec.events)
    assert rewards == pytest.approx([nxt - phi for phi, nxt, _ in ref], abs=1e-5)
    env.close()


def test_oracle_potential_reads_gt_progress():
    venv, recs = _envs([3], cameras=())
    env = ShapedRewardVecEnv(venv, ShapingConfig(scheme="oracle_pbrs", gamma=1.0), OraclePotential(), POLICY_KEYS)
    env.reset()
    for _ in range(3):
        _, rew, dones, infos = env.step(np.zeros((1, 6), np.float32))
    progress = [e[2]["progress"] for e in recs[0].events[:4]]
    assert infos[0]["reward_terms"]["progress"] == pytest.approx(progress[3])
    assert rew[0] == pytest.approx(progress[3] - progress[2], abs=1e-6)
    env.close()


def test_model_needs_cameras_the_env_renders(model):
    venv, _ = _envs([3], cameras=("front",))
    with pytest.raises(RoborewardError, match="observation.images.wrist.*does not render") as info:
        ShapedRewardVecEnv(venv, ShapingConfig(), ModelPotential(model, 1, TASK, encoder=encode), POLICY_KEYS)
    assert "\n" not in str(info.value)
    venv.close()


def test_model_of_another_task_is_refused(model):
    with pytest.raises(RoborewardError, match="trained on tasks"):
        ModelPotential(model, 1, "Pick up the red cube and put it in the bowl.", encoder=encode)
