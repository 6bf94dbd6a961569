"""Evaluation of reward models: metrics (pure functions), whole-episode evaluation with plots and
overlay videos, and probes (the model on re-indexed frames: held, frozen)."""
from .evaluate import evaluate_reward, plot_episode, plot_summary, summary_text, write_overlay_video
from .metrics import (
    auroc,
    final_progress,
    final_progress_gap,
    finish_margin,
    freeze_rise,
    hold_change,
    mae,
    post_success_drop,
    reversed_fall_share,
    spearman,
    stage_accuracy,
    stage_errors,
    voc,
)
from .probes import freeze_frames, hold_frames, probe_progress, probe_support

__all__ = [
    "auroc", "evaluate_reward", "final_progress", "final_progress_gap", "finish_margin", "freeze_frames", "freeze_rise",
    "hold_change", "hold_frames", "mae", "plot_episode", "plot_summary", "post_success_drop", "probe_progress",
    "probe_support", "reversed_fall_share", "spearman", "stage_accuracy", "stage_errors", "summary_text", "voc",
    "write_overlay_video",
]
