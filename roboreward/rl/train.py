"""Online RL in the sim tasks with Stable-Baselines3, rewarded by any scheme of ``roboreward.shaping``.

``train_rl(config, out)`` builds ``n_envs`` sim envs (cameras only where the reward model reads
them), wraps them in ``ShapedRewardVecEnv``, optionally seeds the replay buffer with a store's
demonstrations (rewarded by the same scheme, so every scheme gets the same demos) and pretrains the
actor on them by behaviour cloning, then learns with SB3 (SAC by default, PPO available) or its contrib
package (TQC; CrossQ, which drops the target networks and batch-renormalises actor and critic).

Run folder::

    <out>/rl_config.json          the run's config (resume refuses a different one)
    <out>/checkpoints/step_<N>/   policy.safetensors, optimizers.pt, replay.npz, state.json
    <out>/checkpoints/latest      name of the newest complete checkpoint
    <out>/curves.json             deterministic evaluations of true success and training statistics
    <out>/model/                  the final policy: config.json + policy.safetensors
    <out>/best/                   the policy of the best evaluation so far (success, then mean furthest
                                  progress), as model/; its config.json records that evaluation
    <out>/tb/                     TensorBoard logs (SB3's and the reward terms)

Checkpoints are data, never pickles: network and optimizer tensors through safetensors and
``torch.load(weights_only=True)``, the replay buffer as ``.npz`` read with ``allow_pickle=False``,
counters as JSON. SB3's own ``.zip`` format pickles parts of the model and is not used. Every
checkpoint folder is written beside its final name and renamed into place, so a run killed at any
point (kill -9 included) resumes from its newest complete checkpoint.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback

from ..config import ConfigError, from_dict
from ..errors import RoborewardError
from ..faults import kill_point
from ..shaping import ShapedRewardVecEnv, ShapingConfig, make_potential
from ..training import save_dir_atomic, write_atomic_text
from .envs import MAX_STEP_DEG, MAX_STEP_GRIPPER, POLICY_KEYS, camera_names, load_base_policy, make_env

OFF_POLICY = ("sac", "tqc", "crossq")
"""Algorithms with a replay buffer (demos, residual SAC-style actor): SB3's SAC, sb3-contrib's TQC and CrossQ."""
ALGOS = (*OFF_POLICY, "ppo")
CHECKPOINTS, LATEST = "checkpoints", "latest"
POLICY_FILE, OPTIM_FILE, REPLAY_FILE, STATE_FILE = "policy.safetensors", "optimizers.pt", "replay.npz", "state.json"
BASE_POLICY = "base_policy"
BEST = "best"
RESUME_FREE = ("steps", "eval_every", "checkpoint_every", "progress")
"""Config fields a resumed run may change: how long it runs and how often it reports."""


class RLError(RoborewardError):
    pass


@dataclass
class RLConfig:
    task: str = "pick_place"
    """Sim task (pick_place, stack, drawer)."""
    reward: str = "sparse"
    """A reward model folder, ``oracle`` (the simulator's progress) or ``sparse`` (success only)."""
    shaping: str = "pbrs"
    """pbrs or naive over the reward (ignored for ``reward: sparse``)."""
    algo: str = "sac"
    """sac (SB3), tqc or crossq (sb3-contrib): off-policy, replay buffer, demos; or ppo (SB3)."""
    steps: int = 50_000
    """Env steps in total (all envs together)."""
    n_envs: int = 4
    """Envs stepped together; the reward model streams all of them in one call per step."""
    seed: int = 0
    gamma: float = 0.99
    """The learner's discount, which is also the shaping discount (pbrs needs them equal)."""
    gold: str = "task"
    """r_gold from the task's success (``task``) or from the reward model (``potential``: Phi >= 1 - delta)."""
    delta: float = 0.05
    shaping_scale: float = 1.0
    """Weight of the shaping term."""
    goal_potential: float = 0.0
    """Phi after a true termination (a success): 0 (Ng et al.) or 1, which pays the succeeding step about
    r_gold instead of r_gold - Phi(s); either keeps the optimal policy here (``shaping.schemes``)."""
    max_episode_steps: int = 200
    """Time limit (control steps at 30 Hz): a truncation, where the learner bootstraps."""
    task_config: dict = field(default_factory=dict)
    """Overrides of the task's default config (object ranges...), as in dataset recipes."""
    max_step_deg: float = MAX_STEP_DEG
    """Largest joint-target change per control step of the joint-delta action space (deg; 4 deg at
    30 Hz = 120 deg/s): the size of an action of 1."""
    max_step_gripper: float = MAX_STEP_GRIPPER
    """Largest gripper-target change per control step (0..100 units)."""
    image_size: int | None = None
    """Camera size (px) rendered for the reward model; None: the model's encoder input size."""
    base_policy: str | None = None
    """Residual RL: a state policy folder (``bc train --config configs/bc/bc_state.yaml``'s
    ``<out>/model``) whose targets the RL action corrects by up to ``max_step_deg`` /
    ``max_step_gripper`` per step (``rl.envs.ResidualAction``); None: joint-delta actions from the
    pose at reset. Copied into the trained policy's folder, which then needs nothing else."""
    demos: str | None = None
    """A store of demonstrations of the task: their transitions seed the replay buffer."""
    demo_episodes: int = 20
    """How many of the store's successful episodes to use (the first ones)."""
    bc_steps: int = 0
    """Gradient steps of behaviour cloning of the actor on the demos before RL (0: none)."""
    learning_rate: float = 3e-4
    batch_size: int = 256
    buffer_size: int = 300_000
    learning_starts: int = 1000
    """Env steps of the initial policy before learning starts (demo transitions do not count)."""
    updates_per_step: float = 1.0
    """Gradient steps per env step (the off-policy algorithms)."""
    actor_warmup: int = 0
    """Off-policy algorithms: env steps (all envs together) during which only the critic learns; the
    actor's learning rate is held at 0, so the policy stays as it started (residual RL: the base policy)
    while the critic learns its values from the demos and the first steps. Without it the actor follows
    an untrained critic from the first update."""
    actor_ramp: int = 0
    """Off-policy algorithms: env steps after ``actor_warmup`` over which the actor's learning rate rises
    linearly from 0 to the full rate (0: the full rate at once). In a seed-0 trial it delayed the fall that
    follows the warm-up rather than removing it (``bench_rl.py --setting shift_crossq_ramp``)."""
    zero_residual: bool = False
    """Off-policy algorithms: the actor's mean layer starts at zero, so the deterministic policy starts as
    the base policy exactly (a residual of 0) instead of a random small correction."""
    init_std: float | None = None
    """Off-policy algorithms: the actor's initial standard deviation in every state (before the tanh squash;
    an action of 1 is ``max_step``); None: as built (a random log-std layer, about 1, so the first training
    episodes of a residual run are mostly noise)."""
    ppo_rollout: int = 2048
    """PPO: env steps (all envs together) per rollout between updates."""
    ent_coef: str = "auto"
    """The off-policy algorithms' entropy coefficient: ``auto``, ``auto_<init>`` or a number."""
    net_arch: list[int] = field(default_factory=lambda: [256, 256])
    eval_every: int = 5000
    """Env steps between deterministic evaluations of true success."""
    eval_episodes: int = 10
    checkpoint_every: int = 5000
    progress: bool = True
    """Show a progress bar with the running success rate."""

    def __post_init__(self):
        if self.algo not in ALGOS:
            raise ConfigError(f"algo {self.algo!r} unknown; choose from {', '.join(ALGOS)}")
        if self.shaping not in ("pbrs", "naive", "sparse"):
            raise ConfigError(f"shaping {self.shaping!r} unknown; choose pbrs, naive or sparse")
        for name in ("steps", "n_envs", "max_episode_steps", "demo_episodes", "batch_size", "buffer_size",
                     "eval_every", "eval_episodes", "checkpoint_every"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"{name} must be an int >= 1, got {getattr(self, name)!r}")
        if not (0 < self.max_step_deg <= 30 and 0 < self.max_step_gripper <= 100):
            raise ConfigError("max_step_deg must be in (0, 30] and max_step_gripper in (0, 100]")
        if min(self.bc_steps, self.learning_starts, self.actor_warmup, self.actor_ramp) < 0 or self.updates_per_step <= 0:
            raise ConfigError("bc_steps, learning_starts, actor_warmup and actor_ramp must be >= 0, "
                              "updates_per_step > 0")
        start_options = self.actor_warmup or self.actor_ramp or self.zero_residual or self.init_std is not None
        if start_options and self.algo not in OFF_POLICY:
            raise ConfigError(f"actor_warmup, actor_ramp, zero_residual and init_std apply to {' / '.join(OFF_POLICY)}; "
                              f"leave them out for algo: {self.algo}")
        if self.init_std is not None and not 1e-4 <= self.init_std <= 5:
            raise ConfigError(f"init_std must be in [1e-4, 5] (a standard deviation before the tanh squash), got {self.init_std}")
        if self.demos is not None and self.algo not in OFF_POLICY:
            raise ConfigError(f"demos seed a replay buffer; use them with algo: {' / '.join(OFF_POLICY)}")
        self.shaping_config()  # validates gamma, gold, delta

    @property
    def scheme(self) -> str:
        if self.reward == "sparse" or self.shaping == "sparse":
            return "sparse"
        if self.reward == "oracle":
            if self.shaping != "pbrs":
                raise ConfigError("reward: oracle goes with shaping: pbrs (oracle_pbrs, the upper reference)")
            return "oracle_pbrs"
        return self.shaping

    @property
    def max_step(self) -> list[float]:
        """``JointDeltaAction``'s per-joint step: the arm joints' then the gripper's."""
        return [self.max_step_deg] * 5 + [self.max_step_gripper]

    def shaping_config(self) -> ShapingConfig:
        return ShapingConfig(scheme=self.scheme, gamma=self.gamma, gold=self.gold, delta=self.delta, scale=self.shaping_scale,
                             goal_potential=self.goal_potential)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_reward_model(path: str | os.PathLike):
    """A reward model folder (config.json + model.safetensors), or one line saying what it is not."""
    from ..rewards import RewardModel
    from ..rewards.base import CheckpointError

    path = Path(path)
    if not (path / "config.json").is_file():
        raise RLError(f"--reward {path}: not a reward model folder (no config.json); give roboreward reward train's "
                      "<out>/model, 'oracle' or 'sparse'")
    try:
        return RewardModel.from_pretrained(path)
    except (CheckpointError, RoborewardError) as exc:
        raise RLError(f"--reward {path}: not a loadable reward model ({exc})") from None


def build_env(config: RLConfig, model=None, n_envs: int | None = None, shaping: ShapingConfig | None = None):
    """The vector env of a run: sim envs (rendering the model's cameras) behind ``ShapedRewardVecEnv``."""
    from stable_baselines3.common.vec_env import DummyVecEnv

    from ..sim.env import ENV_IDS

    if config.task not in ENV_IDS:
        raise RLError(f"unknown task {config.task!r}; available: {sorted(ENV_IDS)}")
    shaping = shaping or config.shaping_config()
    n = n_envs or config.n_envs
    cameras = camera_names(model.config.cameras) if (model is not None and shaping.potential == "model") else []
    from ..sim.env import CAMERAS

    unknown = [c for c in cameras if c not in CAMERAS]
    if unknown:
        raise RLError(f"the reward model reads cameras {list(model.config.cameras)}; the sim renders "
                      f"{['observation.images.' + c for c in CAMERAS]}: train it on sim data with those cameras")
    from ..sim.tasks import make_task

    instruction = make_task(config.task, config.task_config or None).instruction
    potential = make_potential(shaping, n, instruction, model if shaping.potential == "model" else None)
    # Cameras render at the size the model's encoder reads (it resizes anything else).
    encoder = getattr(potential, "encoder", None)
    size = config.image_size or (encoder.config.image_size if encoder is not None else 96)
    base = load_base_policy(config.base_policy) if config.base_policy else None
    venv = DummyVecEnv([lambda: make_env(config.task, cameras, size, config.max_episode_steps, config.task_config,
                                         max_step=config.max_step, base_policy=base) for _ in range(n)])
    try:
        return ShapedRewardVecEnv(venv, shaping, potential, POLICY_KEYS)
    except BaseException:
        venv.close()
        raise


def _algo(config: RLConfig, venv, out: Path | None):
    from stable_baselines3 import PPO, SAC

    common = dict(gamma=config.gamma, learning_rate=config.learning_rate, seed=config.seed, device="cpu", verbose=0,
                  policy_kwargs={"net_arch": list(config.net_arch)},
                  tensorboard_log=None if out is None else str(out / "tb"))
    if config.algo in OFF_POLICY:
        ent = config.ent_coef
        try:
            ent = float(ent)
        except ValueError:
            pass
        cls = SAC
        if config.algo != "sac":
            from sb3_contrib import TQC, CrossQ

            cls = {"tqc": TQC, "crossq": CrossQ}[config.algo]
        if config.actor_warmup or config.actor_ramp:
            cls = _actor_warmup(cls, config.actor_warmup, config.actor_ramp)
        algo = cls("MlpPolicy", venv, buffer_size=config.buffer_size, learning_starts=config.learning_starts,
                   batch_size=config.batch_size, train_freq=1,
                   gradient_steps=max(1, round(config.updates_per_step * venv.num_envs)), ent_coef=ent, **common)
        with torch.no_grad():  # a resumed run loads its weights over these
            if config.zero_residual:
                mean = algo.actor.mu[0] if isinstance(algo.actor.mu, torch.nn.Sequential) else algo.actor.mu  # clipped mean
                mean.weight.zero_()
                mean.bias.zero_()
            if config.init_std is not None:
                algo.actor.log_std.weight.zero_()
                algo.actor.log_std.bias.fill_(float(np.log(config.init_std)))
        return algo
    n_steps = max(1, config.ppo_rollout // venv.num_envs)  # PPO collects whole rollouts, so a run may end past steps
    return PPO("MlpPolicy", venv, n_steps=n_steps, batch_size=min(config.batch_size, n_steps * venv.num_envs), **common)


def _actor_warmup(cls, steps: int, ramp: int = 0):
    """``cls`` whose actor's learning rate is 0 until ``num_timesteps`` reaches ``steps``, then rises linearly
    to its scheduled rate over ``ramp`` more env steps (SB3 sets every optimizer's rate from its schedule at the
    start of each ``train`` call; this scales the actor's after it). At rate 0 Adam leaves the weights where
    they are; the critic trains as usual."""

    class ActorWarmup(cls):
        def _update_learning_rate(self, optimizers):
            super()._update_learning_rate(optimizers)
            after = self.num_timesteps - steps
            scale = min(1.0, max(0.0, after / ramp)) if ramp else float(after >= 0)
            if scale < 1.0:
                for group in self.actor.optimizer.param_groups:
                    group["lr"] *= scale

    ActorWarmup.__name__ = ActorWarmup.__qualname__ = f"{cls.__name__}ActorWarmup"
    return ActorWarmup


# ---------------------------------------------------------------------------------------- checkpoints
def _optimizers(algo) -> dict[str, torch.optim.Optimizer]:
    opts = {"policy": algo.policy.optimizer} if hasattr(algo.policy, "optimizer") else {}
    if hasattr(algo, "actor"):
        opts = {"actor": algo.actor.optimizer, "critic": algo.critic.optimizer}
        if getattr(algo, "ent_coef_optimizer", None) is not None:
            opts["ent_coef"] = algo.ent_coef_optimizer
    return opts


def _tensors(algo) -> dict[str, torch.Tensor]:
    tensors = {f"policy.{k}": v.detach().contiguous().clone() for k, v in algo.policy.state_dict().items()}
    if getattr(algo, "log_ent_coef", None) is not None:
        tensors["log_ent_coef"] = algo.log_ent_coef.detach().clone()
    return tensors


def _load_tensors(algo, tensors: dict[str, torch.Tensor]) -> None:
    algo.policy.load_state_dict({k[7:]: v for k, v in tensors.items() if k.startswith("policy.")})
    if "log_ent_coef" in tensors and getattr(algo, "log_ent_coef", None) is not None:
        with torch.no_grad():
            algo.log_ent_coef.copy_(tensors["log_ent_coef"])


REPLAY_FIELDS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")


def save_checkpoint(algo, out: Path, state: dict[str, Any]) -> Path:
    from safetensors.torch import save_file

    step = int(algo.num_timesteps)

    def write(tmp: Path) -> None:
        save_file(_tensors(algo), str(tmp / POLICY_FILE))
        torch.save({k: o.state_dict() for k, o in _optimizers(algo).items()}, tmp / OPTIM_FILE)
        rb = getattr(algo, "replay_buffer", None)
        replay = {}
        if rb is not None:
            n = rb.buffer_size if rb.full else rb.pos
            with open(tmp / REPLAY_FILE, "wb") as f:
                np.savez(f, **{k: getattr(rb, k)[:n] for k in REPLAY_FIELDS})
            replay = {"pos": int(rb.pos), "full": bool(rb.full), "size": int(n), "transitions": int(n * rb.n_envs)}
        meta = {**state, "num_timesteps": step, "n_updates": int(getattr(algo, "_n_updates", 0)),
                "episode_num": int(getattr(algo, "_episode_num", 0)), "replay": replay}
        (tmp / STATE_FILE).write_text(json.dumps(meta, indent=1))
        kill_point("rl.checkpoint_files")

    ckpts = out / CHECKPOINTS
    ckpts.mkdir(parents=True, exist_ok=True)
    dest = save_dir_atomic(ckpts / f"step_{step}", write)
    kill_point("rl.checkpoint_committed")
    write_atomic_text(ckpts / LATEST, dest.name)
    for old in sorted((p for p in ckpts.iterdir() if p.is_dir() and p.name.startswith("step_") and p != dest),
                      key=lambda p: int(p.name[5:]) if p.name[5:].isdigit() else -1)[:-1]:
        shutil.rmtree(old, ignore_errors=True)  # keep the newest two
    return dest


def _complete(folder: Path) -> bool:
    return (folder / POLICY_FILE).is_file() and (folder / STATE_FILE).is_file() and (folder / OPTIM_FILE).is_file()


def latest_checkpoint(out: str | os.PathLike) -> Path | None:
    """The newest complete ``step_<N>`` folder of run ``out`` (the pointer may lag a kill)."""
    ckpts = Path(out) / CHECKPOINTS
    if not ckpts.is_dir():
        return None
    found = [p for p in ckpts.iterdir() if p.is_dir() and p.name.startswith("step_") and p.name[5:].isdigit() and _complete(p)]
    return max(found, key=lambda p: int(p.name[5:])) if found else None


def load_checkpoint(algo, folder: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    try:
        meta = json.loads((folder / STATE_FILE).read_text())
        _load_tensors(algo, load_file(str(folder / POLICY_FILE)))
        optims = torch.load(folder / OPTIM_FILE, weights_only=True)
        for k, opt in _optimizers(algo).items():
            opt.load_state_dict(optims[k])
        rb = getattr(algo, "replay_buffer", None)
        if rb is not None and meta.get("replay"):
            with np.load(folder / REPLAY_FILE, allow_pickle=False) as z:
                n = meta["replay"]["size"]
                for k in REPLAY_FIELDS:
                    getattr(rb, k)[:n] = z[k]
            rb.pos, rb.full = meta["replay"]["pos"], meta["replay"]["full"]
    except (OSError, ValueError, KeyError, RuntimeError, json.JSONDecodeError) as exc:
        raise RLError(f"checkpoint {folder} is unreadable ({type(exc).__name__}: {exc}); delete it to resume "
                      "from the one before") from None
    algo.num_timesteps = int(meta["num_timesteps"])
    algo._n_updates = int(meta.get("n_updates", 0))
    algo._episode_num = int(meta.get("episode_num", 0))
    return meta


def _check_resume(out: Path, config: RLConfig) -> None:
    path = out / "rl_config.json"
    if not path.is_file():
        return
    saved = json.loads(path.read_text())
    now = json.loads(json.dumps(config.to_dict()))
    for k in sorted(set(saved) | set(now)):
        if k not in RESUME_FREE and saved.get(k) != now.get(k):
            raise RLError(f"{out} holds a run with a different config ({k}: {saved.get(k)!r} there, {now.get(k)!r} now); "
                          "use the same config to resume or a new output folder")


# ---------------------------------------------------------------------------------------- demonstrations
def demo_transitions(config: RLConfig, shaping: ShapingConfig, model=None) -> dict[str, Any]:
    """Transitions of the store's first ``demo_episodes`` successful episodes, **replayed in the
    RL env**: each episode's layout is reset from its recipe seed, and its recorded joint targets
    are followed through the joint-delta action space (each action moves the command towards the
    demo's target as far as one step allows). So every transition is real env dynamics, in the
    policy's own observation and action spaces, rewarded by the run's scheme through the same
    wrapper and reward stream as online steps. Only stores made by ``roboreward data generate``
    (which records its recipe) can be replayed."""
    from ..data.store import EpisodeStore
    from ..sim.tasks import make_task

    store = EpisodeStore(config.demos)
    recipe = (dict(store.root.attrs).get("extra") or {}).get("recipe")
    if not recipe or recipe.get("task") != config.task:
        what = f"its recipe is for {recipe.get('task')!r}" if recipe else "it has no recipe (not made by roboreward data generate)"
        raise RLError(f"--demos {config.demos}: {what}; demos are replayed in the {config.task} sim, give a store "
                      f"generated for {config.task}")
    instruction = make_task(config.task, recipe.get("task_config") or None).instruction
    if "action" not in store.features:
        raise RLError(f"--demos {config.demos}: no 'action' array to replay")
    episodes = [e for e, ep in enumerate(store.episodes) if ep.task == instruction and ep.success][: config.demo_episodes]
    if not episodes:
        raise RLError(f"--demos {config.demos}: no successful episode of {config.task} to replay")
    replay = dataclasses.replace(config, task_config=recipe.get("task_config") or {}, n_envs=1)
    venv = build_env(replay, model, 1, shaping)
    rows: dict[str, list] = {k: [] for k in ("obs", "next_obs", "action", "reward", "done")}
    replayed = []
    actions = store.array("action")
    try:
        inner = venv.venv.envs[0]
        for e in episodes:
            venv.seed(int(recipe.get("seed", 0)) + e)
            obs = venv.reset()
            start, end = store.episode_range(e)
            targets = np.asarray(actions[start:end], np.float32)
            success = False
            for target in targets:
                a = inner.action_for(target, inner.target)
                nxt, reward, done, infos = venv.step(a[None])
                terminated = bool(done[0]) and not infos[0].get("TimeLimit.truncated", False)
                rows["obs"].append(obs[0])
                rows["next_obs"].append(infos[0]["terminal_observation"] if done[0] else nxt[0])
                rows["action"].append(a)
                rows["reward"].append(float(reward[0]))
                rows["done"].append(terminated)
                obs = nxt
                if done[0]:
                    success = bool(infos[0]["episode_terms"]["success"])
                    break
            replayed.append(success)
    finally:
        venv.close()
    out: dict[str, Any] = {k: np.asarray(v, np.float32 if k != "done" else bool) for k, v in rows.items()}
    out["episodes"], out["replayed_success"] = episodes, replayed
    return out


def add_demos(algo, demos: dict[str, np.ndarray]) -> int:
    """Put demo transitions into the SAC replay buffer (in rows of n_envs); returns how many."""
    rb, n_envs = algo.replay_buffer, algo.replay_buffer.n_envs
    total = len(demos["reward"]) // n_envs * n_envs
    for i in range(0, total, n_envs):
        sl = slice(i, i + n_envs)
        rb.add(demos["obs"][sl], demos["next_obs"][sl], demos["action"][sl], demos["reward"][sl], demos["done"][sl],
               [{"TimeLimit.truncated": False} for _ in range(n_envs)])
    return total


def behaviour_clone(algo, demos: dict[str, np.ndarray], steps: int, batch_size: int, seed: int) -> float:
    """``steps`` of MSE between the actor's deterministic action and the demo actions; final loss."""
    obs, act = torch.as_tensor(demos["obs"]), torch.as_tensor(demos["action"])
    rng = np.random.default_rng(seed)
    actor = algo.actor
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        idx = torch.as_tensor(rng.integers(0, len(obs), batch_size))
        loss = torch.nn.functional.mse_loss(actor(obs[idx], deterministic=True), act[idx])
        actor.optimizer.zero_grad()
        loss.backward()
        actor.optimizer.step()
    return float(loss.detach())


# ---------------------------------------------------------------------------------------- evaluation
class SB3Runner:
    """An SB3 policy as a rollout runner (``reset``, ``act``, ``needs``) over the RL env's dict
    observations, so ``rl eval`` rolls out through the same loop as ``sim eval``."""

    def __init__(self, algo, space):
        from ..shaping import PolicyObservation

        self.algo, self.obs = algo, PolicyObservation(space, POLICY_KEYS)
        self.needs = list(POLICY_KEYS)

    def reset(self, ids=None) -> None:
        pass  # SB3's MLP policies are memoryless

    def act(self, observation: dict, ids=None) -> np.ndarray:
        action, _ = self.algo.predict(self.obs(observation), deterministic=True)
        return action


def rollout_success(algo, config: RLConfig, episodes: int, seed: int = 10_000, n_envs: int = 4,
                    videos: int = 0, out: Path | None = None, desc: str = "", base=None,
                    record: str | os.PathLike | None = None) -> dict[str, Any]:
    """Deterministic rollouts of ``algo``'s policy in the plain task (true success only), seeds
    ``seed``, ``seed + 1``, ..., through the shared rollout loop; the first ``videos`` written to
    ``<out>/videos``. ``base``: the loaded base policy of a residual run (loaded from
    ``config.base_policy`` when not given). ``record``: a store to write every rollout into, both
    cameras at the RL env's 96 px (``policies.evaluate.RolloutRecorder``)."""
    from ..policies.evaluate import RolloutRecorder, policy_fingerprint, rollouts, wilson_interval

    if base is None and config.base_policy:
        base = load_base_policy(config.base_policy)

    def env():
        return make_env(config.task, (), 96, config.max_episode_steps, config.task_config, max_step=config.max_step,
                        base_policy=base)

    probe = env()
    runner = SB3Runner(algo, probe.observation_space)
    probe.close()
    recorder = None
    if record is not None:
        recorder = RolloutRecorder(record, config.task, 96, {
            "policy": policy_fingerprint(algo.policy), "task_config": config.task_config or {}, "visual": {},
            "max_steps": config.max_episode_steps, "base_policy": bool(config.base_policy)})
    results = rollouts(runner, env, episodes, n_envs, seed, videos, out, desc=desc, record=recorder)
    k = int(sum(r["success"] for r in results))
    low, high = wilson_interval(k, len(results))
    return {"task": config.task, "episodes": len(results), "successes": k, "success_rate": k / len(results),
            "ci95": [low, high], "max_progress": float(np.mean([r["max_progress"] for r in results])), "rollouts": results}


# ---------------------------------------------------------------------------------------- the run
class Monitor(BaseCallback):
    """SB3 callback: progress bar, reward-term logging, periodic evaluation of true success and checkpoints."""

    def __init__(self, config: RLConfig, out: Path, state: dict[str, Any]):
        super().__init__()
        self.config, self.out, self.state = config, out, state
        self.recent = deque(state.get("recent", []), maxlen=50)  # the last episodes' terms, kept over a resume
        self.bar = None
        self.next_eval = (state.get("last_eval", 0) // config.eval_every + 1) * config.eval_every
        self.next_ckpt = (state.get("last_ckpt", 0) // config.checkpoint_every + 1) * config.checkpoint_every
        self.t0 = time.perf_counter()
        self.steps0 = 0
        self.base = load_base_policy(config.base_policy) if config.base_policy else None  # once, for every evaluation
        best = _read_json(out / BEST / "config.json").get("evaluation")
        self.best = (best["eval_success"], best["eval_max_progress"]) if best else None

    def _on_training_start(self):
        self.steps0 = self.num_timesteps
        if self.config.progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.config.steps, initial=self.num_timesteps, unit="step",
                            desc=f"rl {self.config.task} {self.config.scheme}")

    def _on_step(self) -> bool:
        for info in self.locals["infos"]:
            ep = info.get("episode_terms")
            if ep is not None:
                self.recent.append(ep)
                self.state["episodes"] = self.state.get("episodes", 0) + 1
                for k in ("return", "shaping_return", "final_progress"):
                    self.logger.record_mean(f"reward/{k}", ep[k])
                self.logger.record_mean("rollout/true_success", float(ep["success"]))
        if self.bar is not None:
            if self.recent and self.n_calls % 50 == 0:
                self.bar.set_postfix(success=f"{np.mean([e['success'] for e in self.recent]):.2f}",
                                     eval=f"{self.state['curve'][-1]['eval_success']:.2f}" if self.state["curve"] else "-",
                                     refresh=False)
            self.bar.update(min(self.num_timesteps, self.config.steps) - self.bar.n)
        if self.num_timesteps >= self.next_eval:
            self.evaluate()
        if self.num_timesteps >= self.next_ckpt:
            self.checkpoint()
        return True

    def evaluate(self) -> None:
        if self.state.get("last_eval") == self.num_timesteps:
            return
        elapsed = time.perf_counter() - self.t0
        ev = rollout_success(self.model, self.config, self.config.eval_episodes, base=self.base)
        self.t0 = time.perf_counter()  # evaluation time is not counted in the training rate
        rate = (self.num_timesteps - self.steps0) / max(elapsed, 1e-9)
        self.steps0 = self.num_timesteps
        recent = list(self.recent)
        row = {"step": int(self.num_timesteps), "eval_success": ev["success_rate"], "eval_ci95": ev["ci95"],
               "eval_max_progress": ev["max_progress"],
               "train_success": float(np.mean([e["success"] for e in recent])) if recent else None,
               "train_return": float(np.mean([e["return"] for e in recent])) if recent else None,
               "train_shaping_return": float(np.mean([e["shaping_return"] for e in recent])) if recent else None,
               "train_final_progress": float(np.mean([e["final_progress"] for e in recent])) if recent else None,
               "env_steps_per_s": rate, "episodes": self.state.get("episodes", 0)}
        self.state["curve"].append(row)
        self.state["last_eval"] = int(self.num_timesteps)
        score = (row["eval_success"], row["eval_max_progress"])
        if self.best is None or score > self.best:  # ties keep the earlier policy
            save_policy(self.model, self.config, self.out / BEST,
                        evaluation={k: row[k] for k in ("step", "eval_success", "eval_ci95", "eval_max_progress")})
            self.best = score
        self.next_eval = (self.num_timesteps // self.config.eval_every + 1) * self.config.eval_every
        if getattr(self.model, "_logger", None) is not None:  # absent when no learn() ran in this process
            self.logger.record("eval/true_success", ev["success_rate"])
        write_atomic_text(self.out / "curves.json", json.dumps({"config": self.config.to_dict(), "curve": self.state["curve"]}, indent=1))

    def checkpoint(self) -> None:
        self.state["last_ckpt"] = int(self.num_timesteps)
        self.state["recent"] = list(self.recent)
        save_checkpoint(self.model, self.out, self.state)
        self.next_ckpt = (self.num_timesteps // self.config.checkpoint_every + 1) * self.config.checkpoint_every

    def _on_training_end(self):
        if self.bar is not None:
            self.bar.close()



def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def save_policy(algo, config: RLConfig, folder: Path, evaluation: dict | None = None) -> Path:
    """A policy folder: ``config.json`` (the run config and spaces, and ``evaluation``: the
    evaluation it was kept for, if any) + ``policy.safetensors`` (+ its base policy)."""
    from safetensors.torch import save_file

    def write(tmp: Path) -> None:
        save_file(_tensors(algo), str(tmp / POLICY_FILE))
        if config.base_policy:
            shutil.copytree(config.base_policy, tmp / BASE_POLICY)
        (tmp / "config.json").write_text(json.dumps({"type": "sb3_" + config.algo, "rl_config": config.to_dict(),
                                                     "policy_keys": list(POLICY_KEYS),
                                                     "obs_dim": int(algo.observation_space.shape[0]),
                                                     **({"evaluation": evaluation} if evaluation else {})}, indent=1))

    return save_dir_atomic(folder, write)


def load_policy(run: str | os.PathLike):
    """(SB3 algorithm with the saved weights, RLConfig) from a run folder or a policy folder in it
    (``model/``, ``best/``); the checkpoint's newest step where the run has no final model yet."""
    from safetensors.torch import load_file

    run = Path(run)
    folder = run if (run / "config.json").is_file() and (run / POLICY_FILE).is_file() else run / "model"
    if not (folder / "config.json").is_file():
        ckpt = latest_checkpoint(run)
        if ckpt is None or not (run / "rl_config.json").is_file():
            raise RLError(f"--policy {run}: not an rl train run (no model/ or checkpoints/); train one with roboreward rl train")
        meta = {"rl_config": json.loads((run / "rl_config.json").read_text())}
        folder = ckpt
    else:
        meta = json.loads((folder / "config.json").read_text())
    overrides = {"demos": None, "progress": False}
    if (folder / BASE_POLICY).is_dir():  # the copy saved with the policy, wherever the original went
        overrides["base_policy"] = str(folder / BASE_POLICY)
    try:
        config = from_dict(RLConfig, {**meta["rl_config"], **overrides}, where=str(folder))
    except KeyError:
        raise RLError(f"{folder}/config.json is not an rl policy config") from None
    venv = build_env(config, None, 1, ShapingConfig(scheme="sparse", gamma=config.gamma))
    try:
        algo = _algo(config, venv, None)
        _load_tensors(algo, load_file(str(folder / POLICY_FILE)))
    finally:
        venv.close()
    return algo, config


def train_rl(config: RLConfig, out: str | os.PathLike) -> dict[str, Any]:
    """Train (or resume) a policy into ``out``; returns the final evaluation and the curve."""
    out = Path(out)
    _check_resume(out, config)
    model = load_reward_model(config.reward) if config.reward not in ("oracle", "sparse") else None
    if model is not None and config.scheme not in ("naive", "pbrs"):
        model = None
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 2)))
    venv = build_env(config, model)
    try:
        algo = _algo(config, venv, out)
        out.mkdir(parents=True, exist_ok=True)
        for stale in [*(out / CHECKPOINTS).glob(".tmp_*"), *out.glob(".tmp_*")]:  # what a killed process was writing
            shutil.rmtree(stale, ignore_errors=True)
        write_atomic_text(out / "rl_config.json", json.dumps(config.to_dict(), indent=1))
        ckpt = latest_checkpoint(out)
        state: dict[str, Any] = {"curve": []}
        if ckpt is not None:
            state = load_checkpoint(algo, ckpt)
            state.setdefault("curve", [])
            state["curve"] = [r for r in state["curve"] if r["step"] <= algo.num_timesteps]
            state.setdefault("resumed_at", []).append(int(algo.num_timesteps))
        elif config.demos is not None:
            demos = demo_transitions(config, venv.shaper.config, model)
            state["demo_transitions"] = add_demos(algo, demos)
            state["demo_episodes"] = list(demos["episodes"])
            state["demo_replayed_success"] = sum(demos["replayed_success"])
            if config.bc_steps:
                state["bc_loss"] = behaviour_clone(algo, demos, config.bc_steps, config.batch_size, config.seed)
        monitor = Monitor(config, out, state)
        if not state["curve"]:  # the starting point: the warm-started (or base) policy before any RL step
            monitor.init_callback(algo)
            monitor.evaluate()
            monitor.t0 = time.perf_counter()
        remaining = config.steps - algo.num_timesteps
        if remaining > 0:
            t0 = time.perf_counter()
            algo.learn(remaining, callback=monitor, reset_num_timesteps=ckpt is None, tb_log_name=config.algo,
                       progress_bar=False)
            state["learn_seconds"] = state.get("learn_seconds", 0.0) + time.perf_counter() - t0
        monitor.init_callback(algo)
        monitor.evaluate()  # no-op when the last step was evaluated
        monitor.checkpoint()
        save_policy(algo, config, out / "model")
    finally:
        venv.close()
    final = state["curve"][-1]
    return {"out": str(out), "final": final, "curve": state["curve"], "steps": int(algo.num_timesteps),
            "best": _read_json(out / BEST / "config.json").get("evaluation"),
            "demo_transitions": state.get("demo_transitions", 0), "bc_loss": state.get("bc_loss")}


def steps_to(curve: list[dict], threshold: float = 0.8) -> int | None:
    """Env steps of the first evaluation at or above ``threshold`` true success (None: not reached)."""
    for row in curve:
        if row["eval_success"] >= threshold:
            return int(row["step"])
    return None


__all__ = ["ALGOS", "OFF_POLICY", "RLConfig", "RLError", "add_demos", "behaviour_clone", "build_env", "demo_transitions",
           "latest_checkpoint", "load_policy", "load_reward_model", "rollout_success", "save_checkpoint",
           "steps_to", "train_rl"]

