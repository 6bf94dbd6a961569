"""The demo's figures over seeds: is what `make demo` prints stable, or one lucky draw?

The demo (``roboreward demo``, configs/demo.yaml = the embedded defaults) trains SARM on 20
generated episodes and evaluates it on its own 24-episode set on unseen seeds (12 successes, 12
failures). This runs it once per seed, changing both the training data (the dataset recipe's seed,
so other layouts and other demonstrations) and the training seed, on the same evaluation set, and
records every figure the demo prints (VOC, AUROC, finish > hover, lowest final progress of a
success, drop after success, freeze rise, final gap) with their mean and spread. Each seed's run
folder is kept in the work folder, so a rerun reuses finished seeds.

Writes benchmarks/results/bench_demo.json.

    python benchmarks/bench_demo.py [--quick] [--seeds 0,1,2]
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from bench_reward_quality import FIGURES, figures  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SEED_STRIDE = 10000
"""Dataset seed of demo seed s: s * SEED_STRIDE (seed 0 is the demo's own data); the evaluation set's
seeds start at 100000, so no training episode of seeds 0-9 is an evaluation episode."""


def seed_config(seed: int, quick: bool) -> dict:
    """configs/demo.yaml as demo seed ``seed`` runs it."""
    config = yaml.safe_load((ROOT / "configs/demo.yaml").read_text())
    config["dataset"]["seed"] = seed * SEED_STRIDE
    config["reward"].setdefault("train", {})["seed"] = seed
    if quick:  # the same pipeline at toy size
        config["dataset"].update(episodes=6, image_size=32)
        config["evaluation"].update(episodes=4, image_size=32)
        config["reward"]["train"].update(steps=60, val_every=60, ckpt_every=60, warmup_steps=5)
        config["reward"]["data"]["image_size"] = 32
    return config


def run_seed(seed: int, work: Path, quick: bool) -> dict:
    out = work / f"seed{seed}"
    metrics_path = out / "sarm" / "eval" / "metrics.json"
    config = seed_config(seed, quick)
    saved = out / "demo.yaml"
    if saved.is_file() and yaml.safe_load(saved.read_text()) != config:
        raise SystemExit(f"{out} holds a demo run of another configs/demo.yaml; remove that folder (or pass --workdir) to rerun")
    if not metrics_path.is_file():
        out.mkdir(parents=True, exist_ok=True)
        saved.write_text(yaml.safe_dump(config, sort_keys=False))
        env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "HF_HUB_OFFLINE": "1"}
        subprocess.run([sys.executable, "-m", "roboreward.cli", "demo", "--config", saved, "--out", out],
                       check=True, env=env, cwd=ROOT)
    return figures(json.loads(metrics_path.read_text()))


def main():
    p = common.parser(__doc__)
    p.add_argument("--seeds", default="0,1,2")
    args = p.parse_args()
    seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",")]
    work = Path(args.workdir or ROOT / "outputs" / ("bench_demo_quick" if args.quick else "bench_demo"))
    per_seed = {seed: run_seed(seed, work, args.quick) for seed in seeds}
    summary = {}
    for fig in FIGURES:
        vals = [f[fig] for f in per_seed.values() if f.get(fig) is not None]
        summary[fig] = {"mean": float(np.mean(vals)), "std": float(np.std(vals)), "min": float(np.min(vals)),
                        "max": float(np.max(vals)), "n": len(vals)} if vals else None
    first = next(iter(per_seed.values()))
    dataset = seed_config(seeds[0], args.quick)["dataset"]
    record = {"quick": args.quick, "seeds": seeds, "dataset_seed_stride": SEED_STRIDE, "config": "configs/demo.yaml",
              "train_episodes": dataset["episodes"], "train_mix": dataset["mix"],
              "n_success": first.get("n_success"), "n_failure": first.get("n_failure"),
              "per_seed": {str(k): v for k, v in per_seed.items()}, "summary": summary}
    rows = [[str(s), *(f.get(fig) if f.get(fig) is not None else "n/a" for fig in FIGURES)] for s, f in per_seed.items()]
    rows.append(["mean", *((summary[fig] or {}).get("mean", "n/a") for fig in FIGURES)])
    print(common.table(rows, ["seed", *FIGURES]))
    print(f"evaluation set: {first.get('n_success')} successes / {first.get('n_failure')} failures")
    common.write("bench_demo", record, args.out)


if __name__ == "__main__":
    main()
