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


class RolloutRecorder:
    """Writes every rollout of ``rollouts`` into an episode store, like a generated one: per frame
    the env's observation (joint state, both cameras, object poses), the joint target stepped, and
    the simulator's ground truth (progress, stage, stage progress, success); the stages the episode
    went through as its sparse annotation (``sim.scripted.stage_annotations``, as for scripted
    demos); its success, seed and drawn look. The observation an episode ends on (a success or the
    time limit) is kept as a last frame with the target held. Quality ``unknown``: a policy made it,
    not a scripted demonstrator.

    What it is for: a reward model checked on (``reward eval``), or trained with (``data merge``),
    the episodes a policy really produces, its failures above all, instead of scripted ones only.

    An existing store is appended to only if it records the same rollouts (policy, task, layout,
    look, image size); seeds already in it are rolled out again for the report but not written
    twice, so re-running an interrupted command completes the store. Every episode is committed
    whole, so a crash loses at most the episodes in flight."""

    def __init__(self, path, task: str, image_size: int, identity: dict, fps: int = 30):
        from ..data.schema import StoreError
        from ..data.store import EpisodeStore
        from ..sim.scripted import feature_specs

        self.path = Path(path)
        identity = {"task": task, "image_size": int(image_size), **identity}
        if self.path.exists():
            store = EpisodeStore(self.path, mode="a")
            saved = store.root.attrs.get("extra", {}).get("rollouts")
            if saved != identity:
                made = "rollouts " + json.dumps(saved, sort_keys=True) if saved else "no recorded rollouts"
                raise StoreError(f"{self.path} exists and holds {made}; record into another store (--record NEW.zarr)")
        else:
            store = EpisodeStore.create(self.path, feature_specs(task, image_size), fps=fps, robot_type="so101_follower")
            store.set_attr("rollouts", identity)
        self.store, self.task = store, task
        self.done = {e.info.get("seed") for e in store.episodes}
        self.buffers: dict[int, dict[str, list] | None] = {}

    def begin(self, i: int, seed: int) -> None:
        self.buffers[i] = None if seed in self.done else {k: [] for k in self.store.features}

    def frame(self, i: int, sim, obs: dict, info: dict) -> None:
        """The observation env ``i`` acts on and its ground truth (before its step)."""
        buf = self.buffers.get(i)
        if buf is None:
            return
        for key in buf:
            if key == "action":
                continue
            if key.startswith("gt."):
                value = info[key[3:]]
            elif isinstance(obs, dict) and key in obs:  # a raw env's observation; a wrapped one is flattened
                value = obs[key]
            elif key.startswith("observation.images."):
                value = sim.render_camera(key.rsplit(".", 1)[1])
            elif key == "observation.state":
                value = sim.joint_state()
            else:  # observation.environment_state
                value = sim.task.environment_state()
            buf[key].append(np.asarray(value))

    def latest(self, i: int) -> dict[str, np.ndarray]:
        """What ``frame`` just captured for env ``i`` (empty when its episode is not recorded)."""
        buf = self.buffers.get(i)
        return {k: v[-1] for k, v in buf.items() if v} if buf is not None else {}

    def action(self, i: int, sim) -> None:
        """The joint target env ``i`` just stepped."""
        if self.buffers.get(i) is not None:
            self.buffers[i]["action"].append(sim.last_action.copy())

    def end(self, i: int, seed: int, sim, obs: dict, info: dict) -> None:
        """Env ``i``'s episode is over: its last observation, held, then one committed episode."""
        from ..data.schema import Episode
        from ..sim.scripted import stage_annotations

        buf = self.buffers.get(i)
        if buf is None:
            return
        self.frame(i, sim, obs, info)
        buf["action"].append(buf["action"][-1].copy())
        data = {k: np.stack(v) for k, v in buf.items()}
        self.buffers[i] = None
        success = bool(data["gt.success"].any())
        episode_info = {"seed": int(seed)}
        if getattr(sim, "last_visual", None):
            episode_info["visual"] = sim.last_visual
        self.store.add_episode(Episode(data=data, task=sim.task.instruction, success=success, quality="unknown",
                                       annotations={"sparse": stage_annotations(data["gt.stage"], sim.task.stages)},
                                       info=episode_info))
        self.done.add(int(seed))


