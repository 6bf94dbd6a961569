"""`roboreward bc train`: a behaviour-cloning policy on the shared training loop, optionally with
RA-BC weights from any progress source (a reward model's annotation in the store, the simulator's
ground truth, or a LeRobot sarm_progress.parquet).

The run folder holds what a reward-model run holds (checkpoints/, model/, split.json, tb/) plus
weights.json, the weighting's statistics (mean weight per quality label: failures must weigh less).
Validation (every ``train.val_every`` steps, on the held-out episodes, unweighted) reports the loss
and the mean absolute action error in dataset units.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import default_collate

from ..config import ConfigError
from ..data import EpisodeStore
from ..data.sampler import split_episodes
from ..rewards.train import RewardDataConfig, cache_for_training
from ..training import TrainConfig, fit, write_atomic_text
from .base import make_policy, policy_class
from .rabc import KAPPA, store_progress, weights_for_store

WEIGHT_MODES = ("none", "soft", "hard")


@dataclass
class WeightConfig:
    mode: str = "none"
    """``none`` (plain BC), ``soft`` (LeRobot's RA-BC weighting) or ``hard`` (keep chunks with r > kappa)."""
    source: str = "gt.progress"
    """Progress: ``gt.progress`` (the simulator's, an oracle), a ``progress/<name>`` annotation name in
    the store (``roboreward reward annotate``), or a path to a LeRobot ``sarm_progress.parquet``."""
    level: str = "sparse"
    """Annotation level of a reward model's progress (sparse or dense)."""
    kappa: float = KAPPA
    """Chunks whose progress gain exceeds kappa get full weight."""
    min_final_progress: float | None = None
    """Also drop whole episodes whose final progress (mean of the last 5 frames of ``source``) is
    below this, e.g. 0.5: a learned stand-in for filtering out failed demos (not in LeRobot, whose
    weights judge each chunk alone). None = keep every episode. Works with ``mode: none`` too."""

    def __post_init__(self):
        if self.mode not in WEIGHT_MODES:
            raise ConfigError(f"weights.mode {self.mode!r} is not one of {WEIGHT_MODES}")
        if self.min_final_progress is not None and not 0.0 < self.min_final_progress <= 1.0:
            raise ConfigError(f"weights.min_final_progress must be in (0, 1] or null, got {self.min_final_progress}")

    @property
    def active(self) -> bool:
        return self.mode != "none" or self.min_final_progress is not None


@dataclass
class BCTrainConfig:
    policy: dict[str, Any] = field(default_factory=lambda: {"type": "bc"})
    """Policy overrides: ``type`` (a registered policy) plus fields of its config not read from the data."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """The shared training loop's settings."""
    data: RewardDataConfig = field(default_factory=RewardDataConfig)
    """Encoder of the feature cache and the episode split (same fields as reward-model training)."""
    weights: WeightConfig = field(default_factory=WeightConfig)
    """RA-BC weighting."""
    qualities: list[str] | None = None
    """Train only on episodes with these quality labels (e.g. ``[expert]``: the oracle filter RA-BC is
    compared with); None = all. The validation split is drawn before filtering, so it is unchanged."""

    frames_in_memory: bool = False
    """A pixel policy (vision_bc, act, diffusion) reads the store's frames into RAM once instead of
    decoding chunks per sample (for stores that fit: ~55 MB per 1000 frames of two 96 px cameras)."""
    chunk_cache_mb: float = 1024.0
    """Otherwise, MB of decoded frame chunks a pixel policy's data keeps per process (least recently
    used dropped), so the chunks an epoch revisits are decoded once while they fit."""

    def __post_init__(self):
        if self.chunk_cache_mb < 0:
            raise ConfigError(f"chunk_cache_mb must be >= 0, got {self.chunk_cache_mb}")
        if self.qualities is not None and (not isinstance(self.qualities, list) or not self.qualities):
            raise ConfigError(f"qualities must be a non-empty list of quality labels or null, got {self.qualities!r}")
        if not isinstance(self.policy, dict) or not self.policy.get("type"):
            raise ConfigError("policy needs a `type` naming a policy (e.g. policy: {type: bc})")
        if self.data.augment_copies:
            raise ConfigError("data.augment_copies: policies do not train on photometric feature copies (reward models "
                              "do); set data.augment_copies: 0")
        # Unknown keys, wrong types and bad values fail now, in one line, before any data is read.
        self.policy = policy_class(str(self.policy["type"])).config_class.check_overrides(self.policy, "policy")


class PolicyValidator:
    """Validation callback: on evenly spaced frames of the held-out episodes (read once, kept in
    memory), the policy's loss without RA-BC weights (what it would be judged by, not what it was
    weighted by) and ``action_mae``, the mean absolute error of the predicted chunk in dataset units
    (degrees, gripper 0..100) over its unpadded steps."""

    def __init__(self, dataset, n_items: int, batch: int = 128):
        idx = np.unique(np.linspace(0, len(dataset) - 1, min(n_items, len(dataset))).round().astype(int))
        self.batches = [default_collate([dataset[int(i)] for i in idx[s : s + batch]]) for s in range(0, len(idx), batch)]

    def __call__(self, model) -> dict[str, float]:
        loss = err = frames = 0.0
        for batch in self.batches:
            batch = {k: v.to(model.device) if torch.is_tensor(v) else v for k, v in batch.items()}
            n = len(batch["action"])
            loss += float(model.loss(batch)["loss"]) * n
            # The predicted chunk starts at the current frame; a training chunk may start earlier
            # (Diffusion Policy's starts at the oldest observation: action_start < 0).
            first = -int(getattr(model.config, "action_start", 0))
            chunk = model.predict_chunk(batch)[:, : batch["action"].shape[1] - first]
            span = slice(first, first + chunk.shape[1])
            valid = (~batch["action_is_pad"][:, span]).unsqueeze(-1).float()
            err += float(((chunk - batch["action"][:, span].float()).abs() * valid).sum()) / chunk.shape[-1]
            frames += float(valid.sum())
        return {"loss": loss / sum(len(b["action"]) for b in self.batches), "action_mae": err / max(frames, 1.0)}


def train_bc(config: BCTrainConfig, dataset: str | os.PathLike, out: str | os.PathLike, progress: bool = True) -> Path:
    """Train the policy on ``dataset`` into ``out`` (resumes from its checkpoints); returns model/."""
    dataset, out = Path(dataset), Path(out)
    store = EpisodeStore(dataset)
    # A policy given ``cameras: []`` reads no image features, and one that encodes pixels itself
    # (``pixels``: LeRobot's ACT / Diffusion) reads frames: neither needs a feature cache.
    cls = policy_class(str(config.policy["type"]))
    images = config.policy.get("cameras", None) != [] and not getattr(cls.config_class, "pixels", False)
    # Refuse a bad progress source or quality filter before any work (encoding a store takes minutes).
    if config.weights.active:
        store_progress(store, config.weights.source, config.weights.level)
    train_eps, val_eps = split_episodes(store.n_episodes, config.data.val_fraction, config.data.split_seed)
    if config.qualities is not None:
        labels = sorted({e.quality for e in store.episodes})
        unknown = sorted(set(config.qualities) - set(labels))
        if unknown:
            raise ConfigError(f"qualities {unknown} match no episode of {dataset}; its labels are {labels}")
        train_eps = [e for e in train_eps if store.episodes[e].quality in config.qualities]
        if not train_eps:
            raise ConfigError(f"no training episode has quality in {config.qualities}; lower data.val_fraction or add episodes")
    feature_key = cache_for_training(dataset, config.data, progress=progress)[0] if images else None
    overrides = {k: v for k, v in config.policy.items() if k != "type"}
    policy_config = cls.config_class.from_store(store, feature_key, episodes=train_eps, **overrides)
    weights = None
    summary: dict[str, Any] = {"mode": config.weights.mode}
    if config.weights.active:
        weights = weights_for_store(store, config.weights.source, policy_config.horizon, level=config.weights.level,
                                    kappa=config.weights.kappa, mode=config.weights.mode,
                                    min_final_progress=config.weights.min_final_progress)
        per_quality: dict[str, list[float]] = {}
        for e in train_eps:
            s, t = store.episode_range(e)
            per_quality.setdefault(store.episodes[e].quality, []).append(float(weights[s:t].mean()))
        summary.update(source=str(config.weights.source), kappa=config.weights.kappa,
                       min_final_progress=config.weights.min_final_progress, mean_weight={q: float(np.mean(v)) for q, v in per_quality.items()})
        if config.weights.min_final_progress is not None:
            kept: dict[str, list[int]] = {}
            for e in train_eps:
                s, t = store.episode_range(e)
                counts = kept.setdefault(store.episodes[e].quality, [0, 0])
                counts[0] += int(weights[s:t].any())
                counts[1] += 1
            summary["kept_episodes"] = {q: f"{k}/{n}" for q, (k, n) in kept.items()}
    out.mkdir(parents=True, exist_ok=True)
    write_atomic_text(out / "split.json", json.dumps({"dataset": str(dataset.resolve()), "train": train_eps, "val": val_eps,
                                                      "feature_key": feature_key}, indent=1) + "\n")
    write_atomic_text(out / "weights.json", json.dumps(summary, indent=1) + "\n")
    from .data import PolicyDataset

    data = PolicyDataset(store, policy_config, train_eps, weights=weights, frames_in_memory=config.frames_in_memory,
                         chunk_cache_mb=config.chunk_cache_mb)
    validate = PolicyValidator(PolicyDataset(store, policy_config, val_eps), config.data.val_clips) if val_eps else None
    run_config = {"policy": config.policy, "train": asdict(config.train), "data": asdict(config.data),
                  "weights": asdict(config.weights), "qualities": config.qualities, "dataset": str(dataset.resolve())}
    # fit builds the policy after seeding from train.seed, so the initial weights follow the seed.
    # Readout fields (how a trained policy is executed, not what it learns) may change on resume.
    free = [f"policy.{name}" for name in cls.config_class.readout_fields]
    return fit(lambda: make_policy(policy_config), data, config.train, out, validate=validate, run_config=run_config,
               resume_free=free, progress=progress)
