"""Damped-least-squares inverse kinematics for the SO-101's grasp site.

The arm has 5 joints; a top-down grasp pose (3 position + 3 orientation constraints) is still
reachable because pointing the gripper straight down makes wrist_roll a pure yaw about the
approach axis. Solved on a private MjData so the simulation's state is never touched.
"""
from __future__ import annotations

import mujoco
import numpy as np

from .robot import ARM_JOINTS, JOINT_RANGES_RAD


def topdown_rotation(yaw: float) -> np.ndarray:
    """Gripper frame for a top-down grasp: approach (local x) straight down, jaws closing along
    the horizontal direction ``yaw`` (local y)."""
    x = np.array([0.0, 0.0, -1.0])
    y = np.array([np.cos(yaw), np.sin(yaw), 0.0])
    return np.stack([x, y, np.cross(x, y)], axis=1)


def rotation_error(current: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Axis-angle-like error (world frame) that rotates ``current`` towards ``target``."""
    return 0.5 * sum(np.cross(current[:, i], target[:, i]) for i in range(3))


def slerp_rotation(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """Rotation matrix interpolated from ``a`` (t=0) to ``b`` (t=1) along the shortest arc."""
    qa, qb = np.empty(4), np.empty(4)
    mujoco.mju_mat2Quat(qa, a.reshape(-1))
    mujoco.mju_mat2Quat(qb, b.reshape(-1))
    if qa @ qb < 0:
        qb = -qb
    angle = np.arccos(np.clip(qa @ qb, -1.0, 1.0))
    if angle < 1e-6:
        q = qb
    else:
        q = (np.sin((1 - t) * angle) * qa + np.sin(t * angle) * qb) / np.sin(angle)
    out = np.empty(9)
    mujoco.mju_quat2Mat(out, q / np.linalg.norm(q))
    return out.reshape(3, 3)


class ArmIK:
    """Solve arm joint angles (radians) that put the ``grasp`` site at a pose."""

    def __init__(self, model: mujoco.MjModel, site: str = "grasp", damping: float = 0.02, rot_weight: float = 0.15):
        self.model = model
        self.data = mujoco.MjData(model)
        self.site = model.site(site).id
        self.qadr = np.array([model.joint(n).qposadr[0] for n in ARM_JOINTS])
        self.dofs = np.array([model.joint(n).dofadr[0] for n in ARM_JOINTS])
        self.damping = damping
        # Orientation errors are in radians, position errors in metres: weight rotation down so a
        # 1 cm position error and a ~4 degree tilt count alike.
        self.rot_weight = rot_weight
        self._jacp = np.zeros((3, model.nv))
        self._jacr = np.zeros((3, model.nv))

    def site_pose(self, q_arm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.data.qpos[self.qadr] = q_arm
        mujoco.mj_kinematics(self.model, self.data)
        return self.data.site_xpos[self.site].copy(), self.data.site_xmat[self.site].reshape(3, 3).copy()

    def solve(self, q_init: np.ndarray, pos: np.ndarray, rot: np.ndarray, iters: int = 30, tol: float = 2e-4) -> np.ndarray:
        q = np.array(q_init, dtype=float)
        lo, hi = JOINT_RANGES_RAD[:5, 0], JOINT_RANGES_RAD[:5, 1]
        for _ in range(iters):
            self.data.qpos[self.qadr] = q
            mujoco.mj_kinematics(self.model, self.data)
            mujoco.mj_comPos(self.model, self.data)
            err_p = pos - self.data.site_xpos[self.site]
            err_r = rotation_error(self.data.site_xmat[self.site].reshape(3, 3), rot)
            if np.linalg.norm(err_p) < tol and np.linalg.norm(err_r) < 10 * tol:
                break
            mujoco.mj_jacSite(self.model, self.data, self._jacp, self._jacr, self.site)
            jac = np.vstack([self._jacp[:, self.dofs], self.rot_weight * self._jacr[:, self.dofs]])
            err = np.concatenate([err_p, self.rot_weight * err_r])
            dq = jac.T @ np.linalg.solve(jac @ jac.T + self.damping**2 * np.eye(6), err)
            q = np.clip(q + dq, lo, hi)
        return q
