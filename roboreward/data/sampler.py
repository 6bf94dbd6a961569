"""Multi-view clip sampling from the episode store, and episode-level splits.

A clip for frame t is ``window`` frames at ``frame_gap`` ending at t (causal: nothing after t):
frames t - (window-1)*gap, ..., t - gap, t. Frames before the episode start repeat its first
frame (``pad_mask`` marks them), so every frame of every episode is a valid sample.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from .cache import cached_features
from .schema import StoreError
from .store import EpisodeStore


def split_episodes(n_episodes: int, val_fraction: float = 0.2, seed: int = 0) -> tuple[list[int], list[int]]:
    """Train/val split by episode (never by frame: neighbouring frames are near-duplicates)."""
    if not 0.0 <= val_fraction < 1.0:
        raise StoreError(f"val_fraction must be in [0, 1), got {val_fraction}")
    order = np.random.default_rng(seed).permutation(n_episodes)
    n_val = int(round(n_episodes * val_fraction))
    if val_fraction > 0 and n_episodes >= 2:
        n_val = max(1, n_val)
    return sorted(order[n_val:].tolist()), sorted(order[:n_val].tolist())


def clip_indices(t: int, start: int, window: int, frame_gap: int) -> tuple[np.ndarray, np.ndarray]:
    """Global frame indices of the causal clip ending at global frame t, clamped to the episode
    start; and the mask of frames that were clamped (padding)."""
    offsets = np.arange(-(window - 1), 1, dtype=np.int64) * frame_gap
    raw = t + offsets
    return np.maximum(raw, start), raw < start


_RAM: dict[tuple[str, str, int], np.ndarray] = {}


def _in_memory(store: EpisodeStore, name: str, arr) -> np.ndarray:
    """The committed frames of ``arr`` as one numpy array, read once per process and store."""
    key = (str(store.path.resolve()), name, store.n_frames)
    if key not in _RAM:
        _RAM[key] = np.asarray(arr[: store.n_frames])
    return _RAM[key]


@dataclass
class ClipConfig:
    window: int = 8
    """Frames per clip (including t)."""
    frame_gap: int = 5
    """Frames between consecutive clip frames."""
    cameras: Sequence[str] | None = None
    """Views to return (store keys like ``observation.images.front``); None = every camera."""
    low_dim: Sequence[str] = ("observation.state",)
    """Low-dimensional keys returned for the whole clip."""
    features: str | None = None
    """A feature-cache key: return cached features ``features.<camera>`` (window, D) instead of pixels."""
    feature_copies: Sequence[str] = ()
    """Further feature caches of the same frames (photometric copies, ``roboreward.encoders.augment``):
    each clip is read, for every camera, from one of ``features`` and these, chosen uniformly with
    torch's generator (seeded by the training loop and per DataLoader worker)."""
    targets: bool = True
    """Return the store's per-frame ground truth (``gt.*``) for the clip when it has any."""
    features_in_memory: bool = False
    """Read the cached features into RAM once (100 episodes x 2 cameras of 1280-d fp16 is ~90 MB)
    instead of one store read per clip and camera (~1-50 ms each); datasets of one store in one
    process share the arrays. For training, where every clip is read many times."""

    images_in_memory: bool = False
    """Read the camera frames into RAM once (~55 MB per 1000 frames of two 96 px cameras)
    instead of decoding chunks per clip: for training a pixel policy on a store that fits."""
    chunk_cache_mb: float = 0.0
    """Keep up to this many MB of decoded camera chunks (least recently used dropped first), so
    clips that share a chunk decode it once: sampling revisits chunks (a causal clip spans 2-4 of
    them, an epoch every one). Per process (each DataLoader worker holds its own). 0 = no cache."""

    def __post_init__(self):
        if self.window < 1:
            raise StoreError(f"window must be >= 1, got {self.window}")
        if self.chunk_cache_mb < 0:
            raise StoreError(f"chunk_cache_mb must be >= 0, got {self.chunk_cache_mb}")
        if self.frame_gap < 1:
            raise StoreError(f"frame_gap must be >= 1, got {self.frame_gap}")


