"""Deploy: a policy (and optionally a reward model) on an arm at the dataset's rate, behind the
safety layer, every episode recorded into a zarr store with the same schema as the training data.

Per tick: read the arm, let the policy act (``PolicyRunner``: each new frame encoded once, shared
with the reward model when both read the same encoder's features), send through ``SafeArm``, read
the reward model's live progress, append the frame to the episode being recorded, sleep to the next
tick. A policy that misses its deadline does not get its late action sent: the arm holds and the
miss is counted. An episode ends after ``max_steps``, or when progress stays above 1 - delta for
``success_hold`` ticks. On any fault (bus timeout, lost connection, an exception in the policy,
Ctrl-C) the arm is stopped safely (``SafeArm.safe_stop``), the episode recorded so far is
committed (``info.ended_by`` says why), and the fault is reported in one line. A kill -9 loses at
most the episode in flight: every committed one validates.
"""
from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from roboreward.errors import RoborewardError

from .arms import make_arm
from .safety import ArmError, SafeArm, SafetyConfig

log = logging.getLogger(__name__)
STATE, ACTION = "observation.state", "action"


class DeployError(RoborewardError):
    """Deploy stopped on a fault, after stopping the arm safely (one line)."""


@dataclass
class DeployConfig:
    robot: dict = field(default_factory=lambda: {"type": "sim_so101"})
    """The arm: ``type`` (sim_so101, so101_follower, koch_follower) and its LeRobot config fields."""
    policy: str = ""
    """Policy folder (roboreward bc train's model/)."""
    reward: str | None = None
    """Reward model folder for live progress (and the success stop), or None."""
    task: str | None = None
    """Task string recorded with each episode and given to the reward model; None: the sim twin's
    task instruction, else the reward model's only task."""
    episodes: int = 1
    max_steps: int = 300
    """Control ticks per episode (10 s at 30 Hz)."""
    fps: float = 30.0
    """Control rate: the dataset's fps (LeRobot's default 30)."""
    realtime: bool = True
    """Keep the rate with sleeps (off: as fast as the loop goes, for the sim twin in tests)."""
    deadline_s: float | None = None
    """Budget of the policy per tick; None: one tick (1 / fps)."""
    success_delta: float = 0.05
    success_hold: int = 0
    """End an episode when progress stays >= 1 - success_delta for this many ticks (0: never)."""
    record: str | None = None
    """Store to record every episode into (created if missing, appended to otherwise)."""
    execute: int | None = None
    """Actions of each predicted chunk executed before the policy is asked again (default horizon/2)."""
    safety: SafetyConfig = field(default_factory=SafetyConfig)

    def __post_init__(self):
        if self.episodes < 1 or self.max_steps < 1 or self.fps <= 0:
            raise RoborewardError("episodes and max_steps must be >= 1 and fps > 0")
        if not 0 <= self.success_delta < 1 or self.success_hold < 0:
            raise RoborewardError("success_delta must be in [0, 1) and success_hold >= 0")


# ---------------------------------------------------------------------------------------- compatibility
def check_compatible(arm, policy, reward=None) -> None:
    """Refuse, in one line and before anything moves, a policy or reward model that reads what the
    arm does not have: other joints, the simulator's object poses, cameras it lacks."""
    motors = [k for k in arm.action_features]
    cameras = [k for k, v in arm.observation_features.items() if isinstance(v, tuple) and len(v) == 3]
    if getattr(getattr(arm, "config", None), "use_degrees", True) is False:
        raise ArmError(f"{arm.name} reports its joints in -100..100 (use_degrees=False); the policy was trained in "
                       "degrees (so101_follower's default units): connect it with use_degrees=True")
    for what, cfg in (("policy", policy.config), ("reward model", None if reward is None else reward.config)):
        if cfg is None:
            continue
        env_key = getattr(cfg, "env_state_key", None)
        if env_key:
            raise ArmError(f"the {what} reads {env_key!r} (the simulator's object poses), which no real arm has; "
                           "train it without env_state_key")
        state_key = getattr(cfg, "state_key", None)
        if state_key is not None and state_key != STATE:
            raise ArmError(f"the {what} reads {state_key!r}; an arm gives {STATE!r} ({motors})")
        dim = getattr(cfg, "state_dim", len(motors)) if state_key else len(motors)
        if state_key and dim != len(motors):
            raise ArmError(f"the {what} reads a {dim}-d {STATE}; {arm.name} has {len(motors)} joints {motors}")
        action_dim = getattr(cfg, "action_dim", None)
        if action_dim is not None and action_dim != len(motors):
            raise ArmError(f"the {what} outputs {action_dim}-d actions; {arm.name} takes {len(motors)} {motors}")
        for cam in getattr(cfg, "cameras", []):
            name = cam.removeprefix("observation.images.")
            if name not in cameras:
                raise ArmError(f"the {what} reads camera {cam!r}; {arm.name} has cameras {cameras or 'none'} "
                               "(name the arm's cameras as the training data did)")
            # A policy that encodes pixels itself sees frames at its training size only.
            trained = list(getattr(cfg, "image_shape", None) or []) if getattr(cfg, "pixels", False) else []
            given = list(arm.observation_features[name][:2])
            if trained and given != trained:
                raise ArmError(f"the {what} was trained on {trained[0]}x{trained[1]} frames of {cam!r}; {arm.name}'s camera "
                               f"{name!r} gives {given[0]}x{given[1]}: configure the camera at the training size")


