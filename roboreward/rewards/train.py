"""Train a reward model on a zarr store: ``train_reward(config, dataset, out)``.

Steps: make sure the store's feature cache for the configured encoder is complete (encoding only
the frames not yet cached), split episodes into train/val (recorded in ``<out>/split.json`` so eval
uses the same held-out episodes), build the model config from the store and the training split,
build the model through the registry and train it with the shared loop (``roboreward.training``).
Validation reports the loss terms on held-out clips (incl. stage accuracy), and, where the store has
``gt.progress``, the per-episode Pearson correlation and MAE of predicted progress.

Everything model-specific comes from the RewardModel API (``roboreward.rewards.base``): the
config's ``from_store``, the model's ``training_notes``, ``training_samples``, ``episode_batch`` and
``fit_store`` (the fit step: gradient descent unless the model overrides it).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import default_collate

from ..config import ConfigError, check_fields
from ..data.store import EpisodeStore
from ..encoders.image import DEFAULT_IMAGE_SIZE
from ..errors import RoborewardError
from ..training import TrainConfig, check_resume_config, process_state, write_atomic_text
from .base import RewardModel, RewardModelConfig, reward_config_from_dict, reward_model_class

GT_PROGRESS = "gt.progress"
SPLIT_FILE = "split.json"


@dataclass
class RewardDataConfig:
    encoder: str = "efficientnet_lite0"
    """Frozen image encoder (registered name or timm architecture) whose cached features the model reads."""
    encoder_weights: str | None = None
    """Local weights file for the encoder; None = its offline default weights."""
    image_size: int = DEFAULT_IMAGE_SIZE
    """Frames are resized to this square size before encoding."""
    encoder_layer: str | None = None
    """None: the encoder's final pooled features; else a backbone module (e.g. ``blocks.3``) whose pooled output is cached."""
    val_fraction: float = 0.2
    """Fraction of episodes held out for validation (split by episode, never by frame); 0 = none."""
    split_seed: int = 0
    """Seed of the train/val episode split (independent of the training seed)."""
    val_clips: int = 512
    """Held-out clips (evenly spaced over the val episodes) for val loss and stage accuracy."""
    encode_batch_size: int = 64
    """Frames per encoder call while filling the feature cache."""
    augment_copies: int = 0
    """Photometric augmentation: cache the training store this many more times, each episode under
    its own random change of brightness, contrast, colour cast and gamma (``augment``), and train on
    clips drawn from the original cache or a copy (``roboreward.encoders.augment``). Each copy costs
    one more encoding pass of the store. 0 = none."""
    augment: dict[str, Any] = field(default_factory=dict)
    """Ranges of the photometric changes (fields of ``PhotometricAugment``: brightness, contrast,
    channel_gain, gamma as [min, max], seed); empty = its defaults."""

    def __post_init__(self):
        from ..encoders.augment import augment_from_dict

        if not isinstance(self.augment_copies, int) or isinstance(self.augment_copies, bool) or not 0 <= self.augment_copies <= 16:
            raise ConfigError(f"augment_copies must be an int in [0, 16], got {self.augment_copies!r}")
        if not isinstance(self.augment, dict):
            raise ConfigError(f"augment must be a mapping of ranges, got {self.augment!r}")
        augment_from_dict(self.augment)
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        for name in ("image_size", "val_clips", "encode_batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"{name} must be an int >= 1, got {getattr(self, name)!r}")


@dataclass
class RewardTrainConfig:
    model: dict[str, Any] = field(default_factory=lambda: {"type": "sarm"})
    """Reward model overrides: ``type`` (a registered model, e.g. ``sarm``) plus any field of its
    config except those read from the data (feature_key, feature_dim, tasks, stages, priors)."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """The shared training loop's settings."""
    data: RewardDataConfig = field(default_factory=RewardDataConfig)
    """Encoder of the feature cache and the episode split."""

    def __post_init__(self):
        if not isinstance(self.model, dict) or not self.model.get("type"):
            raise ConfigError("model needs a `type` naming a reward model (e.g. model: {type: sarm})")
        # Unknown keys, wrong types and bad values fail now, in one line, not after minutes of
        # feature caching; from_store then gets the values converted to their declared types.
        config_class = reward_model_class(str(self.model["type"])).config_class
        self.model = check_fields(config_class, self.model, "model", config_class.data_derived)
        probe = dict(self.model)
        if probe.get("state_key") and "state_dim" not in probe:
            probe["state_dim"] = 1  # from_store reads the real size from the store
        reward_config_from_dict(probe, "model")


def _pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


class RewardValidator:
    """Validation callback: loss terms on a fixed set of held-out clips, and progress vs ground
    truth on whole held-out episodes. Inputs are read once and kept in memory."""

    def __init__(self, store: EpisodeStore, model_config: RewardModelConfig, model_cls: type[RewardModel],
                 episodes: list[int], n_clips: int):
        dataset = model_cls.training_samples(store, model_config, episodes)
        idx = np.unique(np.linspace(0, len(dataset) - 1, min(n_clips, len(dataset))).round().astype(int))
        self.clips = [default_collate([dataset[int(i)] for i in idx[s : s + 128]]) for s in range(0, len(idx), 128)]
        self.sizes = [len(idx[s : s + 128]) for s in range(0, len(idx), 128)]
        self.episodes = episodes
        self.batch = model_cls.episode_batch(store, model_config, episodes)
        self.truth = None
        if GT_PROGRESS in store.keys("target"):
            arr = store.array(GT_PROGRESS)
            self.truth = [np.asarray(arr[slice(*store.episode_range(e))], dtype=np.float32).reshape(-1) for e in episodes]

    def __call__(self, model: RewardModel) -> dict[str, float]:
        sums: dict[str, float] = {}
        for batch, n in zip(self.clips, self.sizes):
            for k, v in model.loss(batch).items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) * n
        metrics = {k: v / sum(self.sizes) for k, v in sums.items()}
        if self.truth is not None:
            pred = model.progress(self.batch).float().cpu().numpy()
            rs, maes = [], []
            for row, truth in enumerate(self.truth):
                p = pred[row, : len(truth)]
                maes.append(float(np.abs(p - truth).mean()))
                r = _pearson(p, truth)
                if r is not None:
                    rs.append(r)
            metrics["progress_mae"] = float(np.mean(maes))
            if rs:
                metrics["progress_r"] = float(np.mean(rs))
        return metrics


