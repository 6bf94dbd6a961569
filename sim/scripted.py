"""Scripted demonstrators: an IK expert per task plus suboptimal and failing variants.

A demonstration is a plan: a list of phases, each a Cartesian target for the grasp site (evaluated
when the phase starts, from the objects' current poses), a gripper command and a duration. The
executor interpolates each phase with a minimum-jerk profile, solves damped-least-squares IK every
control step and sends the joint targets to the env in LeRobot units, exactly like a policy would.

Each phase carries a fine label: the dense annotations are the script's phases. The sparse
annotations are the task stages the episode really went through (runs of the task's geometric
stage detector), so a failed episode is not labelled with stages it never reached; per-frame
ground truth (gt.*) comes from the same stage logic.

Quality modes:
- ``expert``: the plain plan.
- ``suboptimal``: hesitation pauses, joint jitter, a detour while carrying and, on some seeds, a
  missed first grasp followed by a regrasp. Still succeeds on most seeds.
- ``failure``: one of the task's failure modes (``FAILURE_MODES``), each built so the geometric
  success check really fails: ``miss_grasp``, ``drop``, ``wrong_place``, ``stop_early`` (and
  ``skip_drawer`` for the drawer task).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from roboreward.data.schema import Episode, FeatureSpec, Subtask
from roboreward.errors import RoborewardError

from .env import CAMERAS, EnvConfig, SO101Env
from .ik import ArmIK, slerp_rotation, topdown_rotation
from .robot import FEATURE_NAMES
from .tasks import TASKS

OPEN = 73.0  # jaw ~70 deg: a 2.5 cm cube fits between the pads with room to spare
CLOSED = 0.0  # servo target fully shut; the cube stops the jaw and the servo squeezes it
HOOK = 10.0  # jaw almost shut: a compact two-pad hook for pulling a drawer handle
PAN_AXIS_XY = np.array([0.0388, 0.0])
QUALITIES = ("expert", "suboptimal", "failure")
FAILURE_MODES = {
    "pick_place": ("miss_grasp", "drop", "wrong_place", "stop_early"),
    "stack": ("miss_grasp", "drop", "wrong_place", "stop_early"),
    "drawer": ("miss_grasp", "drop", "skip_drawer", "stop_early"),
}

Pose = tuple[np.ndarray, float]  # grasp-site position, jaw yaw (rad)


@dataclass
class DemoConfig:
    """How the scripted demonstrators choose their moves (a recipe's ``demonstrator`` mapping).
    The defaults are the demonstrator every committed recipe was made with."""

    keep_out: bool = True
    """Choose the grasp face so the open moving jaw never points towards a nearby obstacle (the
    bowl, the other cube). Which face that is depends on where the obstacle lies, so the wrist roll
    jumps by 90-180 deg between neighbouring layouts, a mapping a cloned policy cannot follow.
    False: always the face pair with the least wrist roll from the arm's natural yaw, so the roll
    stays within +-45 deg and varies smoothly with the cube's yaw, with one 90 deg flip where the
    two faces look alike (200 of 200 pick_place experts in the full layout still succeed)."""
    rest_s: float = 0.0
    """Seconds the arm holds still after its last move, gripper as it was, so the episode also
    records the scene at rest once the demonstration is over (how an operator who waits a moment
    before stopping the recording leaves it). Every quality rests the same. In [0, 5]; 0 = none."""

    def __post_init__(self):
        if not 0.0 <= self.rest_s <= 5.0:
            raise RoborewardError(f"rest_s={self.rest_s} must be in [0, 5] seconds")


@dataclass
class Phase:
    name: str
    """Fine label (dense annotation)."""
    stage: str
    """Task stage this phase belongs to (sparse annotation)."""
    target: Callable[[SO101Env], Pose] | None
    """Grasp-site pose to reach by the end of the phase; None holds the current pose."""
    gripper: float
    """Gripper command (0..100) reached linearly by the end of the phase."""
    duration: float | None = None
    """Seconds; None derives it from the distance at ``speed``."""
    speed: float = 0.15
    """Cartesian speed (m/s) used when ``duration`` is None."""


# -- geometry helpers --------------------------------------------------------------------------
def body_yaw(env: SO101Env, body: str) -> float:
    m = env.data.body(body).xmat.reshape(3, 3)
    return float(np.arctan2(m[1, 0], m[0, 0]))


def grasp_yaw(pos: np.ndarray, object_yaw: float, keep_out: list | None = None) -> float:
    """Jaw yaw that closes on a pair of the cube's faces. Among the four face-aligned yaws, prefer
    the least wrist roll from the arm's natural top-down yaw (perpendicular to its pan direction),
    but never swing the open moving jaw (local +y, ~6 cm long) towards a nearby obstacle."""
    natural = natural_yaw(pos)
    best, best_cost = object_yaw, np.inf
    for k in range(-3, 4):
        yaw = object_yaw + k * np.pi / 2
        roll = yaw - natural
        if abs(roll) > np.radians(135):
            continue
        cost = abs(roll)
        jaw_dir = np.array([np.cos(yaw), np.sin(yaw)])
        for xy in keep_out or []:
            away = np.asarray(xy)[:2] - pos[:2]
            if np.linalg.norm(away) < 0.16 and jaw_dir @ away > 0:
                cost += np.pi
        if cost < best_cost:
            best, best_cost = yaw, cost
    return float(best)


def natural_yaw(pos: np.ndarray) -> float:
    return float(np.arctan2(pos[1] - PAN_AXIS_XY[1], pos[0] - PAN_AXIS_XY[0]) + np.pi / 2)


def _current(env: SO101Env) -> Pose:
    """Used for relative moves: the current grasp-site position and its jaw yaw."""
    pos = env.data.site("grasp").xpos.copy()
    m = env.data.site("grasp").xmat.reshape(3, 3)
    return pos, float(np.arctan2(m[1, 1], m[0, 1]))


def above(body: str, height: float, offset=(0.0, 0.0)) -> Callable[[SO101Env], Pose]:
    def target(env: SO101Env) -> Pose:
        p = env.data.body(body).xpos.copy()
        demo = getattr(env, "_demo", None) or DemoConfig()
        yaw = grasp_yaw(p, body_yaw(env, body), env.task.keep_out_xy() if demo.keep_out else None)
        p[:2] += offset
        p[2] += height
        return p, yaw

    return target


def lift_by(dz: float, dx: float = 0.0) -> Callable[[SO101Env], Pose]:
    def target(env: SO101Env) -> Pose:
        p, yaw = _current_cmd(env)
        return p + [dx, 0.0, dz], yaw

    return target


def _current_cmd(env: SO101Env) -> Pose:
    # The executor stores its last commanded pose on the env; relative moves start from it so
    # tracking lag never accumulates into the plan.
    return env._cmd_pose  # type: ignore[attr-defined]


def at_point(point_fn: Callable[[SO101Env], np.ndarray], yaw_fn=None) -> Callable[[SO101Env], Pose]:
    def target(env: SO101Env) -> Pose:
        p = np.asarray(point_fn(env), dtype=float)
        yaw = yaw_fn(env) if yaw_fn else _current_cmd(env)[1]
        return p, yaw

    return target


# -- plans ---------------------------------------------------------------------------------------
def pick_phases(obj: str, stages: tuple[str, str], grasp_height: float = 0.004) -> list[Phase]:
    reach, grasp = stages
    return [
        Phase("move_above_object", reach, above(obj, 0.065), OPEN),
        Phase("descend", reach, above(obj, grasp_height), OPEN, speed=0.1),
        Phase("close_gripper", grasp, None, CLOSED, duration=0.45),
        Phase("settle_grasp", grasp, None, CLOSED, duration=0.15),
    ]


def place_phases(dest: Callable[[SO101Env], np.ndarray], stages: tuple[str, str], carry_height: float = 0.085,
                 release_height: float = 0.012, yaw_fn=None) -> list[Phase]:
    """Lift, carry over ``dest`` (the held object's goal centre), lower, release, retreat.
    ``yaw_fn`` sets the jaw yaw for the carry (default: keep the grasp yaw)."""
    transport, place = stages

    def over(env):
        p = np.array(dest(env), dtype=float)
        p[2] = carry_height
        return p

    def down(env):
        return np.asarray(dest(env), dtype=float) + [0, 0, release_height]

    return [
        Phase("lift", transport, lambda env: (_current_cmd(env)[0] * [1, 1, 0] + [0, 0, carry_height], _current_cmd(env)[1]), CLOSED, speed=0.1),
        Phase("carry", transport, at_point(over, yaw_fn), CLOSED),
        Phase("lower", place, at_point(down), CLOSED, speed=0.08),
        Phase("release", place, None, OPEN, duration=0.35),
        Phase("retreat", place, lift_by(0.06), OPEN, speed=0.1),
    ]


def _pick_place_plan(env: SO101Env) -> list[Phase]:
    return pick_phases("cube", ("reach", "grasp")) + place_phases(lambda e: e.task.target_pos(), ("transport", "place"))


def _stack_plan(env: SO101Env) -> list[Phase]:
    return pick_phases("cube_a", ("reach", "grasp")) + place_phases(
        lambda e: e.task.target_pos(), ("transport", "place"), release_height=0.006
    )


def _drawer_plan(env: SO101Env) -> list[Phase]:
    task = env.task

    def hook(env, dx=0.0, dz=0.0):
        return task.hook_point() + [dx, 0.0, dz]

    open_by = task.config.open_distance + 0.008  # pull a little past the goal: the bar has play
    return [
        Phase("move_above_handle", "reach_handle", at_point(lambda e: hook(e, dz=0.06), lambda e: 0.0), HOOK),
        Phase("descend_behind_handle", "reach_handle", at_point(lambda e: hook(e)), HOOK, speed=0.08),
        Phase("pull", "open_drawer", lift_by(0.0, dx=-open_by), HOOK, speed=0.1),
        Phase("raise", "open_drawer", lift_by(0.05), HOOK, speed=0.1),
        *pick_phases("cube", ("grasp_cube", "grasp_cube")),
        # Carry with the jaw axis along the drawer front (the arm's natural yaw there): the
        # pads then straddle the cube sideways and clear the tray walls and the cabinet roof.
        *place_phases(lambda e: e.task.target_pos(), ("transport", "place"),
                      yaw_fn=lambda e: natural_yaw(e.task.target_pos())),
    ]


PLANS: dict[str, Callable[[SO101Env], list[Phase]]] = {
    "pick_place": _pick_place_plan,
    "stack": _stack_plan,
    "drawer": _drawer_plan,
}


def _index(phases: list[Phase], name: str) -> int:
    return next(i for i, p in enumerate(phases) if p.name == name)


def _suboptimal(phases: list[Phase], rng: np.random.Generator, obj: str) -> list[Phase]:
    phases = list(phases)
    # A missed first grasp (offset along the jaw's width so the pads close on air), then a regrasp.
    if rng.random() < 0.5:
        i = _index(phases, "move_above_object")
        reach, grasp = phases[i].stage, phases[i + 2].stage
        side = rng.choice([-1.0, 1.0]) * 0.03
        miss = [
            Phase("move_above_object", reach, _offset_above(obj, 0.065, side), OPEN),
            Phase("descend_misaligned", reach, _offset_above(obj, 0.004, side), OPEN, speed=0.1),
            Phase("close_on_nothing", grasp, None, CLOSED, duration=0.4),
            Phase("reopen", reach, None, OPEN, duration=0.3),
            Phase("back_off", reach, lift_by(0.05), OPEN, speed=0.1),
        ]
        phases[i:i] = miss
    # A detour while carrying: up and sideways before heading to the destination.
    i = _index(phases, "carry")
    stage = phases[i].stage
    dy = rng.choice([-1.0, 1.0]) * rng.uniform(0.04, 0.07)
    phases.insert(i, Phase("detour", stage, _detour(dy), CLOSED, speed=0.1))
    # Hesitation pauses at two random phase boundaries.
    for _ in range(2):
        j = int(rng.integers(1, len(phases)))
        prev = phases[j - 1]
        phases.insert(j, Phase("hesitate", prev.stage, None, prev.gripper, duration=float(rng.uniform(0.3, 0.7))))
    return phases


def _offset_above(obj: str, height: float, side: float):
    def target(env):
        p, yaw = above(obj, height)(env)
        # Offset along the pads' width (perpendicular to the closing direction), clear of the cube.
        p[:2] += side * np.array([np.cos(yaw + np.pi / 2), np.sin(yaw + np.pi / 2)])
        return p, yaw

    return target


def _detour(dy: float):
    def target(env):
        p, yaw = _current_cmd(env)
        return p + [0.0, dy, 0.02], yaw

    return target


def _failure(phases: list[Phase], mode: str, env: SO101Env, rng: np.random.Generator, obj: str) -> list[Phase]:
    phases = list(phases)
    if mode == "miss_grasp":
        # Grasp beside the object, then carry on as if it had worked.
        side = rng.choice([-1.0, 1.0]) * 0.035
        i = _index(phases, "move_above_object")
        phases[i] = replace(phases[i], target=_offset_above(obj, 0.065, side))
        phases[i + 1] = replace(phases[i + 1], target=_offset_above(obj, 0.004, side))
    elif mode == "drop":
        # Open the jaw a fifth of the way into the carry, well away from the destination.
        i = _index(phases, "carry")
        stage = phases[i].stage
        phases[i:i] = [
            Phase("carry_partway", stage, _toward_dest(phases[i].target, 0.2), CLOSED),
            Phase("drop", stage, None, OPEN, duration=0.3),
        ]
        for p in phases[i + 2:]:
            p.gripper = OPEN
    elif mode == "wrong_place":
        # Put the object down on the table away from the destination.
        i = _index(phases, "carry")
        phases[i] = replace(phases[i], target=_wrong_spot(env, rng))
        phases[i + 1] = replace(phases[i + 1], target=lift_by(-(0.085 - env.task.object_size() / 2 - 0.01)))
    elif mode == "stop_early":
        # Freeze after lifting: the object never reaches the destination.
        i = _index(phases, "lift")
        stage = phases[i].stage
        phases = phases[: i + 1] + [Phase("stop", stage, None, CLOSED, duration=1.5)]
    elif mode == "skip_drawer":
        # Never open the drawer: put the cube on the cabinet's roof instead.
        i = _index(phases, "move_above_object")
        phases = phases[i:]
        j = _index(phases, "carry")
        phases[j] = replace(phases[j], target=at_point(lambda e: e.task.roof_point() + [0, 0, 0.05]))
        phases[j + 1] = replace(phases[j + 1], target=at_point(lambda e: e.task.roof_point() + [0, 0, 0.02]))
    else:
        raise ValueError(f"unknown failure_mode {mode!r}")
    return phases


def _toward_dest(dest_target, fraction: float):
    def target(env):
        p0, yaw = _current_cmd(env)
        p1, _ = dest_target(env)
        return p0 + fraction * (p1 - p0), yaw

    return target


def _wrong_spot(env: SO101Env, rng: np.random.Generator):
    def target(env):
        p, yaw = _current_cmd(env)
        dest = np.asarray(env.task.target_pos(), float)
        # Pick a table spot in reach at least 9 cm from the destination.
        for _ in range(100):
            q = np.array([rng.uniform(0.15, 0.24), rng.uniform(-0.13, 0.13)])
            if np.linalg.norm(q - dest[:2]) > 0.09 and env.task.is_free_spot(q):
                return np.array([q[0], q[1], p[2]]), yaw
        return np.array([0.16, -0.12 if dest[1] > 0 else 0.12, p[2]]), yaw

    return target


# -- execution -------------------------------------------------------------------------------
def _min_jerk(s: float) -> float:
    return s**3 * (10 - 15 * s + 6 * s**2)


def _execute(env: SO101Env, ik: ArmIK, phases: list[Phase], rng: np.random.Generator, jitter_deg: float,
             record_images: bool):
    fps = env.config.fps
    frames: dict[str, list] = {"observation.state": [], "action": [], "gt.progress": [], "gt.stage": [],
                               "gt.stage_progress": [], "gt.success": []}
    for cam in env.config.cameras:
        frames[f"observation.images.{cam}"] = []
    if env.config.environment_state:
        frames["observation.environment_state"] = []
    labels: list[tuple[str, str, int, int]] = []
    obs, info = env._last_obs, env._last_info
    q = np.radians(obs["observation.state"][:5].astype(float))
    pos, rot = ik.site_pose(q)
    env._cmd_pose = (pos, float(np.arctan2(rot[1, 1], rot[0, 1])))
    grip = float(obs["observation.state"][5])
    noise = np.zeros(6)
    for phase in phases:
        start = len(frames["action"])
        p0, r0, g0 = pos, rot, grip
        if phase.target is None:
            p1, r1 = p0, r0
        else:
            p1, yaw1 = phase.target(env)
            r1 = topdown_rotation(yaw1)
        dist = float(np.linalg.norm(p1 - p0))
        duration = phase.duration if phase.duration is not None else max(0.3, dist / phase.speed)
        n = max(1, int(round(duration * fps)))
        for k in range(1, n + 1):
            s = _min_jerk(k / n)
            pos, rot = p0 + s * (p1 - p0), slerp_rotation(r0, r1, s)
            grip = g0 + (k / n) * (phase.gripper - g0)
            q = ik.solve(q, pos, rot)
            action = np.concatenate([np.degrees(q), [grip]])
            if jitter_deg:
                # Smoothed (low-pass) noise: shaky, not teleporting, like a hesitant teleoperator.
                noise = 0.8 * noise + 0.2 * rng.normal(0.0, jitter_deg * 3, 6)
                noise[5] = 0.0
                action = action + noise
            action = action.astype(np.float32)
            for key, value in obs.items():
                frames[key].append(value)
            frames["action"].append(action)
            frames["gt.progress"].append(info["progress"])
            frames["gt.stage"].append(info["stage"])
            frames["gt.stage_progress"].append(info["stage_progress"])
            frames["gt.success"].append(info["success"])
            obs, _, _, _, info = env.step(action)
        env._cmd_pose = (pos, float(np.arctan2(rot[1, 1], rot[0, 1])))
        labels.append((phase.name, phase.stage, start, len(frames["action"])))
    return frames, labels, info


MIN_STAGE_FRAMES = 3
"""Ground-truth stage runs shorter than this (contact flicker at a boundary) join the run before."""


def _annotations(labels: list[tuple[str, str, int, int]], gt_stage: np.ndarray,
                 stage_names: tuple[str, ...]) -> dict[str, list[Subtask]]:
    """Dense: the script's fine phases (what the robot was doing). Sparse: the task stages the
    episode actually went through (``stage_annotations``)."""
    dense = [Subtask(name, s, e) for name, _, s, e in labels if e > s]
    return {"sparse": stage_annotations(gt_stage, stage_names), "dense": dense}


def stage_annotations(gt_stage: np.ndarray, stage_names: tuple[str, ...]) -> list[Subtask]:
    """The task stages an episode went through, read from the simulator's stage detector as a
    careful annotator would mark them (runs shorter than ``MIN_STAGE_FRAMES`` join the run before).
    A script's own stage labels would claim, on a failure, stages it never reached ("transport"
    after a missed grasp), and a reward model trained on them learns to pay for the motion instead
    of the outcome. Scripted demos and recorded policy rollouts are annotated alike."""
    runs: list[list] = []  # [stage, start, end]
    for t, k in enumerate(np.asarray(gt_stage).tolist()):
        if runs and runs[-1][0] == k:
            runs[-1][2] = t + 1
        else:
            runs.append([k, t, t + 1])
    merged: list[list] = []
    for run in runs:
        if merged and (run[2] - run[1] < MIN_STAGE_FRAMES or merged[-1][0] == run[0]):
            merged[-1][2] = run[2]
        else:
            merged.append(run)
    return [Subtask(stage_names[k], s, e) for k, s, e in merged]


def generate_episode(task: str, quality: str, seed: int, image_size: int = 128, failure_mode: str | None = None,
                     render: bool = True, task_config: dict | None = None, visual: dict | None = None,
                     demonstrator: dict | None = None) -> Episode:
    """Run one scripted demonstration and return it as an ``Episode``.

    ``quality``: ``expert`` | ``suboptimal`` | ``failure``; ``failure_mode`` picks one of
    ``FAILURE_MODES[task]`` (default: drawn from the seed). ``render=False`` skips the cameras
    (state, action and ground truth only), for fast success-rate checks. ``task_config``: overrides
    of the task's default config (e.g. narrower object randomisation). ``visual``: appearance options
    (``roboreward.sim.visual.VisualConfig`` fields); what was drawn is ``episode.info["visual"]``.
    Appearance never changes the physics: states, actions and ground truth are those of the same
    seed without it. ``demonstrator``: ``DemoConfig`` fields (how the script chooses its moves).
    """
    if task not in PLANS:
        raise ValueError(f"task {task!r} has no scripted demonstrator; choose from {sorted(PLANS)}")
    if quality not in QUALITIES:
        raise ValueError(f"quality {quality!r} is not one of {QUALITIES}")
    if failure_mode is not None and quality != "failure":
        raise ValueError("failure_mode is only meaningful with quality='failure'")
    demo = demo_config(demonstrator)
    rng = np.random.default_rng(seed)
    env = SO101Env(EnvConfig(task=task, image_size=image_size, cameras=CAMERAS if render else (),
                             max_episode_steps=10_000, task_config=task_config or None, visual=visual or None))
    try:
        env._last_obs, env._last_info = env.reset(seed=seed)
        env._demo = demo  # type: ignore[attr-defined]
        ik = ArmIK(env.model)
        obj = "cube_a" if task == "stack" else "cube"
        phases = PLANS[task](env)
        jitter = 0.0
        if quality == "suboptimal":
            phases = _suboptimal(phases, rng, obj)
            jitter = 0.6
        elif quality == "failure":
            mode = failure_mode or str(rng.choice(FAILURE_MODES[task]))
            if mode not in FAILURE_MODES[task]:
                raise ValueError(f"failure_mode {mode!r} is not one of {FAILURE_MODES[task]}")
            phases = _failure(phases, mode, env, rng, obj)
        if demo.rest_s > 0:
            phases = phases + [Phase("rest", phases[-1].stage, None, phases[-1].gripper, duration=demo.rest_s)]
        frames, labels, final_info = _execute(env, ik, phases, rng, jitter, render)
    finally:
        env.close()
    data = {k: np.asarray(v) for k, v in frames.items()}
    data["observation.state"] = data["observation.state"].astype(np.float32)
    data["action"] = data["action"].astype(np.float32)
    data["observation.environment_state"] = data["observation.environment_state"].astype(np.float32)
    data["gt.progress"] = data["gt.progress"].astype(np.float32)
    data["gt.stage"] = data["gt.stage"].astype(np.int64)
    data["gt.stage_progress"] = data["gt.stage_progress"].astype(np.float32)
    data["gt.success"] = data["gt.success"].astype(bool)
    return Episode(
        data=data,
        task=env.task.instruction,
        success=bool(data["gt.success"][-1]),
        quality=quality,
        annotations=_annotations(labels, data["gt.stage"], env.task.stages),
        info={"visual": env.last_visual} if env.last_visual else {},
    )


def demo_config(demonstrator: dict | None) -> DemoConfig:
    """``DemoConfig`` from a recipe's mapping; an unknown or mistyped field fails in one line."""
    from roboreward.config import from_dict

    return from_dict(DemoConfig, dict(demonstrator or {}), where="demonstrator")


def feature_specs(task: str, image_size: int = 128) -> dict[str, FeatureSpec]:
    """Per-frame features of the episodes ``generate_episode`` produces for ``task``."""
    if task not in PLANS:
        raise ValueError(f"task {task!r} has no scripted demonstrator; choose from {sorted(PLANS)}")
    specs = {
        "observation.state": FeatureSpec((6,), "float32", "low_dim", list(FEATURE_NAMES)),
        "action": FeatureSpec((6,), "float32", "low_dim", list(FEATURE_NAMES)),
    }
    for cam in CAMERAS:
        specs[f"observation.images.{cam}"] = FeatureSpec((image_size, image_size, 3), "uint8", "rgb")
    names = TASKS[task].environment_state_names()
    specs["observation.environment_state"] = FeatureSpec((len(names),), "float32", "low_dim", names)
    specs["gt.progress"] = FeatureSpec((), "float32", "target")
    specs["gt.stage"] = FeatureSpec((), "int64", "target")
    specs["gt.stage_progress"] = FeatureSpec((), "float32", "target")
    specs["gt.success"] = FeatureSpec((), "bool", "target")
    return specs


__all__ = ["FAILURE_MODES", "PLANS", "QUALITIES", "Phase", "feature_specs", "generate_episode", "stage_annotations"]
