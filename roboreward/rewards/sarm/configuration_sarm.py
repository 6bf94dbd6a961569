"""SARM's config: shapes of the cached features it reads, the dataset facts it needs (tasks, stages,
priors), the temporal window and the augmentations. Everything a checkpoint needs to rebuild the
model lives here, so ``config.json`` + ``model.safetensors`` is a complete checkpoint."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from ...config import ConfigError
from ..features import FeatureRewardConfig, check_gate

if TYPE_CHECKING:
    from ...data.store import EpisodeStore

ANNOTATION_MODES = ("sparse", "dense", "dual")
VIEW_FUSIONS = ("mean", "concat")
READOUTS = ("expected", "argmax")
READOUT_FILTERS = ("none", "stage")
READOUT_HOLDS = ("none", "stage")


@dataclass
class SARMConfig(FeatureRewardConfig):
    """Inputs (feature_key, cameras, feature_dim, state_key, state_dim, tasks): ``FeatureRewardConfig``."""

    # Filled by ``from_store`` from the store and the training split; a user override would be overwritten.
    data_derived: ClassVar[tuple[str, ...]] = FeatureRewardConfig.data_derived + (
        "sparse_stages", "sparse_priors", "dense_stages", "dense_priors", "sparse_short_frames", "dense_short_frames")
    # How outputs are read, not learned: may be changed on a trained checkpoint (reward eval --readout).
    readout_fields: ClassVar[tuple[str, ...]] = ("readout", "readout_filter", "filter_back_prob", "filter_evidence",
                                                 "filter_min_stay", "filter_min_stay_frac", "readout_gate", "gate_floor", "readout_hold")

    type: str = "sarm"
    """Registered name; always ``sarm``."""

    # ---------------------------------------------------------------- targets
    annotation_mode: str = "sparse"
    """Which subtask annotations give stage targets: ``sparse``, ``dense`` or ``dual`` (two heads)."""
    sparse_stages: list[str] = field(default_factory=list)
    """Sparse stage names in order (from the data; ``["task"]`` when the data has no sparse annotations)."""
    sparse_priors: list[float] = field(default_factory=list)
    """Dataset-level prior of each sparse stage: mean fraction of episode duration, normalised to sum 1."""
    dense_stages: list[str] = field(default_factory=list)
    """Dense stage names in order (used by ``dense`` and ``dual``)."""
    dense_priors: list[float] = field(default_factory=list)
    """Dense stage priors, as ``sparse_priors``."""
    sparse_short_frames: list[int] = field(default_factory=list)
    """Per sparse stage, a short duration of it in the training episodes (5th percentile, frames; 0
    for done), for the stage filter's per-stage minimum stay (``filter_min_stay_frac``). Empty in
    a model trained before it was recorded."""
    dense_short_frames: list[int] = field(default_factory=list)
    """Dense stage short durations, as ``sparse_short_frames``."""

    done_key: str | None = None
    """Per-frame success flag of the store (``gt.success`` in the sim stores, ``next.success`` in a
    LeRobot evaluation recording brought in by ``data import-lerobot``; any 0/1 or bool frame feature)
    that gives a terminal stage ``done`` after the last subtask: in a successful
    episode, the frames from where the flag last turns on to the end (the task finished, the object
    let go) have progress exactly 1, so finishing pays more than hovering over the goal or a regrasp
    that lifts a placed object. None, or a store without that feature: no done stage (SARM as
    published; ``reward train`` says so)."""

    # ---------------------------------------------------------------- temporal model
    window: int = 8
    """Frames per causal window (ending at t, including t)."""
    frame_gap: int = 5
    """Frames between consecutive window frames."""
    d_model: int = 128
    """Transformer width."""
    n_layers: int = 2
    """Transformer blocks."""
    n_heads: int = 4
    """Attention heads; must divide ``d_model``."""
    mlp_ratio: int = 4
    """MLP hidden width as a multiple of ``d_model``."""
    dropout: float = 0.1
    """Dropout in attention and MLP, in [0, 1)."""
    view_fusion: str = "mean"
    """How per-view tokens become one frame token: ``mean`` (any view count, order-free) or ``concat``."""
    readout: str = "expected"
    """Progress from the heads: ``expected`` (sum over stages of p_k * progress_k; smooth, better for
    shaping) or ``argmax`` (the most likely stage's progress, as in the SARM paper)."""
    readout_filter: str = "none"
    """``none``: each frame's stage comes from its own window (SARM as published). ``stage``: a causal
    left-to-right filter over stages (an HMM forward pass whose emissions are the stage head's
    probabilities): moving on to a later stage is free, going back to an earlier one needs sustained
    evidence, so one frame (or a stretch of unfamiliar frames) read as an earlier stage cannot undo
    a finished task. Streams and ``progress`` run the same filter."""
    filter_back_prob: float = 1e-3
    """``stage`` filter: per-frame probability of a real return to an earlier stage (a dropped object),
    in (0, 1). Lower holds finished stages harder."""
    filter_evidence: float = 0.5
    """``stage`` filter: exponent on the stage head's probabilities, in (0, 1]. Consecutive windows
    share most frames, so their outputs are not independent evidence; < 1 counts each less."""
    filter_min_stay: int = 1
    """``stage`` filter: frames a stage entered going forward is held before the belief can move on
    from it (an explicit minimum duration, in [1, 300]; 1 = none). The done stage follows only the
    last annotated one, so a read of done shorter than this (a lifted cube read as stacked) no
    longer ends there mid-task; but a finish in the last m frames of an episode is not reached
    either. Measured in bench_reward_quality.py (`+done+minstay` rows); off by default."""
    filter_min_stay_frac: float = 0.0
    """``stage`` filter: a minimum stay per stage instead, this fraction of the stage's short
    training duration (``<level>_short_frames``; at least ``filter_min_stay``), so a stage that
    always takes long is held long and a brief one (a release) briefly. In [0, 1]; 0 = off.
    Measured in bench_reward_quality.py (`+stay` rows)."""
    readout_gate: float = 0.0
    """Change gate: progress moves towards the model's reading only as far as the scene changed since
    the previous frame: by min(1, (change - gate_floor) / readout_gate) of the way, where change is
    the RMS difference of the two frames' layer-normalised features (mean over cameras). A scene in
    which nothing happens (a pause, the hold after success) then keeps its progress exactly, however
    unfamiliar a window of still frames is to the model. 0 = off. Moving frames of the sim datasets
    change 0.017 / 0.04 / 0.18 (1st / 5th / 50th percentile, efficientnet_lite0 at 96 px), so 0.05
    gates little but the slowest motion."""
    gate_floor: float = 0.0
    """Change gate: the change a still scene shows on your camera (sensor noise, compression), which
    counts as no change; measure it on a recording of a still scene. The sim renders still scenes
    exactly, so 0 there."""
    readout_hold: str = "none"
    """``none``: progress follows the reading. ``stage``: while the readout's most likely stage stays
    the same (or moves on), progress does not fall; only a return to an earlier stage (which the
    stage filter grants on sustained evidence, a dropped object) lets it fall. A regrasp inside the
    final stage (lift the cube off, place it again) then cannot end below the first placement.
    Streams and ``progress`` apply the same rule frame by frame (before the change gate)."""

    # ---------------------------------------------------------------- augmentation (training only)
    max_rewind: int = 4
    """Most frames appended played backwards (t-gap, t-2gap, ...); at most ``window - 1``; 0 = off."""
    rewind_prob: float = 0.8
    """Probability that a training clip gets rewound frames."""
    perturb_prob: float = 0.2
    """Probability that a training clip's task is swapped for another task of the data, with target
    progress 0 (stage 0). Needs two or more tasks; ignored otherwise."""
    state_noise: float = 0.0
    """Std of a per-clip offset added to every value of the state (degrees for the SO-101's joints,
    percent for its gripper), one draw per clip and value, the same on all its frames: the clip's arm
    poses shifted as if the objects stood a little elsewhere, so the heads cannot key progress to
    the exact poses of the training layouts. Needs ``state_key``. 0 = off."""
    freeze_prob: float = 0.0
    """Probability that a training clip is frozen from a random frame on: every later frame repeats
    the last moving one (features and state) and keeps its targets, so a scene where nothing happens
    (a pause, the hold after success) earns no progress. 0 = off (SARM as published)."""

    def __post_init__(self):
        super().__post_init__()
        if self.state_noise < 0:
            raise ConfigError(f"state_noise must be a number >= 0 (state units; 0 = off), got {self.state_noise!r}")
        if self.state_noise and self.state_key is None:
            raise ConfigError("state_noise needs state_key (a model without state has no poses to shift); set one or state_noise: 0")
        if self.annotation_mode not in ANNOTATION_MODES:
            raise ConfigError(f"annotation_mode {self.annotation_mode!r} is not one of {ANNOTATION_MODES}")
        if self.view_fusion not in VIEW_FUSIONS:
            raise ConfigError(f"view_fusion {self.view_fusion!r} is not one of {VIEW_FUSIONS}")
        if self.readout not in READOUTS:
            raise ConfigError(f"readout {self.readout!r} is not one of {READOUTS}")
        if self.readout_filter not in READOUT_FILTERS:
            raise ConfigError(f"readout_filter {self.readout_filter!r} is not one of {READOUT_FILTERS}")
        if self.readout_hold not in READOUT_HOLDS:
            raise ConfigError(f"readout_hold {self.readout_hold!r} is not one of {READOUT_HOLDS}")
        if not 0.0 < self.filter_back_prob < 1.0:
            raise ConfigError(f"filter_back_prob must be in (0, 1), got {self.filter_back_prob}")
        if not 0.0 < self.filter_evidence <= 1.0:
            raise ConfigError(f"filter_evidence must be in (0, 1], got {self.filter_evidence}")
        if not 1 <= self.filter_min_stay <= 300:
            raise ConfigError(f"filter_min_stay must be in [1, 300] frames, got {self.filter_min_stay}")
        if not 0.0 <= self.filter_min_stay_frac <= 1.0:
            raise ConfigError(f"filter_min_stay_frac must be in [0, 1], got {self.filter_min_stay_frac}")
        check_gate(self)
        for name, value, low in (("window", self.window, 1),
                                 ("frame_gap", self.frame_gap, 1), ("d_model", self.d_model, 1),
                                 ("n_layers", self.n_layers, 1), ("n_heads", self.n_heads, 1),
                                 ("mlp_ratio", self.mlp_ratio, 1), ("max_rewind", self.max_rewind, 0)):
            if not isinstance(value, int) or value < low:
                raise ConfigError(f"{name} must be an int >= {low}, got {value!r}")
        if self.d_model % self.n_heads:
            raise ConfigError(f"n_heads ({self.n_heads}) must divide d_model ({self.d_model})")
        if self.max_rewind > self.window - 1:
            # Rewound frames are window frames replayed backwards, so there are at most window - 1.
            raise ConfigError(f"max_rewind must be in [0, window - 1 = {self.window - 1}], got {self.max_rewind}")
        for name in ("rewind_prob", "perturb_prob", "freeze_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.done_key is not None and (not isinstance(self.done_key, str) or not self.done_key):
            raise ConfigError(f"done_key must be a frame feature name (e.g. gt.success) or null, got {self.done_key!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        for level in ("sparse", "dense"):
            names, priors = getattr(self, f"{level}_stages"), getattr(self, f"{level}_priors")
            setattr(self, f"{level}_stages", list(names))
            setattr(self, f"{level}_priors", [float(p) for p in priors])
            if len(names) != len(priors):
                raise ConfigError(f"{level}_stages has {len(names)} names but {level}_priors has {len(priors)} values")
            if len(set(names)) != len(names):
                raise ConfigError(f"{level}_stages must be distinct names, got {names}")
            if priors and (min(priors) < 0 or not math.isclose(sum(priors), 1.0, abs_tol=1e-4)):
                raise ConfigError(f"{level}_priors must be >= 0 and sum to 1, got {priors}")
            short = [int(v) for v in getattr(self, f"{level}_short_frames")]
            setattr(self, f"{level}_short_frames", short)
            if short and (len(short) != len(names) or min(short) < 0):
                raise ConfigError(f"{level}_short_frames needs one count >= 0 per stage ({len(names)}), got {short}")

    @property
    def levels(self) -> tuple[str, ...]:
        """Annotation levels with a head, readout level first."""
        return ("sparse", "dense") if self.annotation_mode == "dual" else (self.annotation_mode,)

    def stages(self, level: str) -> tuple[list[str], list[float]]:
        if level not in ("sparse", "dense"):
            raise ConfigError(f"level {level!r} is not one of ('sparse', 'dense')")
        return getattr(self, f"{level}_stages"), getattr(self, f"{level}_priors")

    def check_ready(self) -> None:
        """The data-derived fields a model needs; filled by ``from_store``."""
        super().check_ready()
        for level in self.levels:
            if not self.stages(level)[0]:
                raise ConfigError(
                    f"{level}_stages is empty; build the config with SARMConfig.from_store(store, ...) "
                    f"or give {level}_stages and {level}_priors"
                )

    def store_fields(self, store: "EpisodeStore", episodes: list[int]) -> dict[str, Any]:
        """Stages and priors of each level from the training ``episodes`` (``targets.stage_priors``),
        with the terminal ``done`` stage when ``done_key`` is a feature of the store."""
        from ..targets import has_done_flag, stage_priors, stage_short_frames

        fields: dict[str, Any] = {}
        done = has_done_flag(store, self.done_key)
        for level in self.levels:
            stage_set = stage_priors(store, episodes, level, done=done)
            fields[f"{level}_stages"] = list(stage_set.names)
            fields[f"{level}_priors"] = list(stage_set.priors)
            fields[f"{level}_short_frames"] = stage_short_frames(store, episodes, level, stage_set.names)
        return fields

    def min_stays(self, level: str) -> list[int]:
        """The stage filter's minimum stay per stage of ``level``, frames (``filter_min_stay``,
        raised to ``filter_min_stay_frac`` of each stage's short training duration)."""
        names, short = self.stages(level)[0], getattr(self, f"{level}_short_frames")
        if not self.filter_min_stay_frac:
            return [self.filter_min_stay] * len(names)
        if not short:
            raise ConfigError(f"filter_min_stay_frac needs the stage durations of the training data, which this model "
                              f"does not record ({level}_short_frames; trained before they were): retrain it, or use "
                              "filter_min_stay")
        return [min(300, max(self.filter_min_stay, round(self.filter_min_stay_frac * f))) for f in short]
