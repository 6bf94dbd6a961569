"""The safety layer: wraps any arm behind LeRobot's Robot API, on by default.

LeRobot's SO-101 follower leaves ``max_relative_target`` off, never clamps joint targets in its
degrees mode, and drops torque wherever the arm is on disconnect. ``SafeArm`` instead, on every
``send_action``:

- refuses actions whose keys are not the arm's action features (one line, before anything moves);
- replaces a NaN or infinite target by the last safe one (the arm holds);
- clamps each joint to its limits (config, else the arm's LeRobot calibration file, else the SO-101's
  ranges for SO-101 arms);
- limits the change per tick: at most ``max_relative_target`` from the present position (LeRobot's
  semantics) and at most ``max_velocity / fps`` from the last target sent (a velocity clamp);
- returns the target actually sent (after the arm's own clipping), and in dry-run mode sends
  nothing and returns what it would have sent.

A watchdog thread holds the arm (resends the last safe target) when no action arrives within
``watchdog_s`` (a policy that missed its deadline). ``safe_stop`` — called by the deploy loop on an
exception, Ctrl-C or a lost connection — holds, moves slowly to ``rest_pose`` where the arm still
answers, then disconnects (torque off). Every intervention is counted (``interventions``) and
logged.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from roboreward.errors import RoborewardError

log = logging.getLogger(__name__)


class ArmError(RoborewardError):
    """An arm, action or feature mismatch, said in one line."""


@dataclass
class SafetyConfig:
    enabled: bool = True
    """The layer's clamps and watchdog (off only for bench tests of the raw arm)."""
    joint_limits: dict[str, list[float]] = field(default_factory=dict)
    """Per action feature ``[low, high]`` in the arm's units; empty = the SO-101's ranges for SO-101
    arms (roboreward.sim.robot LOW/HIGH), else no clamp beyond the arm's own."""
    max_relative_target: float = 10.0
    """Largest distance (deg, gripper units) of a target from the present position, per tick."""
    max_velocity: float = 180.0
    """Largest change of the commanded target per second (deg/s): a velocity clamp."""
    fps: float = 30.0
    """Control rate the velocity clamp assumes (the dataset's fps)."""
    watchdog_s: float = 0.1
    """Hold the arm when no action has been sent for this long (3 ticks at 30 Hz)."""
    rest_pose: dict[str, float] = field(default_factory=dict)
    """Pose to move to on a safe stop; empty = the SO-101 rest pose for SO-101 arms, else hold in place."""
    rest_speed: float = 30.0
    """Speed (deg/s) of the move to the rest pose."""
    rest_timeout_s: float = 6.0
    """Give up moving to the rest pose after this long (then torque off where it is)."""
    dry_run: bool = False
    """Log actions without sending them."""

    def __post_init__(self):
        for name in ("max_relative_target", "max_velocity", "fps", "watchdog_s", "rest_speed"):
            if not getattr(self, name) > 0:
                raise ArmError(f"safety.{name} must be > 0, got {getattr(self, name)}")
        for key, lim in self.joint_limits.items():
            if len(lim) != 2 or not lim[0] < lim[1]:
                raise ArmError(f"safety.joint_limits.{key} must be [low, high] with low < high, got {lim}")


def so101_defaults(motors: list[str]) -> tuple[dict, dict]:
    """SO-101 joint limits and rest pose in LeRobot units, for an arm with these motor names."""
    from roboreward.sim.robot import HIGH, HOME_DEG, JOINT_NAMES, LOW

    if list(motors) != list(JOINT_NAMES):
        return {}, {}
    keys = [f"{m}.pos" for m in JOINT_NAMES]
    return ({k: [float(lo), float(hi)] for k, lo, hi in zip(keys, LOW, HIGH)},
            {k: float(v) for k, v in zip(keys, HOME_DEG)})


