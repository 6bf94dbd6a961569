"""Deploy on the sim twin end to end, and every fault the issue lists, each ending in the documented
safe behaviour with nothing lost from the recording so far."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import ENV, cli, ok

from roboreward.data import EpisodeStore
from roboreward.data.validate import check_store
from roboreward.hardware.deploy import DeployConfig, DeployError, deploy
from roboreward.hardware.safety import SafetyConfig
from roboreward.policies import Policy
from roboreward.sim.robot import HIGH, LOW

TWIN = {"type": "sim_so101", "image_size": 32}


def config(hw, tmp_path, **kw):
    tmp_path.mkdir(parents=True, exist_ok=True)
    robot = {**TWIN, **kw.pop("robot", {})}
    return DeployConfig(robot=robot, policy=str(kw.pop("policy", hw["policy"])), episodes=kw.pop("episodes", 1),
                        max_steps=kw.pop("max_steps", 12), realtime=False, record=str(tmp_path / "rec.zarr"),
                        safety=SafetyConfig(fps=30.0), **kw)


def recorded(tmp_path) -> EpisodeStore:
    path = tmp_path / "rec.zarr"
    assert [p for p in check_store(path) if p.severity == "error"] == []
    return EpisodeStore(path)


def edited_policy(hw, tmp_path, fn=None, **config):
    """A copy of the tiny policy with ``fn`` applied to its weights or ``config`` fields changed."""
    policy = Policy.from_pretrained(hw["policy"])
    if config:
        import dataclasses

        from roboreward.policies import make_policy

        state = policy.state_dict()
        policy = make_policy(dataclasses.replace(policy.config, **config))
        policy.load_state_dict(state)
    if fn is not None:
        with torch.no_grad():
            fn(policy)
    return policy.save_pretrained(tmp_path / "edited")


def test_deploy_records_episodes_that_train_a_reward_model(hw, tmp_path):
    result = deploy(config(hw, tmp_path, episodes=2, max_steps=25), progress=False)
    assert len(result["episodes"]) == 2 and result["fault"] is None
    store = recorded(tmp_path)
    assert store.n_episodes == 2 and store.n_frames == 50 and store.robot_type == "so101_follower"
    assert store.features["observation.images.front"].shape == (32, 32, 3)
    assert store.tasks == ["Pick up the red cube and place it in the bowl."]
    info = store.episodes[0].info
    assert info["ended_by"] == "max_steps" and "timing" in info
    # The recording is training data: a reward model trains on it.
    out = tmp_path / "tr"
    ok(cli("reward", "train", "--config", "configs/reward/time_regression.yaml", "--dataset", tmp_path / "rec.zarr",
           "--out", out, "--steps", 10, cwd=os.getcwd()))
    assert (out / "model" / "model.safetensors").is_file()
    # ... and drives the live progress of the next deploy: with a success margin that any reading
    # passes, the episode ends after success_hold ticks.
    again = deploy(config(hw, tmp_path / "again", reward=str(out / "model"), success_hold=3, success_delta=0.999,
                          max_steps=25), progress=False)["episodes"][0]
    assert again["ended_by"] == "success (progress held)" and again["steps"] == 3
    assert 0.0 <= again["final_progress"] <= 1.0


def test_encoders_are_built_before_the_arm_connects(hw, tmp_path, monkeypatch):
    """The encoder's CPU runtime (about 1 s to build) is made before the loop starts, not on its first tick."""
    from roboreward.encoders.image import ImageEncoder
    from roboreward.hardware.safety import SafeArm

    out = tmp_path / "tr"
    ok(cli("reward", "train", "--config", "configs/reward/time_regression.yaml", "--dataset", hw["store"],
           "--out", out, "--steps", 5, cwd=os.getcwd()))
    events = []
    use, connect = ImageEncoder.use, SafeArm.connect
    monkeypatch.setattr(ImageEncoder, "use", lambda self, runtime=None: events.append("built") or use(self, runtime))
    monkeypatch.setattr(SafeArm, "connect", lambda self, *a, **k: events.append("connected") or connect(self, *a, **k))
    result = deploy(config(hw, tmp_path, reward=str(out / "model"), max_steps=3), progress=False)
    assert result["fault"] is None and events == ["built", "connected"]


