"""Run any reward model over whole episodes of a store, and keep the result: per-frame progress
written into the store (``progress/<name>``) and as a LeRobot ``sarm_progress.parquet`` (RA-BC),
``<store stem>.sarm_progress.parquet`` beside the store by default (``data/pp.zarr`` ->
``data/pp.sarm_progress.parquet``), so two stores in one folder keep their own.

The runner (``episode_progress``, ``episode_stage_probs``) is shared with ``roboreward.eval``.
It takes any RewardModel through one of two paths:

- the model's own hook ``model.episode_progress(store, episodes, level=None, reverse=False)``
  returning one (T_e,) array per episode (models that read pixels, text, ...);
- otherwise, models over cached features (a config with ``feature_key``/``cameras``[/``state_key``],
  SARM and its kin): whole episodes from the feature cache (``RewardModel.episode_batch``) through the
  API's ``model.progress(batch)``.

Store layout::

    progress/<name>/sparse   float32 (n_frames,)  per level the model has
    progress/<name>/dense
    progress/<name> attrs: model, levels, feature_key, n_frames, complete (written last)
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr

from ..data.cache import ensure_features
from ..data.schema import StoreError
from ..data.store import ARRAY_CONFIG, LOWDIM_CHUNK_FRAMES, EpisodeStore, lowdim_codec, remove_partial_files
from ..errors import RoborewardError

PROGRESS_GROUP = "progress"
PARQUET_NAME = "sarm_progress.parquet"
"""LeRobot's name for the RA-BC progress file; ours end with it (``default_parquet_path``)."""
BATCH_FRAMES = 8192
"""Default budget of padded frames (episodes x longest episode) per ``progress`` call."""


# ---------------------------------------------------------------------------- model facts
def model_levels(model) -> list[str | None]:
    """Annotation levels the model has heads for (``RewardModel.levels``), readout level first; [None]
    for a model with a single unnamed progress output."""
    return list(model.levels)


def _call_progress(model, batch: dict, level: str | None) -> torch.Tensor:
    return model.progress(batch) if level is None else model.progress(batch, level=level)


def _episode_list(store: EpisodeStore, episodes: Sequence[int] | None) -> list[int]:
    eps = list(range(store.n_episodes)) if episodes is None else [int(e) for e in episodes]
    if not eps:
        raise StoreError(f"{store.path}: no episodes selected")
    for e in eps:
        store.episode_range(e)  # one-line error for an episode that does not exist
    return eps


def episode_groups(lengths: Sequence[int], batch_frames: int) -> list[list[int]]:
    """Consecutive positions grouped so that (group size x longest episode in it) <= batch_frames
    (a single longer episode gets a group of its own)."""
    if batch_frames < 1:
        raise RoborewardError(f"batch_frames must be >= 1, got {batch_frames}")
    groups: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i, n in enumerate(lengths):
        if current and (len(current) + 1) * max(longest, n) > batch_frames:
            groups.append(current)
            current, longest = [], 0
        current.append(i)
        longest = max(longest, n)
    if current:
        groups.append(current)
    return groups


def _feature_batch(model, store: EpisodeStore, episodes: list[int], reverse: bool) -> dict:
    batch = model.episode_batch(store, model.config, episodes)
    if reverse:
        # Play each episode backwards: reverse its real frames; the tail padding repeats the new last
        # frame (a causal model ignores it anyway).
        lengths = batch["lengths"].tolist()
        for key, value in batch.items():
            if key == "lengths" or not torch.is_tensor(value):
                continue
            for b, n in enumerate(lengths):
                value[b, :n] = value[b, :n].flip(0).clone()
                value[b, n:] = value[b, n - 1]
    return batch


