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


def auroc(scores, labels, tie: float = 0.0) -> float:
    """Area under the ROC curve of ``scores`` separating ``labels`` True (positive) from False:
    the probability that a random positive scores above a random negative, ties counting one half
    (Mann-Whitney U from average ranks). Needs at least one positive and one negative. ``tie`` > 0
    counts a pair whose scores differ by at most ``tie`` as a tie: a failure that ends "done" at
    0.9999 and a success at 1.0000 are not told apart by the model, and exact ranks would say they are."""
    s = _vector(scores, "scores")
    y = np.asarray(labels).astype(bool)
    if y.shape != s.shape:
        raise RoborewardError(f"auroc: {len(s)} scores but {y.size} labels")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise RoborewardError(f"auroc needs both classes, got {n_pos} positives and {n_neg} negatives")
    if tie > 0:
        diff = s[y][:, None] - s[~y][None, :]
        return float(np.where(diff > tie, 1.0, np.where(diff < -tie, 0.0, 0.5)).mean())
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


# ---------------------------------------------------------------------------- beyond ranking
# VOC and AUROC rank curves; a model can rank perfectly and still pay less for finishing than for
# hovering over the goal (failures just end even lower). These figures look at levels, not ranks.
DROP_TOLERANCE = 0.05
"""A success whose progress falls by more than this after the success condition holds counts as dropping."""
FREEZE_TOLERANCE = 0.01
"""Most progress may rise while the scene is frozen (nothing happens, so nothing should be paid)."""


def first_true(flags) -> int | None:
    """Index of the first True value (the frame a success condition first holds), or None."""
    f = np.asarray(flags).astype(bool).reshape(-1)
    return int(np.argmax(f)) if f.any() else None


def post_success_drop(progress, onset: int) -> float:
    """How far progress falls once the task is done: the highest value up to and including the
    frame ``onset`` (where the success condition first holds) minus the lowest value from it on.
    0 for a curve that never falls below what it had reached; never negative."""
    p = _vector(progress, "progress")
    if not 0 <= onset < len(p):
        raise RoborewardError(f"post_success_drop: onset {onset} is outside the episode's {len(p)} frames")
    return float(p[: onset + 1].max() - p[onset:].min())


def hold_change(progress, at: int) -> float:
    """Change of progress over a hold: the last value minus the value at frame ``at``, the last
    real frame, after which the curve's inputs repeat that frame. Negative = the model takes back
    reward while nothing changes."""
    p = _vector(progress, "progress")
    if not 0 <= at < len(p):
        raise RoborewardError(f"hold_change: frame {at} is outside the curve's {len(p)} frames")
    return float(p[-1] - p[at])


def freeze_rise(progress, at: int) -> float:
    """Most progress rises while frozen: the highest value after frame ``at`` (the frame whose
    inputs repeat from then on) minus the value at ``at``. A model that pays for elapsed time rises;
    one that reads the scene stays at 0 (negative when it only falls). 0 with no frozen frames."""
    p = _vector(progress, "progress")
    if not 0 <= at < len(p):
        raise RoborewardError(f"freeze_rise: frame {at} is outside the curve's {len(p)} frames")
    return float(p[at + 1:].max() - p[at]) if at + 1 < len(p) else 0.0


def finish_margin(progress, final_stage_start: int, k: int = FINAL_K) -> float:
    """Final progress (``final_progress``, the score AUROC ranks) minus the progress at the last
    frame before the final stage began (``final_stage_start - 1``: the robot about to place, or
    hovering over the goal). Positive = finishing pays more than getting close."""
    p = _vector(progress, "progress")
    if not 1 <= final_stage_start < len(p) + 1:
        raise RoborewardError(
            f"finish_margin: the final stage starts at frame {final_stage_start}; it needs a frame before it "
            f"in the episode's {len(p)} frames"
        )
    return final_progress(p, k) - float(p[final_stage_start - 1])


def stage_errors(pred, truth, stage) -> dict:
    """Calibration per stage: ``{stage: (mean |pred - truth|, frames)}`` over the frames labelled
    ``stage`` (any hashable labels, one per frame; None or a negative int = unlabelled), skipping
    frames whose truth is NaN. Stages in order of first appearance."""
    pred, truth = np.asarray(pred, np.float64), np.asarray(truth, np.float64)
    labels = list(stage)
    if not (pred.shape == truth.shape == (len(labels),)):
        raise RoborewardError(f"stage_errors: pred {pred.shape}, truth {truth.shape} and {len(labels)} stage labels differ")
    out: dict = {}
    err = np.abs(pred - truth)
    for label in dict.fromkeys(labels):
        if label is None or (isinstance(label, (int, np.integer)) and label < 0):
            continue
        mask = np.array([x == label for x in labels]) & ~np.isnan(truth)
        if mask.any():
            out[label] = (float(err[mask].mean()), int(mask.sum()))
    return out


def final_progress_gap(success_finals, failure_finals) -> float:
    """Mean final progress of successes minus that of failures: how far apart the model puts them,
    which AUROC (order only) does not say. NaN when either side is empty."""
    s, f = np.asarray(list(success_finals), np.float64), np.asarray(list(failure_finals), np.float64)
    return float(s.mean() - f.mean()) if len(s) and len(f) else float("nan")


STEP_LAGS = (1, 10, 30)
"""Frame gaps over which ``step_agreement`` compares a model's progress changes with the truth's."""


def step_agreement(curves: Sequence, truths: Sequence, lags: Sequence[int] = STEP_LAGS) -> dict:
    """Whether a model's progress moves when and as the true progress moves, which is what a
    potential-based shaping term pays step by step (a model can rank episodes by their final
    progress and still pay noise along the way). Over every episode: the correlation of the k-frame
    changes of progress with those of the truth, per lag k; and the mean total variation (sum of
    |change| per episode) of each, with their ratio (above 1: the model moves more than the truth,
    back and forth). NaN where a lag is longer than every episode or a side never changes."""
    curves = [np.asarray(c, np.float64) for c in curves]
    truths = [np.asarray(t, np.float64) for t in truths]
    if len(curves) != len(truths) or any(len(c) != len(t) for c, t in zip(curves, truths)):
        raise RoborewardError("step_agreement needs one truth per curve, of the same length")
    corr = {}
    for k in lags:
        a = [c[k:] - c[:-k] for c in curves if len(c) > k]
        b = [t[k:] - t[:-k] for t in truths if len(t) > k]
        a, b = (np.concatenate(x) if x else np.zeros(0) for x in (a, b))
        corr[str(k)] = float(np.corrcoef(a, b)[0, 1]) if len(a) > 1 and a.std() > 0 and b.std() > 0 else float("nan")
    tv = float(np.mean([np.abs(np.diff(c)).sum() for c in curves])) if curves else float("nan")
    tv_true = float(np.mean([np.abs(np.diff(t)).sum() for t in truths])) if truths else float("nan")
    return {"corr": corr, "total_variation": tv, "total_variation_truth": tv_true,
            "variation_ratio": tv / tv_true if tv_true > 0 else float("nan")}