def calibration_limits(arm) -> dict[str, list[float]]:
    """Joint limits in the arm's own units from a LeRobot arm's calibration (the recorded range of
    motion of each motor, normalised the way its bus normalises positions); {} without one."""
    bus, calibration = getattr(arm, "bus", None), getattr(arm, "calibration", None) or {}
    if bus is None or not calibration:
        return {}
    from lerobot.motors import MotorNormMode

    limits = {}
    for name, motor in getattr(bus, "motors", {}).items():
        cal = calibration.get(name)
        if cal is None:
            continue
        mode = motor.norm_mode
        if mode == MotorNormMode.DEGREES:
            resolution = bus.model_resolution_table[motor.model] - 1
            half = (cal.range_max - cal.range_min) / 2 * 360 / resolution
            limits[f"{name}.pos"] = [-half, half]
        elif mode == MotorNormMode.RANGE_0_100:
            limits[f"{name}.pos"] = [0.0, 100.0]
        elif mode == MotorNormMode.RANGE_M100_100:
            limits[f"{name}.pos"] = [-100.0, 100.0]
    return limits


class SafeArm:
    """Any LeRobot Robot behind the safety layer; the Robot API (connect, disconnect,
    get_observation, send_action, observation_features, action_features, is_connected), usable as
    a context manager (which safe-stops on the way out)."""

    def __init__(self, arm, config: SafetyConfig | None = None, sleep=time.sleep):
        self.arm, self.config, self.sleep = arm, config or SafetyConfig(), sleep
        self.keys = list(arm.action_features)
        motors = [k.removesuffix(".pos") for k in self.keys]
        limits, rest = so101_defaults(motors)
        # The most specific source wins: the config, then the arm's calibration file, then the SO-101's ranges.
        limits = {**limits, **calibration_limits(arm), **self.config.joint_limits}
        self.low = np.array([limits.get(k, [-math.inf, math.inf])[0] for k in self.keys], np.float64)
        self.high = np.array([limits.get(k, [-math.inf, math.inf])[1] for k in self.keys], np.float64)
        rest = {**rest, **self.config.rest_pose}
        self.rest = np.array([rest[k] for k in self.keys]) if all(k in rest for k in self.keys) else None
        if self.rest is not None:  # a rest pose outside the calibrated range is never commanded
            self.rest = np.clip(self.rest, self.low, self.high)
        self.interventions: Counter = Counter()
        self.last_target: np.ndarray | None = None
        self.present: np.ndarray | None = None
        self.last_send = time.monotonic()
        self.lock = threading.RLock()
        self._watchdog: threading.Thread | None = None
        self._stop = threading.Event()

    # -- Robot API ------------------------------------------------------------------------------
    @property
    def observation_features(self) -> dict:
        return self.arm.observation_features

    @property
    def action_features(self) -> dict:
        return self.arm.action_features

    @property
    def is_connected(self) -> bool:
        return self.arm.is_connected

    @property
    def name(self) -> str:
        return getattr(self.arm, "name", type(self.arm).__name__)

    def connect(self, calibrate: bool = True) -> None:
        self.arm.connect(calibrate=calibrate)  # LeRobot's Robot.connect signature
        self.get_observation()  # the first target is where the arm is
        self.last_target = self.present.copy()
        self.last_send = time.monotonic()
        if self.config.enabled:
            self._stop.clear()
            self._watchdog = threading.Thread(target=self._watch, name="arm-watchdog", daemon=True)
            self._watchdog.start()

    def get_observation(self) -> dict:
        with self.lock:
            obs = self.arm.get_observation()
        self.present = np.array([float(obs[k]) for k in self.keys if k in obs], np.float64)
        if len(self.present) != len(self.keys):
            raise ArmError(f"{self.name}: observation lacks some of the action features {self.keys}")
        return obs

    def _count(self, what: str, detail: str = "") -> None:
        self.interventions[what] += 1
        log.warning("safety: %s%s", what, f" ({detail})" if detail else "")

    def check_keys(self, action: dict) -> None:
        missing = [k for k in self.keys if k not in action]
        unknown = [k for k in action if k not in self.keys]
        if missing or unknown:
            raise ArmError(f"{self.name}: action {'lacks ' + str(missing) if missing else 'has unknown ' + str(unknown)}; "
                           f"the arm takes {self.keys}")

    def safe_target(self, action: dict) -> np.ndarray:
        """The target the layer lets through for ``action`` (counting what it changed)."""
        self.check_keys(action)
        target = np.array([float(action[k]) for k in self.keys], np.float64)
        if not self.config.enabled:
            return target
        if not np.all(np.isfinite(target)):
            self._count("non_finite", f"{dict(zip(self.keys, target.tolist()))}")
            return self.last_target.copy()
        clipped = np.clip(target, self.low, self.high)
        if not np.array_equal(clipped, target):
            self._count("joint_limit")
        step = self.config.max_velocity / self.config.fps
        lo, hi = self.last_target - step, self.last_target + step
        if self.present is not None:
            lo = np.maximum(lo, self.present - self.config.max_relative_target)
            hi = np.minimum(hi, self.present + self.config.max_relative_target)
            hi = np.maximum(hi, lo)  # present and last target disagree by more than both bounds: stay between
        limited = np.clip(clipped, lo, hi)
        if not np.array_equal(limited, clipped):
            self._count("rate_limit")
        return limited

    def send_action(self, action: dict) -> dict:
        with self.lock:
            target = self.safe_target(action)
            return self._send(target)

    def _send(self, target: np.ndarray) -> dict:
        command = {k: float(v) for k, v in zip(self.keys, target)}
        if self.config.dry_run:
            log.info("dry run: %s", command)
            sent = command
        else:
            sent = self.arm.send_action(command)
        self.last_target = np.array([float(sent.get(k, command[k])) for k in self.keys])
        self.last_send = time.monotonic()
        return sent

    def hold(self, reason: str = "hold") -> None:
        """Resend the last safe target (the arm stays where it was told to be)."""
        with self.lock:
            if self.last_target is not None and self.arm.is_connected:
                self._count(reason)
                self._send(self.last_target)

    def _watch(self) -> None:
        while not self._stop.wait(self.config.watchdog_s / 4):
            if time.monotonic() - self.last_send > self.config.watchdog_s:
                try:
                    self.hold("watchdog")
                except Exception as exc:  # the loop sees the same fault at its next call
                    log.warning("watchdog hold failed: %s", exc)
                    return

    def safe_stop(self, reason: str = "stop") -> None:
        """Hold, move slowly to the rest pose where the arm still answers, then torque off and
        disconnect. Never raises: it is what runs when something else already went wrong."""
        self._stop.set()
        self._count("safe_stop", reason)
        try:
            if self.arm.is_connected and self.last_target is not None:
                self.hold("hold")
                if self.rest is not None and self.config.enabled:
                    step = self.config.rest_speed / self.config.fps
                    deadline = time.monotonic() + self.config.rest_timeout_s
                    while np.abs(self.last_target - self.rest).max() > 1e-6 and time.monotonic() < deadline:
                        nxt = self.last_target + np.clip(self.rest - self.last_target, -step, step)
                        with self.lock:
                            self._send(nxt)
                        self.sleep(1.0 / self.config.fps)
        except Exception as exc:
            log.warning("safe stop: could not reach the rest pose (%s); torque off where the arm is", exc)
        finally:
            self.disconnect()

    def disconnect(self) -> None:
        self._stop.set()
        if self._watchdog is not None and self._watchdog is not threading.current_thread():
            self._watchdog.join(timeout=1.0)
        try:
            self.arm.disconnect()  # LeRobot's arms switch torque off here (disable_torque_on_disconnect)
        except Exception as exc:  # already gone: nothing left to switch off from here
            log.warning("disconnect: %s", exc)

    def episode_interventions(self) -> dict[str, int]:
        """The interventions since the last call (per episode), and a fresh count."""
        out, self.interventions = dict(self.interventions), Counter()
        return out

    def __enter__(self):
        self.connect()
        return self

    def __exit__(self, exc_type, exc, tb):
        self.safe_stop("exit" if exc_type is None else f"{exc_type.__name__}")
