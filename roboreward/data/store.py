"""The zarr episode store: create, append episodes with an atomic commit, read.

Crash safety rests on two facts:
- zarr >= 3.4's LocalStore writes every key to a temporary file and renames it into place, so a
  chunk or metadata document is always either its old or its new version, never torn;
- the root attributes' ``episodes`` list is the commit record, written last. Data arrays and
  ``meta/episode_ends`` may run ahead of it after a kill; readers never look past the committed
  frame count, and opening for append drops that tail before writing.
A chunk shared by the last committed episode and a new one is rewritten as a whole file, so the
committed frames in it survive a kill at any point.

Never zero-filled. zarr by default skips writing a chunk equal to the fill value and reads an
absent chunk as fill values, so a deleted chunk file would read back as black frames or zero
states. Every array here is written with ``write_empty_chunks`` (so an absent chunk always means
damage) and read through :class:`CheckedArray`, which turns an absent or undecodable chunk into a
:class:`DamagedStoreError` naming the array, the episodes and frames it covers, and the fix.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import BloscCodec, ZstdCodec

from ..faults import kill_point
from .schema import (
    ATTRS_KEY,
    SCHEMA_VERSION,
    Episode,
    EpisodeInfo,
    FeatureSpec,
    StoreError,
    check_annotations,
    check_info,
)

EPISODE_ENDS = "meta/episode_ends"

# Image codec and time chunking chosen by benchmarks/bench_codecs.py (figures in the README):
# plain zstd over 16 consecutive frames compresses rendered frames ~30x (it sees the static
# background repeat across frames, which blosc's per-block split hides) and decodes fastest; a
# causal clip (8 frames at gap 5 spans 36 frames) then touches 3 chunk files instead of 8-36.
IMAGE_CHUNK_FRAMES = 16
LOWDIM_CHUNK_FRAMES = 4096


def image_codec() -> ZstdCodec:
    return ZstdCodec(level=3)


def lowdim_codec() -> BloscCodec:
    return BloscCodec(cname="zstd", clevel=3, shuffle="shuffle")


# Runtime zarr config of every store array (not persisted by zarr, so applied on each open):
# write chunks even when they equal the fill value, and raise instead of filling on a missing one.
ARRAY_CONFIG = {"write_empty_chunks": True, "read_missing_chunks": False}


def _one_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


class DamagedStoreError(StoreError):
    """A chunk that committed episodes cover is missing or cannot be decoded."""


@dataclass(frozen=True)
class ChunkProblem:
    """One damaged chunk of a store array along time: frames [start, end) of the whole store."""

    array: str
    chunk: str
    start: int
    end: int
    kind: str  # "missing" | "undecodable"
    detail: str = ""

    def describe(self, episode_ends: np.ndarray) -> str:
        what = "is missing (its chunk file was deleted)" if self.kind == "missing" else f"cannot be decoded ({self.detail})"
        if self.array == EPISODE_ENDS:  # one row per episode: without it no frame can be placed
            return f"{self.array}: chunk {self.chunk} (the ends of episodes {self.start}-{self.end - 1}) {what}"
        eps = episodes_of_frames(episode_ends, self.start, self.end)
        where = f"episode {eps[0]}" if len(eps) == 1 else f"episodes {eps[0]}-{eps[-1]}" if eps else "no committed episode"
        return f"{self.array}: chunk {self.chunk} (frames {self.start}-{self.end - 1}, {where}) {what}"


def episodes_of_frames(episode_ends: np.ndarray, start: int, end: int) -> list[int]:
    """Committed episodes that own any of the store frames [start, end)."""
    if end <= start or not len(episode_ends):
        return []
    first = int(np.searchsorted(episode_ends, start, side="right"))
    last = int(np.searchsorted(episode_ends, end - 1, side="right"))
    return list(range(first, min(last, len(episode_ends) - 1) + 1))


def repair_hint(path, list_damage: bool = True) -> str:
    first = f"run `roboreward data validate {path}` to list the damage and " if list_damage else "run "
    return (first + f"`roboreward data repair {path} --out <new store>` to copy the intact episodes "
            "(--regenerate rebuilds generated ones from the store's recipe)")


def _chunk_file(arr: zarr.Array, root: Path, k: int) -> Path:
    coords = (k,) + (0,) * (len(arr.shape) - 1)
    return root / arr.path / arr.metadata.encode_chunk_key(coords)


def chunk_problems(arr: zarr.Array, root: Path, n: int, name: str, decode: bool = True,
                   start: int = 0, stop: int | None = None) -> list[ChunkProblem]:
    """Damaged time chunks of ``arr`` among those covering frames [start, stop) of its first ``n``
    frames: absent chunk files (a cheap listing) and, with ``decode``, chunks whose bytes do not
    decode."""
    out: list[ChunkProblem] = []
    stop = n if stop is None else min(stop, n)
    if stop <= start:
        return out
    c = int(arr.chunks[0])
    reader = arr.with_config(ARRAY_CONFIG)
    for k in range(start // c, -(-stop // c)):
        lo, hi = k * c, min((k + 1) * c, n)
        key = arr.metadata.encode_chunk_key((k,) + (0,) * (len(arr.shape) - 1))
        if not _chunk_file(arr, root, k).is_file():
            out.append(ChunkProblem(name, key, lo, hi, "missing"))
        elif decode:
            try:
                reader[lo:hi]
            except Exception as exc:  # codec errors come as several types (zstd, blosc, zarr's own)
                out.append(ChunkProblem(name, key, lo, hi, "undecodable", _one_line(exc)))
    return out


def _time_range(selection, length: int) -> tuple[int, int]:
    """Frames along axis 0 that a read selection touches (the whole array when unsure)."""
    first = selection[0] if isinstance(selection, tuple) and selection else selection
    if isinstance(first, slice):
        lo, hi, _ = first.indices(length)
        return lo, max(lo, hi)
    if isinstance(first, (int, np.integer)):
        i = int(first) % length if length else 0
        return i, i + 1
    try:
        idx = np.asarray(first)
        if idx.dtype.kind in "iu" and idx.size:
            return int(idx.min()), int(idx.max()) + 1
    except Exception:
        pass
    return 0, length


class CheckedArray:
    """A store array whose reads never return fill values: an absent or undecodable chunk raises
    :class:`DamagedStoreError` with the array, episodes, frames and fix. Everything else (shape,
    dtype, chunks, writes, resize) is the underlying zarr array's."""

    def __init__(self, arr: zarr.Array, name: str, store: "EpisodeStore"):
        self._arr = arr.with_config(ARRAY_CONFIG)
        self._name = name
        self._store = store

    def __getattr__(self, attr):
        return getattr(self._arr, attr)

    def __len__(self) -> int:
        return int(self._arr.shape[0])

    def __setitem__(self, selection, value) -> None:
        self._arr[selection] = value

    def __getitem__(self, selection):
        try:
            return self._arr[selection]
        except Exception as exc:
            lo, hi = _time_range(selection, int(self._arr.shape[0]))
            found = chunk_problems(self._arr, self._store.path, int(self._arr.shape[0]), self._name, start=lo, stop=hi)
            if not found:
                raise
            raise DamagedStoreError(
                f"{self._store.path}: {found[0].describe(self._store.episode_ends)}"
                + (f" (and {len(found) - 1} more chunks)" if len(found) > 1 else "")
                + f"; the store is damaged: {repair_hint(self._store.path)}"
            ) from exc


