"""Reward schemes for online RL, one formula each, over batches of transitions (s, a, s').

- ``sparse``: r = r_gold, the success signal alone.
- ``naive``: r = r_gold + Phi(s') - Phi(s), undiscounted and never zeroed: the "semantic trap".
  Under a discount gamma < 1 the shaping terms no longer telescope: a return collects
  (1 - gamma) * Phi(s_t) every step, so hovering in a high-progress state without finishing pays.
  Kept as the baseline that potential-based shaping must beat.
- ``pbrs``: r = r_gold + gamma * Phi(s') - Phi(s) with gamma the learner's own, Phi(s') = 0 after a
  true termination and Phi(s') as read at a time-limit truncation (the learner bootstraps there,
  SB3's ``TimeLimit.truncated``). The discounted sum of the shaping terms over an episode is then
  gamma^T Phi(s_T) - Phi(s_0) whatever the policy does, so the optimal policy is unchanged (Ng et
  al. 1999).
  ``goal_potential`` c sets Phi after a true termination to c instead of 0. Where every true
  termination is a success that pays the same r_gold (the sim tasks end an episode only on success,
  or on the model's success detector with ``gold: potential``), a successful return becomes
  gamma^(T-1) (r_gold + gamma c) - Phi(s_0) and every other return stays -Phi(s_0) plus what is
  bootstrapped: the success reward grows from r_gold to r_gold + gamma c for every policy alike, so
  the optimal policy is still unchanged. What it changes is the step that succeeds: with c = 0 it
  nets r_gold - Phi(s) (about 0.05 when Phi is near 0.95 there, the progress having been paid on
  the way), with c = 1 about r_gold.
- ``oracle_pbrs``: ``pbrs`` with the simulator's ground-truth progress as Phi, the upper reference.

r_gold is the task's own success signal (``gold: task``) or the reward model's success detector,
Phi(s') >= 1 - delta (``gold: potential``, Robo-Dopamine's choice for the real world where no
success signal exists; the episode then terminates when it fires, so r_gold is paid once).

Markov potentials. The guarantee above needs Phi to be a function of the state. A learned model's
progress is a function of the frames it has seen this episode (SARM's window and stage filter,
GRM's chained hops, the change gate): Phi is then Markov in the history-augmented state
(s_t, o_0..o_t), and it is in that MDP that the optimal policy is preserved. The stream is reset at
every episode start, so Phi never reads across episodes; the frame-only models (baselines,
perceptual) are Markov in the rendered frame itself.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import ConfigError

SCHEMES = ("sparse", "naive", "pbrs", "oracle_pbrs")
GOLD = ("task", "potential")


@dataclass
class ShapingConfig:
    scheme: str = "pbrs"
    """sparse, naive, pbrs or oracle_pbrs (see the module docstring)."""
    gamma: float = 0.99
    """Discount of the shaping term; must be the learner's own gamma for pbrs to keep the optimal policy."""
    gold: str = "task"
    """Where r_gold comes from: ``task`` (the env's success) or ``potential`` (Phi(s') >= 1 - delta)."""
    delta: float = 0.05
    """Success margin for ``gold: potential``."""
    gold_reward: float = 1.0
    """r_gold paid on success."""
    scale: float = 1.0
    """Weight of the shaping term (any scale keeps pbrs policy-invariant)."""
    goal_potential: float = 0.0
    """Phi(s') after a true termination (pbrs, oracle_pbrs): 0 as Ng et al. set an absorbing state's; any
    constant keeps the optimal policy where only successes terminate (see the module docstring)."""

    def __post_init__(self):
        if self.scheme not in SCHEMES:
            raise ConfigError(f"shaping scheme {self.scheme!r} unknown; choose from {', '.join(SCHEMES)}")
        if self.gold not in GOLD:
            raise ConfigError(f"gold {self.gold!r} unknown; choose from {', '.join(GOLD)}")
        if not 0.0 < self.gamma <= 1.0:
            raise ConfigError(f"gamma must be in (0, 1] (the learner's discount), got {self.gamma}")
        if not 0.0 <= self.delta < 1.0:
            raise ConfigError(f"delta must be in [0, 1), got {self.delta}")
        if not (isinstance(self.goal_potential, (int, float)) and not isinstance(self.goal_potential, bool)
                and np.isfinite(self.goal_potential)):
            raise ConfigError(f"goal_potential must be a number (Phi after a true termination; 0 or 1), got {self.goal_potential!r}")
        if self.scheme == "sparse" and self.gold == "potential":
            raise ConfigError("gold: potential needs a potential; scheme sparse has none (use gold: task)")

    @property
    def potential(self) -> str | None:
        """What Phi is read from: ``model`` (a learned reward model), ``oracle`` (the simulator's
        progress) or None (sparse)."""
        return {"sparse": None, "oracle_pbrs": "oracle"}.get(self.scheme, "model")


def shape(config: ShapingConfig, phi: np.ndarray, phi_next: np.ndarray, success: np.ndarray,
          terminated: np.ndarray) -> dict[str, np.ndarray]:
    """Reward terms of a batch of transitions: ``phi`` = Phi(s), ``phi_next`` = Phi(s') as read,
    ``success`` the task's success after the step, ``terminated`` a true termination (not a
    time-limit truncation). Returns r_gold, shaping, reward (all (n,) float64)."""
    phi, phi_next = np.asarray(phi, np.float64), np.asarray(phi_next, np.float64)
    success, terminated = np.asarray(success, bool), np.asarray(terminated, bool)
    if config.gold == "task":
        gold = success
    else:
        gold = phi_next >= 1.0 - config.delta
    r_gold = config.gold_reward * gold.astype(np.float64)
    if config.scheme == "sparse":
        shaping = np.zeros_like(phi)
    elif config.scheme == "naive":
        shaping = phi_next - phi
    else:  # pbrs, oracle_pbrs: after a true termination Phi is the goal's constant (0: worth nothing)
        shaping = config.gamma * np.where(terminated, config.goal_potential, phi_next) - phi
    shaping = config.scale * shaping
    return {"r_gold": r_gold, "shaping": shaping, "reward": r_gold + shaping}


def gold_fired(config: ShapingConfig, phi_next: np.ndarray) -> np.ndarray:
    """Envs whose episode the reward model ends (``gold: potential``): Phi(s') >= 1 - delta."""
    if config.gold != "potential":
        return np.zeros(np.shape(phi_next), bool)
    return np.asarray(phi_next) >= 1.0 - config.delta
