"""Generate a demonstration store from the simulator's scripted demonstrators.

A recipe (task, episode count, quality mix, image size, seed, optional task_config and visual
options) fully determines the store: episode i uses seed ``seed + i`` and the i-th entry of the
quality plan. The recipe is saved in the store, so re-running the same command after an
interruption resumes where the last commit left off. With ``visual`` options each episode's drawn
appearance is recorded in its entry (``info.visual``).
"""
from __future__ import annotations

import multiprocessing as mp
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from .schema import QUALITIES, StoreError
from .store import EpisodeStore


def parse_mix(text: str | dict) -> dict[str, float]:
    """``"expert=0.5,suboptimal=0.3,failure=0.2"`` (or a dict) -> shares per quality; they must sum to 1."""
    if isinstance(text, dict):
        items = {str(k): float(v) for k, v in text.items()}
    else:
        items = {}
        for part in str(text).split(","):
            name, sep, value = part.partition("=")
            try:
                items[name.strip()] = float(value)
            except ValueError:
                raise StoreError(f"--mix part {part!r} is not quality=weight, e.g. expert=0.5,suboptimal=0.3,failure=0.2") from None
            if not sep:
                raise StoreError(f"--mix part {part!r} is not quality=weight, e.g. expert=0.5,suboptimal=0.3,failure=0.2")
    for name, weight in items.items():
        if name not in QUALITIES[:3]:
            raise StoreError(f"--mix quality {name!r} is not one of {QUALITIES[:3]}")
        if weight < 0:
            raise StoreError(f"--mix weight of {name} is negative")
    total = sum(items.values())
    # Shares must say what they mean: a mix summing to 1.3 or expert=2 is a typo, not a ratio.
    if abs(total - 1.0) > 1e-6:
        given = ",".join(f"{k}={v:g}" for k, v in items.items())
        raise StoreError(f"mix {given} sums to {total:g}, not 1; give shares that sum to 1, e.g. expert=0.5,suboptimal=0.3,failure=0.2")
    return {k: v / total for k, v in items.items()}


def quality_plan(n: int, mix: dict[str, float]) -> list[str]:
    """Exact counts by largest remainder, interleaved so any prefix of the store is mixed too."""
    raw = {q: n * w for q, w in mix.items()}
    counts = {q: int(v) for q, v in raw.items()}
    for q in sorted(raw, key=lambda q: raw[q] - counts[q], reverse=True)[: n - sum(counts.values())]:
        counts[q] += 1
    # Spread each quality evenly over [0, n): sort by (k + 0.5) / count.
    slots = sorted((((k + 0.5) / c), q) for q, c in counts.items() for k in range(c))
    return [q for _, q in slots]


@dataclass
class Recipe:
    """What a generated store contains; saved in the store so a re-run resumes or refuses."""

    task: str = "pick_place"
    """Sim task (see ``roboreward.sim.TASKS``)."""
    episodes: int = 12
    """Number of episodes."""
    mix: dict = field(default_factory=lambda: {"expert": 0.5, "suboptimal": 0.3, "failure": 0.2})
    """Share of each demonstrator quality; the shares must sum to 1."""
    image_size: int = 128
    """Square camera resolution."""
    seed: int = 0
    """Episode i uses seed + i."""
    task_config: dict = field(default_factory=dict)
    """Overrides of the task's default config (``roboreward.sim.tasks``), e.g. narrower object
    randomisation; empty = the task's defaults."""
    visual: dict = field(default_factory=dict)
    """Appearance options (``roboreward.sim.visual.VisualConfig`` fields): ranges drawn per episode
    (domain randomisation) or fixed values (held-out looks); empty = the plain scene. Appearance
    never changes physics: the same seed gives the same states and actions with or without it."""
    demonstrator: dict = field(default_factory=dict)
    """How the scripted demonstrators choose their moves (``roboreward.sim.scripted.DemoConfig``
    fields, e.g. ``{keep_out: false}``); empty = the original demonstrator."""
    rerecord_failed: int = 0
    """How many times an expert or suboptimal demonstration that ends in failure is recorded again
    from another initial state (seed + i + k * 1_000_000, k = 1, 2, ...), as an operator re-records a
    failed take; the last try is kept whatever its outcome. 0 keeps every episode as it came. Failure
    episodes are never re-recorded, so the mix's failure share stays what it says even where the
    layout is hard for the scripted experts (``datasets/stack_randomised_wide.yaml``)."""
    name: str = ""
    """Dataset name (recipes in datasets/)."""
    description: str = ""

    def __post_init__(self):
        self.mix = parse_mix(self.mix)
        if not isinstance(self.task_config, dict):
            raise StoreError(f"task_config must be a mapping of task config fields, got {self.task_config!r}")
        if not isinstance(self.visual, dict):
            raise StoreError(f"visual must be a mapping of visual options (roboreward.sim.visual.VisualConfig), got {self.visual!r}")
        if not isinstance(self.demonstrator, dict):
            raise StoreError(f"demonstrator must be a mapping of demonstrator options (roboreward.sim.scripted.DemoConfig), "
                             f"got {self.demonstrator!r}")
        if self.episodes < 1:
            raise StoreError(f"episodes must be >= 1, got {self.episodes}")
        if not 16 <= self.image_size <= 512:
            raise StoreError(f"image_size must be in [16, 512], got {self.image_size}")
        if not 0 <= self.rerecord_failed <= 20:
            raise StoreError(f"rerecord_failed must be in [0, 20] (tries per failed demonstration), got {self.rerecord_failed}")

    @classmethod
    def from_yaml(cls, path) -> "Recipe":
        from ..config import load_config

        return load_config(cls, path)

    def identity(self) -> dict:
        """The fields that decide the data (name and description do not; an empty task_config,
        visual or demonstrator and a zero rerecord_failed are left out, so stores written before
        those fields existed still resume)."""
        out = {k: v for k, v in asdict(self).items() if k not in ("name", "description")}
        for optional in ("task_config", "visual", "demonstrator", "rerecord_failed"):
            if not out[optional]:
                del out[optional]
        return out

    def job(self, i: int, quality: str) -> tuple:
        """What ``recipe_episode`` needs to make episode ``i`` of this recipe (picklable, for workers)."""
        return (self.task, quality, self.seed + i, self.image_size, self.task_config, self.visual, self.demonstrator,
                self.rerecord_failed)


