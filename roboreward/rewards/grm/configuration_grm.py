"""GRM's config: the cached-feature inputs (``FeatureRewardConfig``), the hop head, how training
pairs are drawn, and how progress is read from hops (readout fields, changeable on a checkpoint)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ...config import ConfigError
from ..features import FeatureRewardConfig, check_gate, check_smooth

MODES = ("fused", "incremental", "forward", "backward")
FUSIONS = ("conservative", "mean", "median")


@dataclass
class GRMConfig(FeatureRewardConfig):
    """Inputs: ``FeatureRewardConfig``."""

    readout_fields: ClassVar[tuple[str, ...]] = ("mode", "fusion", "incremental_gap", "consistency_alpha", "smooth_frames",
                                                 "readout_gate", "gate_floor")

    type: str = "grm"
    """Registered name; always ``grm``."""

    # ---------------------------------------------------------------- the hop model
    d_model: int = 128
    """Width of the state tokens and the transformer."""
    n_layers: int = 2
    """Transformer blocks over [task, reference start, reference goal, before, after]."""
    n_heads: int = 4
    """Attention heads; must divide ``d_model``."""
    dropout: float = 0.1
    """Dropout in the transformer, in [0, 1)."""
    hop_bins: int = 25
    """Classes of the hop head: bin centres evenly over [-1, 1]; the hop is their expectation.
    Training pairs are balanced over the same bins."""

    # ---------------------------------------------------------------- training pairs
    gap_bins: int = 4
    """Pairs are balanced over hop bins x these bins of |after - before| / episode length."""
    zero_hop_share: float = 0.05
    """Share of training pairs with before == after (hop 0), in [0, 1)."""
    pairs_per_episode: int = 500
    """Candidate pairs drawn per training episode, from which the balanced samples are taken."""
    ref_swap_prob: float = 0.75
    """Probability that a pair's reference start and goal come from another episode of the task
    (else its own start and a goal of the task), so the model reads references, not memorises them."""
    anchor_share: float = 0.0
    """Share of training pairs, in [0, 1), whose before state is the pair's own reference start or goal
    (half each) and whose after state is any training frame: the very queries of the forward- and
    backward-anchored readings. The other pairs take both states from one episode, so without these
    the anchored readings ask about a before and an after from two episodes, which training never
    showed (drawer: takes that carry empty jaws to the drawer then read as done in both)."""

    # ---------------------------------------------------------------- reading progress (readout fields)
    mode: str = "fused"
    """``incremental``: hops between frames ``incremental_gap`` apart, chained; ``forward``: the hop
    from the reference start; ``backward``: 1 + the hop from the reference goal; ``fused``: the three
    combined by ``fusion``."""
    fusion: str = "conservative"
    """``mean`` of the three modes; ``median`` of them (one mode fooled, say an anchored reading that
    takes the arm's home pose at the end for the start, cannot move it); or ``conservative``:
    progress moves from its last value towards that mean by exp(-alpha * Delta^2), Delta =
    |backward - forward| / their mean, so it moves little
    where the anchored readings disagree."""
    incremental_gap: int = 5
    """Frames between the two states of an incremental hop, >= 1."""
    consistency_alpha: float = 1.0
    """alpha of the conservative update, >= 0 (0 = the plain mean)."""
    smooth_frames: float = 1.0
    """Time constant, in frames, of a causal exponential moving average of the fused progress
    (``features.smooth_sequence``, as perceptual rewards have), in [1, 1000]; 1 = none. Hop readings
    of single frames jump, so a short average orders a success's progress better, at the cost of
    lagging about that many frames behind the scene."""
    readout_gate: float = 0.0
    """The change gate SARM has (``features.gate_sequence``), after the smoothing: progress moves
    towards the reading only as far as the scene changed since the previous frame; 0 = off."""
    gate_floor: float = 0.0
    """The change a still scene shows on your camera (counts as none); 0 in the sim."""

    def __post_init__(self):
        super().__post_init__()
        for name, low in (("d_model", 1), ("n_layers", 1), ("n_heads", 1), ("hop_bins", 3), ("gap_bins", 1),
                          ("pairs_per_episode", 1), ("incremental_gap", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"{name} must be an int >= {low}, got {value!r}")
        if self.d_model % self.n_heads:
            raise ConfigError(f"n_heads ({self.n_heads}) must divide d_model ({self.d_model})")
        if self.hop_bins % 2 == 0:
            raise ConfigError(f"hop_bins must be odd (a bin centred on hop 0), got {self.hop_bins}")
        for name in ("dropout", "zero_hop_share", "anchor_share"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0.0 <= self.ref_swap_prob <= 1.0:
            raise ConfigError(f"ref_swap_prob must be in [0, 1], got {self.ref_swap_prob}")
        if self.mode not in MODES:
            raise ConfigError(f"mode {self.mode!r} is not one of {MODES}")
        if self.fusion not in FUSIONS:
            raise ConfigError(f"fusion {self.fusion!r} is not one of {FUSIONS}")
        check_smooth(self)
        check_gate(self)
        if not self.consistency_alpha >= 0:
            raise ConfigError(f"consistency_alpha must be >= 0, got {self.consistency_alpha}")
