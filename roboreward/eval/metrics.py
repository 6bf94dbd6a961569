"""Reward-model metrics as pure functions over numpy arrays (no store, no model).

Conventions: progress is a 1-D float array over the frames of one episode, in time order; a metric
over several episodes takes a sequence of such arrays (episodes differ in length).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata

from ..errors import RoborewardError

FINAL_K = 5
"""Frames averaged for an episode's final progress (its success score, what AUROC ranks)."""


def _vector(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1:
        raise RoborewardError(f"{name} must be 1-D (one value per frame), got shape {a.shape}")
    return a


def spearman(x, y) -> float:
    """Spearman rank correlation (average ranks for ties); 0.0 when either side is constant, where
    the correlation is undefined (a constant curve carries no order information)."""
    x, y = _vector(x, "x"), _vector(y, "y")
    if len(x) != len(y):
        raise RoborewardError(f"spearman: x has {len(x)} values, y has {len(y)}")
    if len(x) < 2:
        return 0.0
    rx, ry = rankdata(x) - (len(x) + 1) / 2, rankdata(y) - (len(y) + 1) / 2
    denom = np.sqrt((rx**2).sum() * (ry**2).sum())
    return float((rx * ry).sum() / denom) if denom > 0 else 0.0


def voc(progress) -> float:
    """Value-order correlation (GVL, Robo-Dopamine): Spearman rank correlation between an episode's
    predicted progress and time (frame order). 1 = progress rises monotonically over a successful
    demonstration, -1 = it falls monotonically, 0 = no order (also for a constant curve)."""
    p = _vector(progress, "progress")
    return spearman(p, np.arange(len(p)))


def mae(pred, truth) -> float:
    """Mean absolute error over frames; frames whose truth is NaN (no ground truth) are skipped.
    NaN when no frame has ground truth."""
    pred, truth = np.asarray(pred, np.float64), np.asarray(truth, np.float64)
    if pred.shape != truth.shape:
        raise RoborewardError(f"mae: pred has shape {pred.shape}, truth {truth.shape}")
    ok = ~np.isnan(truth)
    return float(np.abs(pred[ok] - truth[ok]).mean()) if ok.any() else float("nan")


def stage_accuracy(pred_stage, true_stage) -> float:
    """Share of frames whose predicted stage index equals the true one; frames with a negative true
    stage (no target) are skipped. NaN when no frame has a target."""
    pred, true = np.asarray(pred_stage), np.asarray(true_stage)
    if pred.shape != true.shape:
        raise RoborewardError(f"stage_accuracy: pred has shape {pred.shape}, truth {true.shape}")
    ok = true >= 0
    return float((pred[ok] == true[ok]).mean()) if ok.any() else float("nan")


def auroc(scores, labels) -> float:
    """Area under the ROC curve of ``scores`` separating ``labels`` True (positive) from False:
    the probability that a random positive scores above a random negative, ties counting one half
    (Mann-Whitney U from average ranks). Needs at least one positive and one negative."""
    s = _vector(scores, "scores")
    y = np.asarray(labels).astype(bool)
    if y.shape != s.shape:
        raise RoborewardError(f"auroc: {len(s)} scores but {y.size} labels")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise RoborewardError(f"auroc needs both classes, got {n_pos} positives and {n_neg} negatives")
    ranks = rankdata(s)
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def final_progress(progress, k: int = 5) -> float:
    """Mean progress over the last ``k`` frames (all of them when the episode is shorter): the
    episode's success score, less noisy than the last frame alone."""
    p = _vector(progress, "progress")
    if len(p) == 0:
        raise RoborewardError("final_progress of an empty episode")
    return float(p[-max(1, k):].mean())


def falls(progress) -> bool:
    """Whether a curve falls: it ends lower than it starts, or its rank correlation with time is
    negative."""
    p = _vector(progress, "progress")
    return bool(len(p) >= 2 and (p[-1] < p[0] or voc(p) < 0))


def reversed_fall_share(progress_of_reversed_episodes: Sequence) -> float:
    """Share of time-reversed (successful) episodes whose progress falls (see ``falls``). A reward
    model that tracks task progress, not elapsed time, scores near 1; one that counts frames
    scores 0. NaN for no episodes."""
    curves = list(progress_of_reversed_episodes)
    if not curves:
        return float("nan")
    return float(np.mean([falls(p) for p in curves]))