@contextmanager
def writer_lock(path, doing: str) -> Iterator[None]:
    """One writer at a time per store across processes: an advisory lock (``fcntl.flock``) on the
    store's folder itself (no lock file is left in or beside it), which the system releases when its
    holder ends however it ends (kill -9 included), so no stale lock remains. A second writer waits
    for the first, saying so once. Two commands that both encode a new store's features (say SARM's
    and GRM's ``reward train``, started together) would otherwise write the same arrays, and each
    writer's clean-up of interrupted writes (``remove_partial_files``) would delete the other's files
    in flight. Where ``fcntl`` is missing (not POSIX), no lock is taken."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - POSIX only
        yield
        return
    fd = os.open(Path(path), os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"note: another process is writing to {path}; waiting for it to finish before {doing}",
                  file=sys.stderr, flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def remove_partial_files(path: Path) -> None:
    """Delete the temporary files (``<key>.<uuid>.partial``) a writer killed inside zarr's atomic
    write leaves behind; never part of the data. Called by every writer before it writes (one
    writer at a time per store)."""
    for leftover in Path(path).rglob("*.partial"):
        leftover.unlink(missing_ok=True)


class EpisodeStore:
    """A zarr episode store on disk.

    ``EpisodeStore(path)`` opens read-only; ``EpisodeStore(path, mode="a")`` opens for appending
    (dropping any uncommitted tail an interrupted writer left); ``EpisodeStore.create(...)`` makes a
    new one. Every schema problem raises :class:`StoreError` with a one-line message.

    The object is picklable (it re-opens the store lazily), so it can be handed to DataLoader workers.
    """

    def __init__(self, path: str | os.PathLike, mode: str = "r"):
        if mode not in ("r", "a"):
            raise StoreError(f"mode {mode!r} is not 'r' or 'a'; use EpisodeStore.create() for a new store")
        self.path = Path(path)
        self.mode = mode
        self._root = None
        self._load_meta()
        if mode == "a":
            self._drop_uncommitted_tail()

    # ------------------------------------------------------------------ creation
    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        features: dict[str, FeatureSpec],
        fps: float,
        robot_type: str = "unknown",
        cameras: Sequence[str] | None = None,
        overwrite: bool = False,
    ) -> "EpisodeStore":
        """Make an empty store with this schema and return it open for appending."""
        path = Path(path)
        if path.exists() and not overwrite:
            raise StoreError(f"{path} already exists; pass overwrite=True (CLI: --overwrite) or pick another path")
        if not features:
            raise StoreError("a store needs at least one feature")
        if fps <= 0:
            raise StoreError(f"fps must be > 0, got {fps}")
        if cameras is None:
            cameras = [k for k, f in features.items() if f.kind == "rgb"]
        for cam in cameras:
            if cam not in features or features[cam].kind != "rgb":
                raise StoreError(f"camera {cam!r} is not an rgb feature of the store")
        root = zarr.open_group(str(path), mode="w")
        data = root.require_group("data")
        for key, spec in features.items():
            chunk_t = IMAGE_CHUNK_FRAMES if spec.kind == "rgb" else LOWDIM_CHUNK_FRAMES
            data.create_array(
                key,
                shape=(0, *spec.shape),
                chunks=(chunk_t, *spec.shape),
                dtype=spec.dtype,
                compressors=image_codec() if spec.kind == "rgb" else lowdim_codec(),
                fill_value=0,
                config=ARRAY_CONFIG,
            )
        root.require_group("meta").create_array("episode_ends", shape=(0,), chunks=(LOWDIM_CHUNK_FRAMES,), dtype="int64",
                                                config=ARRAY_CONFIG)
        root.attrs[ATTRS_KEY] = {
            "schema_version": SCHEMA_VERSION,
            "fps": float(fps),
            "robot_type": robot_type,
            "features": {k: f.to_json() for k, f in features.items()},
            "cameras": list(cameras),
            "episodes": [],
        }
        return cls(path, mode="a")

    # ------------------------------------------------------------------ metadata
    @property
    def root(self) -> zarr.Group:
        if self._root is None:
            self._root = zarr.open_group(str(self.path), mode="r+" if self.mode == "a" else "r")
        return self._root

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_root"] = None
        return state

    def _load_meta(self) -> None:
        if not self.path.exists():
            raise StoreError(f"{self.path}: no such store; check the path or create one with `roboreward data generate`")
        try:
            attrs = dict(self.root.attrs)
        except Exception as exc:  # zarr raises several types for a folder that is not a group
            raise StoreError(f"{self.path}: not a zarr store ({_one_line(exc)})") from None
        meta = attrs.get(ATTRS_KEY)
        if not isinstance(meta, dict):
            raise StoreError(f"{self.path}: root attributes have no '{ATTRS_KEY}' schema; not a roboreward store")
        version = meta.get("schema_version")
        if version != SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: schema_version {version!r} is not supported (this roboreward reads {SCHEMA_VERSION}); "
                "upgrade roboreward or re-create the store"
            )
        try:
            self.fps = float(meta["fps"])
            self.robot_type = str(meta.get("robot_type", "unknown"))
            self.features = {k: FeatureSpec.from_json(v) for k, v in meta["features"].items()}
            self.cameras = list(meta.get("cameras", []))
            self.episodes = [EpisodeInfo.from_json(e) for e in meta["episodes"]]
        except StoreError as exc:
            raise StoreError(f"{self.path}: {exc}") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"{self.path}: malformed schema in root attributes ({_one_line(exc)!s})") from None
        if self.fps <= 0:
            raise StoreError(f"{self.path}: fps must be > 0, got {self.fps}")
        for cam in self.cameras:
            if cam not in self.features or self.features[cam].kind != "rgb":
                raise StoreError(f"{self.path}: camera {cam!r} is not declared as an rgb feature")
        self._meta = meta
        n = len(self.episodes)
        if EPISODE_ENDS not in self.root:
            raise StoreError(f"{self.path}: missing array {EPISODE_ENDS}")
        ends_arr = CheckedArray(self.root[EPISODE_ENDS], EPISODE_ENDS, self)
        if ends_arr.dtype != np.int64:
            raise StoreError(f"{self.path}: {EPISODE_ENDS} has dtype {ends_arr.dtype}, expected int64")
        if ends_arr.shape[0] < n:
            raise StoreError(
                f"{self.path}: {EPISODE_ENDS} has {ends_arr.shape[0]} entries but {n} episodes are committed"
            )
        self.episode_ends = np.zeros(0, np.int64)  # for the damage report of the read below
        self.episode_ends = np.asarray(ends_arr[:n], dtype=np.int64)
        starts = np.concatenate([[0], self.episode_ends[:-1]]) if n else np.zeros(0, np.int64)
        if n and np.any(self.episode_ends <= starts):
            bad = int(np.argmax(self.episode_ends <= starts))
            raise StoreError(
                f"{self.path}: {EPISODE_ENDS} is not strictly increasing at episode {bad} "
                f"({int(starts[bad])} -> {int(self.episode_ends[bad])})"
            )
        for i, info in enumerate(self.episodes):
            if info.length != int(self.episode_ends[i] - starts[i]):
                raise StoreError(
                    f"{self.path}: episode {i} has length {info.length} in the attributes but "
                    f"{int(self.episode_ends[i] - starts[i])} frames by {EPISODE_ENDS}"
                )
        self.episode_starts = starts.astype(np.int64)

    @property
    def n_episodes(self) -> int:
        return len(self.episodes)

    @property
    def n_frames(self) -> int:
        return int(self.episode_ends[-1]) if self.n_episodes else 0

    @property
    def data(self) -> zarr.Group:
        return self.root["data"]

    def array(self, key: str) -> CheckedArray:
        if key not in self.features:
            raise StoreError(f"{self.path}: no feature {key!r}; the store has {sorted(self.features)}")
        try:
            arr = self.data[key]
        except KeyError:
            raise StoreError(f"{self.path}: feature {key!r} is declared but data/{key} is missing") from None
        return CheckedArray(arr, f"data/{key}", self)

    def checked(self, name: str) -> CheckedArray:
        """Any array of the store by its path (``features/<key>/<camera>``, ``progress/...``), read
        with the same damage checks as ``array``."""
        try:
            arr = self.root[name]
        except KeyError:
            raise StoreError(f"{self.path}: no array {name}") from None
        if not hasattr(arr, "dtype"):
            raise StoreError(f"{self.path}: {name} is a group, expected an array")
        return CheckedArray(arr, name, self)

    def episode_range(self, episode: int) -> tuple[int, int]:
        if not 0 <= episode < self.n_episodes:
            raise StoreError(f"{self.path}: episode {episode} does not exist (the store has {self.n_episodes})")
        return int(self.episode_starts[episode]), int(self.episode_ends[episode])

    def episode_index(self) -> np.ndarray:
        """Episode index of every committed frame, (n_frames,) int64."""
        return np.repeat(np.arange(self.n_episodes, dtype=np.int64), np.diff(np.concatenate([[0], self.episode_ends])))

    def read_episode(self, episode: int, keys: Iterable[str] | None = None) -> Episode:
        start, end = self.episode_range(episode)
        keys = list(self.features) if keys is None else list(keys)
        info = self.episodes[episode]
        return Episode(
            data={k: self.array(k)[start:end] for k in keys},
            task=info.task,
            success=info.success,
            quality=info.quality,
            annotations=dict(info.annotations),
            info=dict(info.info),
        )

    def keys(self, kind: str | None = None) -> list[str]:
        return [k for k, f in self.features.items() if kind is None or f.kind == kind]

    @property
    def tasks(self) -> list[str]:
        return sorted({e.task for e in self.episodes})

    # ------------------------------------------------------------------ writing
    def _require_writable(self):
        if self.mode != "a":
            raise StoreError(f"{self.path}: opened read-only; open with mode='a' to append")

    def _drop_uncommitted_tail(self) -> None:
        """Shrink every array to the committed length: an interrupted writer may have left frames
        (and an episode_ends entry) that no committed episode owns."""
        total = self.n_frames
        for key in self.features:
            arr = self.array(key)
            if arr.shape[0] != total:
                if arr.shape[0] < total:
                    raise StoreError(f"{self.path}: data/{key} has {arr.shape[0]} frames, fewer than the {total} committed")
                arr.resize((total, *arr.shape[1:]))
        ends = self.checked(EPISODE_ENDS)
        if ends.shape[0] != self.n_episodes:
            ends.resize((self.n_episodes,))
        remove_partial_files(self.path)

    def add_episode(self, episode: Episode) -> int:
        """Append one episode; returns its index. The episode exists only once this returns."""
        self._require_writable()
        where = f"episode {self.n_episodes}"
        missing = sorted(set(self.features) - set(episode.data))
        unknown = sorted(set(episode.data) - set(self.features))
        if missing:
            raise StoreError(f"{where}: missing keys {missing}; every store feature needs data (never zero-filled)")
        if unknown:
            raise StoreError(f"{where}: unknown keys {unknown}; declare them in the store's features first")
        if episode.length == 0:
            raise StoreError(f"{where}: has no frames")
        check_annotations(episode.annotations, episode.length, where)
        writer = self.begin_episode(episode.task, flush_frames=None)
        try:
            writer.extend(episode.data)
            return writer.commit(episode.success, episode.quality, episode.annotations, episode.info)
        except BaseException:
            writer.abort()
            raise

    def begin_episode(self, task: str, flush_frames: int | None = IMAGE_CHUNK_FRAMES) -> "EpisodeWriter":
        """An episode written as it happens (a deploy recorder): ``append`` frames, then ``commit``.
        Frames reach the arrays every ``flush_frames`` frames (None: at commit), beyond the committed
        length; a crash before ``commit`` loses this episode only (the next writer drops the tail)."""
        self._require_writable()
        if getattr(self, "_writer", None) is not None:
            raise StoreError(f"{self.path}: an episode is already being written; commit or abort it first")
        self._writer = EpisodeWriter(self, task, flush_frames)
        return self._writer

    def _commit_episode(self, task: str, length: int, success, quality, annotations, info) -> int:
        index = self.n_episodes
        where = f"episode {index}"
        check_annotations(annotations, length, where)
        extra = check_info(info, where)
        start = self.n_frames
        end = start + length
        ends = self.checked(EPISODE_ENDS)
        ends.resize((index + 1,))
        ends[index] = end
        kill_point("store.arrays_written")
        # Commit: one atomic rewrite of the root attributes.
        record = EpisodeInfo(task, length, success, quality, dict(annotations), extra)
        meta = dict(self._meta)
        meta["episodes"] = [*self._meta["episodes"], record.to_json()]
        self.root.attrs[ATTRS_KEY] = meta
        self._meta = meta
        self.episodes.append(record)
        self.episode_ends = np.append(self.episode_ends, np.int64(end))
        self.episode_starts = np.append(self.episode_starts, np.int64(start))
        kill_point("store.committed")
        return index

    def set_attr(self, name: str, value) -> None:
        """Store a project-level attribute (JSON) beside the schema, e.g. a dataset recipe."""
        self._require_writable()
        if name in self._meta:
            raise StoreError(f"attribute {name!r} is part of the schema and cannot be set directly")
        extra = dict(self.root.attrs.get("extra", {}))
        extra[name] = value
        self.root.attrs["extra"] = extra

    def summary(self) -> dict:
        """Counts a person wants first: episodes, frames, success rate per quality, stage durations."""
        per_quality: dict[str, list] = {}
        for e in self.episodes:
            per_quality.setdefault(e.quality, []).append(e.success)
        stage_frames: dict[str, list[int]] = {}
        for e in self.episodes:
            for s in e.annotations.get("sparse", []):
                stage_frames.setdefault(s.name, []).append(s.end - s.start)
        return {
            "path": str(self.path),
            "episodes": self.n_episodes,
            "frames": self.n_frames,
            "fps": self.fps,
            "robot_type": self.robot_type,
            "cameras": self.cameras,
            "features": {k: f.to_json() for k, f in self.features.items()},
            "tasks": self.tasks,
            "quality": {
                q: {
                    "episodes": len(v),
                    "success_rate": (float(np.mean([bool(s) for s in v])) if all(s is not None for s in v) else None),
                }
                for q, v in sorted(per_quality.items())
            },
            "stage_seconds": {
                name: {"mean": float(np.mean(v)) / self.fps, "min": min(v) / self.fps, "max": max(v) / self.fps}
                for name, v in stage_frames.items()
            },
        }


class EpisodeWriter:
    """One episode being written into a store (``EpisodeStore.begin_episode``): ``append`` one
    frame (a dict of every store feature) or ``extend`` many, then ``commit`` (returns the episode
    index) or ``abort``. Values are checked as they come (keys, shapes, dtypes, NaN), so a bad frame
    fails at once with the episode still uncommitted."""

    def __init__(self, store: EpisodeStore, task: str, flush_frames: int | None):
        if not isinstance(task, str) or not task:
            raise StoreError("an episode needs a task string")
        self.store, self.task, self.flush_frames = store, task, flush_frames
        self.start = store.n_frames
        self.written = 0  # frames already in the arrays (beyond the committed length)
        self.buffer: dict[str, list[np.ndarray]] = {k: [] for k in store.features}
        self.length = 0
        self.closed = False

    def _where(self) -> str:
        index = self.store.n_episodes
        return f"episode {index}" if self.length == 0 else f"episode {index} frame {self.length}"

    def append(self, frame: dict) -> None:
        self.extend({k: np.asarray(v)[None] for k, v in frame.items()})

    def extend(self, frames: dict) -> None:
        if self.closed:
            raise StoreError("this episode writer was committed or aborted; begin a new episode")
        where = self._where()
        missing = sorted(set(self.store.features) - set(frames))
        unknown = sorted(set(frames) - set(self.store.features))
        if missing:
            raise StoreError(f"{where}: missing keys {missing}; every store feature needs data (never zero-filled)")
        if unknown:
            raise StoreError(f"{where}: unknown keys {unknown}; declare them in the store's features first")
        n = None
        checked = {}
        for key, spec in self.store.features.items():
            value = np.asarray(frames[key])
            if value.shape[1:] != spec.shape:
                raise StoreError(f"{where}: {key} has per-frame shape {value.shape[1:]}, the store declares {spec.shape}")
            if n is not None and len(value) != n:
                raise StoreError(f"{where}: {key} has {len(value)} frames, the other keys {n}")
            n = len(value)
            if not np.can_cast(value.dtype, spec.dtype, casting="same_kind"):
                raise StoreError(f"{where}: {key} has dtype {value.dtype}, the store declares {spec.dtype}")
            value = value.astype(spec.dtype, copy=False)
            if value.dtype.kind == "f" and not np.isfinite(value).all():  # after the cast: overflow shows as inf
                raise StoreError(f"{where}: {key} has NaN or inf values")
            checked[key] = value
        for key, value in checked.items():
            self.buffer[key].append(value)
        self.length += n or 0
        if self.flush_frames is not None and self.length - self.written >= self.flush_frames:
            self.flush()

    def flush(self) -> None:
        """Write the buffered frames into the arrays (still uncommitted)."""
        n = self.length - self.written
        if n == 0:
            return
        lo, hi = self.start + self.written, self.start + self.length
        for key, parts in self.buffer.items():
            arr = self.store.array(key)
            arr.resize((hi, *arr.shape[1:]))
            arr[lo:hi] = np.concatenate(parts) if len(parts) > 1 else parts[0]
            parts.clear()
        self.written = self.length

    def commit(self, success: bool | None = None, quality: str = "unknown", annotations: dict | None = None,
               info: dict | None = None) -> int:
        """Make the episode part of the store (one atomic rewrite of the root attributes); its index."""
        if self.closed:
            raise StoreError("this episode writer was already committed or aborted")
        if self.length == 0:
            raise StoreError(f"episode {self.store.n_episodes}: has no frames")
        self.flush()
        self.closed = True
        self.store._writer = None
        return self.store._commit_episode(self.task, self.length, success, quality, annotations or {}, info)

    def abort(self) -> None:
        """Forget the episode: its frames are dropped from the arrays' tail."""
        if self.closed:
            return
        self.closed = True
        self.store._writer = None
        self.store._drop_uncommitted_tail()
