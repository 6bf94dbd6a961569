"""The one RewardModel API: every reward model (SARM, GRM, perceptual, baselines) implements it, and
every consumer (shaping, RA-BC, eval, deploy) takes any model through it.

- ``progress(batch) -> (B, T)`` in [0, 1]: offline, over whole clips or episodes.
- ``stream(n_envs) -> RewardStream``: online, one new frame per env per ``step``; old frames are
  never re-encoded (streams keep per-env buffers of cached features).
- ``loss(batch) -> {"loss": ..., ...}``: training; zero-shot models do not override it.
- ``save_pretrained(path)`` / ``from_pretrained(path)``: a folder with ``config.json`` and
  ``model.safetensors``. Never pickles: a checkpoint is data, loading it never runs code.

What training, evaluation and annotation need beyond that is declared here too, so a new model is
one folder plus its ``@register_reward_model`` line: its config's ``from_store`` (data-derived
fields from a store), ``training_samples`` (what ``loss`` takes), ``episode_batch`` (whole
episodes for ``progress``), ``levels``, ``stage_targets`` (for stage accuracy), ``training_notes``
and ``fit_store``, the fit step ``reward train`` calls (gradient descent by default; a model fitted
another way overrides it).

Models register by name (``@register_reward_model``) and are built from their config's ``type``
(``make_reward_model(config)``), so ``--reward.type=sarm`` works from the CLI and YAML.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..errors import RoborewardError
from ..pretrained import CONFIG_NAME, WEIGHTS_NAME, CheckpointError, Pretrained, Registry, TypedConfig

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "CheckpointError", "REWARD_MODELS", "RewardModel", "RewardModelConfig",
           "RewardStream", "make_reward_model", "register_reward_model", "reward_config_from_dict", "reward_model_class"]


@dataclass
class RewardModelConfig(TypedConfig):
    """Base of every reward model's config. Subclasses override ``type`` with their registered name
    and validate their own fields in ``__post_init__`` (calling ``super().__post_init__()``)."""

    kind: ClassVar[str] = "reward model"

    @classmethod
    def from_store(cls, store, feature_key: str, episodes=None, **overrides: Any) -> "RewardModelConfig":
        """The config with its data-derived fields filled from ``store`` (its feature cache
        ``feature_key`` and the training ``episodes``); ``overrides`` set the others."""
        raise RoborewardError(f"reward type {cls.type!r} cannot be built from a store (its config has no from_store)")


REGISTRY = Registry("reward model", "reward", builtins="roboreward.rewards")
REWARD_MODELS = REGISTRY.classes
"""Registered reward models: name -> class."""
register_reward_model = REGISTRY.register
reward_model_class = REGISTRY.get


def reward_config_from_dict(data: dict[str, Any], where: str = "reward") -> RewardModelConfig:
    """The typed config of the model named by ``data["type"]`` (YAML, CLI or config.json)."""
    return REGISTRY.config_from_dict(data, where)


def make_reward_model(config: RewardModelConfig | dict[str, Any]) -> "RewardModel":
    """Build the registered model named by ``config.type`` (a config object or a plain dict)."""
    return REGISTRY.make(config, "reward")


class RewardStream:
    """Online reward for ``n_envs`` parallel environments.

    ``step(observation, task)`` takes one new frame per env (cached features or raw frames, per
    the model) and returns progress (n_envs,); ``reset(i)`` forgets env i's history (call it when
    env i starts a new episode, before stepping it). ``step(observation, task, envs=ids)`` steps
    only the envs ``ids`` (observation rows and tasks in that order; returns (len(ids),)), leaving
    the others' histories untouched: a vector env that auto-resets one env feeds its first frame
    alone.
    """

    def __init__(self, n_envs: int):
        if not isinstance(n_envs, int) or n_envs < 1:
            raise RoborewardError(f"n_envs must be an int >= 1, got {n_envs!r}")
        self.n_envs = n_envs

    def _env_ids(self, i: int | Sequence[int] | None) -> list[int]:
        ids = list(range(self.n_envs)) if i is None else ([int(i)] if isinstance(i, int) else [int(j) for j in i])
        for j in ids:
            if not 0 <= j < self.n_envs:
                raise RoborewardError(f"env index {j} is out of range [0, {self.n_envs})")
        return ids

    def _tasks(self, task: str | Sequence[str], n: int | None = None) -> list[str]:
        n = self.n_envs if n is None else n
        tasks = [task] * n if isinstance(task, str) else list(task)
        if len(tasks) != n:
            raise RoborewardError(f"got {len(tasks)} tasks for {n} envs; pass one string or one per env")
        return tasks

    def reset(self, i: int | Sequence[int] | None = None) -> None:
        raise NotImplementedError

    def step(self, observation: dict[str, Any], task: str | Sequence[str],
             envs: Sequence[int] | None = None) -> torch.Tensor:
        raise NotImplementedError


class RewardModel(Pretrained, abstract=True):
    """Base of every reward model. Subclasses set ``name`` and ``config_class`` (checked when the
    subclass is defined) and implement ``progress`` and ``stream``; trainable ones also ``loss``.

    Optional methods that consumers look for (``roboreward.rewards.annotate``, ``roboreward.eval``):
    - ``stage_probs(batch, level) -> (B, T, K)``: stage probabilities, for stage accuracy;
    - ``episode_progress(store, episodes, level=None, reverse=False) -> list[(T_e,)]``: whole-episode
      progress for a model that does not read the store's feature cache through ``progress``.

    Pass ``abstract=True`` in the class statement for an intermediate base without a name.
    """

    registry: ClassVar[Registry] = REGISTRY
    config_base: ClassVar[type] = RewardModelConfig
    name: ClassVar[str]
    config_class: ClassVar[type[RewardModelConfig]]
    trains_on_feature_copies: ClassVar[bool] = False
    """Whether its training samples read photometric feature copies (``data.augment_copies``,
    ``config.feature_copies``); ``reward train`` refuses the copies for a model that would ignore them."""

    # ------------------------------------------------------------------ the API
    def progress(self, batch: dict[str, Any]) -> torch.Tensor:
        """(B, T) progress in [0, 1] for every frame of whole clips or episodes."""
        raise NotImplementedError

    def stream(self, n_envs: int) -> RewardStream:
        """An online reward for ``n_envs`` environments."""
        raise NotImplementedError

    def loss(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Training losses; ``"loss"`` is the one to minimise, the other keys are for logging."""
        raise RoborewardError(f"reward model {self.name!r} is zero-shot; it has no training loss")

    # ------------------------------------------------------------------ what training, eval and annotate need
    @property
    def levels(self) -> list[str | None]:
        """Annotation levels the model reads progress at, readout level first ([None]: one output)."""
        levels = getattr(self.config, "levels", None)
        return list(levels) if levels else [None]

    def adapt(self, store, episode: int, out, steps: int = 150, lr: float = 1e-4, progress: bool = True,
              keep_state: bool = False):
        """Fine-tune to the task of one expert demonstration ``episode`` of ``store`` and write the
        adapted model to ``out`` (returned); ``keep_state`` keeps the joint state as an input (a
        model may drop it by default, GRM does). Models that cannot adapt from one demo say so."""
        raise RoborewardError(f"reward model {self.name!r} cannot adapt from one demonstration (models that can: grm)")

    @classmethod
    def trained_by_gradient(cls) -> bool:
        """Whether the model learns by minimising ``loss`` (then ``reward train`` validates held-out loss)."""
        return cls.loss is not RewardModel.loss

    @classmethod
    def training_samples(cls, store, config: RewardModelConfig, episodes: list[int]):
        """A torch Dataset of training samples that ``loss`` takes once collated, from ``episodes``."""
        raise RoborewardError(f"reward model {cls.name!r} is not trained by gradient descent (no training_samples)")

    @classmethod
    def episode_batch(cls, store, config: RewardModelConfig, episodes: list[int]) -> dict:
        """Whole ``episodes`` as one ``progress`` batch (with ``lengths``). Default: cached features
        (``roboreward.rewards.features.episode_batch``) for a config with a ``feature_key``."""
        if getattr(config, "feature_key", None) is None:
            raise RoborewardError(
                f"reward model {cls.name!r} has no config.feature_key to read cached features; "
                "override episode_batch (or episode_progress) to read the store its own way"
            )
        from .features import episode_batch

        return episode_batch(store, config, episodes)

    def stage_targets(self, store, episodes: list[int], level: str | None):
        """Per-frame stage targets (``targets.StageTargets``, global frame index) in this model's own
        stages, for stage accuracy; None for a model without stages or data it cannot label."""
        return None

    @classmethod
    def training_notes(cls, store, overrides: dict[str, Any], episodes: list[int]) -> list[str]:
        """Notes printed before training: what the data makes the model learn that a user may not expect."""
        return []

    @classmethod
    def fit_store(cls, config: RewardModelConfig, store, train_episodes: list[int], train, out, *,
                  validate=None, run_config=None, resume_free=(), progress: bool = True):
        """Train a model with ``config`` on ``train_episodes`` of ``store`` into ``out`` and return
        ``<out>/model``. Default: gradient descent on ``training_samples`` with the shared loop
        (``roboreward.training.fit``: checkpoints, resume, validation through ``validate``). A model
        fitted otherwise (statistics, a single demo) overrides this; ``train`` is a TrainConfig."""
        from ..training import fit

        data = cls.training_samples(store, config, train_episodes)
        return fit(lambda: make_reward_model(config), data, train, out, validate=validate,
                   run_config=run_config, resume_free=resume_free, progress=progress)
