"""The simulated SO-101 follower: joint names, limits and LeRobot unit conversions.

The public interface speaks LeRobot's ``so101_follower`` units (``use_degrees=True``): the five arm
joints in degrees with 0 at the calibrated middle of the range, the gripper in 0..100 (0 closed,
100 open). The MJCF joints use radians with the same zero, so an arm joint converts by a plain
``deg = rad * 180 / pi``; the gripper maps linearly onto the jaw hinge's range.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

MODEL_PATH = Path(__file__).parent / "assets" / "so101.xml"
ROBOT_TYPE = "so101_follower"

JOINT_NAMES = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")
ARM_JOINTS = JOINT_NAMES[:5]
FEATURE_NAMES = [f"{name}.pos" for name in JOINT_NAMES]
"""Per-dimension names of ``observation.state`` and ``action`` (LeRobot's flat feature names)."""

# Joint ranges in radians, as in assets/so101.xml (keep the two in sync; test_robot checks it).
JOINT_RANGES_RAD = np.array(
    [
        [-1.91986, 1.91986],  # shoulder_pan  +-110 deg
        [-1.74533, 1.74533],  # shoulder_lift +-100 deg
        [-1.69, 1.69],  # elbow_flex   +-96.8 deg
        [-1.65806, 1.65806],  # wrist_flex   +-95 deg
        [-2.74385, 2.84121],  # wrist_roll   -157.2 .. 162.8 deg
        [-0.174533, 1.745329],  # gripper jaw hinge -10 .. 100 deg
    ]
)
GRIPPER_CLOSED_RAD, GRIPPER_OPEN_RAD = JOINT_RANGES_RAD[5]

LOW = np.concatenate([np.degrees(JOINT_RANGES_RAD[:5, 0]), [0.0]]).astype(np.float32)
HIGH = np.concatenate([np.degrees(JOINT_RANGES_RAD[:5, 1]), [100.0]]).astype(np.float32)
"""Bounds of state and action in LeRobot units."""


def to_lerobot(qpos: np.ndarray) -> np.ndarray:
    """Joint angles in radians (6,) -> LeRobot units (degrees x5, gripper 0..100)."""
    out = np.empty(6, dtype=np.float32)
    out[:5] = np.degrees(qpos[:5])
    out[5] = 100.0 * (qpos[5] - GRIPPER_CLOSED_RAD) / (GRIPPER_OPEN_RAD - GRIPPER_CLOSED_RAD)
    return out


def from_lerobot(values: np.ndarray) -> np.ndarray:
    """LeRobot units (6,) -> joint angles in radians, clipped to the joint ranges."""
    values = np.clip(np.asarray(values, dtype=np.float64), LOW, HIGH)
    out = np.empty(6)
    out[:5] = np.radians(values[:5])
    out[5] = GRIPPER_CLOSED_RAD + values[5] / 100.0 * (GRIPPER_OPEN_RAD - GRIPPER_CLOSED_RAD)
    return out


def gripper_from_angle(angle_rad: float) -> float:
    """Jaw hinge angle (radians) -> gripper command 0..100."""
    return float(100.0 * (angle_rad - GRIPPER_CLOSED_RAD) / (GRIPPER_OPEN_RAD - GRIPPER_CLOSED_RAD))


HOME_DEG = np.array([0.0, -60.0, 60.0, 60.0, 0.0, 30.0], dtype=np.float32)
"""Rest pose in LeRobot units: arm folded up over the base, gripper pointing down, jaw ajar."""
