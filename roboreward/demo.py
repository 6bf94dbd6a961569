"""The main job on embedded defaults: what `make demo` runs on a fresh machine.

1. generate a small mixed-quality dataset of one sim task with the scripted demonstrators;
2. validate it and print its summary;
3. generate an evaluation set of the same task on unseen seeds, half of it failures, so the figures
   rest on enough successes and failures to mean something (the training split's few held-out
   episodes, one failure among six, gave an AUROC that said nothing either way);
4. train a SARM reward model on the dataset (frozen-encoder features cached in the store);
5. evaluate it on the evaluation set (metrics with the robustness figures, plots, an overlay video).
Every step resumes if a previous run was interrupted. Nothing is downloaded.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from .config import load_config
from .data.generate import Recipe, generate_store
from .data.validate import check_store
from .errors import RoborewardError
from .rewards.train import RewardDataConfig, RewardTrainConfig, train_reward
from .training import TrainConfig


def _demo_reward() -> RewardTrainConfig:
    # configs/reward/sarm.yaml's model at demo size: a few hundred steps on a dozen episodes.
    return RewardTrainConfig(
        model={"type": "sarm", "state_key": "observation.state", "window": 8, "frame_gap": 5,
               "readout_filter": "stage", "readout_gate": 0.05, "readout_hold": "stage", "done_key": "gt.success"},
        train=TrainConfig(steps=600, batch_size=64, warmup_steps=60, val_every=300, ckpt_every=300, log_every=50),
        data=RewardDataConfig(image_size=96, val_fraction=0.1),
    )


@dataclass
class DemoConfig:
    dataset: Recipe = field(default_factory=lambda: Recipe(
        episodes=24, image_size=96, mix={"expert": 0.4, "suboptimal": 0.2, "failure": 0.4}))
    """The dataset to generate (a datasets/*.yaml recipe's fields). Failure-heavy: with the standard
    mix's 20% a demo-sized set trains on four failures of two kinds, and the model read half of the
    evaluation's failures (those that drop the cube in transport) as finished, at 1.00."""
    evaluation: Recipe = field(default_factory=lambda: Recipe(
        episodes=24, image_size=96, seed=100000, mix={"expert": 0.35, "suboptimal": 0.15, "failure": 0.5}))
    """The evaluation set: its episodes and mix (its task and image size are the dataset's; seeds
    from 100000 never meet the dataset's)."""
    reward: RewardTrainConfig = field(default_factory=_demo_reward)
    """Reward model training (configs/reward/sarm.yaml's fields); ``train.steps: 0`` skips steps 3-4."""
    workers: int = 0
    """Generator processes (0: one per core)."""


def run_demo(config_path, out: Path) -> int:
    from .cli import format_summary

    cfg = load_config(DemoConfig, config_path)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    recipe = cfg.dataset
    store_path = out / f"{recipe.task}_mixed.zarr"
    mix = ", ".join(f"{k} {v:.0%}" for k, v in recipe.mix.items())
    print(f"[1/5] generating {recipe.episodes} {recipe.task} demonstrations ({mix}) -> {store_path}")
    store = generate_store(store_path, recipe, workers=cfg.workers)
    print(f"[2/5] validating {store_path}")
    problems = check_store(store_path)
    for p in problems:
        print(f"  {p}")
    if any(p.severity == "error" for p in problems):
        raise RoborewardError(f"{store_path} failed validation; see the problems above")
    summary = {"config": asdict(cfg), "dataset": store.summary()}
    print(format_summary(summary["dataset"]))
    evaluation = replace(cfg.evaluation, task=recipe.task, image_size=recipe.image_size)
    eval_path = out / f"{recipe.task}_eval.zarr"
    eval_mix = ", ".join(f"{k} {v:.0%}" for k, v in evaluation.mix.items())
    print(f"[3/5] generating the evaluation set: {evaluation.episodes} {recipe.task} episodes on unseen seeds ({eval_mix}) "
          f"-> {eval_path}")
    generate_store(eval_path, evaluation, workers=cfg.workers)
    if cfg.reward.train.steps > 0:
        run = out / "sarm"
        print(f"[4/5] training SARM for {cfg.reward.train.steps} steps -> {run}")
        model_dir = train_reward(cfg.reward, store_path, run)
        print(f"[5/5] evaluating on {eval_path}")
        from .eval.evaluate import evaluate_reward, summary_text

        metrics = evaluate_reward(model_dir, eval_path, run / "eval", videos=1, plots=4)
        keys = ("voc", "mae", "stage_accuracy", "auroc", "reversed_fall_share")
        summary["reward"] = {k: metrics.get(k) for k in keys}
        summary["reward"]["counts"] = metrics.get("counts", {}).get("auroc")
        for line in summary_text(metrics).splitlines():
            print("  " + line)
        print(f"  plots and video: {run / 'eval'}")
        print(f"  (a demo-sized run: {recipe.episodes} training episodes. The standard 100-episode datasets, held-out "
              "looks and every reward model: benchmarks/bench_reward_quality.py and bench_rewards.py, tables in the README.)")
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(f"wrote {out / 'summary.json'}")
    return 0