@pytest.mark.parametrize("fault, robot, word", [
    ("bus timeout", {"fault_timeout_at": 6}, "TimeoutError"),
    ("disconnect", {"fault_disconnect_at": 6}, "DeviceNotConnectedError"),
])
def test_bus_faults_stop_safely_and_keep_the_recording(hw, tmp_path, fault, robot, word):
    with pytest.raises(DeployError, match=word) as info:
        deploy(config(hw, tmp_path, robot=robot, episodes=2), progress=False)
    assert "stopped safely" in str(info.value) and "\n" not in str(info.value)
    store = recorded(tmp_path)
    # The episode in progress is kept up to the fault (the first read is the connect's own).
    assert store.n_episodes == 1 and store.episodes[0].length == 4 and store.episodes[0].success is False
    assert word in store.episodes[0].info["ended_by"]
    assert store.episodes[0].info["interventions"]["safe_stop"] == 1


def test_policy_exception_stops_safely(hw, tmp_path, monkeypatch):
    from roboreward.policies.runner import PolicyRunner

    calls = {"n": 0}
    act = PolicyRunner.act

    def flaky(self, observation, ids=None):
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("policy blew up")
        return act(self, observation, ids)

    monkeypatch.setattr(PolicyRunner, "act", flaky)
    with pytest.raises(DeployError, match="RuntimeError: policy blew up"):
        deploy(config(hw, tmp_path), progress=False)
    store = recorded(tmp_path)
    assert store.n_episodes == 1 and store.episodes[0].length == 4


def test_nan_actions_hold(hw, tmp_path):
    path = edited_policy(hw, tmp_path, lambda p: next(p.parameters()).fill_(float("nan")))
    result = deploy(config(hw, tmp_path, policy=path), progress=False)
    ep = result["episodes"][0]
    assert ep["interventions"]["non_finite"] == 12
    actions = np.asarray(recorded(tmp_path).array("action")[:])
    assert np.isfinite(actions).all() and np.ptp(actions, axis=0).max() < 1e-4  # held where it was


def test_out_of_range_actions_are_clamped(hw, tmp_path):
    # the action statistics are config fields: actions 1000 units beyond any joint's range
    mean = Policy.from_pretrained(hw["policy"]).config.action_mean
    path = edited_policy(hw, tmp_path, action_mean=[m + 1000.0 for m in mean])
    ep = deploy(config(hw, tmp_path, policy=path, max_steps=60), progress=False)["episodes"][0]
    assert ep["interventions"]["joint_limit"] == 60
    actions = np.asarray(recorded(tmp_path).array("action")[:])
    assert (actions <= HIGH + 1e-4).all() and (actions >= LOW - 1e-4).all()
    assert np.abs(np.diff(actions, axis=0)).max() <= 180.0 / 30.0 + 1e-3  # the velocity clamp per tick


def test_slow_policy_misses_its_deadline_and_the_arm_holds(hw, tmp_path):
    ep = deploy(config(hw, tmp_path, deadline_s=1e-9), progress=False)["episodes"][0]
    assert ep["missed_deadlines"] == 12 and ep["interventions"]["deadline"] == 12
    assert recorded(tmp_path).n_episodes == 1


def test_policy_reading_object_poses_is_refused(hw, tmp_path):
    proc = cli("deploy", "--robot.type=sim_so101", f"--policy.path={hw['env_policy']}", "--no-realtime",
               "--record", tmp_path / "rec.zarr")
    assert proc.returncode == 2 and "no real arm has" in proc.stderr and "Traceback" not in proc.stderr
    assert len([line for line in proc.stderr.splitlines() if "error" in line]) == 1
    assert not (tmp_path / "rec.zarr").exists()  # refused before anything was made or moved


def test_pixel_policy_deploys_at_its_frame_size_and_is_refused_at_another(make_store, tmp_path):
    """A policy that encodes camera frames itself (vision_bc) runs the deploy loop on the twin at its
    training size; at another size it is refused in one line before anything moves."""
    from roboreward.policies import make_policy
    from roboreward.policies.base import policy_class

    store, _ = make_store(tmp_path / "s.zarr", n_episodes=2, image_size=16, lengths=[8, 9])
    cfg = policy_class("vision_bc").config_class.from_store(store, channels=[8, 8], keypoints=4, hidden_dim=16, horizon=4)
    torch.manual_seed(0)
    path = make_policy(cfg).save_pretrained(tmp_path / "vision")
    out = deploy(DeployConfig(robot={"type": "sim_so101", "image_size": 16}, policy=str(path), episodes=1, max_steps=6,
                              realtime=False, record=str(tmp_path / "rec.zarr"), safety=SafetyConfig(fps=30.0)))
    assert out["episodes"][0]["steps"] == 6 and recorded(tmp_path).n_episodes == 1
    proc = cli("deploy", "--robot.type=sim_so101", "--robot.image_size", "32", f"--policy.path={path}", "--no-realtime")
    assert proc.returncode == 2 and "trained on 16x16 frames" in proc.stderr and "Traceback" not in proc.stderr