def cache_for_training(dataset: Path, data: RewardDataConfig, progress: bool = True) -> tuple[str, list[str]]:
    """The feature-cache key of ``data``'s encoder and the keys of its ``augment_copies``
    photometric copies, with every frame of ``dataset`` cached in each (resumable). Under
    ``accelerate launch`` the main process encodes while the others wait."""
    from ..data.cache import cache_embeddings, ensure_features
    from ..encoders import make_image_encoder
    from ..encoders.augment import augment_from_dict

    state = process_state()
    encoder = make_image_encoder(data.encoder, data.encoder_weights, data.image_size, data.encoder_layer)
    augment = augment_from_dict(data.augment)
    copies = [augment.cache_key(encoder.cache_key, c) for c in range(1, data.augment_copies + 1)]
    with state.main_process_first():
        if state.is_main_process:
            encoder = encoder.to(state.device)
            ensure_features(dataset, encoder.cache_key, encoder, data.encode_batch_size, progress)
            for copy, key in enumerate(copies, start=1):  # a complete copy returns at once; a partial one resumes
                cache_embeddings(dataset, encoder, key, batch_size=data.encode_batch_size, progress=progress,
                                 encoder_info=encoder.info, transform=augment.transform(copy),
                                 transform_info=augment.info(copy, encoder.cache_key))
    return encoder.cache_key, copies


def _read_split(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def train_reward(config: RewardTrainConfig, dataset: str | os.PathLike, out: str | os.PathLike,
                 progress: bool = True) -> Path:
    """Train the reward model ``config.model`` on the store ``dataset`` into ``out``; resumes when
    ``out`` holds checkpoints of the same config. Returns the final model folder ``<out>/model``."""
    dataset, out = Path(dataset), Path(out)
    store = EpisodeStore(dataset)
    model_type = str(config.model["type"])
    model_cls = reward_model_class(model_type)
    run_config = {**asdict(config), "dataset_episodes": store.n_episodes}
    # Readout fields change how outputs are read, not what is learned: a run resumes (or, finished,
    # rewrites model/) with new ones instead of refusing them as a different config.
    free = [f"model.{name}" for name in model_cls.config_class.readout_fields]
    # Refuse a mismatched resume, or copies the model would not read, before minutes of feature caching.
    check_resume_config(out, run_config, free)
    if config.data.augment_copies and not model_cls.trains_on_feature_copies:
        raise ConfigError(f"data.augment_copies: reward model {model_type!r} does not train on photometric feature "
                          "copies (sarm, grm and the frame baselines do); set data.augment_copies: 0")
    from ..data.sampler import split_episodes

    train_eps, val_eps = split_episodes(store.n_episodes, config.data.val_fraction, config.data.split_seed)
    if process_state().is_main_process:
        for note in model_cls.training_notes(store, config.model, train_eps):
            print(note)

    feature_key, copies = cache_for_training(dataset, config.data, progress=progress)
    store = EpisodeStore(dataset)  # re-open: the cache group is new
    split = {"train": train_eps, "val": val_eps, "val_fraction": config.data.val_fraction,
             "split_seed": config.data.split_seed, "n_episodes": store.n_episodes, "dataset": str(dataset.resolve()),
             "feature_key": feature_key}
    split_path = out / SPLIT_FILE
    old = _read_split(split_path)
    if old is not None and (old.get("train"), old.get("val")) != (train_eps, val_eps):
        raise RoborewardError(f"{split_path} records a different episode split; use a new output folder")
    if process_state().is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        write_atomic_text(split_path, json.dumps(split, indent=1) + "\n")

    model_config = model_cls.config_class.from_store(store, feature_key, episodes=train_eps, **config.model)
    if copies:
        model_config = replace(model_config, feature_copies=copies)
    # Validation reads the frames as they are (the original cache), as evaluation does.
    validate = (RewardValidator(store, replace(model_config, feature_copies=[]) if copies else model_config,
                                model_cls, val_eps, config.data.val_clips)
                if val_eps and model_cls.trained_by_gradient() else None)
    # The default fit builds the model after seeding from train.seed, so the initial weights follow the seed.
    return model_cls.fit_store(model_config, store, train_eps, config.train, out, validate=validate,
                               run_config=run_config, resume_free=free, progress=progress)


def load_split(run: str | os.PathLike) -> tuple[list[int], list[int]]:
    """(train, val) episode ids recorded by ``train_reward`` in ``<run>/split.json``."""
    path = Path(run) / SPLIT_FILE
    data = _read_split(path)
    if data is None:
        raise RoborewardError(f"{path}: missing or unreadable; pass the output folder of `roboreward reward train`")
    return list(data["train"]), list(data["val"])


__all__ = ["RewardDataConfig", "RewardTrainConfig", "RewardValidator", "cache_for_training", "load_split", "train_reward"]
