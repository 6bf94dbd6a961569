"""SARM training time: the default config against SARM as the robustness work found it, same store and machine.

The robustness issue allows the robust SARM at most twice the training time of the SARM it started
from. Both are trained here on the same store, one after the other:

- ``before``: configs/reward/sarm.yaml with the training additions of the robustness work undone
  (no terminal "done" stage, no photometric copies): what ``reward train`` ran before. The readout
  fields (stage filter, minimum stay, hold) do not change what is trained; they only change how
  validation reads the model, so they stay as configured.
- ``default``: configs/reward/sarm.yaml as it is (done stage, three photometric copies);
- ``two_copies``: the default with two photometric copies (configs/reward/sarm_aug2.yaml).

Each is timed twice:

- ``cold``: on a fresh copy of the training store without any feature cache, as a user's first
  ``reward train`` on a new dataset: the encoder pass over every frame (and, for the default, one
  more pass per photometric copy) is part of the time;
- ``warm``: a second run on the same store, its caches present: the cost of another seed or
  config.

The time is split into the encoder passes (``cache_for_training``) and the training itself
(``train_reward`` on the cached store). Prints the table and the ratios default / before, and
writes benchmarks/results/bench_train_time.json.

    python benchmarks/bench_train_time.py [--quick] [--store STORE]

Default store: datasets/stack_randomised.yaml generated into the work folder (100 episodes, the
store the robustness figures train on); ``--store`` times an existing store instead (copied
without its feature caches). ``--quick``: 6 episodes at 64 px and 40 steps.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

ROOT = common.ROOT
CONFIG = "configs/reward/sarm.yaml"
BEFORE = {"model": {"done_key": None}, "data": {"augment_copies": 0}}
"""What ``before`` changes in the default config: the training additions of the robustness work."""


def fresh_copy(store: Path, dest: Path) -> Path:
    """``store`` copied to ``dest`` without its feature caches."""
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(store, dest, ignore=lambda folder, names: ["features"] if Path(folder) == store else [])
    return dest


def configs(quick: bool) -> dict:
    from dataclasses import replace

    from roboreward.config import load_config
    from roboreward.rewards.train import RewardTrainConfig

    default = load_config(RewardTrainConfig, ROOT / CONFIG)
    before = replace(default, model={**default.model, **BEFORE["model"]}, data=replace(default.data, **BEFORE["data"]))
    two = load_config(RewardTrainConfig, ROOT / "configs/reward/sarm_aug2.yaml")
    for c in (default, before, two):
        if quick:
            c.train.steps, c.train.val_every, c.train.ckpt_every, c.data.image_size = 40, 20, 20, 64
    return {"before": before, "default": default, "two_copies": two}


def timed_run(config, store: Path, out: Path) -> dict:
    """Seconds of the encoder passes and of the training itself, one ``reward train``."""
    from roboreward.rewards.train import cache_for_training, train_reward

    if out.exists():
        shutil.rmtree(out)
    t0 = time.perf_counter()
    _, copies = cache_for_training(store, config.data, progress=False)
    t1 = time.perf_counter()
    train_reward(config, store, out, progress=False)
    t2 = time.perf_counter()
    return {"encode_s": t1 - t0, "train_s": t2 - t1, "total_s": t2 - t0, "copies": len(copies)}


def main():
    p = common.parser(__doc__)
    p.add_argument("--store", type=Path, default=None, help="time this store (default: generate datasets/stack_randomised.yaml)")
    args = p.parse_args()
    work = Path(args.workdir or ROOT / "outputs" / ("bench_train_time_quick" if args.quick else "bench_train_time"))
    work.mkdir(parents=True, exist_ok=True)
    from roboreward.data.generate import Recipe, generate_store
    from roboreward.data.store import EpisodeStore

    source = args.store
    if source is None:
        recipe = Recipe.from_yaml(ROOT / "datasets/stack_randomised.yaml")
        if args.quick:
            recipe.episodes, recipe.image_size = 6, 64
        source = work / "stack_randomised.zarr"
        generate_store(source, recipe, workers=0)
    source = Path(source).resolve()
    opened = EpisodeStore(source)
    n_frames, n_episodes = opened.n_frames, opened.n_episodes
    cfgs = configs(args.quick)
    record = {"quick": args.quick, "config": CONFIG, "before": BEFORE, "store": source.name,
              "episodes": n_episodes, "frames": n_frames, "steps": cfgs["default"].train.steps, "runs": {}}
    # Cold runs first (each on its own fresh copy), then warm ones on those copies.
    for phase in ("cold", "warm"):
        for name, config in cfgs.items():
            store = work / f"store_{name}.zarr"
            if phase == "cold":
                fresh_copy(source, store)
            record["runs"][f"{name}/{phase}"] = r = timed_run(config, store, work / f"run_{name}_{phase}")
            print(f"{name} {phase}: encode {r['encode_s']:.0f} s + train {r['train_s']:.0f} s = {r['total_s']:.0f} s", flush=True)
    runs = record["runs"]
    record["ratio"] = {phase: runs[f"default/{phase}"]["total_s"] / runs[f"before/{phase}"]["total_s"]
                       for phase in ("cold", "warm")}
    record["ratio_two_copies"] = {phase: runs[f"two_copies/{phase}"]["total_s"] / runs[f"before/{phase}"]["total_s"]
                                  for phase in ("cold", "warm")}
    record["train_only_ratio"] = runs["default/warm"]["train_s"] / runs["before/warm"]["train_s"]
    rows = [[name, phase, r["copies"], f"{r['encode_s']:.0f}", f"{r['train_s']:.0f}", f"{r['total_s']:.0f}"]
            for key, r in runs.items() for name, phase in [key.split("/")]]
    print(common.table(rows, ["config", "store", "copies", "encode s", "train s", "total s"]))
    print(f"default / before: cold {record['ratio']['cold']:.2f}x, warm {record['ratio']['warm']:.2f}x "
          f"(training alone {record['train_only_ratio']:.2f}x); with two copies: cold "
          f"{record['ratio_two_copies']['cold']:.2f}x, warm {record['ratio_two_copies']['warm']:.2f}x; goal <= 2x")
    common.write("bench_train_time", record, args.out)


if __name__ == "__main__":
    main()
