"""Reward-model quality on the standard mixed-quality sim datasets, per task.

For each task: generate the dataset from its recipe (datasets/<task>_mixed.yaml), cache features,
train the reward model with its config, evaluate on the held-out episodes, all through the
`roboreward` command line a user would run. Resumes every step (existing stores, caches and runs
are reused). Prints VOC, AUROC, stage accuracy, MAE and reversed-episode falls per task next to the
goals (VOC >= 0.95, AUROC >= 0.95, stage accuracy >= 0.9), and writes
benchmarks/results/bench_reward_quality.json.

    python benchmarks/bench_reward_quality.py [--quick] [--tasks pick_place,stack] [--config configs/reward/sarm.yaml]
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
GOALS = {"voc": 0.95, "auroc": 0.95, "stage_accuracy": 0.9}


def cli(*args) -> None:
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-m", "roboreward.cli", *map(str, args)], check=True, env=env, cwd=ROOT)


def main():
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--tasks", default="pick_place,stack,drawer")
    p.add_argument("--config", default=str(ROOT / "configs/reward/sarm.yaml"))
    args = p.parse_args()
    work = Path(args.workdir or ROOT / "outputs" / ("quality_quick" if args.quick else "quality"))
    rows, record = [], {"quick": args.quick, "config": args.config, "goals": GOALS, "tasks": {}}
    for task in args.tasks.split(","):
        t0 = time.perf_counter()
        store, run = work / f"{task}_mixed.zarr", work / f"sarm_{task}"
        gen = ["--recipe", ROOT / f"datasets/{task}_mixed.yaml"]
        if args.quick:  # same pipeline, small: 16 episodes at 64 px, 300 steps
            gen += ["--episodes", 16, "--image-size", 64]
        cli("data", "generate", *gen, "--out", store)
        train = ["--steps", 300] if args.quick else []
        cli("reward", "train", "--config", args.config, "--dataset", store, "--out", run, *train)
        cli("reward", "eval", "--model", run / "model", "--dataset", store, "--out", run / "eval", "--videos", 1)
        m = json.loads((run / "eval" / "metrics.json").read_text())
        m["wall_seconds"] = time.perf_counter() - t0
        record["tasks"][task] = {k: m.get(k) for k in ("voc", "auroc", "stage_accuracy", "mae", "reversed_fall_share",
                                                       "per_quality", "auroc_episodes", "voc_episodes", "wall_seconds")}
        rows.append([task, m["voc"], m["auroc"], m["stage_accuracy"], m["mae"], m["reversed_fall_share"],
                     all((m.get(k) or 0) >= g for k, g in GOALS.items())])
    print(common.table(rows, ["task", "VOC", "AUROC", "stage acc", "MAE", "reversed falls", "goals met"]))
    common.write("bench_reward_quality", record, args.out)


if __name__ == "__main__":
    main()
