"""Join several stores of one robot into one: a multi-task training set from single-task stores.

``merge_stores([a, b, ...], dst)`` writes every episode of ``a``, then of ``b``..., in order, into a
new store at ``dst``, with its task, success, quality, subtask annotations and recorded look. The
sources must share the schema (features with their shapes and dtypes, cameras, fps, robot type);
the first difference is one error line naming it. A feature cache is carried over when every source
holds it complete; a photometric copy's cache is not (its look is drawn from the episode's index,
which the merge changes; ``data cache-embeddings --config`` rebuilds it). Progress annotations are
not copied (``reward annotate`` the merged store). The sources are only read, and the new store
appears at ``dst`` only once complete: a merge killed at any point leaves nothing there, and running
it again starts over.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .cache import FEATURES, cache_status, write_cache_rows
from .schema import StoreError
from .store import EpisodeStore


def _schema(store: EpisodeStore) -> dict:
    return {"fps": store.fps, "robot_type": store.robot_type, "cameras": store.cameras,
            "features": {k: (f.kind, tuple(f.shape), str(f.dtype)) for k, f in store.features.items()}}


def _check_same_schema(first: EpisodeStore, other: EpisodeStore) -> None:
    a, b = _schema(first), _schema(other)
    fix = "merge stores recorded with the same robot, cameras and features"
    for field in ("fps", "robot_type", "cameras"):
        if a[field] != b[field]:
            raise StoreError(f"{other.path} has {field} {b[field]!r} but {first.path} has {a[field]!r}; {fix}")
    for key in sorted(set(a["features"]) | set(b["features"])):
        if key not in b["features"] or key not in a["features"]:
            has, lacks = (first, other) if key in a["features"] else (other, first)
            raise StoreError(f"feature {key!r} is in {has.path} but not in {lacks.path}; {fix}")
        if a["features"][key] != b["features"][key]:
            raise StoreError(f"feature {key!r} is {b['features'][key]} (kind, shape, dtype) in {other.path} but "
                             f"{a['features'][key]} in {first.path}; {fix}")


def _shared_caches(stores: list[EpisodeStore]) -> list[str]:
    """Cache keys complete and plain (no photometric copy) in every store, with equal descriptions."""
    keys = None
    for store in stores:
        ok = {k for k, s in cache_status(store).items()
              if s["error"] is None and s["dim"] is not None and s["done"] == store.n_frames
              and "augment" not in store.root[FEATURES][k].attrs}
        keys = ok if keys is None else keys & ok
    first = stores[0]
    return sorted(k for k in keys or () if all(
        store.root[FEATURES][k].attrs.get("encoder") == first.root[FEATURES][k].attrs.get("encoder")
        and store.root[FEATURES][k].attrs.get("dim") == first.root[FEATURES][k].attrs.get("dim") for store in stores))


def merge_stores(sources, dst, overwrite: bool = False, progress: bool = True) -> dict:
    """Write the episodes of every store in ``sources``, in order, to a new store ``dst``; returns
    {out, episodes per source, tasks, feature caches carried over}."""
    paths = [Path(p) for p in sources]
    dst = Path(dst)
    if len(paths) < 2:
        raise StoreError("merge needs at least two stores; to copy one store use `cp -r`")
    if len({p.resolve() for p in paths}) < len(paths):
        raise StoreError("a store is named twice among the sources; name each store once")
    if any(dst.resolve() == p.resolve() for p in paths):
        raise StoreError(f"--out {dst} is one of the sources; write the merged store to a new path")
    if dst.exists() and not overwrite:
        raise StoreError(f"{dst} already exists; pass --overwrite or another --out")
    stores = [EpisodeStore(p) for p in paths]
    for store in stores[1:]:
        _check_same_schema(stores[0], store)
    empty = [str(s.path) for s in stores if s.n_episodes == 0]
    if empty:
        raise StoreError(f"{empty[0]} holds no committed episode; leave it out of the merge")
    tmp = dst.with_name(f".{dst.name}.merge-tmp")
    if tmp.exists():  # left by a killed merge
        shutil.rmtree(tmp)
    first = stores[0]
    new = EpisodeStore.create(tmp, first.features, first.fps, first.robot_type, first.cameras)
    total = sum(s.n_episodes for s in stores)
    with tqdm(total=total, desc=f"merge into {dst.name}", unit="ep", disable=not progress) as bar:
        for store in stores:
            for i in range(store.n_episodes):
                new.add_episode(store.read_episode(i))
                bar.update(1)
    origins = []
    for s in stores:
        origin = {"path": str(s.path.resolve()), "episodes": s.n_episodes, "tasks": s.tasks}
        recipe = dict(s.root.attrs.get("extra", {})).get("recipe")
        if recipe is not None:
            origin["recipe"] = recipe
        origins.append(origin)
    new.root.attrs["extra"] = {"merged_from": origins}
    caches = _shared_caches(stores)
    for key in caches:
        rows = {cam: np.concatenate([s.checked(f"{FEATURES}/{key}/{cam}")[: s.n_frames] for s in stores])
                for cam in first.cameras}
        write_cache_rows(new, key, dict(first.root[FEATURES][key].attrs), rows)
    if dst.exists():  # --overwrite
        shutil.rmtree(dst)
    tmp.rename(dst)
    progress = sorted({k for s in stores if "progress" in s.root for k in s.root["progress"].group_keys()})
    return {"out": str(dst), "episodes": {str(s.path): s.n_episodes for s in stores}, "total": total,
            "tasks": sorted({t for s in stores for t in s.tasks}), "feature_caches": caches, "progress_not_copied": progress}
