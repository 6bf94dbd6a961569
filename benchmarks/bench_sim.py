"""Simulation throughput: env steps/s with two 128 px cameras next to physics alone and rendering
alone, all on the same scene in the same run.

    python benchmarks/bench_sim.py [--quick] [--task pick_place] [--size 128]

ratio = env_step_with_cameras / render_only: how close a full env step (physics + task ground
truth + two camera renders) gets to the rendering bound. Goal >= 0.6. Results go to
benchmarks/results/bench_sim.json.
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

import sys  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from roboreward.sim.env import CAMERAS, SO101Env  # noqa: E402
from roboreward.sim.robot import HOME_DEG  # noqa: E402
from roboreward.sim.scripted import generate_episode  # noqa: E402


def _rate(n: int, fn) -> float:
    fn()  # warm-up (renderer creation, caches)
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return n / (time.perf_counter() - start)


def _actions(n: int, seed: int = 0) -> np.ndarray:
    # Small random motions around the home pose: contacts and arm motion like a real rollout.
    rng = np.random.default_rng(seed)
    return (HOME_DEG + rng.normal(0, 5, (n, 6))).astype(np.float32)


def bench(task: str, size: int, steps: int, episodes: int) -> dict:
    env = SO101Env(task=task, image_size=size)
    env.reset(seed=0)
    actions = iter(_actions(steps + 10))
    step_cams = _rate(steps, lambda: env.step(next(actions)))

    substeps = env.config.substeps
    physics = _rate(steps, lambda: mujoco.mj_step(env.model, env.data, nstep=substeps))

    def render_both():
        for cam in CAMERAS:
            env.render_camera(cam)

    render_only = _rate(steps, render_both)
    env.close()

    state_env = SO101Env(task=task, cameras=())
    state_env.reset(seed=0)
    actions = iter(_actions(steps + 10))
    step_state = _rate(steps, lambda: state_env.step(next(actions)))
    state_env.close()

    t0 = time.perf_counter()
    lengths = [generate_episode(task, "expert", s, image_size=size).length for s in range(episodes)]
    gen_time = (time.perf_counter() - t0) / episodes

    return {
        "task": task,
        "image_size": size,
        "cameras": list(CAMERAS),
        "substeps_per_control_step": substeps,
        "control_steps": steps,
        "env_step_with_cameras_per_s": step_cams,
        "env_step_state_only_per_s": step_state,
        "physics_only_control_steps_per_s": physics,
        "physics_only_mj_step_per_s": physics * substeps,
        "render_only_per_s": render_only,
        "ratio_step_with_cameras_over_render_only": step_cams / render_only,
        "expert_episode_seconds": gen_time,
        "expert_episode_frames_mean": float(np.mean(lengths)),
        "expert_frames_per_s": float(np.mean(lengths)) / gen_time,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="roboreward sim throughput")
    parser.add_argument("--quick", action="store_true", help="small counts, < 1 minute")
    parser.add_argument("--task", default="pick_place")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/bench_sim.json)")
    args = parser.parse_args()
    steps, episodes = (200, 2) if args.quick else (2000, 10)
    r = bench(args.task, args.size, steps, episodes)
    r.update(quick=args.quick, mujoco=mujoco.__version__, gl=os.environ.get("MUJOCO_GL"),
             cpu_count=os.cpu_count(), arch=platform.machine())
    rows = [
        ("env step, 2 cameras", r["env_step_with_cameras_per_s"], "control steps/s"),
        ("env step, state only", r["env_step_state_only_per_s"], "control steps/s"),
        (f"physics only ({r['substeps_per_control_step']} mj_step)", r["physics_only_control_steps_per_s"], "control steps/s"),
        ("render only, 2 cameras", r["render_only_per_s"], "frame pairs/s"),
        ("expert demo generation", r["expert_frames_per_s"], "frames/s"),
    ]
    print(f"task={args.task} size={args.size}px steps={steps} mujoco={mujoco.__version__} gl={r['gl']}")
    for name, value, unit in rows:
        print(f"  {name:<34} {value:>10.1f}  {unit}")
    ok = "ok" if r["ratio_step_with_cameras_over_render_only"] >= 0.6 else "BELOW GOAL"
    print(f"  {'ratio step_with_cameras/render_only':<34} {r['ratio_step_with_cameras_over_render_only']:>10.2f}  (goal >= 0.6: {ok})")
    common.write("bench_sim", r, args.out)


if __name__ == "__main__":
    main()
