"""Pictures of every task: front and wrist cameras side by side, mid-way through an expert demo.

    python -m roboreward.sim.snapshots --out docs/images/tasks [--size 256] [--seed 0]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from .scripted import PLANS, generate_episode


def snapshot(task: str, size: int = 256, seed: int = 0) -> np.ndarray:
    """RGB image (size, 2 * size, 3): both cameras in the middle of the expert's transport stage
    (arm, held object and destination all in view)."""
    ep = generate_episode(task, "expert", seed, image_size=size)
    transport = next(s for s in ep.annotations["sparse"] if s.name == "transport")
    t = (transport.start + transport.end) // 2
    return np.concatenate([ep.data["observation.images.front"][t], ep.data["observation.images.wrist"][t]], axis=1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/images/tasks"), help="output folder")
    parser.add_argument("--size", type=int, default=256, help="camera resolution (px)")
    parser.add_argument("--seed", type=int, default=0, help="episode seed")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for task in sorted(PLANS):
        path = args.out / f"{task}.png"
        cv2.imwrite(str(path), cv2.cvtColor(snapshot(task, args.size, args.seed), cv2.COLOR_RGB2BGR))
        print(path)


if __name__ == "__main__":
    main()