def rollouts(runner, make_env, episodes: int, n_envs: int = 4, seed: int = 100_000, videos: int = 0,
             out: Path | None = None, desc: str = "rollouts", render_frames: bool = True,
             record: RolloutRecorder | None = None) -> list[dict]:
    """The one rollout loop (``sim eval``, ``rl eval``): ``n_envs`` envs from ``make_env()`` in
    lockstep, the runner (``reset(ids)``, ``act(observation, ids)``, ``needs``) asked once per step
    for every live env; episodes seeded ``seed``, ``seed + 1``, ...; the first ``videos`` written to
    ``<out>/videos``; every episode written into ``record``'s store when given. Per rollout: seed,
    success (at any step), steps, furthest gt progress."""
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
            resets = [env.reset(seed=s) for env, s in zip(batch, seeds)]
            obs = [o for o, _ in resets]
            infos = [info for _, info in resets]
            if record is not None:
                for i, s in enumerate(seeds):
                    record.begin(i, s)
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
                    if record is not None:
                        record.frame(i, batch[i].unwrapped, obs[i], infos[i])
                    if render_frames and len(frames[i]) < 2000 and len(results) + i < videos:
                        sim = batch[i].unwrapped
                        # A camera the env did not render is rendered once, for the recording or here.
                        seen = {**(record.latest(i) if record is not None else {}),
                                **(obs[i] if isinstance(obs[i], dict) else {})}
                        frames[i].append(np.concatenate([seen[f"observation.images.{c}"] if f"observation.images.{c}" in seen
                                                         else sim.render_camera(c) for c in CAMERAS], axis=1))
                    obs[i], _, terminated, truncated, info = batch[i].step(action)
                    infos[i] = info
                    if record is not None:
                        record.action(i, batch[i].unwrapped)
                    steps[i] += 1
                    success[i] |= bool(info["success"])
                    best[i] = max(best[i], float(info.get("progress", 0.0)))
                    if terminated or truncated:
                        done[i] = True
                        if record is not None:
                            record.end(i, seeds[i], batch[i].unwrapped, obs[i], info)
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


def policy_fingerprint(policy) -> str:
    """The policy's class and the first 12 hex digits of a sha256 over its weights: what a recorded
    store says made its rollouts (a path would not survive a move)."""
    import hashlib

    h = hashlib.sha256()
    state = policy.state_dict() if hasattr(policy, "state_dict") else {}
    for key in sorted(state):
        h.update(key.encode())
        h.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    return f"{type(policy).__name__}:{h.hexdigest()[:12]}"


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
    record: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Success rate of ``policy`` (a Policy or a checkpoint folder) on ``episodes`` rollouts of
    ``task``; seeds start at ``seed`` (far from the demonstration seeds 0..N). Writes
    ``<out>/sim_eval.json`` and up to ``videos`` mp4s. ``image_size``: the camera resolution
    (default: a pixel policy's training size, else 128). ``task_config``: overrides of the task's
    default config, to roll out in the object distribution a dataset recipe was generated with;
    ``visual``: the recipe's visual options (colours, light, cameras, distractors; sim/visual.py).
    ``record``: a store to write every rollout into (``RolloutRecorder``; created, or completed)."""
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
    recorder = None
    if record is not None:
        recorder = RolloutRecorder(record, task, image_size, {
            "policy": policy_fingerprint(policy), "task_config": task_config or {},
            "visual": visual or {}, "execute": runner.execute, "max_steps": max_steps})

    def make_env():
        return SO101Env(EnvConfig(task=task, image_size=image_size, cameras=CAMERAS if runner.cameras or record else (),
                                  max_episode_steps=max_steps, terminate_on_success=True, task_config=task_config or None,
                                  visual=visual or None))

    results = rollouts(runner, make_env, episodes, n_envs, seed, videos, out, desc=f"sim eval {task}", record=recorder)
    n_success = sum(r["success"] for r in results)
    low, high = wilson_interval(n_success, len(results))
    report = {
        "task": task, "episodes": len(results), "successes": n_success, "success_rate": n_success / len(results),
        "ci95": [low, high], "task_config": task_config or {}, "visual": visual or {}, "execute": runner.execute,
        "image_size": image_size, "max_steps": max_steps,
        "seconds": time.perf_counter() - t0, "rollouts": results,
        "recorded": None if recorder is None else str(recorder.path),
    }
    (out / "sim_eval.json").write_text(json.dumps(report, indent=2))
    return report
