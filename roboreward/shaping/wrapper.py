"""Shaped rewards inside an env loop: a vector-env wrapper (SB3 ``VecEnvWrapper``) and a
single-env gymnasium wrapper over the same machinery.

The wrapped env yields dict observations (``roboreward.sim.env.SO101Env``): the reward model reads
its cameras (and state), the policy sees only ``policy_keys``, flattened into one Box (bounded
features scaled to [-1, 1] by the space's own bounds). Per vector step the reward model's stream
is called **once for all envs together**, encoding each new frame once per view; an env that SB3
auto-reset gets its stream history reset and its first frame streamed alone (``envs=[i]``).

Every term is logged in ``info["reward_terms"]`` (progress Phi(s'), previous potential, shaping
term, r_gold, true success, reward), and at an episode's end ``info["episode_terms"]`` holds its
sums (return of the shaped reward, of r_gold, of the shaping term), true success, final progress
and length.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

from ..errors import RoborewardError
from .schemes import ShapingConfig, gold_fired, shape


# ---------------------------------------------------------------------------------------- potentials
class Potential:
    """Phi for ``n_envs`` envs: ``start`` at episode starts (only the envs ``ids``), ``step`` for all."""

    needs: tuple[str, ...] = ()
    """Observation keys the potential reads (cameras, state)."""

    def start(self, observation: dict[str, np.ndarray], progress: np.ndarray, ids: Sequence[int]) -> np.ndarray:
        raise NotImplementedError

    def step(self, observation: dict[str, np.ndarray], progress: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class ZeroPotential(Potential):
    def start(self, observation, progress, ids):
        return np.zeros(len(ids))

    def step(self, observation, progress):
        return np.zeros(len(progress))


class OraclePotential(Potential):
    """The simulator's ground-truth progress (``info["progress"]``)."""

    def start(self, observation, progress, ids):
        return np.asarray(progress, np.float64)

    def step(self, observation, progress):
        return np.asarray(progress, np.float64)


class ModelPotential(Potential):
    """A reward model's streaming progress: one stream for all envs, reset per env at its episode
    start. ``encoder``: what turns rendered frames into the model's features (default: the frozen
    encoder its feature cache was made with)."""

    def __init__(self, model, n_envs: int, task: str, encoder: Any = None):
        cfg = model.config
        if task not in getattr(cfg, "tasks", [task]):
            raise RoborewardError(f"the reward model was trained on tasks {cfg.tasks}, not {task!r}; "
                                  "train (or adapt) it on data of this task")
        self.model, self.task = model, task
        self.encoder = encoder if encoder is not None else encoder_of(model)
        # The stream gets features: every camera's new frames go through the encoder in one call.
        self.stream = model.stream(n_envs, encoder=None) if self.encoder is not None else model.stream(n_envs)
        self.cameras = list(cfg.cameras)
        self.state_key = getattr(cfg, "state_key", None)
        self.needs = tuple(self.cameras) + ((self.state_key,) if self.state_key else ())

    def inputs(self, observation) -> dict:
        """The stream's inputs from an observation: state as observed and every camera's new frames
        encoded in one call (or its features, where the loop already put ``features.<camera>`` in)."""
        inputs = {k: observation[k] for k in self.needs if k not in self.cameras}
        if self.encoder is None:  # a model that reads pixels itself
            return {**inputs, **{c: observation[c] for c in self.cameras}}
        raw = [c for c in self.cameras if f"features.{c}" not in observation]  # a loop may share its encoding
        inputs.update({f"features.{c}": observation[f"features.{c}"] for c in self.cameras if c not in raw})
        if raw:
            frames = [np.asarray(observation[c]) for c in raw]
            feats = self.encoder(np.concatenate(frames)) if len({f.shape for f in frames}) == 1 else None
            n = len(frames[0])
            for i, c in enumerate(raw):
                inputs[f"features.{c}"] = feats[i * n:(i + 1) * n] if feats is not None else self.encoder(frames[i])
        return inputs

    def start(self, observation, progress, ids):
        self.stream.reset(list(ids))
        return self.stream.step(self.inputs(observation), self.task, envs=list(ids)).double().cpu().numpy()

    def step(self, observation, progress):
        return self.stream.step(self.inputs(observation), self.task).double().cpu().numpy()


def encoder_of(model) -> Any:
    """The frozen encoder that made the features ``model`` was trained on (None for a model that
    reads no cached features)."""
    key = getattr(model.config, "feature_key", None)
    if key is None:
        return None
    from ..encoders import encoder_for_cache_key

    return encoder_for_cache_key(key)


