"""Evaluate any reward model on held-out episodes of a store: metrics, plots and overlay videos.

Outputs in ``out_dir``::

    metrics.json                  metrics per level (see ``evaluate_reward``), per episode, per quality
    summary.png                   final progress: success vs failure histogram, mean per quality
    episodes/episode_0003.png     progress curve(s), ground truth, annotated stage bands, predicted stage strip
    videos/episode_0003.mp4       camera views side by side with a progress bar and value
                                  (PNG frames in videos/episode_0003/ if OpenCV has no mp4 encoder)
"""
from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from matplotlib.figure import Figure

from ..data.cache import ensure_features
from ..data.store import EpisodeStore
from ..errors import RoborewardError
from ..rewards.annotate import (
    BATCH_FRAMES,
    _episode_list,
    episode_progress,
    episode_stage_probs,
    model_levels,
)
from . import metrics as M
from .metrics import DROP_TOLERANCE, FINAL_K, FREEZE_TOLERANCE
from .probes import freeze_frames, hold_frames, probe_progress, probe_support

GT_KEY = "gt.progress"
GT_SUCCESS = "gt.success"
GT_STAGE = "gt.stage"
HOLD_SECONDS = 2.0
"""How long the final frame is held (and a mid-episode frame frozen) for the hold and freeze probes."""
AUROC_TIE = 0.01
"""``auroc_tied``: final progress of a success and a failure within this of each other counts as a tie."""


def _level_key(level: str | None) -> str:
    return level or "progress"


def _clean(x: Any) -> Any:
    """JSON-safe: NaN/inf -> None, numpy scalars -> Python."""
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(float(x)) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def _mean(values: Sequence[float]) -> float:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(vals)) if vals else float("nan")


def _gt_column(store: EpisodeStore, key: str, eps: list[int]) -> dict[int, np.ndarray] | None:
    """Per-episode frames of a scalar ``gt.*`` target feature, or None when the store has none."""
    if key not in store.features:
        return None
    column = np.asarray(store.array(key)[: store.n_frames]).reshape(store.n_frames, -1)[:, 0]
    return {e: column[slice(*store.episode_range(e))] for e in eps}


def _success_onsets(store: EpisodeStore, eps: list[int], truth) -> tuple[dict[int, int], str | None]:
    """Frame at which the success condition first holds, per successful episode that shows it:
    from ``gt.success`` (the simulator's per-frame check), else the first frame ``gt.progress``
    reaches 1 (the simulator's progress is 1 exactly while the task is done); and the source used."""
    flags = _gt_column(store, GT_SUCCESS, eps)
    source = GT_SUCCESS
    if flags is None and truth is not None:
        flags, source = {e: truth[e] >= 1.0 - 1e-6 for e in eps}, f"{GT_KEY} >= 1"
    if flags is None:
        return {}, None
    onsets = {e: M.first_true(flags[e]) for e in eps if store.episodes[e].success is True}
    return {e: t for e, t in onsets.items() if t is not None}, source


def _frame_stages(store: EpisodeStore, e: int, gt_stage) -> tuple[list | None, int | None, str | None]:
    """(stage label of every frame, first frame of the final stage, source) of episode ``e`` from its
    sparse annotations (a frame before the first subtask takes the first one's name, a frame in a
    gap or after the last the previous one's, as the SARM targets do), else from ``gt.stage``."""
    subtasks = sorted(store.episodes[e].annotations.get("sparse") or [], key=lambda sub: sub.start)
    n = store.episodes[e].length
    if subtasks:
        starts = np.array([sub.start for sub in subtasks])
        j = np.maximum(np.searchsorted(starts, np.arange(n), side="right") - 1, 0)
        return [subtasks[k].name for k in j], subtasks[-1].start, "sparse annotations"
    if gt_stage is not None:
        stage = np.asarray(gt_stage[e]).astype(np.int64)
        change = np.flatnonzero(stage[1:] != stage[:-1])
        return [f"stage {k}" for k in stage.tolist()], int(change[-1] + 1) if len(change) else 0, GT_STAGE
    return None, None, None