def episode_progress(
    model,
    store: EpisodeStore,
    episodes: Sequence[int] | None = None,
    level: str | None = None,
    reverse: bool = False,
    batch_frames: int = BATCH_FRAMES,
) -> list[np.ndarray]:
    """Offline progress of every frame of each episode (one float32 (T_e,) array per episode, in
    the order given). ``reverse`` plays each episode backwards (returned in the reversed time order).
    Uses ``model.episode_progress`` when the model defines it, else the cached-feature path."""
    eps = _episode_list(store, episodes)
    hook = getattr(model, "episode_progress", None)
    if callable(hook):
        out = hook(store, eps, level=level, reverse=reverse)
        return [np.asarray(torch.as_tensor(p).detach().cpu(), dtype=np.float32) for p in out]
    lengths = [store.episodes[e].length for e in eps]
    result: list[np.ndarray] = [None] * len(eps)  # type: ignore[list-item]
    with torch.no_grad():
        for group in episode_groups(lengths, batch_frames):
            batch = _feature_batch(model, store, [eps[i] for i in group], reverse)
            values = _call_progress(model, batch, level).float().cpu().numpy()
            for row, i in enumerate(group):
                result[i] = values[row, : lengths[i]].astype(np.float32)
    return result


def has_stages(model) -> bool:
    """Whether stage probabilities can be read from the model (its optional ``stage_probs``)."""
    return callable(getattr(model, "stage_probs", None))


def episode_stage_probs(
    model,
    store: EpisodeStore,
    episodes: Sequence[int] | None = None,
    level: str | None = None,
    batch_frames: int = BATCH_FRAMES,
) -> list[np.ndarray] | None:
    """Per episode (T_e, K) stage probabilities at ``level``, or None when the model has no stage
    head (no ``stage_probs(batch, level)`` method)."""
    if not has_stages(model):
        return None
    eps = _episode_list(store, episodes)
    level = level or model_levels(model)[0]
    lengths = [store.episodes[e].length for e in eps]
    result: list[np.ndarray] = [None] * len(eps)  # type: ignore[list-item]
    with torch.no_grad():
        for group in episode_groups(lengths, batch_frames):
            batch = _feature_batch(model, store, [eps[i] for i in group], reverse=False)
            probs = model.stage_probs(batch, level).float().cpu().numpy()
            for row, i in enumerate(group):
                result[i] = probs[row, : lengths[i]]
    return result


# ---------------------------------------------------------------------------- annotate
def _check_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+", name or ""):
        raise RoborewardError(f"progress name {name!r} must be letters, digits, '_', '-' or '.' (it names a zarr group)")
    return name


def default_parquet_path(store_path: str | os.PathLike) -> Path:
    """``<store stem>.sarm_progress.parquet`` beside the store: per store, unlike LeRobot's one
    ``sarm_progress.parquet`` per dataset folder, because several stores often share a folder."""
    store_path = Path(store_path)
    return store_path.parent / f"{store_path.stem}.{PARQUET_NAME}"


def _writable(path: Path) -> bool:
    """Whether ``path`` could be written: it is writable, or its nearest existing parent folder is."""
    while not path.exists():
        if path.parent == path:
            return False
        path = path.parent
    return os.access(path, os.W_OK)


def check_annotatable(model, store: EpisodeStore, parquet: Path) -> None:
    """Everything that can be known before the feature cache is built or anything is written: the
    store has episodes and can be written, the parquet path can be, and for a model over cached
    features (no ``episode_progress`` hook) the store has the model's cameras, its state with the
    model's size, only tasks the model was trained on, and no cache of another feature size."""
    if store.n_episodes == 0:
        raise StoreError(f"{store.path}: has no episodes to annotate")
    if not _writable(store.path):
        raise RoborewardError(f"{store.path}: not writable; annotate a copy of the store")
    if parquet.is_dir():
        raise RoborewardError(f"--parquet {parquet} is a folder; give a file path ending in .parquet")
    if not _writable(parquet):
        raise RoborewardError(f"{parquet}: cannot be written; pass --parquet with a writable path")
    if callable(getattr(model, "episode_progress", None)):
        return
    config = getattr(model, "config", None)
    label = getattr(model, "name", type(model).__name__)
    if getattr(config, "feature_key", None) is None:
        raise RoborewardError(
            f"reward model {label!r} has neither an episode_progress(store, episodes) method nor a "
            "config.feature_key to read cached features; give it one of the two"
        )
    missing = [c for c in getattr(config, "cameras", []) if c not in store.cameras]
    if missing:
        raise StoreError(f"{store.path}: has no camera {missing[0]!r}, which model {label!r} reads (store cameras: {store.cameras})")
    state_key = getattr(config, "state_key", None)
    if state_key is not None:
        if state_key not in store.features:
            raise StoreError(f"{store.path}: has no {state_key!r}, which model {label!r} reads (features: {sorted(store.features)})")
        size = int(np.prod(store.features[state_key].shape))
        if getattr(config, "state_dim", size) != size:
            raise StoreError(f"{store.path}: {state_key} has {size} values per frame, model {label!r} was trained on {config.state_dim}")
    known = getattr(config, "tasks", None)
    if known:
        unknown = sorted(set(store.tasks) - set(known))
        if unknown:
            raise StoreError(
                f"{store.path}: task {unknown[0]!r} was not in model {label!r}'s training data (its tasks: {list(known)}); "
                "annotate a store of those tasks or train a model on this one"
            )
    from ..data.cache import cache_status

    status = cache_status(store).get(config.feature_key)
    dim = getattr(config, "feature_dim", None)
    if status is not None and status["dim"] is not None and dim is not None and status["dim"] != dim:
        raise StoreError(
            f"{store.path}: features/{config.feature_key} has {status['dim']}-d features, model {label!r} reads {dim}-d"
        )


