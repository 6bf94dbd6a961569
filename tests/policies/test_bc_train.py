"""`roboreward bc train` end to end on a small generated sim store: plain and RA-BC weighted."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from roboreward.data import EpisodeStore
from roboreward.data.generate import Recipe, generate_store
from roboreward.policies import Policy

ENV = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "HF_HUB_OFFLINE": "1"}
CONFIG = """\
policy: {type: bc, horizon: 4, hidden_dim: 32, n_layers: 2}
train: {steps: 15, batch_size: 16, warmup_steps: 2, val_every: 100, ckpt_every: 10}
data: {image_size: 32, val_fraction: 0.25}
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("bc") / "pp.zarr"
    generate_store(path, Recipe(task="pick_place", episodes=4, mix={"expert": 0.5, "failure": 0.5}, image_size=32), workers=1, progress=False)
    return path


@pytest.fixture(scope="module")
def plain(store, tmp_path_factory):
    """One plain `bc train` through the real CLI subprocess, shared by the tests that need a trained policy."""
    out = tmp_path_factory.mktemp("plain")
    (out / "bc.yaml").write_text(CONFIG)
    proc = run("--dataset", store, "--out", out / "run", "--config", out / "bc.yaml")
    assert proc.returncode == 0, proc.stderr
    return out / "run"


def train_here(*args) -> int:
    """`bc train` through the CLI's main in this process (saves a subprocess's imports)."""
    from roboreward.cli import main

    return main(["bc", "train", *map(str, args)])


def run(*args):
    return subprocess.run([sys.executable, "-m", "roboreward.cli", "bc", "train", *map(str, args)],
                          capture_output=True, text=True, env=ENV, timeout=300)


def refused(capsys, *args) -> str:
    """The CLI in this process (the subprocess path is test_bc_train_plain_and_rabc's): exit status 2 and
    exactly one error line (progress bars aside), no traceback; returns that line."""
    from roboreward.cli import main

    capsys.readouterr()
    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:  # argparse
        code = exc.code
    out, err = capsys.readouterr()
    assert code == 2 and "Traceback" not in out + err, f"exit {code}\n{out}\n{err}"
    lines = [line for line in err.replace("\r", "\n").splitlines() if "error" in line.lower()]
    assert len(lines) == 1, err
    return lines[0]


def test_bc_train_plain_and_rabc(store, plain, tmp_path):
    policy = Policy.from_pretrained(plain / "model")
    assert policy.config.horizon == 4
    (tmp_path / "bc.yaml").write_text(CONFIG)
    assert train_here("--dataset", store, "--out", tmp_path / "rabc", "--config", tmp_path / "bc.yaml",
                      "--weights", "rabc", "--progress", "gt.progress") == 0
    info = json.loads((tmp_path / "rabc" / "weights.json").read_text())
    assert info["mode"] == "soft"  # --weights rabc is LeRobot's soft weighting
    # 2 expert + 2 failure episodes, 1 held out: the training split has both.
    assert info["mean_weight"]["failure"] < info["mean_weight"]["expert"]
    assert train_here("--dataset", store, "--out", tmp_path / "gated", "--config", tmp_path / "bc.yaml",
                      "--progress", "gt.progress", "--min-final-progress", "0.99") == 0  # sim progress is 1 only on success
    info = json.loads((tmp_path / "gated" / "weights.json").read_text())
    assert info["mode"] == "none" and info["mean_weight"]["failure"] == 0.0 and info["mean_weight"]["expert"] == 1.0
    assert info["kept_episodes"]["failure"].startswith("0/") and info["kept_episodes"]["expert"].split("/")[0] != "0"


def test_bc_train_bad_progress_source_is_one_line(tmp_path, capsys):
    (tmp_path / "bc.yaml").write_text(CONFIG)
    fresh = tmp_path / "fresh.zarr"  # no feature cache yet: refused before any encoding
    generate_store(fresh, Recipe(task="pick_place", episodes=1, mix={"expert": 1.0}, image_size=32), workers=1, progress=False)
    assert "sarm" in refused(capsys, "bc", "train", "--dataset", fresh, "--out", tmp_path / "x", "--config",
                             tmp_path / "bc.yaml", "--weights", "soft", "--progress", "sarm")
    assert "features" not in EpisodeStore(fresh).root and not (tmp_path / "x").exists()