def make_potential(config: ShapingConfig, n_envs: int, task: str, model=None, encoder: Any = None) -> Potential:
    """The potential ``config.scheme`` reads: a model's stream, the oracle or none."""
    if config.potential == "model":
        if model is None:
            raise RoborewardError(f"shaping scheme {config.scheme!r} needs a reward model; pass one (or use sparse / oracle_pbrs)")
        return ModelPotential(model, n_envs, task, encoder)
    if model is not None:
        raise RoborewardError(f"shaping scheme {config.scheme!r} reads no reward model; drop it or use naive / pbrs")
    return OraclePotential() if config.potential == "oracle" else ZeroPotential()


# ---------------------------------------------------------------------------------------- policy observations
class PolicyObservation:
    """The policy's view of a dict observation: ``keys`` flattened and concatenated into one float32
    Box; features with finite bounds are scaled to [-1, 1] by them (joint angles, targets), the
    others are kept as they are (object poses in metres)."""

    def __init__(self, space: gym.spaces.Dict, keys: Sequence[str]):
        missing = [k for k in keys if k not in space.spaces]
        if missing:
            raise RoborewardError(f"policy key {missing[0]!r} is not in the observation; it has {sorted(space.spaces)}")
        self.keys = list(keys)
        lows, highs = [], []
        for k in self.keys:
            s = space.spaces[k]
            lows.append(np.broadcast_to(s.low, s.shape).reshape(-1).astype(np.float64))
            highs.append(np.broadcast_to(s.high, s.shape).reshape(-1).astype(np.float64))
        low, high = np.concatenate(lows), np.concatenate(highs)
        bounded = np.isfinite(low) & np.isfinite(high) & (high > low)
        self.mid, self.half = np.zeros_like(low), np.ones_like(low)
        self.mid[bounded] = (low[bounded] + high[bounded]) / 2
        self.half[bounded] = (high[bounded] - low[bounded]) / 2
        self.space = gym.spaces.Box(-np.inf, np.inf, (len(low),), np.float32)

    def __call__(self, observation: dict[str, np.ndarray], batched: bool = True) -> np.ndarray:
        lead = 1 if batched else 0
        parts = [np.asarray(observation[k], np.float64).reshape(*np.shape(observation[k])[:lead], -1) for k in self.keys]
        return ((np.concatenate(parts, -1) - self.mid) / self.half).astype(np.float32)