class ChunkCache:
    """Decoded time chunks of image arrays, least recently used dropped past ``max_bytes``. A read
    of frames [lo, hi) decodes only the chunks it lacks, each as one aligned chunk read."""

    def __init__(self, max_bytes: float):
        from collections import OrderedDict

        self.max_bytes, self.bytes, self.hits, self.misses = max_bytes, 0, 0, 0
        self._chunks: "OrderedDict[tuple[str, int], np.ndarray]" = OrderedDict()

    def read(self, key: str, arr, lo: int, hi: int) -> np.ndarray:
        size = int(arr.chunks[0])
        n = int(arr.shape[0])
        parts = []
        for k in range(lo // size, (hi - 1) // size + 1):
            chunk = self._chunks.get((key, k))
            if chunk is None:
                self.misses += 1
                chunk = np.asarray(arr[k * size: min((k + 1) * size, n)])
                self._chunks[(key, k)] = chunk
                self.bytes += chunk.nbytes
                while self.bytes > self.max_bytes and len(self._chunks) > 1:
                    _, old = self._chunks.popitem(last=False)
                    self.bytes -= old.nbytes
            else:
                self.hits += 1
                self._chunks.move_to_end((key, k))
            parts.append(chunk)
        start = (lo // size) * size
        return np.concatenate(parts)[lo - start: hi - start] if len(parts) > 1 else parts[0][lo - start: hi - start]


class ClipDataset(Dataset):
    """Every frame of the selected episodes as a causal multi-view clip.

    Item keys: ``<camera>`` uint8 (window, H, W, 3) or ``features.<camera>`` float32 (window, D);
    each low-dim key (window, D); ``gt.*`` (window, ...) when present; ``frame_index`` (window,)
    frame index within the episode; ``pad_mask`` (window,) bool; ``episode_index``; ``task`` (str);
    ``episode_length``.
    """

    def __init__(self, store: EpisodeStore | str, config: ClipConfig = ClipConfig(), episodes: Sequence[int] | None = None):
        self.store = store if isinstance(store, EpisodeStore) else EpisodeStore(store)
        self.config = config
        self.cameras = list(config.cameras) if config.cameras is not None else list(self.store.cameras)
        for cam in self.cameras:
            if cam not in self.store.cameras:
                raise StoreError(f"camera {cam!r} is not in the store (cameras: {self.store.cameras})")
        for key in config.low_dim:
            self.store.array(key)  # raises with the list of features
        self.target_keys = self.store.keys("target") if config.targets else []
        self.episodes = list(range(self.store.n_episodes)) if episodes is None else list(episodes)
        if not self.episodes:
            raise StoreError("no episodes selected")
        bad = [e for e in self.episodes if not 0 <= e < self.store.n_episodes]
        if bad:
            raise StoreError(f"episodes {bad} do not exist (the store has {self.store.n_episodes})")
        starts = self.store.episode_starts[self.episodes]
        ends = self.store.episode_ends[self.episodes]
        self._frames = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends)])
        self._episode_of = np.repeat(np.asarray(self.episodes), ends - starts)
        self._start_of = np.repeat(starts, ends - starts)
        if config.feature_copies and config.features is None:
            raise StoreError("feature_copies need features (the cache they are copies of)")
        for key in ([config.features] if config.features is not None else []) + list(config.feature_copies):
            cached_features(self.store, key)  # fail now, not in a worker
        self._arrays = None
        self._copies: list[dict] = []
        self._cache = None

    def __len__(self) -> int:
        return len(self._frames)

    def _open(self):
        # Opened lazily so each DataLoader worker holds its own handles. Low-dim and target arrays
        # are a few bytes per frame: read once into memory instead of one store call per clip.
        if self._arrays is None:
            arrays = {}
            if self.config.features is not None:
                arrays.update(self._feature_arrays(self.config.features))
                self._copies = [self._feature_arrays(key) for key in self.config.feature_copies]
            else:
                for cam in self.cameras:
                    arr = self.store.array(cam)
                    arrays[cam] = _in_memory(self.store, cam, arr) if self.config.images_in_memory else arr
            n = self.store.n_frames
            for key in [*self.config.low_dim, *self.target_keys]:
                arrays[key] = np.asarray(self.store.array(key)[:n])
            self._arrays = arrays
        return self._arrays

    def _feature_arrays(self, key: str) -> dict:
        """{``features.<camera>``: array} of cache ``key`` (in RAM with ``features_in_memory``)."""
        feats = cached_features(self.store, key)
        return {f"features.{cam}": _in_memory(self.store, f"features/{key}/{cam}", feats[cam])
                if self.config.features_in_memory else feats[cam] for cam in self.cameras}

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_arrays"] = None
        state["_copies"] = []
        state["_cache"] = None
        return state

    def __getitem__(self, i: int) -> dict:
        t = int(self._frames[i])
        start = int(self._start_of[i])
        ep = int(self._episode_of[i])
        idx, pad = clip_indices(t, start, self.config.window, self.config.frame_gap)
        lo, hi = int(idx[0]), int(idx[-1]) + 1
        item = {}
        arrays = self._open()
        if self.config.feature_copies:  # this clip's features from the original cache or a copy
            copy = int(torch.randint(len(self.config.feature_copies) + 1, ()))
            arrays = {**arrays, **self._copies[copy - 1]} if copy else arrays
        for key, arr in arrays.items():
            if isinstance(arr, np.ndarray):
                values = arr[idx]
            elif self.config.chunk_cache_mb and key in self.cameras:
                if self._cache is None:
                    self._cache = ChunkCache(self.config.chunk_cache_mb * 1e6)
                values = self._cache.read(key, arr, lo, hi)[idx - lo]
            else:
                # One contiguous read of the clip's span: a causal clip covers a few chunks, and a
                # slice is cheaper in zarr than an orthogonal selection of the same chunks.
                values = np.asarray(arr[lo:hi])[idx - lo]
            if key.startswith("features."):
                values = values.astype(np.float32)
            item[key] = torch.from_numpy(values)
        item["frame_index"] = torch.from_numpy(idx - start)
        item["pad_mask"] = torch.from_numpy(pad)
        item["episode_index"] = ep
        item["episode_length"] = int(self.store.episodes[ep].length)
        item["task"] = self.store.episodes[ep].task
        return item