def test_sim_eval_rolls_out_a_trained_policy(plain, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "roboreward.cli", "sim", "eval", "--policy", str(plain / "model"), "--task",
         "pick_place", "--episodes", "3", "--envs", "2", "--image-size", "32", "--max-steps", "12", "--videos", "1",
         "--out", str(tmp_path / "eval")], capture_output=True, text=True, env=ENV, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "eval" / "sim_eval.json").read_text())
    assert report["episodes"] == 3 and len({r["seed"] for r in report["rollouts"]}) == 3
    assert all(r["steps"] <= 12 for r in report["rollouts"])
    low, high = report["ci95"]
    assert 0.0 <= low <= report["success_rate"] <= high <= 1.0
    assert len(list((tmp_path / "eval" / "videos").glob("*.mp4"))) == 1


def test_sim_eval_records_its_rollouts_as_a_store(plain, tmp_path, capsys):
    """`sim eval --record`: every rollout becomes an episode whose actions, replayed from its seed,
    give back its recorded states and ground truth; re-running completes the store without
    duplicates; another policy's or layout's rollouts are refused in one line."""
    import numpy as np

    from roboreward.data.store import EpisodeStore
    from roboreward.policies.evaluate import evaluate_policy
    from roboreward.sim.env import EnvConfig, SO101Env

    store_path = tmp_path / "rollouts.zarr"
    report = evaluate_policy(plain / "model", "pick_place", 3, tmp_path / "eval", image_size=32, n_envs=2, max_steps=15,
                             videos=0, record=store_path)
    store = EpisodeStore(store_path)
    assert store.n_episodes == 3 and report["recorded"] == str(store_path)
    for ep, rollout in zip(store.episodes, report["rollouts"]):
        assert ep.info["seed"] == rollout["seed"] and ep.success == rollout["success"] and ep.quality == "unknown"
        assert ep.length == rollout["steps"] + 1  # the observation it ended on, held
        spans = [(s.start, s.end) for s in ep.annotations["sparse"]]
        assert spans[0][0] == 0 and spans[-1][1] == ep.length and all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    assert {"observation.images.front", "observation.images.wrist"} <= set(store.features)  # rendered for the store
    ep = store.read_episode(1)
    assert ep.data["observation.images.front"].shape == (ep.length, 32, 32, 3) and ep.data["observation.images.front"].std() > 0
    env = SO101Env(EnvConfig(task="pick_place", image_size=32, cameras=(), max_episode_steps=100))
    try:
        _, info = env.reset(seed=store.episodes[1].info["seed"])
        for t in range(ep.length):
            np.testing.assert_allclose(env.joint_state(), ep.data["observation.state"][t], atol=1e-4)
            assert abs(info["progress"] - ep.data["gt.progress"][t]) < 1e-5
            if t < ep.length - 1:
                _, _, _, _, info = env.step(ep.data["action"][t])
    finally:
        env.close()
    evaluate_policy(plain / "model", "pick_place", 4, tmp_path / "eval", image_size=32, n_envs=2, max_steps=15,
                    videos=0, record=store_path)
    assert [e.info["seed"] for e in EpisodeStore(store_path).episodes] == [100_000, 100_001, 100_002, 100_003]
    recipe = tmp_path / "wide.yaml"
    recipe.write_text("task: pick_place\ntask_config: {cube_yaw_deg: 5}\n")
    line = refused(capsys, "sim", "eval", "--policy", plain / "model", "--recipe", recipe, "--episodes", "1",
                   "--image-size", "32", "--max-steps", "3", "--out", tmp_path / "e2", "--record", store_path)
    assert "exists and holds rollouts" in line and "record into another store (--record NEW.zarr)" in line


def test_wilson_interval_by_hand():
    from roboreward.policies.evaluate import wilson_interval

    low, high = wilson_interval(0, 10)
    assert low == 0.0 and abs(high - 0.2775) < 1e-3
    low, high = wilson_interval(5, 10)
    assert abs(low - 0.2366) < 1e-3 and abs(high - 0.7634) < 1e-3


