"""Feature cache: every frame of every camera encoded once by a frozen encoder, kept in the store.

Layout: ``features/<cache_key>/<camera>`` float16 (n_frames, D), aligned with ``data/<camera>``.
``cache_key`` names the encoder, a hash of its weights and its input size, so changing any of them
makes a new cache instead of reading stale features. The group attribute ``done`` counts frames
finished for all cameras; it is written after each block, so an interrupted run resumes from the
last finished block, and a store that gained episodes is extended rather than recomputed.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import zarr
from tqdm.auto import tqdm

from ..faults import kill_point
from .schema import StoreError
from .store import (ARRAY_CONFIG, LOWDIM_CHUNK_FRAMES, CheckedArray, EpisodeStore, lowdim_codec, remove_partial_files,
                    writer_lock)

FEATURES = "features"
FEATURE_DTYPE = "float16"  # halves the cache; pooled CNN features lose nothing measurable at fp16


def cache_status(store: EpisodeStore) -> dict[str, dict]:
    """Per cache key: frames done, feature dim, encoder description, and an error if malformed."""
    out = {}
    if FEATURES not in store.root:
        return out
    for key, group in store.root[FEATURES].groups():
        attrs = dict(group.attrs)
        status = {"done": int(attrs.get("done", 0)), "dim": attrs.get("dim"), "encoder": attrs.get("encoder"), "error": None}
        if status["dim"] is None and status["done"] == 0:
            # Created by a run killed before its first block: nothing cached yet, resumable.
            out[key] = status
            continue
        for cam in store.cameras:
            if cam not in group:
                status["error"] = f"no array for camera {cam}"
                break
            arr = group[cam]
            if arr.shape[0] < status["done"] or arr.shape[1:] != (status["dim"],):
                status["error"] = f"{cam} has shape {arr.shape}, expected at least ({status['done']}, {status['dim']})"
                break
        out[key] = status
    return out


def cache_command(store: EpisodeStore, key: str) -> str:
    """The `data cache-embeddings` command line that builds cache ``key``: encoder, input size and
    layer read from the key (``ImageEncoder.cache_key``)."""
    from ..encoders.image import parse_cache_key

    spec = parse_cache_key(key)
    if spec is None:
        return f"roboreward data cache-embeddings {store.path} (with the encoder that made {key})"
    line = f"roboreward data cache-embeddings {store.path} --encoder {spec['name']} --image-size {spec['size']}"
    return line + (f" --layer {spec['layer']}" if spec["layer"] else "")


def cached_features(store: EpisodeStore, key: str) -> dict[str, CheckedArray]:
    """The complete cache ``key`` as {camera: (n_frames, D) array}; a clear error if absent or partial."""
    status = cache_status(store).get(key)
    if status is None:
        have = sorted(cache_status(store))
        raise StoreError(f"{store.path}: no feature cache {key!r} (have {have or 'none'}); run `{cache_command(store, key)}`")
    if status["error"]:
        raise StoreError(f"{store.path}: features/{key}: {status['error']}")
    if status["done"] < store.n_frames:
        raise StoreError(
            f"{store.path}: features/{key} covers {status['done']} of {store.n_frames} frames; run "
            f"`{cache_command(store, key)}` again to finish it"
        )
    return {cam: store.checked(f"{FEATURES}/{key}/{cam}") for cam in store.cameras}


def write_cache_rows(store: EpisodeStore, key: str, attrs: dict, rows: dict[str, np.ndarray]) -> int:
    """Create cache ``key`` in ``store`` (a store being written, e.g. by ``data repair`` or ``data
    merge``) holding ``rows[camera]`` (the same count for each) as its first frames, with the source's
    ``attrs`` and ``done`` = that count; returns it."""
    dim, done = int(attrs["dim"]), len(rows[store.cameras[0]])
    group = store.root.require_group(FEATURES).require_group(key)
    for cam in store.cameras:
        arr = group.create_array(cam, shape=(store.n_frames, dim), chunks=(LOWDIM_CHUNK_FRAMES, dim), dtype=FEATURE_DTYPE,
                                 compressors=lowdim_codec(), config=ARRAY_CONFIG)
        if done:
            arr.with_config(ARRAY_CONFIG)[:done] = rows[cam]
    group.attrs.update({**attrs, "done": done})
    return done


def cache_embeddings(
    store_path,
    encoder: Callable[[np.ndarray], torch.Tensor],
    cache_key: str,
    batch_size: int = 64,
    progress: bool = True,
    encoder_info: dict | None = None,
    transform: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
    transform_info: dict | None = None,
) -> str:
    """Encode every not-yet-cached frame of every camera; returns the cache key. ``transform``
    (uint8 frames (B, H, W, 3), their episode indices (B,) -> uint8 frames) changes the frames before
    encoding (an augmented copy of a cache); ``transform_info`` is recorded as the group's ``augment``.

    Each block is read and encoded before anything of it is written, and the cache's group and
    arrays are created only with the first encoded block, so a bad encoder, argument or damaged
    frame leaves the store as it was (or, later on, with the blocks finished so far: resumable)."""
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise StoreError(f"batch_size must be an int >= 1, got {batch_size!r}")
    store = EpisodeStore(store_path)
    if not store.cameras:
        raise StoreError(f"{store.path}: the store has no cameras, so there is nothing to encode")
    with writer_lock(store.path, f"encoding {cache_key}"):  # what another process finished meanwhile is read below
        return _encode_missing(store, encoder, cache_key, batch_size, progress, encoder_info, transform, transform_info)


def _encode_missing(store: EpisodeStore, encoder, cache_key: str, batch_size: int, progress: bool, encoder_info,
                    transform, transform_info) -> str:
    total = store.n_frames
    remove_partial_files(store.path / FEATURES)
    root = zarr.open_group(str(store.path), mode="r+")
    group = root[FEATURES][cache_key] if FEATURES in root and cache_key in root[FEATURES] else None
    done = int(group.attrs.get("done", 0)) if group is not None else 0
    if done >= total and group is not None:
        return cache_key
    arrays: dict[str, zarr.Array] = {}
    episode_index = store.episode_index() if transform is not None else None

    def open_arrays(dim: int) -> None:
        nonlocal group
        group = root.require_group(FEATURES).require_group(cache_key)
        if group.attrs.get("dim") is None:
            group.attrs.update({"dim": dim, "encoder": encoder_info or {}, "cameras": store.cameras, "done": 0,
                                **({"augment": transform_info} if transform_info else {})})
        for cam in store.cameras:
            if cam not in group:
                group.create_array(cam, shape=(total, dim), chunks=(LOWDIM_CHUNK_FRAMES, dim), dtype=FEATURE_DTYPE,
                                   compressors=lowdim_codec(), config=ARRAY_CONFIG)
            arrays[cam] = group[cam].with_config(ARRAY_CONFIG)
            if arrays[cam].shape[0] < total:
                arrays[cam].resize((total, dim))

    # Blocks of several batches: the `done` counter is rewritten once per block, not per batch.
    block = batch_size * 8
    bar = tqdm(total=total, initial=done, unit="frame", desc=f"encode {cache_key}", disable=not progress)
    for start in range(done, total, block):
        end = min(start + block, total)
        encoded = {}
        episode_of = episode_index[start:end] if transform is not None else None
        for cam in store.cameras:
            frames = store.array(cam)[start:end]
            if transform is not None:
                frames = transform(np.asarray(frames), episode_of)
            feats = [encoder(frames[i : i + batch_size]).float().cpu().numpy() for i in range(0, end - start, batch_size)]
            encoded[cam] = np.concatenate(feats).astype(FEATURE_DTYPE)
        if not arrays:
            open_arrays(int(encoded[store.cameras[0]].shape[-1]))
        for cam, values in encoded.items():
            arrays[cam][start:end] = values
        kill_point("cache.block_written")
        group.attrs["done"] = end
        bar.update(end - start)
    bar.close()
    return cache_key


def ensure_features(
    store_path,
    feature_key: str | None,
    encoder: Callable[[np.ndarray], torch.Tensor] | None = None,
    batch_size: int = 64,
    progress: bool = False,
    announce: bool = False,
) -> bool:
    """Make sure the store has the complete feature cache ``feature_key`` (None: nothing to do),
    encoding only the missing frames. ``encoder`` defaults to the one the key names
    (``encoder_for_cache_key``: same architecture, weights hash and input size), built only when
    something is missing. Returns whether anything was encoded."""
    if feature_key is None:
        return False
    store = store_path if isinstance(store_path, EpisodeStore) else EpisodeStore(store_path)
    status = cache_status(store).get(feature_key)
    if status is not None and not status["error"] and status["done"] >= store.n_frames:
        return False
    if encoder is None:
        from ..encoders.image import encoder_for_cache_key

        encoder = encoder_for_cache_key(feature_key, info=(status or {}).get("encoder"))
    info = getattr(encoder, "info", None)
    done = 0 if status is None or status["error"] else status["done"]
    # ``announce`` (eval, annotate: where encoding is a side effect): say so, since it is minutes of
    # work and a cache at another size (say 128 px) is not reused.
    if announce:
        others = sorted(k for k in cache_status(store) if k != feature_key)
        print(f"note: {store.path} has features/{feature_key} for {done} of {store.n_frames} frames; encoding the rest "
              "once (kept in the store)" + (f"; other caches here: {others}" if others else ""))
    cache_embeddings(store.path, encoder, feature_key, batch_size=batch_size, progress=progress, encoder_info=info)
    return True
