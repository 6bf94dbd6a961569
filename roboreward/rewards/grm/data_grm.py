"""GRM's labels and training pairs (Robo-Dopamine's conventions, ../FACTS in the docs).

- State progress Phi: equal mass per sparse subtask, Phi = (stage + tau) / K with the shared
  annotation targets (``roboreward.rewards.targets``); without annotations Phi = t / (T - 1).
- Hop between a before state p and an after state q: forward (q >= p) H = (q - p) / (1 - p), the
  share of the remaining distance covered; backward H = (q - p) / p, the share of the covered
  distance lost; H in [-1, 1]. ``chain`` inverts it: Phi_q = Phi_p + H (1 - Phi_p) or Phi_p (1 + H).
- Training pairs: per episode ``pairs_per_episode`` random (before, after) frames, balanced over
  hop bins x gap bins (each non-empty cell equally likely), plus ``zero_hop_share`` pairs of one
  frame with itself. Each pair carries reference start and goal frames of its task. With
  ``anchor_share`` > 0 that share of pairs instead hops from the reference start or goal itself to
  any training frame (label: the hop from the reference's Phi, 0 or 1, to the frame's).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ...data.cache import cached_features
from ...data.store import EpisodeStore
from ..targets import StageSet, annotation_targets, stage_priors
from .configuration_grm import GRMConfig

ROLES = ("start", "goal", "before", "after")


def hop_label(p, q) -> np.ndarray:
    """Hop from progress ``p`` to ``q`` (arrays in [0, 1]) in [-1, 1]."""
    p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
    forward = np.where(p < 1.0, (q - p) / np.maximum(1.0 - p, 1e-12), 0.0)
    backward = np.where(p > 0.0, (q - p) / np.maximum(p, 1e-12), 0.0)
    return np.clip(np.where(q >= p, forward, backward), -1.0, 1.0)


def chain(phi: torch.Tensor, hop: torch.Tensor) -> torch.Tensor:
    """Progress after a hop from progress ``phi`` (the inverse of ``hop_label``)."""
    return torch.where(hop >= 0, phi + hop * (1 - phi), phi * (1 + hop)).clamp(0.0, 1.0)


def bin_centres(n: int) -> np.ndarray:
    return np.linspace(-1.0, 1.0, n)


def two_hot(hop: torch.Tensor, n: int) -> torch.Tensor:
    """(B, n) soft targets whose expectation over the bin centres is exactly ``hop`` (B,)."""
    pos = (hop.clamp(-1, 1) + 1) / 2 * (n - 1)
    low = pos.floor().long().clamp(max=n - 2)
    frac = pos - low
    out = torch.zeros(hop.shape[0], n, device=hop.device)
    out.scatter_(1, low[:, None], (1 - frac)[:, None])
    out.scatter_add_(1, (low + 1)[:, None], frac[:, None])
    return out


def state_progress(store: EpisodeStore, episodes: Sequence[int]) -> np.ndarray:
    """(n_frames,) Phi of every frame of ``episodes`` (NaN elsewhere): equal mass per sparse subtask."""
    eps = list(episodes)
    stages = stage_priors(store, list(range(store.n_episodes)), "sparse")
    targets = annotation_targets(store, eps, "sparse", {"sparse": StageSet("sparse", stages.names, stages.priors)})["sparse"]
    phi = (targets.stage + targets.tau) / len(stages.names)
    return np.where(targets.stage >= 0, phi, np.nan).astype(np.float32)


class StoreFrames:
    """Every frame's cached features (per camera) and state of a store, read into memory once:
    the cache ``feature_key`` (copy 0) and each of ``feature_copies`` (copies 1, 2, ...)."""

    def __init__(self, store: EpisodeStore, config: GRMConfig):
        self.cameras, self.state_key = list(config.cameras), config.state_key
        self.feats = []
        for key in [config.feature_key, *config.feature_copies]:
            feats = cached_features(store, key)
            self.feats.append({cam: np.asarray(feats[cam][: store.n_frames]) for cam in config.cameras})
        self.state = (np.asarray(store.array(config.state_key)[: store.n_frames], np.float32).reshape(store.n_frames, -1)
                      if config.state_key else None)

    @property
    def copies(self) -> int:
        """How many caches there are to read a frame from (1 + the photometric copies)."""
        return len(self.feats)

    def item(self, frame: int, role: str, copy: int = 0) -> dict:
        out = {f"{role}.features.{cam}": torch.from_numpy(self.feats[copy][cam][frame].astype(np.float32))
               for cam in self.cameras}
        if self.state is not None:
            out[f"{role}.state"] = torch.from_numpy(self.state[frame])
        return out


def reference_frames(store: EpisodeStore, episodes: Sequence[int], tasks: Sequence[str]) -> dict[str, tuple[list[int], list[int]]]:
    """Per task: (start frames, goal frames) of its episodes among ``episodes``: every episode's
    first frame, and the last frame of each successful one (of every one where none succeeded)."""
    out = {}
    for task in tasks:
        eps = [e for e in episodes if store.episodes[e].task == task]
        if not eps:
            continue
        good = [e for e in eps if store.episodes[e].success] or eps
        out[task] = ([store.episode_range(e)[0] for e in eps], [store.episode_range(e)[1] - 1 for e in good])
    return out


class GRMPairs(Dataset):
    """Balanced (before, after) training pairs of ``episodes`` with reference frames and hop labels.
    Item ``i`` is drawn from a generator seeded by ``(seed, i)``, so a sample is the same every time
    it is read (resumable, deterministic validation)."""

    def __init__(self, store: EpisodeStore, config: GRMConfig, episodes: Sequence[int], seed: int = 0):
        config.check_ready()
        self.config, self.seed = config, seed
        self.episodes = [int(e) for e in episodes]
        self.frames = StoreFrames(store, config)
        self.phi = state_progress(store, self.episodes)
        self.refs = reference_frames(store, self.episodes, config.tasks)
        self.task_of = {e: store.episodes[e].task for e in self.episodes}
        rng = np.random.default_rng(seed)
        before, after, owner = [], [], []
        for e in self.episodes:
            start, end = store.episode_range(e)
            ij = rng.integers(start, end, size=(config.pairs_per_episode, 2))
            before.append(ij[:, 0])
            after.append(ij[:, 1])
            owner.append(np.full(len(ij), e))
        self.before, self.after, self.owner = np.concatenate(before), np.concatenate(after), np.concatenate(owner)
        self.starts = {e: store.episode_range(e)[0] for e in self.episodes}
        lengths = np.array([store.episodes[e].length for e in self.owner], np.float64)
        hop = hop_label(self.phi[self.before], self.phi[self.after])
        hop_bin = np.rint((hop + 1) / 2 * (config.hop_bins - 1)).astype(np.int64)
        gap_bin = np.minimum((np.abs(self.after - self.before) / lengths * config.gap_bins).astype(np.int64), config.gap_bins - 1)
        cell = hop_bin * config.gap_bins + gap_bin
        order = np.argsort(cell, kind="stable")
        keys, first = np.unique(cell[order], return_index=True)
        self.cells = np.split(order, first[1:])
        self.all_frames = np.concatenate([np.arange(*store.episode_range(e)) for e in self.episodes])
        self.frame_owner = np.concatenate([np.full(store.episodes[e].length, e) for e in self.episodes])

    def __len__(self) -> int:
        return len(self.before)

    def __getitem__(self, i: int) -> dict:
        cfg = self.config
        rng = np.random.default_rng([self.seed, int(i)])
        anchored = cfg.anchor_share > 0 and rng.random() < cfg.anchor_share  # no draw at 0: old samples unchanged
        if anchored or rng.random() < cfg.zero_hop_share:
            # One training frame: a zero hop, or the after state of an anchored pair (its before state,
            # a reference frame, is set below once the references are drawn).
            k = int(rng.integers(len(self.all_frames)))
            b = a = int(self.all_frames[k])
            e = int(self.frame_owner[k])
            to_goal = anchored and bool(rng.random() < 0.5)
        else:
            cell = self.cells[int(rng.integers(len(self.cells)))]
            j = int(cell[int(rng.integers(len(cell)))])
            b, a, e = int(self.before[j]), int(self.after[j]), int(self.owner[j])
        task = self.task_of[e]
        starts, goals = self.refs[task]
        start = int(starts[rng.integers(len(starts))]) if rng.random() < cfg.ref_swap_prob else self.starts[e]
        goal = int(goals[rng.integers(len(goals))])
        if anchored:
            b = goal if to_goal else start
        item: dict = {"task": task, "hop": torch.tensor(float(hop_label(self.phi[b], self.phi[a])), dtype=torch.float32)}
        # With photometric copies (``feature_copies``) the before/after pair is read under one draw
        # (one change of light over the episode) and the references under their own: deployed, the
        # references are the training demo's frames while the live ones are under whatever light.
        # An anchored pair's before state is a reference frame, read as the references are.
        ref_copy, pair_copy = (int(c) for c in rng.integers(self.frames.copies, size=2))  # (0, 0) without copies
        copies = (ref_copy, ref_copy, ref_copy if anchored else pair_copy, pair_copy)
        for role, frame, copy in zip(ROLES, (start, goal, b, a), copies):
            item.update(self.frames.item(frame, role, copy))
        return item
