"""Smoke tests over every registered simulated env, action units and vectorised use."""
from __future__ import annotations

import functools

import gymnasium as gym
import numpy as np
import pytest

import roboreward.sim  # noqa: F401  (registers the envs)
from roboreward.sim import ENV_IDS, SO101Env
from roboreward.sim.robot import FEATURE_NAMES, HIGH, HOME_DEG, JOINT_RANGES_RAD, LOW, from_lerobot, to_lerobot
from roboreward.sim.tasks import TASKS

INFO_KEYS = {"stage", "stage_name", "stage_progress", "progress", "success"}


@pytest.mark.parametrize("env_id", sorted(ENV_IDS.values()))
def test_env_smoke(env_id):
    env = gym.make(env_id, image_size=32)
    try:
        obs, info = env.reset(seed=0)
        space = env.observation_space
        assert set(obs) == {"observation.state", "observation.images.front", "observation.images.wrist",
                            "observation.environment_state"}
        for _ in range(5):
            action = env.action_space.sample()
            obs, reward, terminated, truncated, info = env.step(action)
            assert space.contains(obs), {k: (v.shape, v.dtype) for k, v in obs.items()}
            assert obs["observation.images.front"].shape == (32, 32, 3)
            assert obs["observation.images.wrist"].dtype == np.uint8
            assert np.all(np.isfinite(obs["observation.state"]))
            assert INFO_KEYS <= set(info)
            assert 0.0 <= info["progress"] <= 1.0 and 0.0 <= info["stage_progress"] <= 1.0
            assert 0 <= info["stage"] < len(env.unwrapped.task.stages)
            assert info["stage_name"] == env.unwrapped.task.stages[info["stage"]]
            assert isinstance(info["success"], bool) and not terminated
        assert env.render() is None  # no render_mode given
    finally:
        env.close()


def test_every_task_has_an_env():
    assert set(TASKS) == set(ENV_IDS)


def test_render_mode_rgb_array_and_truncation():
    env = SO101Env(task="pick_place", image_size=32, render_mode="rgb_array", max_episode_steps=3)
    try:
        env.reset(seed=1)
        assert env.render().shape == (32, 64, 3)
        truncated = [env.step(HOME_DEG)[3] for _ in range(3)]
        assert truncated == [False, False, True]
    finally:
        env.close()


def test_unit_conversions_round_trip():
    values = np.array([30.0, -45.0, 20.0, 80.0, -100.0, 42.0], dtype=np.float32)
    np.testing.assert_allclose(to_lerobot(from_lerobot(values)), values, atol=1e-4)
    assert from_lerobot([0, 0, 0, 0, 0, 0])[5] == pytest.approx(JOINT_RANGES_RAD[5, 0])  # 0 = closed
    assert from_lerobot([0, 0, 0, 0, 0, 100])[5] == pytest.approx(JOINT_RANGES_RAD[5, 1])  # 100 = open
    assert FEATURE_NAMES[0] == "shoulder_pan.pos" and FEATURE_NAMES[-1] == "gripper.pos"


def test_model_ranges_match_robot_constants():
    env = SO101Env(task="pick_place", cameras=())
    for i, name in enumerate(("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")):
        np.testing.assert_allclose(env.model.joint(name).range, JOINT_RANGES_RAD[i], atol=1e-5)
    np.testing.assert_allclose(env.action_space.low, LOW)
    np.testing.assert_allclose(env.action_space.high, HIGH)
    env.close()


def test_joint_targets_in_degrees_are_reached():
    """Commanding targets in LeRobot units for ~1 s brings every joint within a few degrees."""
    env = SO101Env(task="pick_place", cameras=())
    env.reset(seed=0)
    target = np.array([25.0, -30.0, 45.0, 40.0, -60.0, 60.0], dtype=np.float32)
    for _ in range(30):
        obs, *_ = env.step(target)
    np.testing.assert_allclose(obs["observation.state"][:5], target[:5], atol=3.0)
    assert abs(obs["observation.state"][5] - target[5]) < 3.0
    env.close()


def test_async_vector_env():
    # "spawn": forked children inherit this process's EGL contexts (created by the tests above)
    # and hang; spawned ones start clean. "module:id" makes the child import and register the envs.
    env_id = "roboreward.sim:" + ENV_IDS["pick_place"]
    vec = gym.vector.AsyncVectorEnv([functools.partial(gym.make, env_id, image_size=32)] * 2, context="spawn")
    try:
        obs, infos = vec.reset(seed=[0, 1])
        assert obs["observation.images.front"].shape == (2, 32, 32, 3)
        assert obs["observation.state"].shape == (2, 6)
        obs, rewards, terminated, truncated, infos = vec.step(np.stack([HOME_DEG, HOME_DEG]))
        assert rewards.shape == (2,) and "progress" in infos
        # Different seeds give different object layouts, hence different ground truth.
        assert not np.allclose(obs["observation.images.front"][0], obs["observation.images.front"][1])
    finally:
        vec.close()


def test_bad_config_messages():
    with pytest.raises(ValueError, match="cameras"):
        SO101Env(task="pick_place", cameras=("top",))
    with pytest.raises(KeyError, match="unknown task"):
        SO101Env(task="juggle")