def observation_of(obs: dict, motors: list[str], cameras: list[str]) -> dict[str, np.ndarray]:
    """An arm's flat observation as one row of dataset features (``observation.state``,
    ``observation.images.<camera>``)."""
    out = {STATE: np.array([[obs[k] for k in motors]], np.float32)}
    for cam in cameras:
        out[f"observation.images.{cam}"] = np.asarray(obs[cam])[None]
    return out


def _recorder(path: str, arm, cameras: list[str], fps: float):
    from roboreward.data import EpisodeStore, FeatureSpec

    motors = list(arm.action_features)
    if Path(path).exists():
        store = EpisodeStore(path, mode="a")
        if store.fps != fps:
            raise ArmError(f"--record {path}: the store runs at {store.fps} fps, deploy at {fps}")
        return store
    names = list(motors)
    features = {STATE: FeatureSpec((len(motors),), "float32", "low_dim", names),
                ACTION: FeatureSpec((len(motors),), "float32", "low_dim", names)}
    for cam in cameras:
        features[f"observation.images.{cam}"] = FeatureSpec(tuple(arm.observation_features[cam]), "uint8", "rgb")
    robot_type = "so101_follower" if arm.name == "sim_so101" else arm.name
    return EpisodeStore.create(path, features, fps=fps, robot_type=robot_type)


# ---------------------------------------------------------------------------------------- the loop
class _CtrlC:
    """While the control loop runs, a Ctrl-C is taken at the next tick boundary (never inside a
    camera read, a bus write or a store write, which could leave a lock held or a chunk half
    written); outside the loop, or on a second Ctrl-C, it interrupts at once. Main thread only."""

    def __init__(self):
        self.requested = False
        self.in_loop = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False

    def _handle(self, signum, frame):
        if self.in_loop and not self.requested:
            self.requested = True
            return
        raise KeyboardInterrupt

    def check(self) -> None:
        """Called at each tick boundary: raises the deferred Ctrl-C."""
        if self.requested:
            raise KeyboardInterrupt


def deploy(config: DeployConfig, progress: bool = True, arm=None) -> dict[str, Any]:
    """Run ``config.episodes`` episodes; returns per-episode reports and timing statistics."""
    from roboreward.policies import Policy
    from roboreward.policies.runner import PolicyRunner

    policy = Policy.from_pretrained(config.policy)
    reward = None
    if config.reward:
        from roboreward.rl.train import load_reward_model

        reward = load_reward_model(config.reward)
    raw = arm if arm is not None else make_arm(config.robot)
    check_compatible(raw, policy, reward)
    safety = SafeArm(raw, config.safety)
    motors = list(raw.action_features)
    cameras = [k for k, v in raw.observation_features.items() if isinstance(v, tuple) and len(v) == 3]
    task = config.task or _default_task(raw, reward)
    runner = PolicyRunner(policy, 1, config.execute)
    potential = None
    if reward is not None:
        from roboreward.shaping import ModelPotential

        potential = ModelPotential(reward, 1, task, encoder=runner.encoder if _same_encoder(policy, reward) else None)
    # The encoders' CPU runtimes are built at their first call (about 1 s for the ONNX export): here,
    # before the arm connects, not on the first tick (it stalled the 30 Hz loop by 1.4 s).
    for encoder in (runner.encoder, potential.encoder if potential else None):
        if encoder is not None:
            encoder.prepare()  # a no-op once built (the two are often one encoder)
    deadline = config.deadline_s or 1.0 / config.fps
    reports: list[dict] = []
    fault: str | None = None
    writer = None
    # Connect first, then create the recording: a store on disk means the arm is up and the loop
    # is about to run (a Ctrl-C while connecting still ends in the safe stop below).
    store = None
    ctrl_c = _CtrlC().__enter__()  # restored in the finally below, whatever happens
    try:
        safety.connect()
        store = _recorder(config.record, raw, cameras, config.fps) if config.record else None
        for ep in range(config.episodes):
            if ep and hasattr(raw, "reset_scene"):
                raw.reset_scene()
            runner.reset()
            writer = store.begin_episode(task) if store is not None else None
            report = _episode(config, safety, runner, potential, writer, motors, cameras, deadline, task, progress, ctrl_c)
            reports.append(report)
            if writer is not None:
                writer.commit(success=report.get("sim_success", report["success"]), info=_info(report))
                writer = None
    except (KeyboardInterrupt, Exception) as exc:  # noqa: BLE001 - every fault ends in the same safe stop
        fault = "interrupted (Ctrl-C)" if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__}: {exc}"
        log.error("deploy: %s; stopping the arm safely", fault)
        part = getattr(exc, "episode_report", None)
        safety.safe_stop(fault)
        if writer is not None:
            if writer.length:
                rep = part or {"steps": writer.length, "success": False}
                rep["ended_by"] = fault
                rep["interventions"] = safety.episode_interventions()
                writer.commit(success=False, info=_info(rep))
                reports.append(rep)
            else:
                writer.abort()
    else:
        safety.safe_stop("done")
    finally:
        ctrl_c.__exit__()
    result = {"episodes": reports, "recorded": None if store is None else str(store.path), "fault": fault}
    if fault is not None:
        raise DeployError(f"deploy stopped: {fault}; the arm was stopped safely"
                          + (f", {len(reports)} episode(s) recorded in {store.path}" if store is not None else ""))
    return result