# ---------------------------------------------------------------------------------------- the shaper
class Shaper:
    """Potentials, reward terms and per-episode sums for ``n_envs`` envs."""

    def __init__(self, config: ShapingConfig, potential: Potential, n_envs: int):
        self.config, self.potential, self.n_envs = config, potential, n_envs
        self.phi = np.zeros(n_envs)
        self.sums = {k: np.zeros(n_envs) for k in ("return", "gold_return", "shaping_return")}
        self.success = np.zeros(n_envs, bool)
        self.length = np.zeros(n_envs, np.int64)

    def start(self, observation: dict[str, np.ndarray], progress: np.ndarray, ids: Sequence[int]) -> None:
        ids = list(ids)
        self.phi[ids] = self.potential.start(observation, progress, ids)
        for v in self.sums.values():
            v[ids] = 0.0
        self.success[ids], self.length[ids] = False, 0

    def step(self, observation: dict[str, np.ndarray], progress: np.ndarray, success: np.ndarray,
             terminated: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Terms of one vector step (``observation`` = s' of every env, the terminal one for envs
        that just ended) and the envs that ``gold: potential`` ends."""
        phi_next = self.potential.step(observation, progress)
        fired = gold_fired(self.config, phi_next)
        terms = shape(self.config, self.phi, phi_next, success, np.asarray(terminated, bool) | fired)
        terms.update(progress=phi_next, potential=self.phi.copy(), success=np.asarray(success, bool))
        self.sums["return"] += terms["reward"]
        self.sums["gold_return"] += terms["r_gold"]
        self.sums["shaping_return"] += terms["shaping"]
        self.success |= terms["success"]
        self.length += 1
        self.phi = phi_next
        return terms, fired

    def episode_terms(self, i: int) -> dict[str, float]:
        return {**{k: float(v[i]) for k, v in self.sums.items()}, "success": bool(self.success[i]),
                "final_progress": float(self.phi[i]), "length": int(self.length[i])}


def _row(terms: dict[str, np.ndarray], i: int) -> dict[str, float]:
    return {k: (bool(v[i]) if v.dtype == bool else float(v[i])) for k, v in terms.items()}


def _check_inputs(potential: Potential, space: gym.spaces.Dict) -> None:
    missing = [k for k in potential.needs if k not in space.spaces]
    if missing:
        rendered = [k for k in space.spaces if k.startswith("observation.images.")]
        raise RoborewardError(f"the reward model reads {missing[0]!r}, which the env does not render (it renders "
                              f"{rendered or 'no cameras'}); build the env with the model's cameras {list(potential.needs)}")


def _stack(observations: Sequence[dict[str, np.ndarray]], keys: Sequence[str]) -> dict[str, np.ndarray]:
    return {k: np.stack([np.asarray(o[k]) for o in observations]) for k in keys}


class ShapedRewardVecEnv(VecEnvWrapper):
    """A vector env whose reward is ``config``'s scheme over ``potential`` and whose observation is
    ``policy_keys`` of the wrapped env's dict observation, flattened."""

    def __init__(self, venv: VecEnv, config: ShapingConfig, potential: Potential, policy_keys: Sequence[str]):
        if not isinstance(venv.observation_space, gym.spaces.Dict):
            raise RoborewardError("ShapedRewardVecEnv wraps envs with dict observations (roboreward's SO101Env)")
        _check_inputs(potential, venv.observation_space)
        self.policy_obs = PolicyObservation(venv.observation_space, policy_keys)
        super().__init__(venv, observation_space=self.policy_obs.space)
        self.shaper = Shaper(config, potential, venv.num_envs)
        self.keys = list(potential.needs)

    def _progress(self, infos: Sequence[dict]) -> np.ndarray:
        return np.array([float(info.get("progress", 0.0)) for info in infos])

    def reset(self) -> np.ndarray:
        obs = self.venv.reset()
        ids = list(range(self.num_envs))
        self.shaper.start({k: obs[k] for k in self.keys}, self._progress(self.venv.reset_infos), ids)
        return self.policy_obs(obs)

    def step_wait(self):
        obs, _, dones, infos = self.venv.step_wait()
        done = [i for i in range(self.num_envs) if dones[i]]
        # s' of every env: the terminal observation for envs the vector env has already reset.
        next_obs = {k: np.array(obs[k], copy=True) for k in self.keys}
        for i in done:
            for k in self.keys:
                next_obs[k][i] = infos[i]["terminal_observation"][k]
        success = np.array([bool(info.get("success", False)) for info in infos])
        terminated = np.array([bool(dones[i]) and not infos[i].get("TimeLimit.truncated", False) for i in range(self.num_envs)])
        terms, fired = self.shaper.step(next_obs, self._progress(infos), success, terminated)
        for i in range(self.num_envs):
            infos[i]["reward_terms"] = _row(terms, i)
        if fired.any():
            # gold: potential: the reward model ends these episodes (its success detector fired).
            for i in np.flatnonzero(fired & ~np.asarray(dones, bool)):
                infos[i]["terminal_observation"] = {k: v[i] for k, v in obs.items()}
                infos[i]["TimeLimit.truncated"] = False
                infos[i]["reward_model_success"] = True
                reset_obs, reset_info = self.venv.env_method("reset", indices=[int(i)])[0]
                for k in obs:
                    obs[k][i] = reset_obs[k]
                self.venv.reset_infos[i] = reset_info
                done.append(int(i))
            dones = np.asarray(dones, bool) | fired
            done.sort()
        for i in done:
            infos[i]["episode_terms"] = self.shaper.episode_terms(i)
            infos[i]["terminal_observation"] = self.policy_obs(infos[i]["terminal_observation"], batched=False)
        if done:
            self.shaper.start({k: obs[k][done] for k in self.keys},
                              self._progress([self.venv.reset_infos[i] for i in done]), done)
        return self.policy_obs(obs), terms["reward"].astype(np.float32), dones, infos


class ShapedReward(gym.Wrapper):
    """The single-env gymnasium form of ``ShapedRewardVecEnv``: reward from ``config``'s scheme over
    ``potential`` (a one-env potential), observation ``policy_keys`` flattened, terms in ``info``."""

    def __init__(self, env: gym.Env, config: ShapingConfig, potential: Potential, policy_keys: Sequence[str]):
        super().__init__(env)
        _check_inputs(potential, env.observation_space)
        self.policy_obs = PolicyObservation(env.observation_space, policy_keys)
        self.observation_space = self.policy_obs.space
        self.shaper = Shaper(config, potential, 1)
        self.keys = list(potential.needs)

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self.shaper.start(_stack([obs], self.keys), np.array([info.get("progress", 0.0)]), [0])
        return self.policy_obs(obs, batched=False), info

    def step(self, action):
        obs, _, terminated, truncated, info = self.env.step(action)
        terms, fired = self.shaper.step(_stack([obs], self.keys), np.array([info.get("progress", 0.0)]),
                                        np.array([bool(info.get("success", False))]), np.array([terminated]))
        info["reward_terms"] = _row(terms, 0)
        if fired[0]:
            terminated, info["reward_model_success"] = True, True
        if terminated or truncated:
            info["episode_terms"] = self.shaper.episode_terms(0)
        return self.policy_obs(obs, batched=False), float(terms["reward"][0]), terminated, truncated, info
