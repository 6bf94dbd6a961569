"""Roll a policy out in the sim tasks: success rate with a confidence interval, and videos.

``n_envs`` environments run in lockstep so the encoder and the policy see one batch per control
step. Each new camera frame is encoded once (the same frozen encoder the policy's feature cache was
made with) and kept in a per-env history for the policy's observation window; a predicted action
chunk is executed for ``execute`` steps before the policy is asked again.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

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


def evaluate_policy(
    policy,
    task: str,
    episodes: int,
    out: str | os.PathLike,
    image_size: int = 128,
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
    ``<out>/sim_eval.json`` and up to ``videos`` mp4s. ``task_config``: overrides of the task's
    default config, to roll out in the object distribution a dataset recipe was generated with;
    ``visual``: the recipe's visual options (colours, light, cameras, distractors; sim/visual.py)."""
    from ..encoders import encoder_for_cache_key
    from ..sim.env import CAMERAS, EnvConfig, SO101Env
    from .base import Policy

    if isinstance(policy, (str, os.PathLike)):
        policy = Policy.from_pretrained(policy)
    policy.eval()
    cfg = policy.config
    if episodes < 1 or n_envs < 1:
        raise RoborewardError("episodes and n_envs must be >= 1")
    execute = execute or max(1, cfg.horizon // 2)
    if not 1 <= execute <= cfg.horizon:
        raise RoborewardError(f"execute must be in [1, horizon={cfg.horizon}], got {execute}")
    encoder = encoder_for_cache_key(cfg.feature_key) if cfg.feature_key else None
    history = (cfg.window - 1) * cfg.frame_gap + 1
    state_key, env_key = cfg.state_key, getattr(cfg, "env_state_key", None)
    low_keys = [state_key] + ([env_key] if env_key else [])
    offsets = np.arange(-(cfg.window - 1), 1) * cfg.frame_gap + history - 1  # window positions in the history
    out = Path(out)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    # A policy without cameras steps physics only; video frames are then rendered on demand.
    envs = [SO101Env(EnvConfig(task=task, image_size=image_size, cameras=CAMERAS if encoder is not None else (),
                               max_episode_steps=max_steps, terminate_on_success=True, task_config=task_config or None,
                               visual=visual or None)) for _ in range(min(n_envs, episodes))]
    results: list[dict] = []
    t0 = time.perf_counter()
    from tqdm.auto import tqdm

    bar = tqdm(total=episodes, unit="ep", desc=f"sim eval {task}")
    try:
        next_seed = seed
        while len(results) < episodes:
            batch = envs[: episodes - len(results)]
            seeds = list(range(next_seed, next_seed + len(batch)))
            next_seed += len(batch)
            obs = [env.reset(seed=s)[0] for env, s in zip(batch, seeds)]
            # Low-dim inputs (state, and the object poses for a policy that reads them): a window of each.
            hist_low = {k: [[o[k]] * history for o in obs] for k in low_keys}
            hist_feat = {c: [None] * len(batch) for c in cfg.cameras}
            frames = [[] for _ in batch]
            done = [False] * len(batch)
            success = [False] * len(batch)
            steps = [0] * len(batch)
            plan: list[list[np.ndarray]] = [[] for _ in batch]

            def encode(ids):
                if not ids:
                    return
                for cam in cfg.cameras:
                    imgs = np.stack([obs[i][cam] for i in ids])
                    feats = encoder(imgs).float().cpu().numpy()
                    for i, f in zip(ids, feats):
                        h = hist_feat[cam][i]
                        hist_feat[cam][i] = [f] * history if h is None else (h + [f])[-history:]

            if encoder is not None:
                encode(list(range(len(batch))))
            while not all(done):
                live = [i for i in range(len(batch)) if not done[i]]
                need = [i for i in live if not plan[i]]
                if need:
                    low = {k: torch.as_tensor(np.stack([np.stack(h[i])[offsets] for i in need])) for k, h in hist_low.items()}
                    feats = {cam: torch.as_tensor(np.stack([np.stack(hist_feat[cam][i])[offsets] for i in need]))
                             for cam in cfg.cameras}
                    with torch.no_grad():
                        chunk = policy.select_action(feats or None, low[state_key], low.get(env_key)).cpu().numpy()
                    for row, i in enumerate(need):
                        plan[i] = list(chunk[row, :execute])
                for i in live:
                    if len(frames[i]) < 2000 and len(results) + i < videos:
                        frames[i].append(np.concatenate([obs[i].get(f"observation.images.{c}") if encoder is not None
                                                         else batch[i].render_camera(c) for c in CAMERAS], axis=1))
                    obs[i], _, terminated, truncated, info = batch[i].step(plan[i].pop(0))
                    steps[i] += 1
                    success[i] |= bool(info["success"])
                    for k, h in hist_low.items():
                        h[i] = (h[i] + [obs[i][k]])[-history:]
                    if terminated or truncated:
                        done[i] = True
                if encoder is not None:
                    encode([i for i in live if not done[i]])
            bar.update(len(batch))
            bar.set_postfix(success=f"{sum(r['success'] for r in results) + sum(success)}/{len(results) + len(batch)}")
            for i, s in enumerate(seeds):
                results.append({"seed": s, "success": success[i], "steps": steps[i]})
                if frames[i]:
                    _write_video(out / "videos" / f"rollout_{s}.mp4", frames[i], envs[0].config.fps)
    finally:
        bar.close()
        for env in envs:
            env.close()
    n_success = sum(r["success"] for r in results)
    low, high = wilson_interval(n_success, len(results))
    report = {
        "task": task, "episodes": len(results), "successes": n_success, "success_rate": n_success / len(results),
        "ci95": [low, high], "task_config": task_config or {}, "visual": visual or {}, "execute": execute, "image_size": image_size, "max_steps": max_steps,
        "seconds": time.perf_counter() - t0, "rollouts": results,
    }
    (out / "sim_eval.json").write_text(json.dumps(report, indent=2))
    return report
