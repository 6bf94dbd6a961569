"""Evaluation of reward models: metrics (pure functions), whole-episode evaluation with plots and
overlay videos."""
from .evaluate import evaluate_reward, plot_episode, plot_summary, write_overlay_video
from .metrics import auroc, final_progress, mae, reversed_fall_share, spearman, stage_accuracy, voc

__all__ = [
    "auroc", "evaluate_reward", "final_progress", "mae", "plot_episode", "plot_summary", "reversed_fall_share",
    "spearman", "stage_accuracy", "voc", "write_overlay_video",
]
