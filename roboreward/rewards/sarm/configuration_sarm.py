"""SARM's config: shapes of the cached features it reads, the dataset facts it needs (tasks, stages,
priors), the temporal window and the augmentations. Everything a checkpoint needs to rebuild the
model lives here, so ``config.json`` + ``model.safetensors`` is a complete checkpoint."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar

from ...config import ConfigError
from ..base import RewardModelConfig

if TYPE_CHECKING:
    from ...data.store import EpisodeStore

ANNOTATION_MODES = ("sparse", "dense", "dual")
VIEW_FUSIONS = ("mean", "concat")
READOUTS = ("expected", "argmax")


@dataclass
class SARMConfig(RewardModelConfig):
    # Filled by ``from_store`` from the store and the training split; a user override would be overwritten.
    data_derived: ClassVar[tuple[str, ...]] = ("feature_key", "feature_dim", "tasks", "sparse_stages", "sparse_priors",
                                               "dense_stages", "dense_priors")

    type: str = "sarm"
    """Registered name; always ``sarm``."""

    # ---------------------------------------------------------------- inputs
    feature_key: str | None = None
    """Feature-cache key in the store (``features/<key>/<camera>``) the model was trained on; streams
    must be fed features from the same encoder."""
    cameras: list[str] = field(default_factory=lambda: ["observation.images.front"])
    """Camera keys, in view order; at least one. Their features are fused per frame."""
    feature_dim: int = 1280
    """Dimension of one camera's cached feature (efficientnet_lite0: 1280)."""
    state_key: str | None = None
    """Optional proprioceptive key (e.g. ``observation.state``) added to every frame token; None = images only."""
    state_dim: int = 0
    """Size of ``state_key``'s vector; 0 exactly when ``state_key`` is None."""
    tasks: list[str] = field(default_factory=list)
    """Task strings of the training data; each gets a learned embedding (the conditioning token)."""

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

    # ---------------------------------------------------------------- augmentation (training only)
    max_rewind: int = 4
    """Most frames appended played backwards (t-gap, t-2gap, ...); at most ``window - 1``; 0 = off."""
    rewind_prob: float = 0.8
    """Probability that a training clip gets rewound frames."""
    perturb_prob: float = 0.2
    """Probability that a training clip's task is swapped for another task of the data, with target
    progress 0 (stage 0). Needs two or more tasks; ignored otherwise."""
    freeze_prob: float = 0.0
    """Probability that a training clip is frozen from a random frame on: every later frame repeats
    the last moving one (features and state) and keeps its targets, so a scene where nothing happens
    (a pause, the hold after success) earns no progress. 0 = off (SARM as published)."""

    def __post_init__(self):
        super().__post_init__()
        if self.annotation_mode not in ANNOTATION_MODES:
            raise ConfigError(f"annotation_mode {self.annotation_mode!r} is not one of {ANNOTATION_MODES}")
        if self.view_fusion not in VIEW_FUSIONS:
            raise ConfigError(f"view_fusion {self.view_fusion!r} is not one of {VIEW_FUSIONS}")
        if self.readout not in READOUTS:
            raise ConfigError(f"readout {self.readout!r} is not one of {READOUTS}")
        self.cameras = list(self.cameras)
        if not self.cameras or len(set(self.cameras)) != len(self.cameras):
            raise ConfigError(f"cameras must be one or more distinct camera keys, got {self.cameras}")
        self.tasks = list(self.tasks)
        if len(set(self.tasks)) != len(self.tasks):
            raise ConfigError("tasks must be distinct strings")
        for name, value, low in (("feature_dim", self.feature_dim, 1), ("window", self.window, 1),
                                 ("frame_gap", self.frame_gap, 1), ("d_model", self.d_model, 1),
                                 ("n_layers", self.n_layers, 1), ("n_heads", self.n_heads, 1),
                                 ("mlp_ratio", self.mlp_ratio, 1), ("state_dim", self.state_dim, 0),
                                 ("max_rewind", self.max_rewind, 0)):
            if not isinstance(value, int) or value < low:
                raise ConfigError(f"{name} must be an int >= {low}, got {value!r}")
        if self.d_model % self.n_heads:
            raise ConfigError(f"n_heads ({self.n_heads}) must divide d_model ({self.d_model})")
        if (self.state_key is None) != (self.state_dim == 0):
            raise ConfigError("state_dim must be > 0 exactly when state_key is set (state_key=None, state_dim=0 for images only)")
        if self.max_rewind > self.window - 1:
            # Rewound frames are window frames replayed backwards, so there are at most window - 1.
            raise ConfigError(f"max_rewind must be in [0, window - 1 = {self.window - 1}], got {self.max_rewind}")
        for name in ("rewind_prob", "perturb_prob", "freeze_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {getattr(self, name)}")
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
        if not self.tasks:
            raise ConfigError("tasks is empty; build the config with SARMConfig.from_store(store, ...) or list the tasks")
        for level in self.levels:
            if not self.stages(level)[0]:
                raise ConfigError(
                    f"{level}_stages is empty; build the config with SARMConfig.from_store(store, ...) "
                    f"or give {level}_stages and {level}_priors"
                )

    @classmethod
    def from_store(
        cls,
        store: "EpisodeStore",
        feature_key: str,
        episodes: Sequence[int] | None = None,
        **overrides: Any,
    ) -> "SARMConfig":
        """A config whose data fields (cameras, feature_dim, state_dim, tasks, stages, priors) come
        from ``store`` and its feature cache ``feature_key``; tasks from every episode, priors from ``episodes`` (the training
        split; default all). ``overrides`` set any other field (a bad one is one ConfigError line)."""
        from ...data.cache import cached_features
        from .data_sarm import stage_priors

        overrides = cls.check_overrides(dict(overrides), "model")
        state_key = overrides.get("state_key")
        if state_key is not None and "state_dim" not in overrides:
            store.array(state_key)  # raises naming the store's features
            overrides["state_dim"] = int(math.prod(store.features[state_key].shape))
        cfg = cls(**overrides)
        feats = cached_features(store, feature_key)
        cameras = cfg.cameras if "cameras" in overrides else list(store.cameras)
        dim = int(feats[cameras[0]].shape[1])
        fields: dict[str, Any] = {"feature_key": feature_key, "cameras": cameras, "feature_dim": dim}
        eps = list(range(store.n_episodes)) if episodes is None else list(episodes)
        # Every task of the store, not only the training split's: a held-out episode of a task the
        # split happens to miss must get an (untrained) embedding, not a crash at validation.
        fields["tasks"] = sorted(store.tasks)
        for level in cfg.levels:
            stage_set = stage_priors(store, eps, level)
            fields[f"{level}_stages"] = list(stage_set.names)
            fields[f"{level}_priors"] = list(stage_set.priors)
        return replace(cfg, **fields)
