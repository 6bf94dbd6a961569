"""The sim tasks as RL environments: a bounded joint-delta action space and the vector env SB3 learns in.

SO101Env takes absolute joint targets in LeRobot units over the joints' whole range: a random
action jumps the arm across its workspace every 33 ms, which no exploration survives. RL acts
through ``JointDeltaAction`` instead: an action in [-1, 1]^6 moves the commanded joint targets by
at most ``max_step`` per control step (RLConfig's default: 4 deg per step = 120 deg/s for the
arm, 10 gripper units; the scripted demonstrators move about 1 deg per step and up to ~9 at their
fastest, so their replays lag a little in the fast moves but still succeed),
integrated from the pose at reset and clipped to the joint limits; a zero action holds the
command. The command is part of the observation (``observation.target``), so the policy's input
stays Markov. What reaches the env, and from there a real arm, is still an absolute
``so101_follower`` target in degrees.

Residual RL (``ResidualAction``): a behaviour-cloned base policy proposes each step's absolute
target and the RL action adds a bounded correction to it (Silver et al. 2018, Johannink et al.
2019): the learner starts from the base policy's success instead of from a random arm (in the RL
benchmark's budget, joint-delta actions never reached a success). The base policy's proposal is the
observation's ``observation.target``, so the policy's inputs and the demo replay are the same as
with ``JointDeltaAction``.
"""
from __future__ import annotations

from collections.abc import Sequence

import gymnasium as gym
import numpy as np

from ..errors import RoborewardError

TARGET_KEY = "observation.target"
POLICY_KEYS = ("observation.state", TARGET_KEY, "observation.environment_state")
"""What an RL policy sees by default: joint state, the commanded targets and the objects' poses
(privileged, like LeRobot's sim datasets); the reward model sees the cameras."""
MAX_STEP_DEG, MAX_STEP_GRIPPER = 4.0, 10.0
"""The default size of an action of 1: 4 deg per 30 Hz step for each arm joint (120 deg/s), 10
gripper units (RLConfig's defaults are these)."""
DEFAULT_MAX_STEP = (MAX_STEP_DEG,) * 5 + (MAX_STEP_GRIPPER,)


class JointDeltaAction(gym.Wrapper):
    """Actions in [-1, 1]^6 move the commanded joint targets by up to ``max_step`` (LeRobot units
    per control step); the command is added to the observation as ``observation.target``."""

    def __init__(self, env: gym.Env, max_step: Sequence[float] = DEFAULT_MAX_STEP):
        super().__init__(env)
        from ..sim.robot import HIGH, LOW

        self.max_step = np.asarray(max_step, np.float32)
        if self.max_step.shape != (6,) or not np.all(self.max_step > 0):
            raise RoborewardError(f"max_step must be 6 positive numbers (deg, gripper units per step), got {max_step}")
        self.low, self.high = LOW, HIGH
        self.action_space = gym.spaces.Box(-1.0, 1.0, (6,), np.float32)
        self.observation_space = gym.spaces.Dict({**env.observation_space.spaces,
                                                  TARGET_KEY: gym.spaces.Box(LOW, HIGH, dtype=np.float32)})
        self.target = np.zeros(6, np.float32)

    def _observe(self, obs: dict) -> dict:
        return {**obs, TARGET_KEY: self.target.copy()}

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._start(obs)
        return self._observe(obs), info

    def step(self, action):
        action = np.asarray(action, np.float32)
        if action.shape != (6,) or not np.all(np.isfinite(action)):
            raise RoborewardError(f"action must be 6 finite numbers in [-1, 1], got {action!r}")
        self.target = np.clip(self.target + np.clip(action, -1.0, 1.0) * self.max_step, self.low, self.high)
        obs, reward, terminated, truncated, info = self.env.step(self.target)
        if not (terminated or truncated):
            self._next(obs)
        return self._observe(obs), reward, terminated, truncated, info

    def _start(self, obs: dict) -> None:
        """The command at an episode's start: the pose at reset."""
        self.target = np.asarray(obs["observation.state"], np.float32).copy()

    def _next(self, obs: dict) -> None:
        """The command the next action moves from: the one just sent (held)."""

    def action_for(self, target: np.ndarray, previous: np.ndarray) -> np.ndarray:
        """The action in [-1, 1]^6 that moves the command from ``previous`` towards absolute joint
        ``target`` (LeRobot units), as far as one step allows: how demonstrations become RL actions."""
        return np.clip((np.asarray(target, np.float32) - previous) / self.max_step, -1.0, 1.0)


class ResidualAction(JointDeltaAction):
    """Actions in [-1, 1]^6 correct a base policy's absolute target by up to ``max_step`` per joint;
    the base's proposal for the coming step is ``observation.target``. The base policy (a
    ``roboreward.policies`` policy reading joint state and object poses, e.g. configs/bc/bc_state.yaml)
    runs through its own ``PolicyRunner``: its history and action chunk are this env's and are
    reset with it."""

    def __init__(self, env: gym.Env, base_policy, max_step: Sequence[float] = DEFAULT_MAX_STEP):
        super().__init__(env, max_step)
        from ..policies.runner import PolicyRunner

        if base_policy.config.cameras:
            raise RoborewardError(f"base policy reads cameras {list(base_policy.config.cameras)}; residual RL takes a "
                                  "state policy (configs/bc/bc_state.yaml: joint state + object poses)")
        self.runner = PolicyRunner(base_policy, 1)

    def _start(self, obs: dict) -> None:
        self.runner.reset()
        self._next(obs)

    def _next(self, obs: dict) -> None:
        """The base policy's proposal for the coming step."""
        batch = {k: np.asarray(v)[None] for k, v in obs.items() if not k.startswith("observation.images")}
        self.target = np.clip(np.asarray(self.runner.act(batch)[0], np.float32), self.low, self.high)


def load_base_policy(path):
    """The base policy of residual RL from a ``bc train`` model folder, or one line saying why not."""
    from pathlib import Path

    from ..policies import Policy

    path = Path(path)
    if not (path / "config.json").is_file():
        raise RoborewardError(f"base_policy {path}: not a policy folder (no config.json); give roboreward bc train's <out>/model")
    return Policy.from_pretrained(path)


def make_env(task: str, cameras: Sequence[str] = (), image_size: int = 96, max_episode_steps: int = 200,
             task_config: dict | None = None, visual: dict | None = None, max_step=None, base_policy=None) -> gym.Env:
    """One RL env: SO101Env with termination on success, rendering ``cameras`` (short names:
    front, wrist) for the reward model, behind ``JointDeltaAction`` (or, given ``base_policy``,
    ``ResidualAction`` over it)."""
    from ..sim.env import EnvConfig, SO101Env

    env = SO101Env(EnvConfig(task=task, image_size=image_size, cameras=tuple(cameras), max_episode_steps=max_episode_steps,
                             terminate_on_success=True, task_config=task_config or None, visual=visual or None))
    step = {} if max_step is None else {"max_step": max_step}
    return JointDeltaAction(env, **step) if base_policy is None else ResidualAction(env, base_policy, **step)


def camera_names(keys: Sequence[str]) -> list[str]:
    """``observation.images.front`` -> ``front``, for the env's ``cameras`` option."""
    return [k.removeprefix("observation.images.") for k in keys]
