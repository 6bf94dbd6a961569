"""Roll a policy out in the sim tasks: success rate with a confidence interval, and videos.

``n_envs`` environments run in lockstep so the encoder and the policy see one batch per control
step, through ``runner.PolicyRunner`` (the loop-side policy every rollout loop uses: per-env
history, each new frame encoded once, action chunks executed for ``execute`` steps).
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import RoborewardError


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a success rate (well behaved at 0 and n, unlike the normal one)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _write_video(path: Path, frames: list[np.ndarray], fps: float) -> None:
    import cv2

    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


def rollouts(runner, make_env, episodes: int, n_envs: int = 4, seed: int = 100_000, videos: int = 0,
             out: Path | None = None, desc: str = "rollouts", render_frames: bool = True) -> list[dict]:
    """The one rollout loop (``sim eval``, ``rl eval``): ``n_envs`` envs from ``make_env()`` in
    lockstep, the runner (``reset(ids)``, ``act(observation, ids)``, ``needs``) asked once per step
    for every live env; episodes seeded ``seed``, ``seed + 1``, ...; the first ``videos`` written to
    ``<out>/videos``. Per rollout: seed, success (at any step), steps, furthest gt progress."""
    from tqdm.auto import tqdm

    from ..sim.env import CAMERAS

    envs = [make_env() for _ in range(min(n_envs, episodes))]
    results: list[dict] = []
    bar = tqdm(total=episodes, unit="ep", desc=desc, disable=not desc)
    keys = runner.needs
    try:
        next_seed = seed
        while len(results) < episodes:
            batch = envs[: episodes - len(results)]
            seeds = list(range(next_seed, next_seed + len(batch)))
            next_seed += len(batch)
            obs = [env.reset(seed=s)[0] for env, s in zip(batch, seeds)]
            runner.reset()
            frames = [[] for _ in batch]
            done = [False] * len(batch)
            success = [False] * len(batch)
            steps = [0] * len(batch)
            best = [0.0] * len(batch)
            while not all(done):
                live = [i for i in range(len(batch)) if not done[i]]
                actions = runner.act({k: np.stack([obs[i][k] for i in live]) for k in keys}, live)
                for action, i in zip(actions, live):
                    if render_frames and len(frames[i]) < 2000 and len(results) + i < videos:
                        sim = batch[i].unwrapped
                        frames[i].append(np.concatenate([obs[i][f"observation.images.{c}"] if f"observation.images.{c}" in obs[i]
                                                         else sim.render_camera(c) for c in CAMERAS], axis=1))
                    obs[i], _, terminated, truncated, info = batch[i].step(action)
                    steps[i] += 1
                    success[i] |= bool(info["success"])
                    best[i] = max(best[i], float(info.get("progress", 0.0)))
                    if terminated or truncated:
                        done[i] = True
            bar.update(len(batch))
            bar.set_postfix(success=f"{sum(r['success'] for r in results) + sum(success)}/{len(results) + len(batch)}")
            for i, s in enumerate(seeds):
                results.append({"seed": s, "success": success[i], "steps": steps[i], "max_progress": best[i]})
                if frames[i] and out is not None:
                    (out / "videos").mkdir(parents=True, exist_ok=True)
                    _write_video(out / "videos" / f"rollout_{s}.mp4", frames[i], batch[0].unwrapped.config.fps)
    finally:
        bar.close()
        for env in envs:
            env.close()
    return results


def evaluate_policy(
    policy,
    task: str,
    episodes: int,
    out: str | os.PathLike,
    image_size: int | None = None,
    n_envs: int = 4,
    execute: int | None = None,
    max_steps: int = 300,
    seed: int = 100_000,
    videos: int = 2,
    task_config: dict | None = None,
    visual: dict | None = None,
) -> dict[str, Any]:
    """Success rate of ``policy`` (a Policy or a checkpoint folder) on ``episodes`` rollouts of
    ``task``; seeds start at ``seed`` (far from the demonstration seeds 0..N). Writes
    ``<out>/sim_eval.json`` and up to ``videos`` mp4s. ``image_size``: the camera resolution
    (default: a pixel policy's training size, else 128). ``task_config``: overrides of the task's
    default config, to roll out in the object distribution a dataset recipe was generated with;
    ``visual``: the recipe's visual options (colours, light, cameras, distractors; sim/visual.py)."""
    from ..sim.env import CAMERAS, EnvConfig, SO101Env
    from .base import Policy
    from .runner import PolicyRunner

    if isinstance(policy, (str, os.PathLike)):
        policy = Policy.from_pretrained(policy)
    if episodes < 1 or n_envs < 1:
        raise RoborewardError("episodes and n_envs must be >= 1")
    # A policy that encodes pixels itself sees frames at its training size; a feature policy's
    # encoder resizes whatever it gets.
    trained = list(getattr(policy.config, "image_shape", None) or [])
    if getattr(policy.config, "pixels", False) and trained:
        if trained[0] != trained[1]:
            raise RoborewardError(f"the policy was trained on {trained[0]}x{trained[1]} frames; the sim renders square frames")
        if image_size is not None and image_size != trained[0]:
            raise RoborewardError(f"--image-size {image_size} differs from the {trained[0]} px frames the policy was trained on; "
                                  f"leave it out or pass {trained[0]}")
        image_size = trained[0]
    image_size = image_size or 128
    runner = PolicyRunner(policy, min(n_envs, episodes), execute)
    out = Path(out)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    # A policy without cameras steps physics only; video frames are then rendered on demand.
    def make_env():
        return SO101Env(EnvConfig(task=task, image_size=image_size, cameras=CAMERAS if runner.cameras else (),
                                  max_episode_steps=max_steps, terminate_on_success=True, task_config=task_config or None,
                                  visual=visual or None))

    results = rollouts(runner, make_env, episodes, n_envs, seed, videos, out, desc=f"sim eval {task}")
    n_success = sum(r["success"] for r in results)
    low, high = wilson_interval(n_success, len(results))
    report = {
        "task": task, "episodes": len(results), "successes": n_success, "success_rate": n_success / len(results),
        "ci95": [low, high], "task_config": task_config or {}, "visual": visual or {}, "execute": runner.execute,
        "image_size": image_size, "max_steps": max_steps,
        "seconds": time.perf_counter() - t0, "rollouts": results,
    }
    (out / "sim_eval.json").write_text(json.dumps(report, indent=2))
    return report
