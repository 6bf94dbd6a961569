"""Gymnasium environment: the SO-101 in a task scene, LeRobot units in and out.

Observation (``gymnasium.spaces.Dict``, LeRobot feature keys):
  ``observation.state``          (6,) float32, degrees x5 + gripper 0..100
  ``observation.images.front``   (H, W, 3) uint8, fixed scene camera
  ``observation.images.wrist``   (H, W, 3) uint8, camera on the gripper
  ``observation.environment_state`` (5 * objects,) float32, the task's object poses (privileged,
                                 like LeRobot's sim datasets; off with ``environment_state=False``)
Action: (6,) float32 joint position targets in the same units, clipped to the joint limits.
One ``step`` is one control period (30 Hz by default) made of ``substeps`` physics steps.
``info``: stage, stage_name, stage_progress, progress, success, plus the task's named terms
under ``gt``; at reset also ``visual``, the appearance drawn for the episode (``{}`` without
visual options; see ``visual.py``).
"""
from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; must precede the mujoco import

from dataclasses import dataclass

import gymnasium as gym
import mujoco
import numpy as np

from .robot import FEATURE_NAMES, HIGH, HOME_DEG, JOINT_NAMES, LOW, from_lerobot, to_lerobot
from .scene import NEUTRAL_CHECKER, TABLE_CHECKER, scene_xml, texture_assets
from .tasks import make_task
from .visual import VisualConfig, VisualRandomiser, copy_statistics, distractor_xml, make_visual_config

CAMERAS = ("front", "wrist")


@dataclass
class EnvConfig:
    task: str = "pick_place"
    """Registered task name (see ``roboreward.sim.tasks.TASKS``)."""
    image_size: int = 128
    """Height and width (px) of every camera image."""
    cameras: tuple[str, ...] = CAMERAS
    """Cameras to render into the observation; ``()`` gives a state-only env (fast, for tests)."""
    fps: float = 30.0
    """Control rate (Hz): LeRobot's default recording rate."""
    substeps: int = 16
    """Physics steps per control step (timestep = 1 / (fps * substeps), ~2 ms)."""
    max_episode_steps: int = 300
    """Truncate after this many control steps (10 s at 30 Hz)."""
    terminate_on_success: bool = False
    """End the episode when the task succeeds. Off by default so demos can show the finished state."""
    task_config: object | None = None
    """Task config dataclass, or a dict of overrides of it; None uses the task's ``default_config()``."""
    settle_steps: int = 50
    """Physics steps run at reset so objects come to rest on the table before the first frame."""
    environment_state: bool = True
    """Add ``observation.environment_state`` (the task objects' poses) to the observation."""
    visual: object | None = None
    """Appearance options (``roboreward.sim.visual.VisualConfig``, or a dict of its fields): object
    and table colours, lights, camera pose jitter, distractors, drawn per episode from the reset
    seed. None: the plain scene."""

    def __post_init__(self):
        unknown = set(self.cameras) - set(CAMERAS)
        if unknown:
            raise ValueError(f"cameras {sorted(unknown)} unknown; choose from {CAMERAS}")
        if not 16 <= self.image_size <= 1024:
            raise ValueError(f"image_size={self.image_size} must be in [16, 1024]")
        if self.substeps < 1 or self.fps <= 0:
            raise ValueError("substeps must be >= 1 and fps > 0")


