"""Stage and progress targets from subtask annotations, shared by every model that learns from them
(SARM, the baselines, evaluation's stage accuracy).

Conventions (annotations are [start, end) with end exclusive):
- inside subtask k spanning [s, e): stage k, tau = (t - s) / (e - 1 - s) (1 for a one-frame
  subtask), so the last frame of the last subtask reaches progress exactly 1;
- before the first subtask: its stage, tau 0; between subtasks: the previous stage, tau 1;
  after the last: the last stage, tau 1;
- normalised progress = P_{k-1} + prior_k * tau with P the cumulative priors (P_{-1} = 0), priors
  from ``stage_priors`` (each stage's mean share of an episode).
An episode level without annotations anywhere in the data is one stage ``task`` over the episode.

A terminal ``done`` stage (``stage_priors(..., done=True)``, targets with ``done_key``): in an episode
marked successful whose per-frame success flag (``gt.success`` in the sim stores) holds at its last
frame, the frames of that final run of the flag (the task finished and the object let go) are stage
``done`` with progress exactly 1. Its prior is 0, so it adds nothing before it: every other frame
keeps the target it had. It tells "finished" apart from "about to finish" (hovering over the goal,
or a regrasp that lifts a placed object), which progress inside the last subtask alone cannot.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..data.schema import ANNOTATION_LEVELS, StoreError, Subtask
from ..data.store import EpisodeStore

SINGLE_STAGE = "task"
DONE_STAGE = "done"


@dataclass(frozen=True)
class StageSet:
    """Ordered stages of one annotation level and their dataset-level priors (sum 1)."""

    level: str
    names: tuple[str, ...]
    priors: tuple[float, ...]

    @property
    def cumulative(self) -> np.ndarray:
        """(K + 1,) [0, P_0, P_0 + P_1, ..., 1]: progress at the start of each stage, then 1."""
        cum = np.concatenate([[0.0], np.cumsum(self.priors)])
        cum[-1] = 1.0  # no float drift at the end of the task
        return cum

    @classmethod
    def from_config(cls, config: Any, level: str) -> "StageSet":
        names, priors = config.stages(level)
        return cls(level, tuple(names), tuple(priors))

    @property
    def has_done(self) -> bool:
        """Whether the last stage is the terminal ``done`` stage (see the module docstring)."""
        return len(self.names) > 1 and self.names[-1] == DONE_STAGE

    @property
    def annotated(self) -> tuple[str, ...]:
        """The stages annotations name (all but ``done``)."""
        return self.names[:-1] if self.has_done else self.names


def has_done_flag(store: EpisodeStore, key: str | None) -> bool:
    """Whether ``key`` names a frame feature of the store that can mark the done stage."""
    return key is not None and key in store.features


def done_onsets(store: EpisodeStore, episodes: Sequence[int], key: str) -> dict[int, int]:
    """First frame of the ``done`` stage per episode that has one: episodes marked successful whose
    per-frame flag ``key`` (> 0.5 = the success condition holds) holds at the last frame; the stage
    starts where that final run of the flag starts (a success that flickers while the object
    settles counts from the last onset)."""
    if key not in store.features:
        raise StoreError(f"{store.path}: no per-frame success flag {key!r} for the done stage; the store has "
                         f"{sorted(store.keys())}")
    flags = np.asarray(store.array(key)[: store.n_frames]).reshape(store.n_frames, -1)[:, 0] > 0.5
    out = {}
    for e in episodes:
        start, end = store.episode_range(e)
        f = flags[start:end]
        if store.episodes[e].success is True and len(f) and f[-1]:
            off = np.flatnonzero(~f)
            out[int(e)] = int(off[-1] + 1) if len(off) else 0
    return out


def selected_episodes(store: EpisodeStore, episodes: Sequence[int] | None) -> list[int]:
    eps = list(range(store.n_episodes)) if episodes is None else [int(e) for e in episodes]
    if not eps:
        raise StoreError("no episodes selected")
    for e in eps:
        store.episode_range(e)  # raises for an episode that does not exist
    return eps


def _check_level(level: str) -> None:
    if level not in ANNOTATION_LEVELS:
        raise StoreError(f"annotation level {level!r} is not one of {ANNOTATION_LEVELS}")


def _has_level(store: EpisodeStore, eps: list[int], level: str) -> bool:
    annotated = [bool(store.episodes[e].annotations.get(level)) for e in eps]
    if any(annotated) and not all(annotated):
        missing = eps[annotated.index(False)]
        raise StoreError(
            f"{store.path}: episode {missing} has no {level} annotations while others do; annotate it "
            f"(`roboreward data annotate`) or leave it out"
        )
    return all(annotated)


def episode_subtasks(store: EpisodeStore, episode: int, level: str, single_stage: bool) -> list[Subtask]:
    if single_stage:
        return [Subtask(SINGLE_STAGE, 0, store.episodes[episode].length)]
    return list(store.episodes[episode].annotations[level])


def stage_priors(store: EpisodeStore, episodes: Sequence[int] | None = None, level: str = "sparse",
                 done: bool = False) -> StageSet:
    """Stage names ordered by where they happen (mean relative start) and priors: prior_k = mean over
    the episodes that contain stage k of (its frames / episode length), normalised to sum 1 (gaps
    between annotated subtasks would otherwise leave the priors short of 1). ``done`` appends the
    terminal ``done`` stage with prior 0.

    Priors come from ``episodes`` (the training split). The stage *list* comes from every episode of
    the store, so a held-out episode that reaches a stage no training episode reached (a small split
    of mostly failures) still has a target; such a stage's prior falls back to all episodes."""
    _check_level(level)
    eps = selected_episodes(store, episodes)
    every = list(range(store.n_episodes))
    done_names, done_priors = ((DONE_STAGE,), (0.0,)) if done else ((), ())
    if not _has_level(store, eps, level):
        return StageSet(level, (SINGLE_STAGE, *done_names), (1.0, *done_priors))

    def collect(ids):
        fractions: dict[str, list[float]] = {}
        starts: dict[str, list[float]] = {}
        for e in ids:
            length = store.episodes[e].length
            for sub in store.episodes[e].annotations.get(level, []):
                fractions.setdefault(sub.name, []).append((sub.end - sub.start) / length)
                starts.setdefault(sub.name, []).append(sub.start / length)
        return fractions, starts

    fractions, starts = collect(eps)
    all_fractions, all_starts = collect(every)
    names = sorted(all_fractions, key=lambda n: (float(np.mean(all_starts[n])), n))
    if done and DONE_STAGE in names:
        raise StoreError(f"{store.path}: the {level} annotations already name a stage {DONE_STAGE!r}; train without "
                         "a terminal done stage (done_key: null) or rename that subtask")
    raw = np.array([np.mean(fractions[n]) if n in fractions else np.mean(all_fractions[n]) for n in names])
    return StageSet(level, (*names, *done_names), (*(float(p) for p in raw / raw.sum()), *done_priors))