def test_units_mismatch_is_refused(hw, monkeypatch, tmp_path):
    import lerobot.robots.so_follower.so_follower as module
    from test_safety import FakeFeetechBus

    from roboreward.hardware import ArmError, make_arm
    from roboreward.hardware.deploy import check_compatible

    monkeypatch.setattr(module, "FeetechMotorsBus", FakeFeetechBus)
    arm = make_arm({"type": "so101_follower", "port": "/dev/ttyFAKE", "calibration_dir": str(tmp_path), "use_degrees": False})
    with pytest.raises(ArmError, match="use_degrees=False"):
        check_compatible(arm, Policy.from_pretrained(hw["policy"]))
    check_compatible(make_arm({"type": "sim_so101"}), Policy.from_pretrained(hw["policy"]))  # the twin's units match


def test_kill_9_loses_at_most_the_episode_in_flight(hw, tmp_path):
    rec = tmp_path / "rec.zarr"
    def args(episodes):
        return [sys.executable, "-m", "roboreward.cli", "deploy", "--robot.type=sim_so101", "--robot.image_size", "32",
                f"--policy.path={hw['policy']}", "--episodes", str(episodes), "--max-steps", "20", "--no-realtime",
                "--record", str(rec)]

    # Killed while committing episode 2 (its frames written, its record not): episode 1 survives.
    proc = subprocess.run(args(3), env={**ENV, "ROBOREWARD_KILL_AT": "store.arrays_written:2"}, capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert [p for p in check_store(rec) if p.severity == "error"] == []
    assert EpisodeStore(rec).n_episodes == 1
    # Deploying again appends after the surviving episode.
    ok(subprocess.run(args(1), env=ENV, capture_output=True, text=True))
    store = EpisodeStore(rec)
    assert store.n_episodes == 2 and store.n_frames == 40 and check_store(rec) == []


def test_ctrl_c_stops_safely_and_keeps_the_episode(hw, tmp_path):
    rec = tmp_path / "rec.zarr"
    proc = subprocess.Popen([sys.executable, "-m", "roboreward.cli", "deploy", "--robot.type=sim_so101", "--robot.image_size", "32",
                             f"--policy.path={hw['policy']}", "--max-steps", "3000", "--record", str(rec)],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (rec / "data" / "action").exists() and time.monotonic() < deadline:  # recording has begun
        time.sleep(0.2)
    time.sleep(1.5)  # about 45 ticks at 30 Hz
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "interrupted (Ctrl-C)" in err and "Traceback" not in err, err[-2000:]
    store = recorded(tmp_path)
    assert store.n_episodes == 1 and 20 < store.episodes[0].length < 3000
    assert store.episodes[0].info["ended_by"] == "interrupted (Ctrl-C)"


@pytest.mark.hardware
@pytest.mark.skipif(not os.environ.get("ROBOREWARD_SO101_PORT"), reason="set ROBOREWARD_SO101_PORT to the arm's port")
def test_real_so101_dry_run(hw, tmp_path):
    """On a real SO-101 (the port in ROBOREWARD_SO101_PORT): connect, run the policy in dry-run mode
    (nothing sent), record, and stop safely."""
    robot = {"type": "so101_follower", "port": os.environ["ROBOREWARD_SO101_PORT"], "id": os.environ.get("ROBOREWARD_SO101_ID")}
    cfg = DeployConfig(robot={k: v for k, v in robot.items() if v}, policy=str(hw["policy"]), max_steps=30,
                       task="hardware test", record=str(tmp_path / "rec.zarr"), safety=SafetyConfig(dry_run=True))
    result = deploy(cfg, progress=False)
    assert result["fault"] is None and json.dumps(result)
