"""Full check of a store: every problem as one line naming the array or episode and the fix.

Opening a store (``EpisodeStore(path)``) checks the metadata a reader depends on; ``check_store``
adds what opening skips because it costs a scan or only matters to a writer: per-array dtype,
shape and length, that every chunk the committed episodes cover exists and decodes (in every
array: data, episode_ends, feature caches, progress annotations), annotations, labels,
non-finite values and feature caches. ``scan_data=False`` (``validate --quick``) only lists
chunk files: it skips decoding and the NaN scan.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .schema import QUALITIES, StoreError, check_annotations
from .store import EPISODE_ENDS, ChunkProblem, EpisodeStore, chunk_problems, episodes_of_frames, repair_hint

MAX_LINES_PER_ARRAY = 10


@dataclass(frozen=True)
class Problem:
    severity: str  # "error" | "warning"
    message: str

    def __str__(self) -> str:
        return f"{self.severity}: {self.message}"


def store_arrays(store: EpisodeStore) -> dict[str, int]:
    """Every array whose first n frames the committed episodes need: {path in the store: n}. Feature
    caches count up to their ``done`` frames; progress annotations only once complete."""
    from .cache import FEATURES, cache_status

    total = store.n_frames
    out = {EPISODE_ENDS: store.n_episodes}
    if "data" in store.root:
        for key in store.features:
            if key in store.data and hasattr(store.data[key], "dtype"):
                out[f"data/{key}"] = min(total, int(store.data[key].shape[0]))
    if FEATURES in store.root:
        for key, status in cache_status(store).items():
            group = store.root[FEATURES][key]
            for cam in store.cameras:
                if cam in group and hasattr(group[cam], "dtype") and not status["error"]:
                    out[f"{FEATURES}/{key}/{cam}"] = min(status["done"], total)
    if "progress" in store.root:
        for name, group in store.root["progress"].groups():
            if group.attrs.get("complete") is True:
                for level in group.array_keys():
                    out[f"progress/{name}/{level}"] = min(total, int(group[level].shape[0]))
    return out


def damaged_chunks(store: EpisodeStore, decode: bool = True) -> list[ChunkProblem]:
    """Every missing (and, with ``decode``, undecodable) chunk that committed data needs."""
    found: list[ChunkProblem] = []
    for name, n in store_arrays(store).items():
        found += chunk_problems(store.root[name], store.path, n, name, decode=decode)
    return found


def damaged_episodes(store: EpisodeStore, decode: bool = True, problems: list[ChunkProblem] | None = None) -> list[int]:
    """Episodes whose frames lie in a damaged chunk of any array (a damaged episode_ends array
    cannot be attributed and makes the store unreadable; it is not listed here). ``problems``:
    the result of ``damaged_chunks`` when the caller has it already (it decodes every chunk)."""
    eps: set[int] = set()
    for p in damaged_chunks(store, decode=decode) if problems is None else problems:
        if p.array != EPISODE_ENDS:
            eps.update(episodes_of_frames(store.episode_ends, p.start, p.end))
    return sorted(eps)


def check_store(path, scan_data: bool = True) -> list[Problem]:
    """Every problem found in the store at ``path`` (empty list: valid). ``scan_data=False``
    checks that chunk files exist without decoding them and skips the NaN scan."""
    try:
        store = EpisodeStore(path)
    except StoreError as exc:
        return [Problem("error", str(exc))]
    problems: list[Problem] = []

    def error(msg):
        problems.append(Problem("error", msg))

    def warn(msg):
        problems.append(Problem("warning", msg))

    total = store.n_frames
    # A store without its data group reports every feature as missing instead of raising KeyError.
    present = set(store.data.array_keys()) | set(store.data.group_keys()) if "data" in store.root else set()
    for key in sorted(set(store.features) - present):
        error(f"data/{key}: declared in the schema but missing from the store")
    for key in sorted(present - set(store.features)):
        error(f"data/{key}: not declared in the schema's features; declare it or delete the array")
    for key, spec in store.features.items():
        if key not in present:
            continue
        arr = store.data[key]
        if not hasattr(arr, "dtype"):
            error(f"data/{key}: is a group, expected an array")
            continue
        if np.dtype(arr.dtype) != np.dtype(spec.dtype):
            error(f"data/{key}: dtype {arr.dtype}, the schema declares {spec.dtype}")
        if tuple(arr.shape[1:]) != tuple(spec.shape):
            error(f"data/{key}: per-frame shape {tuple(arr.shape[1:])}, the schema declares {tuple(spec.shape)}")
        if arr.shape[0] < total:
            error(f"data/{key}: length mismatch: {arr.shape[0]} frames but episode_ends needs {total}")
        elif arr.shape[0] > total:
            warn(
                f"data/{key}: {arr.shape[0] - total} uncommitted frames after the last episode (an interrupted "
                "write); readers ignore them and the next append drops them"
            )
    damage = damaged_chunks(store, decode=scan_data)
    per_array: dict[str, int] = {}
    for p in damage:
        per_array[p.array] = per_array.get(p.array, 0) + 1
        if per_array[p.array] <= MAX_LINES_PER_ARRAY:
            error(p.describe(store.episode_ends))
    for name, count in per_array.items():
        if count > MAX_LINES_PER_ARRAY:
            error(f"{name}: {count - MAX_LINES_PER_ARRAY} more damaged chunks")
    damaged_arrays = set(per_array)
    if damage:
        error(f"damaged episodes {damaged_episodes(store, problems=damage)}: {repair_hint(store.path, list_damage=False)}")

    for key, spec in store.features.items():
        if key not in present or f"data/{key}" in damaged_arrays or not hasattr(store.data[key], "dtype"):
            continue
        arr = store.array(key)
        # Not an elif: an uncommitted tail must not hide NaN in the committed frames.
        if scan_data and arr.shape[0] >= total and spec.kind != "rgb" and np.dtype(spec.dtype).kind == "f" and total:
            values = arr[:total]
            finite = np.isfinite(values.reshape(total, -1)).all(axis=1)
            if not finite.all():
                frame = int(np.argmin(finite))
                ep = int(np.searchsorted(store.episode_ends, frame, side="right"))
                error(f"data/{key}: NaN or inf at frame {frame} (episode {ep}); values are never zero-filled, fix the source")

    for i, info in enumerate(store.episodes):
        where = f"episode {i}"
        try:
            check_annotations(info.annotations, info.length, where)
        except StoreError as exc:
            error(str(exc))
        if not info.task.strip():
            error(f"{where}: empty task text")
        if info.success is not None and not isinstance(info.success, bool):
            error(f"{where}: success flag {info.success!r} is not true/false/null")
        if info.quality not in QUALITIES:
            warn(f"{where}: quality label {info.quality!r} is not one of {QUALITIES}")

    if "features" in store.root:
        from .cache import cache_status

        for key, status in cache_status(store).items():
            if status["error"]:
                error(f"features/{key}: {status['error']}")
            elif status["done"] < total:
                warn(
                    f"features/{key}: covers {status['done']} of {total} frames; run `roboreward data "
                    "cache-embeddings` to finish it"
                )
    return problems


def validate(path, scan_data: bool = True) -> EpisodeStore:
    """Open the store after a full check; raise StoreError with the first error."""
    for p in check_store(path, scan_data=scan_data):
        if p.severity == "error":
            raise StoreError(p.message)
    return EpisodeStore(path)
