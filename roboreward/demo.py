"""The main job on embedded defaults: what `make demo` runs on a fresh machine.

1. generate a small mixed-quality dataset of one sim task with the scripted demonstrators;
2. validate it and print its summary;
3. train a SARM reward model on it (frozen-encoder features cached in the store);
4. evaluate it on the held-out episodes (metrics, plots, an overlay video).
Every step resumes if a previous run was interrupted. Nothing is downloaded.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
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
        model={"type": "sarm", "state_key": "observation.state", "window": 8, "frame_gap": 5},
        train=TrainConfig(steps=600, batch_size=64, warmup_steps=60, val_every=300, ckpt_every=300, log_every=50),
        data=RewardDataConfig(image_size=96, val_fraction=0.3),
    )


@dataclass
class DemoConfig:
    dataset: Recipe = field(default_factory=lambda: Recipe(episodes=20, image_size=96))
    """The dataset to generate (a datasets/*.yaml recipe's fields)."""
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
    print(f"[1/4] generating {recipe.episodes} {recipe.task} demonstrations ({mix}) -> {store_path}")
    store = generate_store(store_path, recipe, workers=cfg.workers)
    print(f"[2/4] validating {store_path}")
    problems = check_store(store_path)
    for p in problems:
        print(f"  {p}")
    if any(p.severity == "error" for p in problems):
        raise RoborewardError(f"{store_path} failed validation; see the problems above")
    summary = {"config": asdict(cfg), "dataset": store.summary()}
    print(format_summary(summary["dataset"]))
    if cfg.reward.train.steps > 0:
        run = out / "sarm"
        print(f"[3/4] training SARM for {cfg.reward.train.steps} steps -> {run}")
        model_dir = train_reward(cfg.reward, store_path, run)
        split = json.loads((run / "split.json").read_text())
        print(f"[4/4] evaluating on held-out episodes {split['val']}")
        from .eval.evaluate import evaluate_reward

        metrics = evaluate_reward(model_dir, store_path, run / "eval", episodes=split["val"], videos=1, plots=4)
        keys = ("voc", "mae", "stage_accuracy", "auroc", "reversed_fall_share")
        summary["reward"] = {k: metrics.get(k) for k in keys}
        print("  " + "  ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} n/a" for k, v in summary["reward"].items()))
        print(f"  plots and video: {run / 'eval'}")
        print(f"  (a demo-sized run: {recipe.episodes} episodes, {len(split['val'])} held out. The standard 100-episode "
              "datasets and configs/reward/sarm.yaml: benchmarks/bench_reward_quality.py, table in the README.)")
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(f"wrote {out / 'summary.json'}")
    return 0