def _default_task(arm, reward) -> str:
    if hasattr(arm, "config") and getattr(arm.config, "task", None):
        from roboreward.sim.tasks import make_task

        return make_task(arm.config.task).instruction
    if reward is not None and len(getattr(reward.config, "tasks", [])) == 1:
        return reward.config.tasks[0]
    raise ArmError("say what the arm is doing: --task 'Pick up the red cube and place it in the bowl.'")


def _same_encoder(policy, reward) -> bool:
    return bool(getattr(policy.config, "feature_key", None)) and policy.config.feature_key == getattr(reward.config, "feature_key", None)


def _info(report: dict) -> dict:
    keys = ("ended_by", "interventions", "final_progress", "timing")
    return {k: report[k] for k in keys if report.get(k) is not None}


def _episode(config, arm: SafeArm, runner, potential, writer, motors, cameras, deadline, task, progress,
             ctrl_c: _CtrlC) -> dict:
    period = 1.0 / config.fps
    times: dict[str, list[float]] = {"tick": [], "policy": [], "reward": [], "send": [], "record": [], "late": []}
    value, above, ended_by, missed = None, 0, "max_steps", 0
    start = time.perf_counter()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.max_steps, unit="tick", desc="deploy", leave=False)
    report: dict[str, Any] = {}
    step = 0
    try:
        ctrl_c.in_loop = True
        for step in range(config.max_steps):
            ctrl_c.check()
            scheduled = start + step * period
            t0 = time.perf_counter()
            times["late"].append(max(0.0, t0 - scheduled))
            obs = arm.get_observation()
            row = observation_of(obs, motors, cameras)
            if runner.cameras and not runner.pixels:  # encode once, shared with the reward model
                for cam, f in runner.features(row).items():
                    row[f"features.{cam}"] = f
            t1 = time.perf_counter()
            action = runner.act(row, [0])[0]
            t2 = time.perf_counter()
            if t2 - t1 > deadline:
                missed += 1
                arm.hold("deadline")  # the late action is stale: hold instead of sending it
                sent = arm.last_target.copy()
            else:
                sent_d = arm.send_action({k: float(v) for k, v in zip(motors, action)})
                sent = np.array([sent_d[k] for k in motors])
            t3 = time.perf_counter()
            if potential is not None:
                reading = potential.start(row, np.zeros(1), [0]) if step == 0 else potential.step(row, np.zeros(1))
                value = float(reading[0])
                above = above + 1 if value >= 1 - config.success_delta else 0
            t4 = time.perf_counter()
            if writer is not None:
                frame = {STATE: row[STATE][0], ACTION: sent.astype(np.float32)}
                for cam in cameras:
                    frame[f"observation.images.{cam}"] = row[f"observation.images.{cam}"][0]
                writer.append(frame)
            t5 = time.perf_counter()
            for k, dt in (("policy", t2 - t1), ("send", t3 - t2), ("reward", t4 - t3), ("record", t5 - t4), ("tick", t5 - t0)):
                times[k].append(dt)
            if bar is not None:
                bar.update(1)
                if value is not None and step % 10 == 0:
                    bar.set_postfix(progress=f"{value:.2f}", refresh=False)
            if config.success_hold and above >= config.success_hold:
                ended_by = "success (progress held)"
                break
            if config.realtime:
                wait = start + (step + 1) * period - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
    except BaseException as exc:
        exc.episode_report = _report(step, value, ended_by, times, missed, arm, task, success=False)
        raise
    finally:
        ctrl_c.in_loop = False
        if bar is not None:
            bar.close()
    report = _report(step + 1, value, ended_by, times, missed, arm, task, success=ended_by.startswith("success"))
    sim_success = getattr(getattr(arm, "arm", None), "last_info", {}).get("success")
    if sim_success is not None:  # the twin knows the truth; a real arm's label is the reward model's
        report["sim_success"] = bool(sim_success)
    return report


def _report(steps, value, ended_by, times, missed, arm, task, success) -> dict:
    def ms(xs):
        return {"mean": 1e3 * float(np.mean(xs)), "p99": 1e3 * float(np.percentile(xs, 99)),
                "max": 1e3 * float(np.max(xs))} if xs else None

    return {"steps": int(steps), "task": task, "success": bool(success), "final_progress": value, "ended_by": ended_by,
            "interventions": arm.episode_interventions(), "missed_deadlines": int(missed),
            "timing": {k: ms(v) for k, v in times.items()}}
