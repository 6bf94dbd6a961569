"""``sim_so101``: the sim tasks' SO-101 behind LeRobot's Robot API, with the feature names, units
and cameras of LeRobot's ``so101_follower`` (``shoulder_pan.pos`` ... ``gripper.pos`` in degrees,
gripper 0..100; cameras by name, (H, W, 3) uint8). No object poses: a real arm has none, so a policy
that reads them is refused on the twin as on the arm.

Each ``send_action`` steps the physics one control period (the deploy loop keeps the rate);
``reset_scene`` draws the next object layout (on a real arm the operator resets the scene).
"""
from __future__ import annotations

import numpy as np
from lerobot.robots.robot import Robot
from lerobot.utils.errors import DeviceAlreadyConnectedError, DeviceNotConnectedError

from .config_sim_so101 import SimSO101Config


class SimSO101(Robot):
    config_class = SimSO101Config
    name = "sim_so101"

    def __init__(self, config: SimSO101Config):
        super().__init__(config)
        self.config = config
        self.env = None
        self._reads = 0
        self._gone = False
        self._episode = 0
        self.last_info: dict = {}

    # -- features -------------------------------------------------------------------------------
    @property
    def motors(self) -> list[str]:
        from roboreward.sim.robot import JOINT_NAMES

        return list(JOINT_NAMES)

    @property
    def observation_features(self) -> dict:
        size = self.config.image_size
        return {**{f"{m}.pos": float for m in self.motors}, **{cam: (size, size, 3) for cam in self.config.views}}

    @property
    def action_features(self) -> dict:
        return {f"{m}.pos": float for m in self.motors}

    # -- connection -----------------------------------------------------------------------------
    @property
    def is_connected(self) -> bool:
        return self.env is not None and not self._gone

    @property
    def is_calibrated(self) -> bool:
        return True  # the twin's joints are calibrated by construction

    def calibrate(self) -> None:
        pass

    def configure(self) -> None:
        pass

    def connect(self, calibrate: bool = True) -> None:
        if self.env is not None:
            raise DeviceAlreadyConnectedError(f"{self} is already connected")
        from roboreward.sim.env import EnvConfig, SO101Env

        c = self.config
        self.env = SO101Env(EnvConfig(task=c.task, image_size=c.image_size, cameras=tuple(c.views), environment_state=False,
                                      max_episode_steps=10**9, task_config=c.task_config or None, visual=c.visual or None))
        self.reset_scene()

    def reset_scene(self) -> None:
        """Draw the next object layout and put the arm at its rest pose."""
        self._require()
        _, self.last_info = self.env.reset(seed=self.config.seed + self._episode)
        self._episode += 1

    def _require(self) -> None:
        if self.env is None or self._gone:
            raise DeviceNotConnectedError(f"{self} is not connected")

    # -- I/O ------------------------------------------------------------------------------------
    def get_observation(self) -> dict:
        self._require()
        self._reads += 1
        c = self.config
        if c.fault_disconnect_at is not None and self._reads >= c.fault_disconnect_at:
            self._gone = True
            raise DeviceNotConnectedError(f"{self}: the arm stopped answering (disconnected)")
        if c.fault_timeout_at is not None and self._reads == c.fault_timeout_at:
            raise TimeoutError(f"{self}: Present_Position read timed out")
        state = self.env.joint_state()
        obs = {f"{m}.pos": float(v) for m, v in zip(self.motors, state)}
        for cam in c.views:
            obs[cam] = self.env.render_camera(cam)
        return obs

    def send_action(self, action: dict) -> dict:
        self._require()
        target = np.array([float(action[f"{m}.pos"]) for m in self.motors], np.float32)
        _, _, _, self.last_info = self.env.advance(target)  # physics only: cameras are read by get_observation
        return {f"{m}.pos": float(v) for m, v in zip(self.motors, target)}

    def disconnect(self) -> None:
        if self.env is None:
            raise DeviceNotConnectedError(f"{self} is not connected")
        self.env.close()
        self.env = None
        self._gone = False
