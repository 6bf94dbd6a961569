"""The safety layer on real arms without hardware: the MuJoCo twin, and LeRobot's own SO-101
follower with its Feetech bus patched where the robot module looks it up (the exact goal positions
written are asserted)."""
from __future__ import annotations

import math
import time

import numpy as np
import pytest

from roboreward.hardware import ArmError, SafeArm, SafetyConfig, make_arm
from roboreward.sim.robot import HIGH, HOME_DEG, LOW

KEYS = ["shoulder_pan.pos", "shoulder_lift.pos", "elbow_flex.pos", "wrist_flex.pos", "wrist_roll.pos", "gripper.pos"]


def twin(**safety):
    return SafeArm(make_arm({"type": "sim_so101", "image_size": 32}), SafetyConfig(**safety), sleep=lambda s: None)


def here(arm) -> dict:
    return dict(zip(KEYS, arm.last_target.tolist()))


def test_clamps_rate_limit_and_nan_hold():
    arm = twin(max_velocity=150.0, fps=30.0, max_relative_target=10.0)
    with arm:
        start = arm.last_target.copy()
        sent = arm.send_action({**here(arm), "shoulder_pan.pos": 500.0})  # beyond the joint limit and far away
        assert sent["shoulder_pan.pos"] == pytest.approx(start[0] + 5.0)  # 150 deg/s at 30 Hz
        assert arm.interventions["joint_limit"] == 1 and arm.interventions["rate_limit"] == 1
        before = arm.last_target.copy()
        sent = arm.send_action({**here(arm), "elbow_flex.pos": math.nan})
        np.testing.assert_allclose([sent[k] for k in KEYS], before)  # holds the last safe target
        assert arm.interventions["non_finite"] == 1
        for _ in range(60):  # walks to the limit (reading the arm each tick, as the deploy loop does), never past it
            arm.get_observation()
            sent = arm.send_action({**here(arm), "shoulder_pan.pos": 500.0})
            assert abs(sent["shoulder_pan.pos"] - arm.present[0]) <= 10.0 + 1e-4
        assert sent["shoulder_pan.pos"] == pytest.approx(float(HIGH[0]))
        obs = arm.get_observation()
        assert LOW[0] <= obs["shoulder_pan.pos"] <= HIGH[0] + 1.0
    assert not arm.is_connected


def test_safe_stop_goes_to_rest_then_disconnects():
    arm = twin(rest_speed=300.0)
    arm.connect()
    for _ in range(12):
        arm.get_observation()
        arm.send_action({**here(arm), "elbow_flex.pos": 10.0})
    assert arm.last_target[2] < 20
    arm.safe_stop("test")
    np.testing.assert_allclose(arm.last_target, HOME_DEG, atol=1e-5)
    assert not arm.is_connected and arm.interventions["safe_stop"] == 1


def test_watchdog_holds_when_no_action_comes():
    arm = twin(watchdog_s=0.05)
    with arm:
        time.sleep(0.4)
        assert arm.interventions["watchdog"] >= 2


def test_dry_run_sends_nothing():
    arm = twin(dry_run=True)
    with arm:
        steps = arm.arm.env._steps
        arm.get_observation()
        sent = arm.send_action({**here(arm), "gripper.pos": 80.0})
        assert arm.arm.env._steps == steps and sent["gripper.pos"] > 30


def test_wrong_keys_are_one_line():
    arm = twin()
    with arm:
        with pytest.raises(ArmError, match="lacks") as info:
            arm.send_action({"shoulder_pan.pos": 0.0})
        assert "\n" not in str(info.value)
        with pytest.raises(ArmError, match="unknown"):
            arm.send_action({**here(arm), "elbow.pos": 0.0})


class FakeFeetechBus:
    """Stands in for lerobot.motors.feetech.FeetechMotorsBus inside LeRobot's SO-101 follower:
    answers reads with positions it holds and records every write."""

    instances: list = []

    def __init__(self, port, motors, calibration=None):
        self.port, self.motors, self.calibration = port, motors, calibration
        self.connected, self.writes, self.torque_off_at_disconnect = False, [], None
        self.position = {m: float(v) for m, v in zip(motors, HOME_DEG)}
        FakeFeetechBus.instances.append(self)

    def connect(self):
        self.connected = True

    @property
    def is_connected(self):
        return self.connected

    @property
    def is_calibrated(self):
        return True

    def configure_motors(self):
        pass

    def write(self, *args, **kw):
        pass

    class _Ctx:
        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

    def torque_disabled(self):
        return self._Ctx()

    def sync_read(self, name, num_retry=0):
        assert name == "Present_Position"
        return dict(self.position)

    def sync_write(self, name, values):
        assert name == "Goal_Position"
        self.writes.append(dict(values))
        self.position.update(values)

    def disconnect(self, disable_torque=True):
        self.connected, self.torque_off_at_disconnect = False, disable_torque


