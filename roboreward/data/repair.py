"""Recover a damaged store: copy its intact episodes into a new store, optionally regenerating the
damaged ones from the recipe a generated store records.

``data validate`` finds the damage (a chunk file deleted or corrupted on disk); readers refuse the
frames it covers. ``repair_store(src, dst)`` writes a new store with every episode whose chunks
are intact, in order; with ``regenerate=True`` a store made by ``data generate`` gets each damaged
episode back from its recipe (episode i is a function of the recipe's seed and i, so it comes back
as it was). Feature caches are copied for the leading episodes they cover intact and
``data cache-embeddings`` finishes them; progress annotations are not copied (``reward annotate``
again). The source is never written, and the new store appears under ``dst`` only once complete.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .cache import FEATURES, cache_status, write_cache_rows
from .schema import StoreError, check_info
from .store import EpisodeStore
from .validate import damaged_chunks, damaged_episodes


def _regenerator(store: EpisodeStore):
    """A function i -> Episode rebuilding episode i from the store's recipe."""
    from .generate import Recipe, quality_plan

    saved = dict(store.root.attrs.get("extra", {})).get("recipe")
    if not isinstance(saved, dict):
        raise StoreError(
            f"{store.path} records no recipe (it was not made by `roboreward data generate`), so --regenerate cannot "
            "rebuild its episodes; repair without --regenerate to drop them, or re-import/re-record them"
        )
    recipe = Recipe(**saved)
    plan = quality_plan(recipe.episodes, recipe.mix)

    def rebuild(i: int):
        from .generate import recipe_episode

        return recipe_episode(recipe.job(i, plan[i]))

    return rebuild


def repair_store(src, dst, regenerate: bool = False, overwrite: bool = False, progress: bool = True) -> dict:
    """Write the repaired copy of ``src`` to ``dst``; returns what was kept, dropped and rebuilt."""
    src, dst = Path(src), Path(dst)
    store = EpisodeStore(src)  # a damaged episode_ends array fails here: nothing can be attributed then
    if dst.resolve() == src.resolve():
        raise StoreError(f"--out {dst} is the damaged store itself; write the repaired copy elsewhere and swap it in once checked")
    if dst.exists() and not overwrite:
        raise StoreError(f"{dst} already exists; pass --overwrite or another --out")
    damage = damaged_chunks(store)  # decodes every chunk once, for the episodes and the caches
    damaged = set(damaged_episodes(store, problems=damage))
    rebuild = _regenerator(store) if regenerate and damaged else None
    tmp = dst.with_name(f".{dst.name}.repair-tmp")
    if tmp.exists():  # left by a killed repair
        shutil.rmtree(tmp)
    new = EpisodeStore.create(tmp, store.features, store.fps, store.robot_type, store.cameras)
    kept, dropped, rebuilt, changed = [], [], [], []
    # Rows of the source's frames in the new store, for the feature caches: a cache's ``done`` is a
    # prefix, so rows are copied for the leading episodes only, up to the first rebuilt one.
    prefix_rows: list[np.ndarray] = []
    prefix_open = True
    for i in tqdm(range(store.n_episodes), desc=f"repair {src.name}", unit="ep", disable=not progress):
        if i not in damaged:
            new.add_episode(store.read_episode(i))
            kept.append(i)
            if prefix_open:
                prefix_rows.append(np.arange(*store.episode_range(i)))
        elif rebuild is not None:
            episode = rebuild(i)
            info = store.episodes[i]
            # Its recorded look (Episode.info) too: a generator that draws it differently would not rebuild it.
            same = (episode.length, episode.quality, episode.task, check_info(episode.info, f"episode {i}")) == (
                info.length, info.quality, info.task, info.info)
            if not same:
                changed.append(i)  # this roboreward's generator differs from the one that wrote the store
            new.add_episode(episode)
            rebuilt.append(i)
            prefix_open = False
        else:
            dropped.append(i)
    extra = dict(store.root.attrs.get("extra", {}))
    if dropped:
        extra.pop("recipe", None)  # it no longer describes the store: `data generate` must not resume it
    extra["repaired_from"] = {"path": str(src), "dropped": dropped, "regenerated": rebuilt}
    new.root.attrs["extra"] = extra

    caches = _copy_caches(store, new, np.concatenate(prefix_rows) if prefix_rows else np.zeros(0, np.int64),
                          {p.array for p in damage})
    if dst.exists():  # --overwrite
        shutil.rmtree(dst)
    tmp.rename(dst)
    progress = sorted(store.root["progress"].group_keys()) if "progress" in store.root else []
    return {"source": str(src), "out": str(dst), "episodes": store.n_episodes, "kept": kept, "dropped": dropped,
            "regenerated": rebuilt, "regenerated_differently": changed, "feature_caches": caches,
            "progress_not_copied": progress}


def _copy_caches(store: EpisodeStore, new: EpisodeStore, rows: np.ndarray, bad: set[str]) -> dict[str, int]:
    """Copy each feature cache's rows for ``rows`` (source frames, in new-store order) as far as they
    are cached and intact (``bad``: arrays with damaged chunks); returns {key: frames copied}."""
    if FEATURES not in store.root:
        return {}
    out = {}
    for key, status in cache_status(store).items():
        if status["error"] or status["dim"] is None:
            continue
        arrays = {cam: f"{FEATURES}/{key}/{cam}" for cam in store.cameras}
        if any(name in bad for name in arrays.values()):
            continue  # rebuilt from scratch by cache-embeddings rather than copied around a hole
        take = rows[rows < status["done"]]  # rows increase, so this is a prefix of the new store's frames
        copied = {cam: store.checked(name)[: status["done"]][take] for cam, name in arrays.items()}
        out[key] = write_cache_rows(new, key, dict(store.root[FEATURES][key].attrs), copied)
    return out
