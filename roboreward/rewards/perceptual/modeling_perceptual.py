"""Perceptual rewards (Sermanet, Xu and Levine 2016, "Unsupervised perceptual rewards for imitation
learning"), over this project's cached frozen-encoder features (mid-level ones: a feature cache made
with ``data.encoder_layer``, e.g. ``blocks.5`` of efficientnet_lite0).

Fit (no gradient descent; ``reward train`` calls ``fit_store``), from at most ``demos`` expert
demonstrations of the training split:
1. every frame's features (cameras concatenated) are standardised with the demos' mean and std;
2. step discovery: each demo is cut into ``n_steps`` contiguous segments that minimise the summed
   within-segment variance (exact, by dynamic programming over prefix sums), the same n for all;
3. per step, the ``n_features`` features that best separate its frames from the other steps' frames
   (|mean in - mean out| / (std in + std out));
4. per step, a diagonal Gaussian over those features (mean, std of the step's frames).
Reading a frame: step score s_k = exp(-mean_j z_kj^2 / 2) with z the frame's standardised distance to
step k's Gaussian; progress = sum_k w_k * k / (n - 1) with w = softmax(log s / temperature) (the
steps' soft assignment), so the first step reads 0 and the last 1. With ``smooth_frames`` > 1 (a readout
field) progress is then a causal moving average of those readings (``features.smooth_sequence``); streams
keep each env's last value. ``smooth_frames: 1`` (the default) reads each frame alone, as published. With
``readout_gate`` > 0 the result goes through the change gate SARM and GRM have (still frames keep their
progress). The fit also reports how the discovered steps line up with the annotated subtasks.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from ...config import ConfigError
from ...data.cache import cached_features
from ...data.store import EpisodeStore
from ...errors import RoborewardError
from ..base import RewardModel, register_reward_model
from ..features import FeatureRewardConfig, FrameStream, batch_views, check_gate, check_smooth, readout_sequence

FIT_REPORT = "fit_report.json"


@dataclass
class PerceptualConfig(FeatureRewardConfig):
    """Inputs: ``FeatureRewardConfig`` (tasks are recorded, not used: the fit is per dataset)."""

    type: str = "perceptual"
    """Registered name; always ``perceptual``."""
    n_steps: int = 4
    """Steps discovered in every demonstration (the same n for each), >= 2."""
    n_features: int = 32
    """Most discriminative features kept per step, >= 1 (at most the feature size)."""
    demos: int = 10
    """Most expert demonstrations of the training split the fit uses (quality ``expert`` first, else
    successful ones), >= 1; ``reward train`` draws them with its training seed (``--seed``)."""
    min_std: float = 0.05
    """Floor of a step Gaussian's std (in standardised units), so a feature that is constant over a
    step in the few demos cannot make the score infinitely sharp."""
    temperature: float = 1.0
    """Of the steps' soft assignment, w = softmax(log s / temperature): 1 = the Gaussians' own
    scores; higher blends neighbouring steps more (a smoother progress curve that leans less on any
    one step's features). A readout field: ``reward eval --readout temperature=2`` re-reads a fit."""

    smooth_frames: float = 1.0
    """Time constant, in frames, of a causal exponential moving average of the readings (each frame
    moves progress 1 / smooth_frames of the way to its own reading), in [1, 1000]; 1 = none (each
    frame read alone, as published). A frame's step scores are noisy (features of one frame, a few
    demos), so an average over a few frames orders a success's progress better, at the cost of
    lagging that many frames behind the scene. A readout field (``--readout smooth_frames=10``)."""

    readout_gate: float = 0.0
    """The change gate SARM and GRM have (``features.gate_sequence``), after the smoothing: progress
    moves towards the (smoothed) reading only as far as the scene changed since the previous frame,
    so a still scene keeps its progress however the average would have moved on; 0 = off."""
    gate_floor: float = 0.0
    """The change a still scene shows on your camera (counts as none); 0 in the sim."""

    readout_fields: ClassVar[tuple[str, ...]] = ("temperature", "smooth_frames", "readout_gate", "gate_floor")

    def __post_init__(self):
        super().__post_init__()
        for name, low in (("n_steps", 2), ("n_features", 1), ("demos", 1)):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < low:
                raise ConfigError(f"{name} must be an int >= {low}, got {getattr(self, name)!r}")
        if not self.min_std > 0:
            raise ConfigError(f"min_std must be > 0, got {self.min_std}")
        if not (isinstance(self.temperature, (int, float)) and 0 < self.temperature <= 100):
            raise ConfigError(f"temperature must be a number in (0, 100], got {self.temperature!r}")
        check_smooth(self)
        check_gate(self)


def segment_demo(x: np.ndarray, n_steps: int) -> list[int]:
    """Start frames (n_steps,) of the split of ``x`` (T, D) into ``n_steps`` contiguous non-empty
    segments with the least total within-segment sum of squares (exact dynamic programme)."""
    t = len(x)
    if t < n_steps:
        raise RoborewardError(f"a demonstration of {t} frames cannot be cut into {n_steps} steps; lower n_steps")
    x = np.asarray(x, np.float64)
    c1 = np.concatenate([np.zeros((1, x.shape[1])), np.cumsum(x, 0)])
    c2 = np.concatenate([[0.0], np.cumsum((x * x).sum(1))])

    def cost(i: np.ndarray, j: int) -> np.ndarray:  # segments [i, j) for an array of starts i
        n = (j - i).astype(np.float64)
        s = c1[j] - c1[i]
        return (c2[j] - c2[i]) - (s * s).sum(-1) / n

    best = np.full((n_steps + 1, t + 1), np.inf)
    arg = np.zeros((n_steps + 1, t + 1), np.int64)
    best[0, 0] = 0.0
    for k in range(1, n_steps + 1):
        for j in range(k, t - (n_steps - k) + 1):
            starts = np.arange(k - 1, j)
            values = best[k - 1, starts] + cost(starts, j)
            m = int(np.argmin(values))
            best[k, j], arg[k, j] = values[m], starts[m]
    bounds, j = [], t
    for k in range(n_steps, 0, -1):
        j = int(arg[k, j])
        bounds.append(j)
    return bounds[::-1]


def discriminative_features(x: np.ndarray, steps: np.ndarray, n_steps: int, n_features: int) -> np.ndarray:
    """(n_steps, n_features) indices: per step, the features of ``x`` (N, D) whose values on the step's
    frames (``steps`` (N,) == k) differ most from the other frames', |mu_in - mu_out| / (sd_in + sd_out)."""
    out = []
    for k in range(n_steps):
        inside, outside = x[steps == k], x[steps != k]
        score = np.abs(inside.mean(0) - outside.mean(0)) / (inside.std(0) + outside.std(0) + 1e-6)
        out.append(np.argsort(-score, kind="stable")[:n_features])
    return np.stack(out)


@register_reward_model
class Perceptual(RewardModel):
    name = "perceptual"
    config_class = PerceptualConfig

    def __init__(self, config: PerceptualConfig):
        super().__init__(config)
        config.check_ready()
        total = config.feature_dim * len(config.cameras)
        if config.n_features > total:
            raise ConfigError(f"n_features ({config.n_features}) exceeds the {total} features of the cameras")
        n, m = config.n_steps, config.n_features
        # Fitted statistics: buffers, so they are saved with the model (safetensors) and move with it.
        self.register_buffer("feature_mean", torch.zeros(total))
        self.register_buffer("feature_std", torch.ones(total))
        self.register_buffer("selected", torch.zeros(n, m, dtype=torch.long))
        self.register_buffer("step_mean", torch.zeros(n, m))
        self.register_buffer("step_std", torch.ones(n, m))
        self.register_buffer("step_value", torch.linspace(0.0, 1.0, n))

    # ------------------------------------------------------------------ reading frames
    def _scores(self, views: torch.Tensor) -> torch.Tensor:
        """(..., n_steps) step scores of features ``views`` (..., V, D), cameras concatenated."""
        x = views.flatten(-2)
        if x.shape[-1] != self.feature_mean.shape[0]:
            raise RoborewardError(f"features have {x.shape[-1]} values per frame, the model was fitted on {self.feature_mean.shape[0]}")
        z = ((x - self.feature_mean) / self.feature_std)[..., self.selected]  # (..., n, m)
        d = (z - self.step_mean) / self.step_std
        return torch.exp(-0.5 * d.pow(2).mean(-1))

    def step_scores(self, batch: dict[str, Any]) -> torch.Tensor:
        """(B, T, n_steps) score in (0, 1] of every frame under every step's Gaussian."""
        return self._scores(batch_views(batch, self.config, self.device, who="perceptual"))

    @torch.no_grad()
    def progress(self, batch: dict[str, Any]) -> torch.Tensor:
        cfg = self.config
        views = batch_views(batch, cfg, self.device, who="perceptual")  # read once: the scores and the gate
        s = self._scores(views)
        # log-domain soft assignment: a frame far from every step still gets a defined weight.
        w = torch.softmax(torch.log(s.clamp_min(1e-30)) / cfg.temperature, dim=-1)
        return readout_sequence((w * self.step_value).sum(-1).clamp(0.0, 1.0), views, cfg)

    def stream(self, n_envs: int, encoder: Any = None) -> FrameStream:
        cfg = self.config
        return FrameStream(self, n_envs, encoder, smooth_frames=cfg.smooth_frames, gate=cfg.readout_gate, gate_floor=cfg.gate_floor)

    # ------------------------------------------------------------------ the fit
    @classmethod
    def demo_episodes(cls, store: EpisodeStore, episodes: Sequence[int], most: int, seed: int | None = None) -> list[int]:
        """The demos of the fit: the first ``most`` experts among ``episodes``, or with ``seed`` a
        random ``most`` of them (in store order), so training seeds measure the spread over demos."""
        experts = [e for e in episodes if store.episodes[e].quality == "expert" and store.episodes[e].success is not False]
        chosen = experts or [e for e in episodes if store.episodes[e].success]
        if not chosen:
            raise RoborewardError(
                f"{store.path}: no expert or successful episode among the {len(episodes)} training episodes; the perceptual "
                "reward fits from expert demonstrations (Episode(quality='expert') or success=True)"
            )
        if seed is None or len(chosen) <= most:
            return chosen[:most]
        picked = np.random.default_rng(seed).choice(len(chosen), most, replace=False)
        return [chosen[i] for i in sorted(picked)]

    def fit(self, store: EpisodeStore, episodes: Sequence[int], seed: int | None = None) -> dict[str, Any]:
        """Fit the statistics from the demos among ``episodes`` (``seed``: which ones, see
        ``demo_episodes``); returns the fit report (demos, steps found per demo, boundary error vs
        the sparse annotations where the step counts match)."""
        cfg = self.config
        demos = self.demo_episodes(store, episodes, cfg.demos, seed)
        feats = cached_features(store, cfg.feature_key)
        xs = []
        for e in demos:
            start, end = store.episode_range(e)
            xs.append(np.concatenate([np.asarray(feats[cam][start:end], np.float32) for cam in cfg.cameras], 1))
        every = np.concatenate(xs)
        mean, std = every.mean(0), every.std(0) + 1e-6
        zs = [(x - mean) / std for x in xs]
        bounds = [segment_demo(z, cfg.n_steps) for z in zs]
        steps = np.concatenate([np.searchsorted(b, np.arange(len(z)), side="right") - 1 for z, b in zip(zs, bounds)])
        z_all = np.concatenate(zs)
        selected = discriminative_features(z_all, steps, cfg.n_steps, cfg.n_features)
        step_mean = np.stack([z_all[steps == k][:, selected[k]].mean(0) for k in range(cfg.n_steps)])
        step_std = np.stack([np.maximum(z_all[steps == k][:, selected[k]].std(0), cfg.min_std) for k in range(cfg.n_steps)])
        for name, value in (("feature_mean", mean), ("feature_std", std), ("step_mean", step_mean), ("step_std", step_std)):
            getattr(self, name).copy_(torch.from_numpy(np.asarray(value, np.float32)))
        self.selected.copy_(torch.from_numpy(selected))
        return {"demos": demos, "step_starts": {int(e): [int(v) for v in b] for e, b in zip(demos, bounds)},
                **boundary_error(store, demos, bounds)}

    @classmethod
    def fit_store(cls, config: PerceptualConfig, store, train_episodes: list[int], train, out, *,
                  validate=None, run_config=None, resume_free=(), progress: bool = True) -> Path:
        """The fit step of ``reward train``: statistics of the demos, written to ``<out>/model``
        (atomically) with ``<out>/fit_report.json``. Re-running it refits (it takes seconds)."""
        from ...training import save_dir_atomic, write_atomic_text

        model = cls(config)
        report = model.fit(store, train_episodes, seed=train.seed)
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        save_dir_atomic(out / "model", model.save_pretrained)
        write_atomic_text(out / FIT_REPORT, json.dumps(report, indent=1) + "\n")
        if progress:
            err = report.get("boundary_error_frames")
            print(f"perceptual: fitted {config.n_steps} steps from {len(report['demos'])} demos"
                  + (f"; discovered step starts are {err:.1f} frames from the annotated subtasks on average" if err is not None else ""))
        return out / "model"


def boundary_error(store: EpisodeStore, demos: list[int], bounds: list[list[int]]) -> dict[str, Any]:
    """Mean |discovered step start - annotated subtask start| in frames over the demos' sparse
    annotations (the first start, 0, is left out): step k against subtask k where a demo has as many
    subtasks as steps (``boundary_match: one-to-one``), else each annotated start against the
    nearest discovered one (``nearest``: more steps than subtasks split some subtasks, and the
    error says whether every subtask start has a step start near it)."""
    errors, matches = [], set()
    for e, b in zip(demos, bounds):
        subs = sorted(store.episodes[e].annotations.get("sparse") or [], key=lambda s: s.start)
        if len(subs) < 2:
            continue
        if len(subs) == len(b):
            errors += [abs(int(x) - int(s.start)) for x, s in zip(b[1:], subs[1:])]
            matches.add("one-to-one")
        else:
            starts = np.asarray(b[1:])  # n_steps >= 2: at least one
            errors += [int(np.abs(starts - int(s.start)).min()) for s in subs[1:]]
            matches.add("nearest")
    return {"boundary_error_frames": float(np.mean(errors)) if errors else None, "boundaries_compared": len(errors),
            "boundary_match": "/".join(sorted(matches)) or None}
