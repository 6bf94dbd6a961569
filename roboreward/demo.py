"""The main job on embedded defaults: what `make demo` runs on a fresh machine.

Generates a small mixed-quality dataset of one sim task with the scripted demonstrators (resuming
if a previous run was interrupted), validates it and prints its summary. Nothing is downloaded.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .config import load_config
from .data.generate import Recipe, generate_store
from .data.validate import check_store
from .errors import RoborewardError


@dataclass
class DemoConfig:
    dataset: Recipe = field(default_factory=lambda: Recipe(image_size=96))
    """The dataset to generate (a datasets/*.yaml recipe's fields)."""
    workers: int = 0
    """Generator processes (0: one per core)."""


def run_demo(config_path, out: Path) -> int:
    cfg = load_config(DemoConfig, config_path)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    recipe = d = cfg.dataset
    store_path = out / f"{d.task}_mixed.zarr"
    print(f"[1/2] generating {d.episodes} {d.task} demonstrations ({', '.join(f'{k} {v:.0%}' for k, v in recipe.mix.items())}) -> {store_path}")
    store = generate_store(store_path, recipe, workers=cfg.workers)
    print(f"[2/2] validating {store_path}")
    problems = check_store(store_path)
    for p in problems:
        print(f"  {p}")
    if any(p.severity == "error" for p in problems):
        raise RoborewardError(f"{store_path} failed validation; see the problems above")
    from .cli import format_summary

    summary = store.summary()
    print(format_summary(summary))
    (out / "summary.json").write_text(json.dumps({"config": asdict(cfg), "dataset": summary}, indent=2))
    print(f"wrote {out / 'summary.json'}")
    return 0