STATE_CONFIG = """\
policy: {type: bc, horizon: 4, hidden_dim: 32, n_layers: 2, cameras: [], env_state_key: observation.environment_state}
train: {steps: 12, batch_size: 16, warmup_steps: 2, val_every: 100, ckpt_every: 10}
data: {val_fraction: 0.25}
"""


def test_env_state_policy_expert_filter_and_recipe_rollout(store, tmp_path):
    import numpy as np
    import torch

    from roboreward.data import EpisodeStore
    from roboreward.errors import RoborewardError

    (tmp_path / "bc.yaml").write_text(STATE_CONFIG)
    assert train_here("--dataset", store, "--out", tmp_path / "run", "--config", tmp_path / "bc.yaml", "--qualities",
                      "expert") == 0
    episodes = EpisodeStore(store).episodes
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert split["train"] and all(episodes[e].quality == "expert" for e in split["train"])
    assert split["feature_key"] is None  # no cameras: no feature cache needed
    policy = Policy.from_pretrained(tmp_path / "run" / "model").eval()
    assert policy.config.env_state_dim == 10 and policy.config.cameras == []
    state = torch.zeros(2, 6)
    assert policy.select_action(None, state, torch.zeros(2, 10)).shape == (2, 4, 6)
    with pytest.raises(RoborewardError, match="needs observation.environment_state"):
        policy.select_action(None, state)

    recipe = tmp_path / "narrow.yaml"
    recipe.write_text("task: pick_place\ntask_config: {cube_yaw_deg: 5, cube_y_range: [0.02, 0.07], "
                      "bowl_y_range: [-0.13, -0.03]}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "roboreward.cli", "sim", "eval", "--policy", str(tmp_path / "run" / "model"), "--recipe",
         str(recipe), "--episodes", "2", "--envs", "2", "--max-steps", "6", "--videos", "1", "--image-size", "32",
         "--out", str(tmp_path / "eval")], capture_output=True, text=True, env=ENV, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "eval" / "sim_eval.json").read_text())
    assert report["task"] == "pick_place" and report["task_config"]["cube_yaw_deg"] == 5
    assert len(list((tmp_path / "eval" / "videos").glob("*.mp4"))) == 1  # rendered on demand: the policy has no cameras
    assert np.isfinite(report["success_rate"])


@pytest.mark.parametrize("args, extra, message", [
    (["--qualities", "perfect"], "", "qualities ['perfect'] match no episode"),
    ([], "data: {augment_copies: 2}\n", "data.augment_copies: policies do not train on photometric feature copies"),
])
def test_bc_train_bad_quality_is_one_line(store, tmp_path, capsys, args, extra, message):
    (tmp_path / "bc.yaml").write_text(STATE_CONFIG.replace("data: {val_fraction: 0.25}\n", extra or "data: {val_fraction: 0.25}\n"))
    assert message in refused(capsys, "bc", "train", "--dataset", store, "--out", tmp_path / "x", "--config",
                              tmp_path / "bc.yaml", *args)


@pytest.mark.parametrize("policy, message", [
    ("{type: bc, hiden_dim: 32}", "policy: unknown key 'hiden_dim'; allowed: action_key, cameras, dropout, env_state_key,"),
    ("{type: bc, hidden_dim: big}", "policy.hidden_dim: expected int, got 'big'"),
])
def test_bc_train_bad_policy_key_or_value_is_one_line(tmp_path, capsys, policy, message):
    # Refused while reading the config: no store is opened (this one is not even a store).
    # More cases: tests/policies/test_bc.py::test_bad_policy_section_is_one_config_error.
    (tmp_path / "bc.yaml").write_text(f"policy: {policy}\n")
    (tmp_path / "none.zarr").mkdir()
    assert message in refused(capsys, "bc", "train", "--dataset", tmp_path / "none.zarr", "--out", tmp_path / "x",
                              "--config", tmp_path / "bc.yaml")
    assert not (tmp_path / "x").exists()


def test_sim_eval_recipe_and_task_must_agree(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("task: stack\n")
    assert "differs from the recipe's task stack" in refused(capsys, "sim", "eval", "--policy", tmp_path, "--recipe",
                                                             recipe, "--task", "pick_place")