def _counts(eps, success_of: dict[int, bool | None]) -> dict[str, int]:
    eps = list(eps)
    return {"n_success": sum(success_of[e] is True for e in eps), "n_failure": sum(success_of[e] is False for e in eps)}


def _choose_video_episodes(store: EpisodeStore, episodes: list[int], n: int) -> list[int]:
    """A success and a failure first when both exist, then the rest in order."""
    picks: list[int] = []
    for want in (True, False):
        for e in episodes:
            if store.episodes[e].success is want:
                picks.append(e)
                break
    picks += [e for e in episodes if e not in picks]
    return picks[: max(0, n)]


def evaluate_reward(
    model,
    store_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    episodes: Sequence[int] | None = None,
    level: str | None = None,
    videos: int = 2,
    plots: int = 8,
    batch_frames: int = BATCH_FRAMES,
    final_k: int = FINAL_K,
    encoder: Callable[[np.ndarray], torch.Tensor] | None = None,
    hold_seconds: float = HOLD_SECONDS,
) -> dict[str, Any]:
    """Run ``model`` (a RewardModel or a checkpoint folder) over whole ``episodes`` (default all;
    pass the held-out split) of the store and write metrics.json, plots and videos into ``out_dir``.

    Per level (``level``, default every level the model has):
    ``voc`` mean value-order correlation over successful episodes (all episodes when the store has
    no success labels; ``voc_scope`` says which); ``mae`` vs ``gt.progress`` when the store has it;
    ``stage_accuracy`` of the argmax stage vs the annotation targets (models with a stage head);
    ``auroc`` of final progress (mean of the last ``final_k`` frames), success vs failure, and
    ``auroc_tied`` with finals within ``AUROC_TIE`` of each other counted as ties;
    ``reversed_fall_share`` over the successful episodes played backwards; ``per_quality`` mean
    final progress. The first level's values are repeated at the top level. Returns the dict
    written to metrics.json.

    Figures on levels, not ranks (a model can rank successes above failures and still pay less for
    finishing than for hovering); each carries ``n_success`` / ``n_failure``, the episodes it rests on:
    ``post_success`` drop of progress once the success condition holds (``gt.success``, else
    ``gt.progress`` reaching 1) below the peak before it: mean, worst, share above 0.05;
    ``final_hold`` change of progress when a success's last frame is held ``hold_seconds``;
    ``finish_vs_hover`` final progress of a success vs the frame before its final stage began
    (sparse annotations, else ``gt.stage``): share higher, margin; ``freeze_drift`` rise of progress
    while the scene is frozen ``hold_seconds`` at the middle frame of each success; ``calibration``
    mean |progress - gt.progress| per sparse stage; ``final_progress_gap`` mean final progress of
    successes minus failures; ``step_agreement`` (with ``gt.progress``) the correlation of progress
    changes over 1, 10 and 30 frames with the truth's and the ratio of their total variations:
    what a potential-based shaping term built on the model pays step by step. ``counts`` gives
    n_success / n_failure of the older figures. Hold and freeze run the model on re-indexed frames
    (``roboreward.eval.probes``): models over cached features only; for others they say
    ``unsupported``."""
    t0 = time.perf_counter()
    if isinstance(model, (str, os.PathLike)):
        from ..rewards.base import RewardModel

        model = RewardModel.from_pretrained(model)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    store = EpisodeStore(store_path)
    config = getattr(model, "config", None)
    built_cache = ensure_features(store, getattr(config, "feature_key", None), encoder, announce=True)
    store = EpisodeStore(store_path)
    eps = _episode_list(store, episodes)
    levels = [level] if level is not None else model_levels(model)
    infos = [store.episodes[e] for e in eps]
    success = [i.success for i in infos]
    labelled = [s is not None for s in success]
    good = [e for e, s in zip(eps, success) if s is True] if any(labelled) else list(eps)
    voc_scope = "successful episodes" if any(labelled) else "all episodes (no success labels)"
    success_of = dict(zip(eps, success))
    truth = _gt_column(store, GT_KEY, eps)
    if truth is not None:
        truth = {e: v.astype(np.float32) for e, v in truth.items()}
    pos = [e for e, s in zip(eps, success) if s is True]
    neg = [e for e, s in zip(eps, success) if s is False]
    onsets, onset_source = _success_onsets(store, eps, truth)
    gt_stage = _gt_column(store, GT_STAGE, eps)
    frame_stages = {e: _frame_stages(store, e, gt_stage) for e in eps}
    extra = int(round(hold_seconds * store.fps))
    unsupported = probe_support(model)
    probes = [] if unsupported else (
        [(e, hold_frames(store.episodes[e].length, extra)) for e in pos]
        + [(e, freeze_frames(store.episodes[e].length // 2, extra)) for e in pos]
    )

    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        curves: dict[str, dict[int, np.ndarray]] = {}
        stage_pred: dict[str, dict[int, np.ndarray]] = {}
        stage_true: dict[str, Any] = {}
        reversed_curves: dict[str, list[np.ndarray]] = {}
        held: dict[str, dict[int, np.ndarray]] = {}
        frozen: dict[str, dict[int, np.ndarray]] = {}
        for lvl in levels:
            key = _level_key(lvl)
            curves[key] = dict(zip(eps, episode_progress(model, store, eps, lvl, batch_frames=batch_frames)))
            probed = probe_progress(model, store, probes, lvl, batch_frames=batch_frames) if probes else []
            held[key], frozen[key] = dict(zip(pos, probed[: len(pos)])), dict(zip(pos, probed[len(pos):]))
            reversed_curves[key] = episode_progress(model, store, good, lvl, reverse=True, batch_frames=batch_frames) if good else []
            if lvl is not None:
                targets = model.stage_targets(store, eps, lvl)
                probs = episode_stage_probs(model, store, eps, lvl, batch_frames=batch_frames) if targets is not None else None
                if probs is not None:
                    stage_pred[key] = {e: p.argmax(-1) for e, p in zip(eps, probs)}
                    stage_true[key] = targets
    finally:
        if was_training:
            model.train()

    robust = {key: _episode_robustness(c, held[key], frozen[key], onsets, frame_stages, store, final_k)
              for key, c in curves.items()}
    per_episode = []
    for e, info in zip(eps, infos):
        start, end = store.episode_range(e)
        row: dict[str, Any] = {"episode": e, "task": info.task, "success": info.success, "quality": info.quality,
                               "length": info.length, "final_progress": {}, "voc": {}}
        for key, c in curves.items():
            row["final_progress"][key] = M.final_progress(c[e], final_k)
            row["voc"][key] = M.voc(c[e])
            if truth is not None:
                row.setdefault("mae", {})[key] = M.mae(c[e], truth[e])
            if key in stage_pred:
                row.setdefault("stage_accuracy", {})[key] = M.stage_accuracy(stage_pred[key][e], stage_true[key].stage[start:end])
            for figure, values in robust[key].items():
                if e in values:
                    row.setdefault(figure, {})[key] = values[e]
        per_episode.append(row)

    by_level: dict[str, dict[str, Any]] = {}
    for key, c in curves.items():
        m: dict[str, Any] = {}
        vocs = [M.voc(c[e]) for e in good]
        m["voc"] = _mean(vocs)
        m["voc_std"] = float(np.std(vocs)) if vocs else float("nan")
        m["voc_scope"] = voc_scope
        m["voc_episodes"] = len(good)
        if truth is not None:
            m["mae"] = M.mae(np.concatenate([c[e] for e in eps]), np.concatenate([truth[e] for e in eps]))
            m["step_agreement"] = {**M.step_agreement([c[e] for e in eps], [truth[e] for e in eps]),
                                   **_counts(eps, success_of)}
        if key in stage_pred:
            m["stage_accuracy"] = M.stage_accuracy(
                np.concatenate([stage_pred[key][e] for e in eps]),
                np.concatenate([stage_true[key].stage[slice(*store.episode_range(e))] for e in eps]),
            )
        finals = {e: M.final_progress(c[e], final_k) for e in eps}
        scores, labels = [finals[e] for e in pos + neg], [True] * len(pos) + [False] * len(neg)
        m["auroc"] = M.auroc(scores, labels) if pos and neg else float("nan")
        m["auroc_tied"] = M.auroc(scores, labels, tie=AUROC_TIE) if pos and neg else float("nan")
        m["auroc_episodes"] = {"success": len(pos), "failure": len(neg)}
        m["final_progress"] = {
            "success": _mean([finals[e] for e in pos]),
            "failure": _mean([finals[e] for e in neg]),
        }
        m["reversed_fall_share"] = M.reversed_fall_share(reversed_curves[key])
        m["reversed_voc"] = _mean([M.voc(p) for p in reversed_curves[key]])
        quality: dict[str, dict[str, Any]] = {}
        for e, info in zip(eps, infos):
            quality.setdefault(info.quality, []).append(finals[e])  # type: ignore[arg-type]
        m["per_quality"] = {q: {"episodes": len(v), "final_progress_mean": _mean(v)} for q, v in sorted(quality.items())}
        m.update(_level_robustness(
            robust[key], c, finals, truth, frame_stages, success_of, pos, neg, onset_source, unsupported, hold_seconds, extra,
        ))
        m["counts"] = {
            "voc": _counts(good, success_of),
            **({"mae": _counts(eps, success_of)} if truth is not None else {}),
            **({"stage_accuracy": _counts(eps, success_of)} if key in stage_pred else {}),
            "auroc": _counts(pos + neg, success_of),
            "reversed_fall_share": _counts(good, success_of),
        }
        by_level[key] = m

    primary = _level_key(levels[0])
    files: dict[str, Any] = {"metrics": "metrics.json", "summary": "summary.png", "episodes": [], "videos": []}
    bands_level = levels[0] if levels[0] is not None else "sparse"
    for e in eps[: max(0, plots)]:
        path = out_dir / "episodes" / f"episode_{e:04d}.png"
        plot_episode(
            path, store, e, {k: c[e] for k, c in curves.items()},
            truth=None if truth is None else truth[e],
            stage_pred=stage_pred.get(primary, {}).get(e),
            stage_names=_stage_names(model, levels[0]),
            level=bands_level,
        )
        files["episodes"].append(str(path.relative_to(out_dir)))
    plot_summary(out_dir / "summary.png", [(infos[i], curves[primary][e]) for i, e in enumerate(eps)], final_k, primary)
    cameras = [c for c in (getattr(config, "cameras", None) or store.cameras) if c in store.cameras]
    for e in _choose_video_episodes(store, eps, videos) if cameras else []:
        names = _stage_names(model, levels[0])
        pred_stage = stage_pred.get(primary, {}).get(e)
        path = write_overlay_video(
            out_dir / "videos" / f"episode_{e:04d}.mp4", store, e, cameras, curves[primary][e],
            truth=None if truth is None else truth[e],
            stage_labels=None if pred_stage is None or not names else [names[k] for k in pred_stage],
        )
        files["videos"].append(str(path.relative_to(out_dir)))

    result: dict[str, Any] = {
        "model": {"name": getattr(model, "name", type(model).__name__), "feature_key": getattr(config, "feature_key", None),
                  "path": getattr(model, "checkpoint_path", None),
                  "readout": {f: getattr(config, f) for f in getattr(config, "readout_fields", ())}},
        "store": str(store.path),
        "episodes": eps,
        "levels": by_level,
        "primary_level": primary,
        **by_level[primary],
        "per_episode": per_episode,
        "built_feature_cache": built_cache,
        "files": files,
        "seconds": time.perf_counter() - t0,
    }
    result = _clean(result)
    (out_dir / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _episode_robustness(curve, held, frozen, onsets, frame_stages, store: EpisodeStore,
                        final_k: int) -> dict[str, dict[int, float]]:
    """Per-episode values of the level figures: {figure: {episode: value}} (episodes it applies to)."""
    out: dict[str, dict[int, float]] = {"post_success_drop": {}, "hold_change": {}, "finish_margin": {}, "freeze_rise": {}}
    for e, onset in onsets.items():
        if e in curve:
            out["post_success_drop"][e] = M.post_success_drop(curve[e], onset)
    for e, p in held.items():
        out["hold_change"][e] = M.hold_change(p, store.episodes[e].length - 1)
    for e, p in frozen.items():
        out["freeze_rise"][e] = M.freeze_rise(p, store.episodes[e].length // 2)
    for e, (_, start, _) in frame_stages.items():
        if store.episodes[e].success is True and start is not None and start >= 1:  # a frame before the final stage
            out["finish_margin"][e] = M.finish_margin(curve[e], start, final_k)
    return out


def _level_robustness(values, curve, finals, truth, frame_stages, success_of, pos, neg, onset_source, unsupported,
                      hold_seconds, extra) -> dict[str, Any]:
    """The level figures of one level from the per-episode values, each with its n_success / n_failure."""
    drop, hold, margin, rise = (values[k] for k in ("post_success_drop", "hold_change", "finish_margin", "freeze_rise"))
    out: dict[str, Any] = {}
    out["post_success"] = {
        "drop_mean": _mean(list(drop.values())),
        "drop_max": max(drop.values(), default=float("nan")),
        "drop_share": float(np.mean([v > DROP_TOLERANCE for v in drop.values()])) if drop else float("nan"),
        "tolerance": DROP_TOLERANCE,
        "onset_source": onset_source,
        **_counts(drop, success_of),
    }
    probe_note = {"unsupported": unsupported} if unsupported else {}
    out["final_hold"] = {
        "seconds": hold_seconds, "frames": extra,
        "change_mean": _mean(list(hold.values())),
        "change_min": min(hold.values(), default=float("nan")),
        "fall_share": float(np.mean([v < -DROP_TOLERANCE for v in hold.values()])) if hold else float("nan"),
        **probe_note, **_counts(hold, success_of),
    }
    sources = sorted({frame_stages[e][2] for e in margin})
    out["finish_vs_hover"] = {
        "higher_share": float(np.mean([v > 0 for v in margin.values()])) if margin else float("nan"),
        "margin_mean": _mean(list(margin.values())),
        "margin_min": min(margin.values(), default=float("nan")),
        "stage_source": ", ".join(sources) if sources else None,
        **_counts(margin, success_of),
    }
    out["freeze_drift"] = {
        "seconds": hold_seconds, "frames": extra,
        "rise_mean": _mean(list(rise.values())),
        "rise_max": max(rise.values(), default=float("nan")),
        "tolerance": FREEZE_TOLERANCE,
        **probe_note, **_counts(rise, success_of),
    }
    per_stage: dict[str, Any] = {}
    calibrated = [e for e in curve if truth is not None and frame_stages[e][0] is not None]
    if calibrated:
        labels = [lab for e in calibrated for lab in frame_stages[e][0]]
        errors = M.stage_errors(np.concatenate([curve[e] for e in calibrated]),
                                np.concatenate([truth[e] for e in calibrated]), labels)
        for name, (err, frames) in errors.items():
            having = [e for e in calibrated if name in frame_stages[e][0]]
            per_stage[str(name)] = {"mae": err, "frames": frames, **_counts(having, success_of)}
    out["calibration"] = {
        "per_stage": per_stage,
        "stage_source": ", ".join(sorted({frame_stages[e][2] for e in calibrated})) or None,
        **_counts(calibrated, success_of),
    }
    out["final_progress_gap"] = {
        "gap": M.final_progress_gap([finals[e] for e in pos], [finals[e] for e in neg]),
        **_counts(pos + neg, success_of),
    }
    return out


def summary_text(metrics: dict[str, Any]) -> str:
    """The lines ``reward eval`` prints: the ranking figures, then the level figures, each with the
    successes and failures it rests on and its goal."""
    def num(x, fmt=".3f"):
        return format(x, fmt) if isinstance(x, (int, float)) and not isinstance(x, bool) else "n/a"

    def n(fig):
        return f"[{fig.get('n_success', 0)} succ / {fig.get('n_failure', 0)} fail]"

    keys = ("voc", "mae", "stage_accuracy", "auroc", "reversed_fall_share")
    lines = ["  ".join(f"{k} {num(metrics.get(k))}" for k in keys)]
    if "auroc" in metrics.get("counts", {}):
        lines[0] += (f"  (auroc on {n(metrics['counts']['auroc'])[1:-1]}; finals within {AUROC_TIE} as ties: "
                     f"{num(metrics.get('auroc_tied'))})")
    ps, hold = metrics.get("post_success", {}), metrics.get("final_hold", {})
    lines.append(
        f"after success: drop mean {num(ps.get('drop_mean'))} worst {num(ps.get('drop_max'))}, "
        f"share > {ps.get('tolerance', DROP_TOLERANCE)} {num(ps.get('drop_share'), '.2f')} (goal 0) {n(ps)}; "
        f"final {hold.get('seconds', HOLD_SECONDS):g} s hold change mean {num(hold.get('change_mean'))} "
        f"worst {num(hold.get('change_min'))} {n(hold)}"
    )
    fh, fr, gap = metrics.get("finish_vs_hover", {}), metrics.get("freeze_drift", {}), metrics.get("final_progress_gap", {})
    lines.append(
        f"finish > hover {num(fh.get('higher_share'), '.2f')} (goal 1) margin mean {num(fh.get('margin_mean'))} {n(fh)}; "
        f"frozen {fr.get('seconds', HOLD_SECONDS):g} s: rise mean {num(fr.get('rise_mean'))} max {num(fr.get('rise_max'))} "
        f"(goal <= {fr.get('tolerance', FREEZE_TOLERANCE)}) {n(fr)}"
    )
    cal = metrics.get("calibration", {})
    stages = ", ".join(f"{name} {num(v.get('mae'))}" for name, v in cal.get("per_stage", {}).items()) or "n/a"
    lines.append(f"final progress success - failure {num(gap.get('gap'))} {n(gap)}; |progress - gt| per stage: {stages} {n(cal)}")
    agree = metrics.get("step_agreement")
    if agree:
        corr = ", ".join(f"{k} {num(v, '.2f')}" for k, v in agree["corr"].items())
        lines.append(f"progress changes vs gt (what shaping pays per step): correlation over frames {corr}; "
                     f"total variation {num(agree.get('variation_ratio'), '.2f')}x the truth's {n(agree)}")
    for fig in (hold, fr):
        if fig.get("unsupported"):
            lines.append(f"hold/freeze n/a: {fig['unsupported']}")
            break
    return "\n".join(lines)


def _stage_names(model, level: str | None) -> list[str] | None:
    config = getattr(model, "config", None)
    if level is None or not hasattr(config, "stages"):
        return None
    try:
        return list(config.stages(level)[0])
    except RoborewardError:
        return None


# ---------------------------------------------------------------------------- plots
_STAGE_COLORS = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C"]
_LEVEL_COLORS = {"sparse": "#1f3b73", "dense": "#b5176a", "progress": "#1f3b73"}


def plot_episode(
    path: str | os.PathLike,
    store: EpisodeStore,
    episode: int,
    curves: dict[str, np.ndarray],
    truth: np.ndarray | None = None,
    stage_pred: np.ndarray | None = None,
    stage_names: Sequence[str] | None = None,
    level: str = "sparse",
) -> Path:
    """One episode's progress curve(s) over time with the ground truth, the annotated stages at
    ``level`` as shaded bands (named) and, when given, the predicted stage as a strip underneath."""
    info = store.episodes[episode]
    fps = store.fps
    n = info.length
    t = np.arange(n) / fps
    fig = Figure(figsize=(8, 3.6), dpi=110)
    ax = fig.add_subplot()
    subtasks = info.annotations.get(level, [])
    order = {name: k for k, name in enumerate(stage_names or [])}
    for j, sub in enumerate(subtasks):
        color = _STAGE_COLORS[order.get(sub.name, j) % len(_STAGE_COLORS)]
        ax.axvspan(sub.start / fps, sub.end / fps, color=color, alpha=0.13, lw=0)
        ax.text((sub.start + sub.end) / 2 / fps, 1.08, sub.name, ha="center", va="center", fontsize=8, color=color, clip_on=True)
    if truth is not None:
        ax.plot(t, truth, color="black", ls="--", lw=1.2, label="ground truth")
    for key, c in curves.items():
        ax.plot(t, c, color=_LEVEL_COLORS.get(key, None), lw=2.0, label=f"predicted ({key})")
    low = 0.0
    if stage_pred is not None:
        low = -0.09
        for k in np.unique(stage_pred):
            mask = stage_pred == k
            runs = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(int), [0]])))
            ax.broken_barh([((a - 0.5) / fps, (b - a) / fps) for a, b in zip(runs[::2], runs[1::2])], (-0.08, 0.05),
                           color=_STAGE_COLORS[int(k) % len(_STAGE_COLORS)], alpha=0.9)
        ax.text(-0.01, -0.055, "pred. stage", transform=ax.get_yaxis_transform(), ha="right", va="center", fontsize=7)
    ax.set_xlim(0, max(t[-1], 1e-6))
    ax.set_ylim(low, 1.15)
    ax.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
    ax.set_xlabel("time (s)")
    ax.set_ylabel("progress")
    ax.grid(alpha=0.25, lw=0.5)
    main = next(iter(curves.values()))
    status = {True: "success", False: "failure", None: "success unknown"}[info.success]
    ax.set_title(
        f"episode {episode}: {info.task}  [{status}, {info.quality}]  VOC {M.voc(main):.2f}, final {M.final_progress(main):.2f}",
        fontsize=9,
    )
    ax.legend(loc="upper left", fontsize=7, framealpha=0.85)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def plot_summary(path: str | os.PathLike, episodes: list[tuple[Any, np.ndarray]], final_k: int = FINAL_K, level: str = "") -> Path:
    """Final progress distribution, successful vs failed (vs unlabelled) episodes, and its mean per
    quality label."""
    finals = [(info, M.final_progress(c, final_k)) for info, c in episodes]
    fig = Figure(figsize=(9, 3.4), dpi=110)
    ax1, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.6, 1]})
    bins = np.linspace(0, 1, 21)
    for label, want, color in (("success", True, "#55A868"), ("failure", False, "#C44E52"), ("unlabelled", None, "#8C8C8C")):
        vals = [f for info, f in finals if info.success is want]
        if vals:
            ax1.hist(vals, bins=bins, alpha=0.6, color=color, label=f"{label} (n={len(vals)})")
    ax1.set_xlabel(f"final progress (mean of last {final_k} frames{', ' + level if level else ''})")
    ax1.set_ylabel("episodes")
    ax1.set_xlim(0, 1)
    ax1.legend(fontsize=8)
    ax1.set_title("final progress: success vs failure", fontsize=9)
    qualities = sorted({info.quality for info, _ in finals})
    for i, q in enumerate(qualities):
        vals = np.array([f for info, f in finals if info.quality == q])
        ax2.bar(i, vals.mean(), color=_STAGE_COLORS[i % len(_STAGE_COLORS)], alpha=0.6)
        ax2.scatter(np.full(len(vals), i) + np.linspace(-0.2, 0.2, len(vals)), vals, s=10, color="black", zorder=3)
    ax2.set_xticks(range(len(qualities)), qualities, fontsize=8)
    ax2.set_ylim(0, 1.05)
    ax2.set_title("final progress per quality (mean, episodes)", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


# ---------------------------------------------------------------------------- videos
VIDEO_HEIGHT = 240
"""Camera views are scaled to this height (small sim frames are enlarged so the overlay reads)."""
_PANEL = 64


def _views_frame(views: list[np.ndarray], height: int, names: Sequence[str] = ()) -> np.ndarray:
    out = []
    for i, v in enumerate(views):
        h, w = v.shape[:2]
        width = max(2, int(round(w * height / h)))
        interp = cv2.INTER_NEAREST if height >= 2 * h else cv2.INTER_AREA
        img = np.ascontiguousarray(cv2.resize(v, (width, height), interpolation=interp))
        if i:
            img[:, :2] = 0  # a dark seam between views
        if i < len(names):
            label = names[i].rsplit(".", 1)[-1]
            cv2.putText(img, label, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3, cv2.LINE_AA)
            cv2.putText(img, label, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
        out.append(img)
    return np.concatenate(out, axis=1)


def _overlay_panel(width: int, t: int, n: int, value: float, truth: float | None, label: str | None,
                   curve: np.ndarray) -> np.ndarray:
    """RGB panel: a progress bar with the value, ground truth as a tick, and the curve so far."""
    panel = np.full((_PANEL, width, 3), 24, np.uint8)
    x0, x1, y0, y1 = 10, width - 10, 8, 30
    cv2.rectangle(panel, (x0, y0), (x1, y1), (70, 70, 70), -1)
    fill = x0 + int(round((x1 - x0) * float(np.clip(value, 0, 1))))
    color = (int(255 * (1 - value)), int(200 * value + 55), 60)
    cv2.rectangle(panel, (x0, y0), (fill, y1), color, -1)
    if truth is not None and np.isfinite(truth):
        gx = x0 + int(round((x1 - x0) * float(np.clip(truth, 0, 1))))
        cv2.line(panel, (gx, y0 - 4), (gx, y1 + 4), (255, 255, 255), 2)
    cv2.putText(panel, f"{value:.2f}", (x0 + 4, y1 - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    text = f"frame {t + 1}/{n}"
    if truth is not None and np.isfinite(truth):
        text += f"  gt {truth:.2f}"
    if label:
        text += f"  stage: {label}"
    cv2.putText(panel, text, (x0, _PANEL - 12), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (220, 220, 220), 1, cv2.LINE_AA)
    # Sparkline of the curve so far in the bottom-right quarter.
    sx0, sx1, sy0, sy1 = int(width * 0.62), x1, 36, _PANEL - 4
    if sx1 - sx0 > 20:
        cv2.rectangle(panel, (sx0, sy0), (sx1, sy1), (50, 50, 50), 1)
        xs = sx0 + (np.arange(t + 1) * (sx1 - sx0) / max(n - 1, 1)).astype(np.int32)
        ys = sy1 - (np.clip(curve[: t + 1], 0, 1) * (sy1 - sy0)).astype(np.int32)
        cv2.polylines(panel, [np.stack([xs, ys], 1).reshape(-1, 1, 2)], False, (120, 200, 255), 1, cv2.LINE_AA)
    return panel


def write_overlay_video(
    path: str | os.PathLike,
    store: EpisodeStore,
    episode: int,
    cameras: Sequence[str],
    progress: np.ndarray,
    truth: np.ndarray | None = None,
    stage_labels: Sequence[str] | None = None,
    height: int = VIDEO_HEIGHT,
) -> Path:
    """An mp4 (OpenCV ``mp4v``) of the episode's camera views side by side with the progress bar,
    value, ground-truth tick, predicted stage and curve so far drawn below. If OpenCV cannot open an
    mp4 writer, PNG frames go to a folder of the same name instead; returns what was written."""
    start, end = store.episode_range(episode)
    frames = [np.asarray(store.array(c)[start:end]) for c in cameras]
    n = end - start
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    first = _views_frame([f[0] for f in frames], height)
    width = first.shape[1] + first.shape[1] % 2  # even sizes: some encoders refuse odd ones
    size = (width, height + _PANEL)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(store.fps), size)
    folder = None
    if not writer.isOpened():
        folder = path.with_suffix("")
        folder.mkdir(parents=True, exist_ok=True)
    for t in range(n):
        img = np.zeros((size[1], size[0], 3), np.uint8)
        views = _views_frame([f[t] for f in frames], height, cameras)
        img[:height, : views.shape[1]] = views
        img[height:] = _overlay_panel(width, t, n, float(progress[t]), None if truth is None else float(truth[t]),
                                      None if stage_labels is None else stage_labels[t], progress)
        bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
        if folder is None:
            writer.write(bgr)
        else:
            cv2.imwrite(str(folder / f"frame_{t:05d}.png"), bgr)
    writer.release()
    return path if folder is None else folder
