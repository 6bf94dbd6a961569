"""Task base class, registry and the shared ground-truth machinery.

A task owns its objects (MJCF fragments), their randomised initial poses and a geometric success
detector. Each control step it reports a ``TaskState``: the current stage, the progress within it,
overall progress and a dict of named ground-truth terms. Physics (scene.py, env.py) never looks
inside a task; a task never steps physics.

Stage logic is a pure function of the physical state (so it is correct for any policy, scripted or
learned), with two pieces of memory that make it well behaved:
- within a stage, progress is the running maximum of the raw measure, so jitter does not make
  ground truth wobble; it resets whenever the stage changes, so a dropped object really drops progress;
- distances that define a stage's progress are normalised by their value when the stage was entered.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import mujoco
import numpy as np

TASKS: dict[str, type["Task"]] = {}


def register_task(cls: type["Task"]) -> type["Task"]:
    """Class decorator: make a task available to ``make_task`` under ``cls.name``."""
    if cls.name in TASKS:
        raise ValueError(f"task name {cls.name!r} is registered twice")
    TASKS[cls.name] = cls
    return cls


def make_task(name: str, config=None) -> "Task":
    """Build a registered task by name, with its ``default_config()`` unless a config is given
    (a config dataclass, or a dict of overrides of the default config)."""
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; registered tasks: {sorted(TASKS)}")
    cls = TASKS[name]
    if isinstance(config, dict):
        config = make_task_config(name, config)
    return cls(config if config is not None else cls.default_config())


def make_task_config(name: str, overrides: dict | None = None):
    """The task's default config with ``overrides`` (from YAML: unknown keys and bad values raise
    one-line ConfigErrors naming the field)."""
    from roboreward.config import ConfigError, from_dict

    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; registered tasks: {sorted(TASKS)}")
    config_cls = type(TASKS[name].default_config())
    try:
        return from_dict(config_cls, overrides or {}, where=f"task_config ({name})")
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"task_config ({name}): {exc}") from None


@dataclass
class TaskState:
    """What a task reports after each control step."""

    stage: int
    stage_name: str
    stage_progress: float
    progress: float
    success: bool
    terms: dict[str, float] = field(default_factory=dict)
    """Named ground-truth terms (distances, flags) for logging and reward shaping."""


class Task:
    """Base of every task. Subclasses set ``name``, ``stages``, ``instruction``, implement
    ``default_config``, ``assets_xml``, ``worldbody_xml``, ``reset`` and ``_measure``."""

    name: ClassVar[str]
    stages: ClassVar[tuple[str, ...]]
    instruction: ClassVar[str]
    """The natural-language task string stored with each episode."""
    objects: ClassVar[tuple[str, ...]] = ()
    """Bodies whose poses make up ``observation.environment_state`` (LeRobot's name for the
    privileged object state of sim datasets), each as x, y, z (m) and cos, sin of its yaw."""
    visual_parts: ClassVar[dict[str, tuple[str, ...]]] = {}
    """Parts whose colour ``VisualConfig.object_colours`` can set: part name -> geom names (a trailing
    ``*`` matches a prefix). Appearance only: the success detector never reads a colour."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for attr in ("name", "stages", "instruction"):
            if not hasattr(cls, attr):
                raise TypeError(f"task class {cls.__name__} must define class attribute {attr!r}")
        if len(cls.stages) < 3:
            raise TypeError(f"task {cls.name!r} needs at least 3 stages, has {len(cls.stages)}")

    def __init__(self, config):
        self.config = config
        self.model: mujoco.MjModel | None = None
        self.data: mujoco.MjData | None = None
        self._stage = 0
        self._best = 0.0
        self._entry: dict[str, float] = {}
        self._held = False

    @staticmethod
    def default_config():
        raise NotImplementedError

    # -- scene -------------------------------------------------------------------------------
    def assets_xml(self) -> str:
        return ""

    def worldbody_xml(self) -> str:
        raise NotImplementedError

    def extra_xml(self) -> str:
        """Other top-level MJCF sections (``<contact>``, ``<equality>``...); empty by default."""
        return ""

    def bind(self, model: mujoco.MjModel, data: mujoco.MjData) -> None:
        """Remember the model and data this task reads; called once after the scene compiles."""
        self.model, self.data = model, data
        self._finger_geoms = {model.geom("fixed_jaw").id, model.geom("moving_jaw_pad").id}

    def reset(self, rng: np.random.Generator) -> None:
        """Randomise object poses (write qpos / body_pos), then call ``self._reset_tracking()``.
        Runs before ``mj_forward``."""
        raise NotImplementedError

    def workspace_xy(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """(x_min, y_min), (x_max, y_max) (m) of the table area the task's objects and the arm's
        moves can cover under this config; distractors are placed outside it."""
        raise NotImplementedError(f"task {self.name!r} does not define workspace_xy(), needed for distractors")

    def keep_out_xy(self) -> list[np.ndarray]:
        """Centres of obstacles a scripted grasp should keep its open jaw away from."""
        return []

    def _reset_tracking(self) -> None:
        self._stage, self._best, self._entry, self._held = 0, 0.0, {}, False

    def environment_state(self) -> np.ndarray:
        """Pose of each body in ``objects``: (5 * len(objects),) float32, x y z cos(yaw) sin(yaw)."""
        parts = []
        for body in self.objects:
            b = self.data.body(body)
            m = b.xmat.reshape(3, 3)
            yaw = np.arctan2(m[1, 0], m[0, 0])
            parts.append([*b.xpos, np.cos(yaw), np.sin(yaw)])
        return np.asarray(parts, dtype=np.float32).reshape(-1)

    @classmethod
    def environment_state_names(cls) -> list[str]:
        return [f"{body}.{axis}" for body in cls.objects for axis in ("x", "y", "z", "cos_yaw", "sin_yaw")]

    # -- ground truth --------------------------------------------------------------------------
    def _measure(self) -> tuple[int, float, bool, dict[str, float]]:
        """Return (stage, raw progress within that stage in [0, 1], success, terms) from the
        current physical state."""
        raise NotImplementedError

    def evaluate(self) -> TaskState:
        """Ground truth after a step: stage logic + within-stage ratchet (see module docstring)."""
        stage, raw, success, terms = self._measure()
        if stage != self._stage:
            self._stage, self._best = stage, 0.0
            self._entry = {k: v for k, v in self._entry.items() if not k.startswith("stage:")}
        self._best = max(self._best, float(np.clip(raw, 0.0, 1.0)))
        if success:
            self._best = 1.0
        n = len(self.stages)
        progress = 1.0 if success else (stage + self._best) / n
        return TaskState(stage, self.stages[stage], self._best, min(progress, 1.0), bool(success), terms)

    # -- helpers for subclasses -----------------------------------------------------------------
    def entry_value(self, key: str, value: float) -> float:
        """``value`` as it was when the current stage was entered (normaliser for distances)."""
        return self._entry.setdefault(f"stage:{key}", max(float(value), 1e-6))

    def grasp_point(self) -> np.ndarray:
        return self.data.site("grasp").xpos

    def jaw_contacts(self, geom_id: int) -> tuple[bool, bool]:
        """Whether the fixed and the moving jaw touch the given geom."""
        fixed, moving = self.model.geom("fixed_jaw").id, self.model.geom("moving_jaw_pad").id
        touch_fixed = touch_moving = False
        for i in range(self.data.ncon):
            c = self.data.contact[i]
            pair = {c.geom1, c.geom2}
            if geom_id in pair:
                touch_fixed |= fixed in pair
                touch_moving |= moving in pair
        return touch_fixed, touch_moving

    def update_held(self, geom_id: int, body_pos: np.ndarray) -> bool:
        """Grasp detector with hysteresis: held once both jaws touch the object; stays held while one
        jaw still touches it near the grasp point (contacts flicker for a step or two under load)."""
        fixed, moving = self.jaw_contacts(geom_id)
        near = np.linalg.norm(body_pos - self.grasp_point()) < 0.03
        if fixed and moving and near:
            self._held = True
        elif not ((fixed or moving) and near):
            self._held = False
        return self._held

    def jaw_angle(self) -> float:
        return float(self.data.joint("gripper").qpos[0])

    def closing_fraction(self, open_angle: float, contact_angle: float) -> float:
        """How far the jaw has closed from ``open_angle`` to where it meets the object."""
        return float(np.clip((open_angle - self.jaw_angle()) / (open_angle - contact_angle), 0.0, 1.0))


def set_free_pose(data: mujoco.MjData, joint: str, pos, yaw: float = 0.0) -> None:
    """Place a free-jointed body at ``pos`` with rotation ``yaw`` about z, at rest."""
    j = data.joint(joint)
    j.qpos[:3] = pos
    j.qpos[3:] = [np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)]
    j.qvel[:] = 0.0