RERECORD_SEED_STRIDE = 1_000_000
"""Try k of episode i re-records it from seed + i + k * this (far from every recipe's seeds)."""


def recipe_episode(args):
    from roboreward.sim.scripted import generate_episode

    task, quality, seed, image_size, task_config, visual, demonstrator, rerecord = args
    tries = 0 if quality == "failure" else rerecord
    for k in range(tries + 1):
        episode = generate_episode(task, quality, seed + k * RERECORD_SEED_STRIDE, image_size=image_size,
                                   task_config=task_config, visual=visual, demonstrator=demonstrator)
        if episode.success:
            break
    if k:
        episode.info = {**episode.info, "seed": seed + k * RERECORD_SEED_STRIDE, "rerecorded": k}
    return episode


def generate_store(path, recipe: Recipe, workers: int = 0, overwrite: bool = False, progress: bool = True) -> EpisodeStore:
    """Write (or resume) the store for ``recipe``; returns it open for reading."""
    from roboreward.sim.scripted import PLANS, feature_specs

    if recipe.task not in PLANS:
        raise StoreError(f"unknown task {recipe.task!r}; available: {sorted(PLANS)}")
    if recipe.task_config:
        from roboreward.sim.tasks import make_task_config

        make_task_config(recipe.task, recipe.task_config)  # bad keys fail now, in one line, before any write
    if recipe.visual:
        from roboreward.sim.visual import check_visual_config

        check_visual_config(recipe.task, recipe.visual)  # likewise
    if recipe.demonstrator:
        from roboreward.sim.scripted import demo_config

        demo_config(recipe.demonstrator)  # likewise
    path = Path(path)
    recipe_json = recipe.identity()
    if path.exists() and not overwrite:
        store = EpisodeStore(path, mode="a")
        saved = store.root.attrs.get("extra", {}).get("recipe")
        if saved is None:
            raise StoreError(f"{path} exists and was not made by `data generate` (it records no recipe); "
                             "pass another --out (or --overwrite to replace it)")
        if saved != recipe_json:
            raise StoreError(f"{path} exists with a different recipe ({saved}); pass --overwrite or another --out")
        new = sorted(set(feature_specs(recipe.task, recipe.image_size)) ^ set(store.features))
        if new and store.n_episodes < recipe.episodes:
            raise StoreError(f"{path} was written by an older generator (features differ: {new}); "
                             "pass --overwrite or another --out to regenerate it")
    else:
        store = EpisodeStore.create(
            path, feature_specs(recipe.task, recipe.image_size), fps=30, robot_type="so101_follower", overwrite=overwrite
        )
        store.set_attr("recipe", recipe_json)
    plan = quality_plan(recipe.episodes, recipe.mix)
    todo = [recipe.job(i, plan[i]) for i in range(store.n_episodes, recipe.episodes)]
    workers = workers or min(len(todo), os.cpu_count() or 1)
    bar = tqdm(total=recipe.episodes, initial=store.n_episodes, unit="ep", desc=f"generate {recipe.task}", disable=not progress)
    if workers <= 1 or len(todo) <= 1:
        results = map(recipe_episode, todo)
        pool = None
    else:
        # spawn: MuJoCo/EGL contexts must not be inherited through fork
        pool = mp.get_context("spawn").Pool(workers)
        results = pool.imap(recipe_episode, todo)
    try:
        for ep in results:
            store.add_episode(ep)
            bar.update(1)
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
    return EpisodeStore(path)