def test_lerobot_so101_follower_gets_clamped_goals(monkeypatch, tmp_path):
    import lerobot.robots.so_follower.so_follower as module

    monkeypatch.setattr(module, "FeetechMotorsBus", FakeFeetechBus)
    arm = SafeArm(make_arm({"type": "so101_follower", "port": "/dev/ttyFAKE", "id": "bench", "calibration_dir": tmp_path}),
                  SafetyConfig(max_velocity=60.0, fps=30.0, max_relative_target=10.0), sleep=lambda s: None)
    with arm:
        bus = FakeFeetechBus.instances[-1]
        arm.send_action({**dict(zip(KEYS, HOME_DEG.tolist())), "shoulder_pan.pos": 400.0, "gripper.pos": -50.0})
        # 60 deg/s at 30 Hz: 2 units per tick from the home pose, whatever was asked
        assert bus.writes[-1] == pytest.approx({"shoulder_pan": 2.0, "shoulder_lift": -60.0, "elbow_flex": 60.0,
                                                "wrist_flex": 60.0, "wrist_roll": 0.0, "gripper": 28.0})
        arm.send_action({**dict(zip(KEYS, HOME_DEG.tolist())), "wrist_flex.pos": float("inf")})
        assert bus.writes[-1] == bus.writes[-2]  # non-finite: the last safe target again
    assert bus.torque_off_at_disconnect is True and not bus.connected
    # the safe stop walked back to the rest pose before switching torque off
    assert bus.writes[-1] == pytest.approx(dict(zip([k[:-4] for k in KEYS], HOME_DEG.tolist())))


def test_make_arm_builds_lerobot_arms_without_connecting(tmp_path):
    koch = make_arm({"type": "koch_follower", "port": "/dev/ttyFAKE", "id": "k", "calibration_dir": str(tmp_path)})
    assert type(koch).__name__ == "KochFollower" and not koch.is_connected
    assert list(koch.action_features) == KEYS  # Koch's joints carry the SO-101's names in LeRobot
    cams = {"front": {"type": "opencv", "index_or_path": 0, "width": 640, "height": 480, "fps": 30}}
    so101 = make_arm({"type": "so101_follower", "port": "/dev/ttyFAKE", "calibration_dir": str(tmp_path), "cameras": cams})
    assert so101.observation_features["front"] == (480, 640, 3)
    with pytest.raises(ArmError, match="camera type 'kinect' unknown"):
        make_arm({"type": "so101_follower", "port": "/dev/ttyFAKE", "cameras": {"front": {"type": "kinect"}}})
    with pytest.raises(ArmError, match="robot.type 'ur5' unknown"):
        make_arm({"type": "ur5"})
    with pytest.raises(ArmError, match="robot \\(so101_follower\\)"):
        make_arm({"type": "so101_follower", "baud": 9600})


def test_calibration_file_limits(monkeypatch, tmp_path):
    """An arm with a LeRobot calibration file is clamped to the range of motion recorded there."""
    import lerobot.robots.so_follower.so_follower as module
    from lerobot.motors import MotorCalibration

    monkeypatch.setattr(module, "FeetechMotorsBus", FakeFeetechBus)
    import json as _json

    cal = {m: {"id": i + 1, "drive_mode": 0, "homing_offset": 0, "range_min": 2048 - 455, "range_max": 2048 + 455}
           for i, m in enumerate(k[:-4] for k in KEYS)}
    (tmp_path / "bench.json").write_text(_json.dumps(cal))
    robot = make_arm({"type": "so101_follower", "port": "/dev/ttyFAKE", "id": "bench", "calibration_dir": tmp_path})
    assert isinstance(robot.calibration["shoulder_pan"], MotorCalibration)
    FakeFeetechBus.model_resolution_table = {"sts3215": 4096}
    arm = SafeArm(robot, SafetyConfig(max_velocity=10_000.0, max_relative_target=1000.0), sleep=lambda s: None)
    half = 455 * 360 / 4095  # 40.0 deg each way
    assert arm.high[0] == pytest.approx(half) and arm.low[0] == pytest.approx(-half) and arm.high[5] == 100.0
    with arm:
        arm.send_action({**dict(zip(KEYS, HOME_DEG.tolist())), "shoulder_pan.pos": 90.0})
        assert FakeFeetechBus.instances[-1].writes[-1]["shoulder_pan"] == pytest.approx(half)
    # the rest pose (-60 deg shoulder lift) is outside this arm's range: the safe stop ends at its edge
    assert FakeFeetechBus.instances[-1].writes[-1]["shoulder_lift"] == pytest.approx(-half)