def check_ranges(config, *names: str) -> None:
    """Each named config field is None or a (low, high) pair with low <= high."""
    for name in names:
        value = getattr(config, name)
        if value is not None and (len(value) != 2 or value[0] > value[1]):
            raise ValueError(f"{name}={value} must be a (low, high) pair with low <= high")


def check_exclude(config, range_name: str, exclude_name: str) -> None:
    """``exclude_name`` is None or a (low, high) band that leaves part of ``range_name`` free."""
    check_ranges(config, exclude_name)
    band, full = getattr(config, exclude_name), getattr(config, range_name)
    if band is not None and band[0] <= full[0] and band[1] >= full[1]:
        raise ValueError(f"{exclude_name}={band} covers all of {range_name}={full}; nothing is left to draw from")


def uniform_outside(rng: np.random.Generator, span: tuple[float, float], band: tuple[float, float] | None) -> float:
    """A uniform draw from ``span`` less the open ``band`` (a held-out band no training object is
    placed in). With no band it is exactly ``rng.uniform(*span)``, so existing seeds keep their layouts."""
    if band is None:
        return float(rng.uniform(*span))
    pieces = [(lo, hi) for lo, hi in ((span[0], min(span[1], band[0])), (max(span[0], band[1]), span[1])) if hi > lo]
    u = rng.uniform(0.0, sum(hi - lo for lo, hi in pieces))
    for lo, hi in pieces:
        if u <= hi - lo:
            return float(lo + u)
        u -= hi - lo
    return float(pieces[-1][1])


def xy_dist(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(a)[:2] - np.asarray(b)[:2]))


def sample_apart(rng: np.random.Generator, sample, min_dist: float, n: int, tries: int = 100) -> list:
    """Draw ``n`` xy points at least ``min_dist`` apart (rejection sampling); ``sample(rng)`` draws
    one point, or ``sample`` is a list of ``n`` such functions, one per object in order."""
    points: list = []
    for _ in range(tries):
        p = np.asarray(sample[len(points)](rng) if isinstance(sample, (list, tuple)) else sample(rng))
        if all(np.linalg.norm(p - q) >= min_dist for q in points):
            points.append(p)
            if len(points) == n:
                return points
    raise RuntimeError(f"could not place {n} objects {min_dist} m apart in {tries} tries")