def stage_short_frames(store: EpisodeStore, episodes: Sequence[int] | None, level: str, names: Sequence[str],
                       percentile: float = 5.0) -> list[int]:
    """Per stage of ``names``: a short duration of it in the training ``episodes``, frames (the
    ``percentile``-th of its annotated durations; the episode lengths for the single ``task`` stage;
    0 for ``done`` and for a stage no training episode has). The stage filter's per-stage minimum
    stay is a fraction of this (``filter_min_stay_frac``)."""
    _check_level(level)
    eps = selected_episodes(store, episodes)
    durations: dict[str, list[int]] = {}
    for e in eps:
        subs = store.episodes[e].annotations.get(level, [])
        if not subs:
            durations.setdefault(SINGLE_STAGE, []).append(store.episodes[e].length)
        for sub in subs:
            durations.setdefault(sub.name, []).append(sub.end - sub.start)
    return [int(np.percentile(durations[n], percentile)) if n in durations and n != DONE_STAGE else 0 for n in names]


@dataclass
class StageTargets:
    """Per-frame targets of one level, aligned with the store's frames (global index). Frames of
    episodes that were not requested hold stage -1 and NaN."""

    stages: StageSet
    stage: np.ndarray
    """(n_frames,) int64 stage index."""
    tau: np.ndarray
    """(n_frames,) float32 within-stage progress in [0, 1]."""
    progress: np.ndarray
    """(n_frames,) float32 normalised progress P_{k-1} + prior_k * tau."""


