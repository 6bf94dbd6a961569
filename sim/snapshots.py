"""Pictures of every task: front and wrist cameras side by side, mid-way through an expert demo.

    python -m roboreward.sim.snapshots --out docs/images/tasks [--size 256] [--seed 0]
    python -m roboreward.sim.snapshots --recipe datasets/pick_place_heldout_*.yaml --out docs/images/visual

With ``--recipe`` each picture is the recipe's first episode (its task, task_config and visual
options, seed = the recipe's seed unless ``--seed`` is given), saved as ``<recipe name>.png``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from .scripted import PLANS, generate_episode


def snapshot(task: str, size: int = 256, seed: int = 0, task_config: dict | None = None,
             visual: dict | None = None) -> np.ndarray:
    """RGB image (size, 2 * size, 3): both cameras in the middle of the expert's transport stage
    (arm, held object and destination all in view)."""
    ep = generate_episode(task, "expert", seed, image_size=size, task_config=task_config, visual=visual)
    transport = next(s for s in ep.annotations["sparse"] if s.name == "transport")
    t = (transport.start + transport.end) // 2
    return np.concatenate([ep.data["observation.images.front"][t], ep.data["observation.images.wrist"][t]], axis=1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/images/tasks"), help="output folder")
    parser.add_argument("--size", type=int, default=256, help="camera resolution (px)")
    parser.add_argument("--seed", type=int, default=None, help="episode seed (default 0, or the recipe's seed)")
    parser.add_argument("--recipe", type=Path, nargs="+", default=None,
                        help="dataset recipes (datasets/*.yaml): one picture of each, in its task, layout and look")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = []
    if args.recipe:
        from roboreward.data.generate import Recipe

        for path in args.recipe:
            r = Recipe.from_yaml(path)
            seed = r.seed if args.seed is None else args.seed
            jobs.append((args.out / f"{r.name or path.stem}.png", r.task, seed, r.task_config, r.visual))
    else:
        jobs = [(args.out / f"{task}.png", task, args.seed or 0, None, None) for task in sorted(PLANS)]
    for path, task, seed, task_config, visual in jobs:
        image = snapshot(task, args.size, seed, task_config=task_config, visual=visual)
        cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        print(path)


if __name__ == "__main__":
    main()