class SO101Env(gym.Env):
    """A simulated SO-101 follower doing one registered task."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(self, config: EnvConfig | None = None, render_mode: str | None = None, **overrides):
        config = config if config is not None else EnvConfig()
        if overrides:
            config = EnvConfig(**{**config.__dict__, **overrides})
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode={render_mode!r}; only 'rgb_array' is supported")
        self.config, self.render_mode = config, render_mode
        self.metadata = {**self.metadata, "render_fps": config.fps}
        self.task = make_task(config.task, config.task_config)
        self.visual: VisualConfig = make_visual_config(config.visual)
        # Only what an option needs is compiled in, so the plain scene stays exactly as it was.
        def xml(distractors: int) -> str:
            return scene_xml(
                self.task.assets_xml() + texture_assets(self.visual.texture_names),
                self.task.worldbody_xml() + distractor_xml(distractors, self.visual.distractor_size_m[1]),
                1.0 / (config.fps * config.substeps),
                self.task.extra_xml(),
                table_checker=TABLE_CHECKER if self.visual.table_colour is None else NEUTRAL_CHECKER,
            )

        self.model = mujoco.MjModel.from_xml_string(xml(self.visual.max_distractors))
        if self.visual.max_distractors:
            # Extra bodies change the model's bounding statistics, and with them every camera's
            # near clipping plane (znear is relative to the extent): the wrist camera would clip
            # the jaw pads. Keep the plain scene's statistics (a 2 ms compile).
            copy_statistics(mujoco.MjModel.from_xml_string(xml(0)), self.model)
        self.data = mujoco.MjData(self.model)
        self.task.bind(self.model, self.data)
        self._visual = None if self.visual.is_default else VisualRandomiser(self.model, self.task, self.visual)
        self._visual_seed: int | None = None
        self._visual_episode = 0
        self.last_visual: dict = {}
        self._qadr = np.array([self.model.joint(n).qposadr[0] for n in JOINT_NAMES])
        self._vadr = np.array([self.model.joint(n).dofadr[0] for n in JOINT_NAMES])
        self._act = np.array([self.model.actuator(n).id for n in JOINT_NAMES])
        self._renderer: mujoco.Renderer | None = None
        self._steps = 0
        self.last_state = None
        self.last_action: np.ndarray | None = None
        """The last joint target stepped (LeRobot units), what a rollout recorder stores as ``action``."""

        size = config.image_size
        spaces = {"observation.state": gym.spaces.Box(LOW, HIGH, dtype=np.float32)}
        for cam in config.cameras:
            spaces[f"observation.images.{cam}"] = gym.spaces.Box(0, 255, (size, size, 3), dtype=np.uint8)
        if config.environment_state:
            n = 5 * len(self.task.objects)
            spaces["observation.environment_state"] = gym.spaces.Box(-np.inf, np.inf, (n,), dtype=np.float32)
        self.observation_space = gym.spaces.Dict(spaces)
        self.action_space = gym.spaces.Box(LOW, HIGH, dtype=np.float32)
        self.feature_names = FEATURE_NAMES

    # -- physics ------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        mujoco.mj_resetData(self.model, self.data)
        home = from_lerobot(HOME_DEG)
        self.data.qpos[self._qadr] = home
        self.data.ctrl[self._act] = home
        self.task.reset(self.np_random)
        self.last_visual = self._draw_visual(seed)
        mujoco.mj_forward(self.model, self.data)
        mujoco.mj_step(self.model, self.data, nstep=self.config.settle_steps)
        self._steps = 0
        self.last_state = self.task.evaluate()
        return self._observation(), {**self._info(self.last_state), "visual": self.last_visual}

    def _draw_visual(self, seed: int | None) -> dict:
        """This episode's appearance, from its own RNG stream (the env's ``np_random``, which draws
        the object poses, is never touched): the seed of the last seeded reset and the number of
        resets since it, like gymnasium's seeding."""
        if self._visual is None:
            return {}
        if seed is not None:
            self._visual_seed, self._visual_episode = int(seed), 0
        elif self._visual_seed is None:  # never seeded: a random stream, as np_random is
            self._visual_seed, self._visual_episode = int(np.random.SeedSequence().generate_state(1)[0]), 0
        else:
            self._visual_episode += 1
        return self._visual.apply(self._visual_seed, self._visual_episode)

    def step(self, action):
        reward, terminated, truncated, info = self.advance(action)
        return self._observation(), reward, terminated, truncated, info

    def advance(self, action):
        """``step`` without the observation (nothing rendered): (reward, terminated, truncated, info).
        What the Robot-API twin uses, whose cameras are read by ``get_observation`` alone."""
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (6,) or not np.all(np.isfinite(action)):
            raise ValueError(f"action must be 6 finite joint targets in LeRobot units, got {action!r}")
        self.data.ctrl[self._act] = from_lerobot(action)
        self.last_action = action.astype(np.float32)
        mujoco.mj_step(self.model, self.data, nstep=self.config.substeps)
        self._steps += 1
        state = self.last_state = self.task.evaluate()
        terminated = bool(state.success and self.config.terminate_on_success)
        truncated = self._steps >= self.config.max_episode_steps
        # Sparse success reward; shaped rewards come from roboreward's shaping wrappers.
        return float(state.success), terminated, truncated, self._info(state)

    def joint_state(self) -> np.ndarray:
        """Current joint positions in LeRobot units (6,) float32."""
        return to_lerobot(self.data.qpos[self._qadr])

    # -- observation --------------------------------------------------------------------------
    def _observation(self) -> dict[str, np.ndarray]:
        obs = {"observation.state": self.joint_state()}
        for cam in self.config.cameras:
            obs[f"observation.images.{cam}"] = self.render_camera(cam)
        if self.config.environment_state:
            obs["observation.environment_state"] = self.task.environment_state()
        return obs

    @staticmethod
    def _info(state) -> dict:
        return {
            "stage": state.stage,
            "stage_name": state.stage_name,
            "stage_progress": float(state.stage_progress),
            "progress": float(state.progress),
            "success": bool(state.success),
            "gt": dict(state.terms),
        }

    def render_camera(self, camera: str, size: int | None = None) -> np.ndarray:
        """One camera's RGB image (H, W, 3) uint8 at the configured size (or ``size``)."""
        size = size or self.config.image_size
        if self._renderer is None or self._renderer.height != size:
            self.close_renderer()
            self._renderer = mujoco.Renderer(self.model, size, size)
        self._renderer.update_scene(self.data, camera=camera)
        return self._renderer.render()

    def render(self):
        """``rgb_array``: the front and wrist cameras side by side."""
        if self.render_mode != "rgb_array":
            return None
        return np.concatenate([self.render_camera(c) for c in CAMERAS], axis=1)

    def close_renderer(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def close(self):
        # EGL prints teardown errors if a renderer outlives the interpreter (FACTS.md).
        self.close_renderer()
        super().close()


ENV_IDS = {
    "pick_place": "roboreward/SO101PickPlace-v0",
    "stack": "roboreward/SO101Stack-v0",
    "drawer": "roboreward/SO101Drawer-v0",
}


def register_envs() -> None:
    """Register one gymnasium id per task (idempotent)."""
    from .tasks import TASKS

    for task, env_id in ENV_IDS.items():
        if task in TASKS and env_id not in gym.registry:
            gym.register(
                id=env_id,
                entry_point="roboreward.sim.env:SO101Env",
                kwargs={"task": task},
                max_episode_steps=None,  # the env truncates itself at config.max_episode_steps
                disable_env_checker=False,
            )