def episode_targets(subtasks: list[Subtask], length: int, stages: StageSet) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(stage, tau, progress) for the frames of one episode; see the module docstring."""
    index = {n: k for k, n in enumerate(stages.names)}
    unknown = [s.name for s in subtasks if s.name not in index]
    if unknown:
        raise StoreError(f"subtask {unknown[0]!r} is not a known {stages.level} stage {list(stages.names)}")
    t = np.arange(length)
    sub_start = np.array([s.start for s in subtasks])
    sub_end = np.array([s.end for s in subtasks])
    sub_stage = np.array([index[s.name] for s in subtasks])
    j = np.searchsorted(sub_start, t, side="right") - 1  # last subtask starting at or before t
    before = j < 0
    j = np.maximum(j, 0)
    inside = ~before & (t < sub_end[j])
    span = np.maximum(sub_end[j] - 1 - sub_start[j], 1)
    tau = np.where(inside, np.clip((t - sub_start[j]) / span, 0.0, 1.0), np.where(before, 0.0, 1.0))
    tau = np.where(inside & (sub_end[j] - sub_start[j] == 1), 1.0, tau)
    stage = sub_stage[j].astype(np.int64)
    cum = stages.cumulative
    progress = cum[stage] + np.asarray(stages.priors)[stage] * tau
    return stage, tau.astype(np.float32), np.clip(progress, 0.0, 1.0).astype(np.float32)


def annotation_targets(
    store: EpisodeStore,
    episodes: Sequence[int] | None = None,
    mode: str = "sparse",
    stages: dict[str, StageSet] | None = None,
    done_key: str | None = None,
) -> dict[str, StageTargets]:
    """Per-frame targets for ``episodes`` (default all) at each level of ``mode`` (``sparse``,
    ``dense`` or ``dual`` = both). ``stages`` gives the stage sets per level (e.g. a trained
    model's, from its config); by default they are computed from ``episodes`` with ``stage_priors``
    (with a ``done`` stage when the store has the frame feature ``done_key``). A stage set ending in
    ``done`` labels the done frames (``done_onsets`` of ``done_key``) where the store has that
    feature; without it (no key, or a store that does not record it) every frame keeps its
    annotation's stage."""
    levels = {"sparse": ("sparse",), "dense": ("dense",), "dual": ("sparse", "dense")}.get(mode)
    if levels is None:
        raise StoreError(f"mode {mode!r} is not one of ('sparse', 'dense', 'dual')")
    eps = selected_episodes(store, episodes)
    flagged = has_done_flag(store, done_key)
    found: dict[int, int] | None = None  # done onsets, read once for every level that has the stage
    out = {}
    for level in levels:
        stage_set = (stages or {}).get(level) or stage_priors(store, eps, level, done=flagged)
        single = stage_set.annotated == (SINGLE_STAGE,) and not _has_level(store, eps, level)
        onsets: dict[int, int] = {}
        if flagged and stage_set.has_done:
            found = done_onsets(store, eps, done_key) if found is None else found
            onsets = found
        n = store.n_frames
        stage = np.full(n, -1, np.int64)
        tau = np.full(n, np.nan, np.float32)
        progress = np.full(n, np.nan, np.float32)
        for e in eps:
            start, end = store.episode_range(e)
            try:
                s, ta, p = episode_targets(episode_subtasks(store, e, level, single), end - start, stage_set)
            except StoreError as exc:
                raise StoreError(f"{store.path}: episode {e}: {exc}") from None
            if e in onsets:  # the finished task: the done stage, progress 1
                s[onsets[e]:], ta[onsets[e]:], p[onsets[e]:] = len(stage_set.names) - 1, 1.0, 1.0
            stage[start:end], tau[start:end], progress[start:end] = s, ta, p
        out[level] = StageTargets(stage_set, stage, tau, progress)
    return out
