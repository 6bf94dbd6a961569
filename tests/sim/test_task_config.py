"""Object poses in the observation (``observation.environment_state``) and task-config overrides
(narrower object layouts) through the env, the scripted generator and dataset recipes."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from roboreward.config import ConfigError
from roboreward.data.generate import Recipe, generate_store
from roboreward.data.schema import StoreError
from roboreward.data.store import EpisodeStore
from roboreward.sim.env import EnvConfig, SO101Env
from roboreward.sim.tasks import TASKS, make_task_config

NARROW = {
    "pick_place": {"cube_yaw_deg": 10, "cube_y_range": [0.02, 0.07], "bowl_y_range": [-0.13, -0.03]},
    "stack": {"cube_yaw_deg": 10, "cube_a_y_range": [0.02, 0.07], "cube_b_y_range": [-0.13, -0.03]},
}


@pytest.mark.parametrize("task", sorted(TASKS))
def test_environment_state_is_the_objects_poses(task):
    env = SO101Env(EnvConfig(task=task, cameras=()))
    try:
        obs, _ = env.reset(seed=3)
        state = obs["observation.environment_state"]
        names = TASKS[task].environment_state_names()
        assert state.shape == (len(names),) == env.observation_space["observation.environment_state"].shape
        for i, body in enumerate(TASKS[task].objects):
            np.testing.assert_allclose(state[5 * i: 5 * i + 3], env.data.body(body).xpos, atol=1e-6)
            np.testing.assert_allclose(np.hypot(state[5 * i + 3], state[5 * i + 4]), 1.0, atol=1e-5)
        cube = TASKS[task].objects.index("cube_a" if task == "stack" else "cube")
        before = state[5 * cube: 5 * cube + 3].copy()
        env.data.joint(f"{TASKS[task].objects[cube]}_joint").qpos[:3] += [0.01, 0.0, 0.0]
        obs, *_ = env.step(obs["observation.state"])
        assert obs["observation.environment_state"][5 * cube] > before[0] + 0.005  # it tracks the moved cube
    finally:
        env.close()
    assert "observation.environment_state" not in SO101Env(EnvConfig(task=task, cameras=(), environment_state=False)).reset(seed=0)[0]


@pytest.mark.parametrize("task", sorted(NARROW))
def test_narrow_layout_keeps_objects_in_their_ranges(task):
    overrides = NARROW[task]
    env = SO101Env(EnvConfig(task=task, cameras=(), task_config=overrides))
    ys, yaws = [], []
    try:
        for seed in range(12):
            s = env.reset(seed=seed)[0]["observation.environment_state"]
            ys.append((s[1], s[6]))
            yaws.append(np.degrees(np.arctan2(s[4], s[3])))
    finally:
        env.close()
    ys = np.array(ys)
    first, second = [v for k, v in overrides.items() if k.endswith("y_range")]
    assert (ys[:, 0] >= first[0] - 1e-3).all() and (ys[:, 0] <= first[1] + 1e-3).all()
    assert (ys[:, 1] >= second[0] - 1e-3).all() and (ys[:, 1] <= second[1] + 1e-3).all()
    assert np.abs(yaws).max() <= 10.5
    # The default layout is wider: the same seeds put the first object on both sides.
    default = SO101Env(EnvConfig(task=task, cameras=()))
    try:
        sides = {np.sign(default.reset(seed=seed)[0]["observation.environment_state"][1]) for seed in range(12)}
    finally:
        default.close()
    assert sides == {-1.0, 1.0}


def test_bad_task_config_is_one_line():
    with pytest.raises(ConfigError, match="unknown key 'cube_yaw'; allowed: .*cube_yaw_deg"):
        make_task_config("pick_place", {"cube_yaw": 3})
    with pytest.raises(ConfigError, match=r"cube_yaw_deg=90.0 must be in \[0, 45\]"):
        make_task_config("pick_place", {"cube_yaw_deg": 90})
    with pytest.raises(ConfigError, match="bowl_y_range=.* must be a \\(low, high\\) pair"):
        make_task_config("pick_place", {"bowl_y_range": [0.1, -0.1]})
    with pytest.raises(ConfigError, match=r"x_exclude=\(0.1, 0.3\) covers all of x_range=\(0.15, 0.25\)"):
        make_task_config("stack", {"x_exclude": [0.1, 0.3]})
    with pytest.raises(ConfigError, match=r"cube_side_exclude=\(0.1, 0.2\) covers all of cube_side_offset=\(0.11, 0.13\)"):
        make_task_config("drawer", {"cube_side_exclude": [0.1, 0.2]})
    with pytest.raises(ConfigError, match="cube_x_range=.* must be a \\(low, high\\) pair"):
        make_task_config("drawer", {"cube_x_range": [0.2, 0.1]})


def test_x_exclude_leaves_a_band_empty_and_keeps_seeds_without_it():
    from roboreward.sim.tasks.base import uniform_outside

    rng = np.random.default_rng(0)
    xs = np.array([uniform_outside(rng, (0.07, 0.25), (0.11, 0.15)) for _ in range(4000)])
    assert not ((xs > 0.11) & (xs < 0.15)).any() and xs.min() >= 0.07 and xs.max() <= 0.25
    # uniform over what is left: 0.04 m of 0.14 m lies below the band
    assert abs((xs < 0.11).mean() - 0.04 / 0.14) < 0.03
    a, b = np.random.default_rng(5), np.random.default_rng(5)
    assert uniform_outside(a, (0.15, 0.25), None) == b.uniform(0.15, 0.25)  # no band: the very same draw


def test_recipe_task_config_is_generated_recorded_and_checked(tmp_path):
    recipe = Recipe(task="pick_place", episodes=2, mix={"expert": 1.0}, image_size=32, task_config=NARROW["pick_place"])
    store = generate_store(tmp_path / "n.zarr", recipe, workers=1, progress=False)
    assert store.root.attrs["extra"]["recipe"]["task_config"] == NARROW["pick_place"]
    env_state = np.asarray(store.array("observation.environment_state")[:])
    first = env_state[store.episode_starts]
    assert (first[:, 1] > 0.0).all() and (env_state[:, 6] < 0.0).all()  # cube starts left; the bowl stays right
    assert all(e.success for e in store.episodes)
    other = Recipe(task="pick_place", episodes=3, mix={"expert": 1.0}, image_size=32)
    with pytest.raises(StoreError, match="exists with a different recipe"):
        generate_store(tmp_path / "n.zarr", other, workers=1, progress=False)
    # A recipe without task_config keeps the identity stores written before the field existed.
    assert "task_config" not in other.identity()
    with pytest.raises(ConfigError, match="unknown key 'bowl_radius'"):
        generate_store(tmp_path / "bad.zarr", Recipe(task="pick_place", episodes=1, task_config={"bowl_radius": 1}),
                       workers=1, progress=False)
    assert EpisodeStore(tmp_path / "n.zarr").n_episodes == 2


def test_resuming_a_store_from_an_older_generator_is_one_clear_error(tmp_path):
    recipe = Recipe(task="pick_place", episodes=2, mix={"expert": 1.0}, image_size=32)
    # Simulate a store written before observation.environment_state existed: same recipe, one feature fewer.
    from roboreward.sim.scripted import feature_specs

    specs = {k: v for k, v in feature_specs("pick_place", 32).items() if k != "observation.environment_state"}
    old = EpisodeStore.create(tmp_path / "older.zarr", specs, fps=30, robot_type="so101_follower")
    old.set_attr("recipe", recipe.identity())
    with pytest.raises(StoreError, match=r"older generator \(features differ: \['observation.environment_state'\]\)"):
        generate_store(tmp_path / "older.zarr", recipe, workers=1, progress=False)


def test_a_failed_expert_take_is_rerecorded_and_a_failure_never(tmp_path):
    near = {"x_range": [0.07, 0.11], "y_range": [-0.16, 0.16]}  # nearer the base than the expert handles well
    as_came = Recipe(task="stack", episodes=1, mix={"expert": 1.0}, image_size=32, seed=5003, task_config=near)
    from roboreward.sim.scripted import generate_episode

    assert not generate_episode("stack", "expert", 5003, render=False, task_config=near).success  # this state defeats it
    again = dataclasses.replace(as_came, rerecord_failed=3)
    store = generate_store(tmp_path / "b.zarr", again, workers=1, progress=False)
    ep = store.read_episode(0)
    assert ep.success and ep.info["rerecorded"] >= 1 and ep.info["seed"] == 5003 + ep.info["rerecorded"] * 1_000_000
    assert store.root.attrs["extra"]["recipe"]["rerecord_failed"] == 3
    assert "rerecord_failed" not in as_came.identity()  # stores written before the field still resume
    failure = dataclasses.replace(again, mix={"failure": 1.0}, seed=5000)
    assert generate_store(tmp_path / "c.zarr", failure, workers=1, progress=False).read_episode(0).info == {}
    with pytest.raises(StoreError, match=r"rerecord_failed must be in \[0, 20\]"):
        dataclasses.replace(as_came, rerecord_failed=-1)