def _model_path_attr(model) -> str:
    return str(getattr(model, "checkpoint_path", None) or getattr(model, "name", type(model).__name__))


def annotate(
    model,
    store_path: str | os.PathLike,
    batch_size: int = BATCH_FRAMES,
    name: str | None = None,
    parquet_path: str | os.PathLike | None = None,
    encoder: Callable[[np.ndarray], torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Progress of every frame of every episode of the store at ``store_path`` at each level the
    model has, written into the store as ``progress/<name>/<level>`` float32 (n_frames,) (attrs
    name the model; ``complete=True`` is set last, so a killed run never reads as done) and as a
    LeRobot RA-BC file (``<store stem>.sarm_progress.parquet`` beside the store unless
    ``parquet_path``) with columns ``index, episode_index, frame_index, progress_sparse[, progress_dense]``.

    ``batch_size``: most padded frames (episodes x longest episode) per ``progress`` call.
    ``name`` defaults to the model's registered name. Everything that can be checked is checked
    first (``check_annotatable``); then a missing feature cache is built (``encoder`` or the one its
    key names). Returns a summary: name, levels, frames, paths, stats."""
    if isinstance(model, (str, os.PathLike)):
        from .base import RewardModel

        model = RewardModel.from_pretrained(model)
    name = _check_name(name or getattr(model, "name", type(model).__name__.lower()))
    store_path = Path(store_path)
    store = EpisodeStore(store_path)
    parquet = Path(parquet_path) if parquet_path is not None else default_parquet_path(store_path)
    check_annotatable(model, store, parquet)
    feature_key = getattr(getattr(model, "config", None), "feature_key", None)
    if feature_key is not None and encoder is None and not callable(getattr(model, "episode_progress", None)):
        from ..data.cache import cache_status

        status = cache_status(store).get(feature_key)
        if status is None or status["error"] or status["done"] < store.n_frames:
            from ..encoders.image import encoder_for_cache_key

            # Built before encoding starts, so an encoder that cannot be rebuilt (unknown
            # architecture, other weights) is refused while the store is still untouched.
            encoder = encoder_for_cache_key(feature_key, info=(status or {}).get("encoder"))
    ensure_features(store, feature_key, encoder, announce=True)
    store = EpisodeStore(store_path)  # re-read: the cache may be new
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        levels = model_levels(model)
        values: dict[str, np.ndarray] = {}
        for level in levels:
            per_ep = episode_progress(model, store, None, level, batch_frames=batch_size)
            values[level or "sparse"] = np.concatenate(per_ep).astype(np.float32)
    finally:
        if was_training:
            model.train()
    n = store.n_frames
    for level, v in values.items():
        if v.shape != (n,) or not np.isfinite(v).all():
            raise RoborewardError(f"model {name!r} gave {v.shape} {level} values with NaN/inf or a wrong length for {n} frames")

    remove_partial_files(store_path / PROGRESS_GROUP)
    root = zarr.open_group(str(store_path), mode="r+")
    group = root.require_group(PROGRESS_GROUP).require_group(name)
    group.attrs["complete"] = False  # first: a run killed while rewriting must not read as done
    for level, v in values.items():
        if level in group:
            del group[level]
        group.create_array(level, shape=(n,), chunks=(min(n, LOWDIM_CHUNK_FRAMES * 16),), dtype="float32",
                           compressors=lowdim_codec(), config=ARRAY_CONFIG)
        group[level].with_config(ARRAY_CONFIG)[:] = v  # every chunk written: a missing one means damage
    for stale in set(group.array_keys()) - set(values):
        del group[stale]
    config = getattr(model, "config", None)
    group.attrs.update({
        "model": getattr(model, "name", type(model).__name__),
        "model_path": _model_path_attr(model),
        "feature_key": getattr(config, "feature_key", None),
        "config": config.to_dict() if hasattr(config, "to_dict") else None,
        "levels": list(values),
        "n_frames": n,
        "n_episodes": store.n_episodes,
    })
    group.attrs["complete"] = True  # last

    write_progress_parquet(store, values, parquet, reward_model_path=_model_path_attr(model))
    return {
        "name": name,
        "levels": list(values),
        "frames": n,
        "episodes": store.n_episodes,
        "group": f"{PROGRESS_GROUP}/{name}",
        "parquet": str(parquet),
        "stats": {lvl: {"mean": float(v.mean()), "min": float(v.min()), "max": float(v.max())} for lvl, v in values.items()},
    }


def write_progress_parquet(
    store: EpisodeStore, values: dict[str, np.ndarray], path: str | os.PathLike, reward_model_path: str = ""
) -> Path:
    """LeRobot's ``sarm_progress.parquet`` (as ``lerobot.rewards.sarm.compute_rabc_weights``
    writes it and ``lerobot.rewards.sarm.rabc.RABCWeights`` reads it): int64 ``index`` (global frame
    index), ``episode_index``, ``frame_index``; float32 ``progress_<level>``; schema metadata
    ``reward_model_path``. Written to a temporary file and renamed into place."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = store.n_frames
    episode_index = store.episode_index()
    columns = {
        "index": np.arange(n, dtype=np.int64),
        "episode_index": episode_index.astype(np.int64),
        "frame_index": (np.arange(n, dtype=np.int64) - store.episode_starts[episode_index]).astype(np.int64),
    }
    for level in ("sparse", "dense"):
        if level in values:
            columns[f"progress_{level}"] = np.asarray(values[level], dtype=np.float32)
    table = pa.table(columns).replace_schema_metadata({b"reward_model_path": reward_model_path.encode()})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return path


def progress_names(store: EpisodeStore | str | os.PathLike) -> list[str]:
    """Names of the complete progress annotations in the store."""
    store = store if isinstance(store, EpisodeStore) else EpisodeStore(store)
    if PROGRESS_GROUP not in store.root:
        return []
    return sorted(k for k, g in store.root[PROGRESS_GROUP].groups() if g.attrs.get("complete") is True)


def read_progress(store: EpisodeStore | str | os.PathLike, name: str | None = None) -> dict[str, np.ndarray]:
    """``{level: float32 (n_frames,)}`` of the annotation ``name`` (None: the only one there is).
    Refuses an incomplete annotation or one made before the store gained episodes."""
    store = store if isinstance(store, EpisodeStore) else EpisodeStore(store)
    names = progress_names(store)
    if name is None:
        if len(names) != 1:
            raise StoreError(f"{store.path}: {len(names)} progress annotations ({names}); pass the name of one")
        name = names[0]
    group = store.root[PROGRESS_GROUP][name] if PROGRESS_GROUP in store.root and name in store.root[PROGRESS_GROUP] else None
    if group is None:
        raise StoreError(f"{store.path}: no progress annotation {name!r} (have {names or 'none'}); run annotate first")
    if group.attrs.get("complete") is not True:
        raise StoreError(f"{store.path}: progress/{name} is incomplete (an interrupted annotate); run annotate again")
    out = {lvl: np.asarray(store.checked(f"{PROGRESS_GROUP}/{name}/{lvl}")[:], dtype=np.float32)
           for lvl in group.attrs.get("levels", [])}
    for lvl, v in out.items():
        if v.shape[0] != store.n_frames:
            raise StoreError(
                f"{store.path}: progress/{name}/{lvl} has {v.shape[0]} frames but the store has {store.n_frames}; "
                "run annotate again"
            )
    return out
