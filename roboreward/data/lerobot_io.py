"""Convert between our zarr episode store and LeRobotDataset v3 folders, offline.

Both directions go through lerobot's own code, so whatever lerobot writes we read and whatever we
write lerobot loads:

- ``import_lerobot`` reads the metadata with ``LeRobotDatasetMetadata`` (info.json, tasks,
  episodes), the frame table one episode at a time straight from the data parquet files (lerobot
  writes one row group per episode, so a filtered read touches only that episode), and the camera
  frames with lerobot's pyav decoder. It does not instantiate ``LeRobotDataset``: that would copy
  every data file into the Hugging Face datasets cache first. Memory holds one episode at a time.
- ``export_lerobot`` writes with ``LeRobotDataset.create`` / ``add_frame`` / ``save_episode`` /
  ``finalize`` and then adds our per-episode metadata to ``meta/episodes/*.parquet``.

Import runs in two passes. The first reads only metadata and the small per-frame columns (episode
and frame indices, task, success and reward flags) and checks everything a long import could trip
over later (files present and readable, frame counts, annotations, labels), so bad input fails in
one line before anything is written; it also yields the report of what was found. The second
decodes one episode at a time into ``<out>.partial``, which is renamed to ``<out>`` at the end. A
run killed at any point resumes there: the partial store records a fingerprint of the source and
the options, and committed episodes are atomic (see store.py), so the re-run continues after the
last committed episode and ends with the same store as an uninterrupted run.

Success labels, per episode, from the first of these that has a value (the README lists them):
our ``roboreward_success`` episodes column; an episodes column ``success`` or ``is_success``; a
per-frame ``next.success`` (lerobot_eval's recordings), ``success`` or ``is_success`` feature at the
episode's last frame; a binary ``next.reward`` at the last frame. The last frame, not "any frame":
success describes how the episode ends, and that is what a reward model's final progress is scored
against (AUROC); an episode that places the cube and then knocks it off is a failure. LeRobot's
gym_manipulator (HIL-SERL) records ``next.reward = float(success)`` with ``next.done`` set on the
success frame, which ends the episode (``terminate_on_success``), so its successes end on a reward
of 1 and its failures and time-outs on 0, also with ``next.done``. ``next.done`` is therefore no
success signal on its own. A dense ``next.reward`` (several positive values, e.g. PushT's coverage)
is not read as success at all.

Subtask annotations use LeRobot SARM's columns in the episodes metadata,
``{sparse,dense}_subtask_{names,start_frames,end_frames}`` (plus ``*_start_times`` /
``*_end_times`` in seconds, which SARM's annotation tool also writes). End frames: SARM's tool
(``lerobot/data_processing/sarm_annotations/subtask_annotation.py``) writes
``end_frame = int(end_seconds * fps)`` and requires each subtask's end timestamp to equal the next
one's start, so ``end_frames[k] == start_frames[k + 1]`` and the last end is the episode's duration
in frames: the ends are interval boundaries, i.e. *exclusive*, like ours, and its temporal
proportions use ``end - start`` as the duration. (SARM's reader ``find_stage_and_tau`` matches
``start <= t <= end`` and takes the first hit, so the one shared boundary frame counts as the end
of the earlier subtask with tau = 1; that is a tie-break of the reader, not a different storage
convention.) Reading the ends as inclusive would make every annotation the tool writes overlap its
neighbour by one frame. So frame values are copied unchanged both ways. The tool's timestamps are
whole seconds, so on import an end up to one second past the episode is clipped to the episode
length and a subtask starting up to one second past it is dropped, each with a warning; anything
further out, a negative start, overlapping or unsorted subtasks, or lists of different lengths are
errors naming the episode.

Extra metadata we write beside lerobot's (lerobot ignores all of it):
- episodes columns ``roboreward_success`` (bool, null = unknown) and ``roboreward_quality``;
- ``meta/temporal_proportions_{sparse,dense}.json``: SARM's dataset-level stage priors
  (formula (1) of the SARM paper, as its annotation tool computes them), which SARM training needs;
- ``meta/roboreward.json``: our store schema (feature shapes, dtypes, kinds, cameras), so that a
  round trip restores what LeRobot cannot express (scalar targets are (1,) there, targets are
  float32 there).

lerobot is imported inside the functions: importing it takes ~6 s, which nothing else here should pay.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from .schema import (
    ANNOTATION_LEVELS,
    QUALITIES,
    SCHEMA_VERSION,
    Episode,
    FeatureSpec,
    StoreError,
    Subtask,
    check_annotations,
)
from .store import EpisodeStore

# lerobot's bookkeeping columns: rebuilt by its writer, meaningless in our store.
BOOKKEEPING_KEYS = ("timestamp", "frame_index", "episode_index", "index", "task_index")
LEROBOT_VERSION = "v3.0"
SIDECAR = "meta/roboreward.json"
SUCCESS_COLUMN = "roboreward_success"
QUALITY_COLUMN = "roboreward_quality"
ANNOTATION_SUFFIXES = ("subtask_names", "subtask_start_frames", "subtask_end_frames")
STATE_KEY = "observation.state"
ACTION_KEY = "action"
# Success conventions in priority order (module docstring): episodes-metadata columns, then
# per-frame features read at the episode's last frame, then a binary next.reward.
EPISODE_SUCCESS_COLUMNS = (SUCCESS_COLUMN, "success", "is_success")
FRAME_SUCCESS_FEATURES = ("next.success", "success", "is_success")
REWARD_FEATURE = "next.reward"
# The partial store's record of what it is an import of; a re-run resumes only a matching one.
IMPORT_ATTR = "lerobot_import"
IMPORT_FORMAT = 1  # bump when the importer's output changes, so an older partial import restarts
# lerobot's own loader tolerance for matching a decoded frame to its timestamp.
TIMESTAMP_TOLERANCE_S = 1e-4
# Decode at most this many frames per pyav call: lerobot's decoder holds every frame it decodes
# plus a (queries x decoded) distance matrix, so a whole long episode at once would not be bounded.
DECODE_WINDOW = 256
RECOPY = "the file is truncated or corrupt; copy the dataset again"


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    """Make any Hugging Face Hub request fail at once instead of reaching for the network.

    lerobot falls back to downloading from the Hub when a local file is missing. We check the
    files first, but if something still slips through it must fail fast and loudly. huggingface_hub
    reads HF_HUB_OFFLINE once at import, so the module constant is switched as well as the variable.
    """
    import huggingface_hub.constants as hf_constants

    old_env, old_const = os.environ.get("HF_HUB_OFFLINE"), hf_constants.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"] = "1"
    hf_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hf_constants.HF_HUB_OFFLINE = old_const
        if old_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old_env


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


# ---------------------------------------------------------------- destination folders
def _sibling(dst: Path, suffix: str) -> Path:
    return dst.with_name(dst.name + suffix)


def _remove(path: Path) -> None:
    """Delete a folder of ours. It is renamed aside first, so a kill midway never leaves a
    half-deleted folder under a name a later run would read (a half-deleted store reads as zeros
    where its chunk files went missing)."""
    trash = _sibling(path, ".deleting")
    if trash.exists():
        shutil.rmtree(trash)
    if path.exists():
        path.rename(trash)
        shutil.rmtree(trash)


def _check_destination(dst: Path, overwrite: bool, marker: str) -> None:
    """``overwrite`` replaces only an empty folder or one holding ``marker`` (what this conversion
    writes): a mistyped path must not delete an unrelated folder."""
    if not dst.exists():
        return
    if not overwrite:
        raise StoreError(f"{dst} already exists; pass overwrite=True (CLI: --overwrite) or pick another path")
    if not dst.is_dir() or (any(dst.iterdir()) and not (dst / marker).exists()):
        raise StoreError(f"{dst} exists and has no {marker}; refusing to overwrite it, remove it yourself")


def _prepare_destination(dst: Path, overwrite: bool, marker: str) -> Path:
    """Check ``dst`` and return a fresh sibling temporary path to build into, renamed into place by
    ``_replace`` at the end, so an interrupted conversion never leaves a half-written ``dst``."""
    _check_destination(dst, overwrite, marker)
    tmp = _sibling(dst, ".partial")
    _remove(tmp)  # leftover of an interrupted run of ours
    _remove(_sibling(dst, ".replaced"))
    tmp.parent.mkdir(parents=True, exist_ok=True)
    return tmp


def _replace(tmp: Path, dst: Path) -> None:
    """Put the finished ``tmp`` at ``dst``. An existing ``dst`` (overwrite) is renamed aside first
    and deleted after, so at every moment ``dst`` is the old folder, the new one, or absent with the
    finished ``tmp`` beside it (which a re-run of the import renames into place)."""
    old = _sibling(dst, ".replaced")
    if dst.exists():
        _remove(old)
        dst.rename(old)
    tmp.rename(dst)
    _remove(old)


# ====================================================================== import
@dataclass
class ImportReport:
    """What ``import_lerobot`` found in a LeRobotDataset, what it did not, and what that means for
    the commands that use the store. ``str(report)`` is the text the CLI prints."""

    source: str
    destination: str
    status: str
    """``imported``, ``resumed`` (an interrupted run continued) or ``already imported``."""
    episodes: int
    frames: int
    fps: float
    robot_type: str
    cameras: dict[str, tuple[int, ...]]
    """Camera key -> (H, W, 3), in the store's view order."""
    state: str
    """The source feature stored as ``observation.state``."""
    action: str
    """The source feature stored as ``action``."""
    features: dict[str, FeatureSpec]
    """Every feature of the new store."""
    skipped: dict[str, str] = field(default_factory=dict)
    """Source features not carried, with the reason."""
    tasks: list[str] = field(default_factory=list)
    success_sources: dict[str, int] = field(default_factory=dict)
    """Convention -> number of episodes whose label came from it."""
    successes: int = 0
    failures: int = 0
    unlabelled: int = 0
    annotated: dict[str, list[int]] = field(default_factory=dict)
    """Level -> source episode indices that carry annotations of that level."""
    stages: dict[str, list[str]] = field(default_factory=dict)
    """Level -> subtask names in order of first appearance."""
    resumed_at: int = 0
    """Episodes an interrupted run had already committed (status ``resumed``)."""
    notes: list[str] = field(default_factory=list)
    """What the import tolerated (clipped annotation ends...), each also issued as a warning."""
    episode_index: list[int] = field(default_factory=list)
    """Source episode index of each store episode, in store order."""

    def lines(self) -> list[str]:
        head = {
            "imported": "imported",
            "resumed": f"resumed an interrupted import after {self.resumed_at} episodes;",
            "already imported": "already imported (same source and options, nothing to do; --overwrite re-imports):",
        }[self.status]
        out = [f"{head} {self.episodes} episodes, {self.frames} frames at {self.fps:g} fps "
               f"(robot {self.robot_type}): {self.source} -> {self.destination}"]
        if self.cameras:
            out.append("cameras: " + ", ".join(f"{k} ({s[0]}x{s[1]})" for k, s in self.cameras.items()))
        else:
            out.append("cameras: none — reward models and cache-embeddings need at least one camera")
        out.append(f"state: {self._mapped(self.state, STATE_KEY)}; action: {self._mapped(self.action, ACTION_KEY)}")
        others = [k for k, f in self.features.items() if f.kind == "low_dim" and k not in (STATE_KEY, ACTION_KEY)]
        targets = [k for k, f in self.features.items() if f.kind == "target"]
        if others or targets:
            out.append("other features: " + ", ".join(others + [f"{k} (target)" for k in targets]))
        if self.skipped:
            out.append("skipped: " + "; ".join(f"{k} ({why})" for k, why in self.skipped.items()))
        out.append(f"tasks: {len(self.tasks)} (" + "; ".join(_short(t, 60) for t in self.tasks[:5])
                   + ("; ..." if len(self.tasks) > 5 else "") + ")")
        out.append(self._success_line())
        out.append(self._annotation_line())
        out += [f"note: {n}" for n in self.notes]
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def _mapped(self, source: str, key: str) -> str:
        spec = self.features[key]
        names = spec.names or []
        shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
        size = math.prod(spec.shape)
        return (key if source == key else f"{source} -> {key}") + f" ({size}" + (f": {shown})" if names else ")")

    def _success_line(self) -> str:
        if not self.success_sources:
            return ("success labels: none (no roboreward_success, success or is_success episodes column, no "
                    "next.success, success or is_success frame feature, no binary next.reward) — reward eval scores "
                    "VOC on all episodes and gives no AUROC; add a success column to meta/episodes for those")
        sources = ", ".join(f"{k} ({n} of {self.episodes} episodes)" for k, n in self.success_sources.items())
        line = f"success labels: from {sources}: {self.successes} succeeded, {self.failures} failed"
        if self.unlabelled:
            line += f", {self.unlabelled} unknown"
        if not (self.successes and self.failures):
            line += " — reward eval's AUROC needs both successes and failures"
        return line

    def _annotation_line(self) -> str:
        if not self.annotated:
            return ("annotations: none — reward train uses one stage 'task' per episode (progress = time fraction); "
                    "add SARM's sparse_subtask_* columns for stages")
        parts, partial = [], []
        for level in ANNOTATION_LEVELS:
            eps = self.annotated.get(level, [])
            if not eps:
                parts.append(f"{level}: none")
                continue
            names = self.stages[level]
            parts.append(f"{level} in {len(eps)} of {self.episodes} episodes ("
                         + ", ".join(names[:8]) + (", ..." if len(names) > 8 else "") + ")")
            if len(eps) < self.episodes:
                missing = sorted(set(self.episode_index) - set(eps))
                partial.append(f"annotation_mode {level} needs {level} annotations in every episode "
                               f"(missing in episodes {_short(', '.join(map(str, missing)), 40)})")
        return "annotations: " + "; ".join(parts) + (" — " + "; ".join(partial) if partial else "")


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


class _Notes:
    """Things the import tolerates, counted per kind with the first example, so that a dataset
    with a thousand rounded annotation ends gives one line, not a thousand."""

    def __init__(self):
        self._kinds: dict[str, list[str]] = {}

    def add(self, kind: str, example: str) -> None:
        self._kinds.setdefault(kind, []).append(example)

    def lines(self) -> list[str]:
        return [f"{kind}: {ex[0]}" if len(ex) == 1 else f"{len(ex)} {kind} (first: {ex[0]})"
                for kind, ex in self._kinds.items()]


@dataclass
class _Plan:
    """One source episode, checked and labelled by the scan; the write pass adds its frames."""

    index: int
    row: dict
    length: int
    task: str
    success: bool | None
    quality: str
    annotations: dict[str, list[Subtask]]


@dataclass
class _Source:
    """Everything the scan learned about a dataset."""

    meta: object
    features: dict[str, FeatureSpec]
    columns: dict[str, str]
    """Store key -> source feature key (they differ only for --state-key / --action-key)."""
    cameras: list[str]
    plans: list[_Plan]
    report: ImportReport


def _check_source(src: Path) -> dict:
    """Validate a local LeRobotDataset v3 folder before lerobot sees it: lerobot would otherwise
    try to download whatever is missing from the Hub."""
    if not src.is_dir():
        raise StoreError(f"{src}: no such folder; pass the root of a local LeRobotDataset (meta/info.json inside)")
    info_path = src / "meta" / "info.json"
    if not info_path.is_file():
        raise StoreError(f"{src}: no meta/info.json; not a LeRobotDataset folder (pass the dataset's root)")
    try:
        info = json.loads(info_path.read_text())
    except (OSError, ValueError) as exc:
        raise StoreError(f"{info_path}: unreadable ({_one_line(exc)}); {RECOPY}") from None
    if not isinstance(info, dict):
        raise StoreError(f"{info_path}: not a JSON object; {RECOPY}")
    version = info.get("codebase_version")
    if version != LEROBOT_VERSION:
        raise StoreError(
            f"{src}: codebase_version {version!r} is not {LEROBOT_VERSION!r}; convert it first with lerobot's "
            "convert_dataset_v21_to_v30 script"
        )
    if not isinstance(info.get("features"), dict) or not isinstance(info.get("fps"), (int, float)):
        raise StoreError(f"{info_path}: no 'features' dict or numeric 'fps'; {RECOPY}")
    for needed in ("meta/tasks.parquet", "meta/episodes", "data"):
        if not (src / needed).exists():
            raise StoreError(f"{src}: {needed} is missing; the dataset is incomplete, copy it again")
    for path in [src / "meta" / "tasks.parquet", *sorted((src / "meta" / "episodes").glob("*/*.parquet"))]:
        _check_parquet(path)
    return info


def _check_parquet(path: Path) -> None:
    """Read the footer: a truncated parquet file has none, and lerobot's loader would fail on it
    with a message that does not name the file."""
    try:
        pq.read_metadata(path)
    except (OSError, pa.ArrowException) as exc:
        raise StoreError(f"{path}: not a readable parquet file ({_one_line(exc)}); {RECOPY}") from None


def _fingerprint(src: Path, options: dict) -> str:
    """What the output depends on: the importer's format and options, the metadata files' content
    and the data and video files' names and sizes. Hashing the metadata covers the data too in
    practice: lerobot's writer records per-episode statistics of every feature there."""
    h = hashlib.sha256(json.dumps({"format": IMPORT_FORMAT, **options}, sort_keys=True).encode())
    for path in sorted(p for p in (src / "meta").rglob("*") if p.is_file()):
        h.update(str(path.relative_to(src)).encode() + b"\0")
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    for sub in ("data", "videos"):
        for path in sorted(p for p in (src / sub).rglob("*") if p.is_file()):
            h.update(f"{path.relative_to(src)}\0{path.stat().st_size}\0".encode())
    return h.hexdigest()


def _names(names, size: int) -> list[str] | None:
    """LeRobot ``names`` -> our per-dimension list: a flat list, or a one-entry dict of one
    (e.g. older datasets' ``{"motors": [...]}``); anything else is not per-dimension."""
    if isinstance(names, dict) and len(names) == 1:
        names = next(iter(names.values()))
    if isinstance(names, (list, tuple)) and len(names) == size and all(isinstance(n, str) for n in names):
        return list(names)
    return None


def _read_sidecar(src: Path, notes: _Notes) -> tuple[dict[str, FeatureSpec], list[str]]:
    """Feature specs and camera order from the ``meta/roboreward.json`` our export wrote, if any."""
    path = src / SIDECAR
    if not path.is_file():
        return {}, []
    try:
        value = json.loads(path.read_text())
        return {k: FeatureSpec.from_json(v) for k, v in value["features"].items()}, list(value["cameras"])
    except (OSError, ValueError, KeyError, TypeError) as exc:  # StoreError is a ValueError
        notes.add("unreadable roboreward sidecars ignored", f"{path}: {_one_line(exc)}")
        return {}, []


def _store_features(lr_features: dict, camera_keys: list[str], sidecar: dict[str, FeatureSpec]
                    ) -> tuple[dict[str, FeatureSpec], dict[str, str]]:
    """Our store schema for a LeRobot feature dict, carrying every feature the schema can hold,
    and the features it cannot, with the reason.

    Features our export wrote (``sidecar``) get their original shape, dtype and kind back while
    the element count still matches.
    """
    features: dict[str, FeatureSpec] = {}
    skipped: dict[str, str] = {}
    for key, ft in lr_features.items():
        if key in BOOKKEEPING_KEYS:
            continue
        if not isinstance(ft, dict) or "dtype" not in ft or not isinstance(ft.get("shape"), (list, tuple)):
            skipped[key] = "no dtype or shape in info.json"
            continue
        dtype, shape = ft["dtype"], tuple(int(s) for s in ft["shape"])
        if key in camera_keys:
            if (ft.get("info") or {}).get("is_depth_map"):
                skipped[key] = "depth map; only RGB cameras fit the store"
            elif len(shape) != 3 or 3 not in (shape[0], shape[2]):
                skipped[key] = f"{dtype} {shape} is not an RGB image; only RGB cameras fit the store"
            else:
                hwc = shape if shape[2] == 3 else (shape[1], shape[2], shape[0])
                features[key] = FeatureSpec(hwc, "uint8", "rgb")
            continue
        try:
            np_dtype = np.dtype(dtype)
        except TypeError:
            np_dtype = None
        if np_dtype is None or np_dtype.kind not in "biuf":
            skipped[key] = f"dtype {dtype} is not numeric"
            continue
        spec = FeatureSpec(shape, np_dtype.name, "target" if key.startswith("gt.") else "low_dim",
                           _names(ft.get("names"), math.prod(shape)))
        known = sidecar.get(key)
        if known is not None and known.kind != "rgb" and math.prod(known.shape) == math.prod(shape):
            spec = known
        features[key] = spec
    return features, skipped


def _map_key(src: Path, features: dict[str, FeatureSpec], skipped: dict[str, str], source_key: str,
             store_key: str, flag: str) -> None:
    """Store ``source_key`` as ``store_key`` (``observation.state`` / ``action``, the names every
    consumer reads), or say which feature to pass when the dataset names it differently."""
    what = store_key.split(".")[-1]
    if source_key not in features:
        why = f" ({skipped[source_key]})" if source_key in skipped else ""
        vectors = [k for k, f in features.items() if f.kind == "low_dim" and len(f.shape) == 1]
        hint = f" (or add {store_key} to the dataset)" if source_key == store_key else ""
        raise StoreError(f"{src}: no {what} feature {source_key!r}{why}; the dataset's vector features are "
                         f"{vectors or 'none'}: pass {flag} <one of them>{hint}")
    spec = features[source_key]
    if len(spec.shape) != 1 or spec.kind != "low_dim":
        raise StoreError(f"{src}: {what} feature {source_key!r} has shape {spec.shape}; it must be one vector per "
                         f"frame, pass {flag} <a vector feature>")
    if source_key != store_key:
        if store_key in features:
            raise StoreError(f"{src}: {flag} {source_key} would replace the dataset's own {store_key}; "
                             f"leave {flag} out to import {store_key}")
        features[store_key] = features.pop(source_key)


def _flat(column: pa.ChunkedArray) -> np.ndarray:
    """A parquet column of one value per row (scalars or (1,) lists) -> (n,) numpy."""
    arr = column.combine_chunks()
    while isinstance(arr, (pa.ListArray, pa.LargeListArray, pa.FixedSizeListArray)):
        arr = arr.flatten()
    return arr.to_numpy(zero_copy_only=False)


def _column_to_numpy(column: pa.ChunkedArray, n: int, shape: tuple[int, ...]) -> np.ndarray:
    """A parquet column of fixed-size (nested) lists or scalars -> (n, *shape) without going
    through Python lists."""
    return _flat(column).reshape(n, *shape)


def _is_scalar_feature(ft: dict) -> bool:
    return math.prod(int(s) for s in ft.get("shape", ())) == 1


def _cell(row: dict, key: str):
    value = row.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def _as_bool(value, what: str, where: str) -> bool | None:
    """An episodes-metadata success cell -> True / False / None (unknown)."""
    if isinstance(value, (list, tuple, np.ndarray)) and len(value) == 1:
        value = value[0]
    if value is None or (isinstance(value, (float, np.floating)) and math.isnan(value)) or value is _pandas_na():
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, float, np.integer, np.floating)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")
    raise StoreError(f"{where}: {what} is {value!r}, not a boolean; write true, false or null (unknown) there")


def _pandas_na():
    """pandas' missing value of nullable columns (a boolean column with nulls reads as it)."""
    import pandas as pd

    return pd.NA


def _frame_flags(values: np.ndarray, key: str, where: str) -> np.ndarray:
    if values.dtype != np.bool_:
        bad = values[~np.isin(values, (0, 1))]
        if len(bad):
            raise StoreError(f"{where}: frame feature {key} holds {bad[0]!r}, not 0/1; a success feature is a bool "
                             f"per frame (rename {key} if it means something else)")
    return values.astype(bool)


def _row_number(row: dict, key: str, where: str, kind: type):
    value = _cell(row, key)
    try:
        number = kind(value)
    except (TypeError, ValueError):
        number = None
    if number is None or (kind is int and number != value):
        raise StoreError(f"{where}: meta/episodes column {key} is {value!r}, not a number; {RECOPY}")
    return number


def _frame_index(src: Path, meta, plans_rows: list[dict], label_keys: list[str], table_columns: list[str],
                 tasks: dict[int, str], notes: _Notes) -> dict[int, tuple[str, dict[str, np.ndarray]]]:
    """Per episode: its task and its per-frame label columns, read from the data files with only
    the small columns, checking frame counts and indices against the episodes metadata and that
    each file has every column the second pass will read."""
    by_file: dict[Path, list[dict]] = {}
    for row in plans_rows:
        path = src / meta.data_path.format(chunk_index=int(row["data/chunk_index"]),
                                           file_index=int(row["data/file_index"]))
        by_file.setdefault(path, []).append(row)
    out = {}
    for path, rows in by_file.items():
        if not path.is_file():
            raise StoreError(f"{path}: missing (episode {int(rows[0]['episode_index'])} is in it); the dataset is "
                             "incomplete, copy it again")
        try:
            present = set(pq.read_schema(path).names)
            lacking = [c for c in ("episode_index", "frame_index", "task_index", *table_columns) if c not in present]
            if lacking:
                raise StoreError(f"{path}: no column {lacking[0]!r}, which meta/info.json declares; the data files "
                                 "do not match the metadata, copy the dataset again")
            table = pq.read_table(path, columns=["episode_index", "frame_index", "task_index", *label_keys])
        except (OSError, pa.ArrowException) as exc:
            raise StoreError(f"{path}: cannot read it ({_one_line(exc)}); {RECOPY}") from None
        eps, frames = _flat(table.column("episode_index")), _flat(table.column("frame_index"))
        task_ids = _flat(table.column("task_index"))
        labels = {k: _flat(table.column(k)) for k in label_keys}
        order = np.lexsort((frames, eps))
        sorted_eps = eps[order]
        for row in rows:
            ep, length = int(row["episode_index"]), int(row["length"])
            where = f"{path} episode {ep}"
            lo, hi = np.searchsorted(sorted_eps, ep, "left"), np.searchsorted(sorted_eps, ep, "right")
            idx = order[lo:hi]
            if hi - lo != length:
                raise StoreError(f"{where}: {hi - lo} frames, the episodes metadata says {length}; {RECOPY}")
            if not np.array_equal(frames[idx], np.arange(length)):
                raise StoreError(f"{where}: frame_index is not 0..{length - 1}; {RECOPY}")
            ids = np.unique(task_ids[idx])
            unknown = [int(i) for i in ids if int(i) not in tasks]
            if unknown:
                raise StoreError(f"{where}: task_index {unknown[0]} is not in meta/tasks.parquet; {RECOPY}")
            if len(ids) > 1:
                notes.add("episodes whose frames carry several tasks; the store keeps one per episode, the first "
                          "frame's", f"episode {ep}: {len(ids)} tasks")
            out[ep] = tasks[int(task_ids[idx[0]])], {k: v[idx] for k, v in labels.items()}
    return out


def _read_annotations(row: dict, length: int, fps: float, where: str, notes: _Notes) -> dict[str, list[Subtask]]:
    """SARM's per-episode annotation columns -> ours (same end convention; see module docstring),
    with a one-line error naming the episode and the fix for anything malformed."""
    annotations: dict[str, list[Subtask]] = {}
    slack = max(1, math.ceil(fps))  # the annotation tool's timestamps are whole seconds
    fix = "end frames are exclusive and count from the episode's first frame"
    for level in ANNOTATION_LEVELS:
        columns = [f"{level}_{s}" for s in ANNOTATION_SUFFIXES]
        if level == "sparse" and not any(c in row for c in columns):
            columns = list(ANNOTATION_SUFFIXES)  # SARM's legacy unprefixed columns mean sparse
        values = [_cell(row, c) for c in columns]
        if all(v is None for v in values):
            continue
        missing = [c for c, v in zip(columns, values) if v is None]
        if missing:
            raise StoreError(f"{where}: has {level} annotations but no {missing[0]}; write all three "
                             f"{level}_subtask_{{names,start_frames,end_frames}} for the episode, or none")
        try:
            names, starts, ends = (v.tolist() if isinstance(v, np.ndarray) else list(v) for v in values)
        except TypeError:
            raise StoreError(f"{where}: {level} annotation columns are not lists; write one list per episode in "
                             f"{', '.join(columns)}") from None
        if not len(names) == len(starts) == len(ends):
            raise StoreError(f"{where}: {level} annotation columns differ in length ({len(names)} names, "
                             f"{len(starts)} start frames, {len(ends)} end frames); give every subtask a name, a "
                             "start and an end frame")
        subtasks: list[Subtask] = []
        for k, (name, start, end) in enumerate(zip(names, starts, ends)):
            label = f"{level} subtask {k} '{name}'"
            try:
                start_f, end_f = float(start), float(end)
            except (TypeError, ValueError):
                start_f = end_f = math.nan
            if not (start_f.is_integer() and end_f.is_integer()):
                raise StoreError(f"{where}: {label} has frames {start!r}..{end!r}, not whole frame numbers; "
                                 "write integer frame indices")
            start, end = int(start_f), int(end_f)
            if start < 0 or start >= length + slack or end > length + slack:
                raise StoreError(f"{where}: {label} [{start}, {end}) lies outside the episode's {length} frames; "
                                 f"{fix}, fix its {level}_subtask_*_frames")
            if end <= start:
                raise StoreError(f"{where}: {label} [{start}, {end}) is empty or reversed; the end frame must be "
                                 f"greater than the start ({fix})")
            if subtasks and start < subtasks[-1].end:
                prev = subtasks[-1]
                raise StoreError(f"{where}: {label} [{start}, {end}) overlaps or precedes '{prev.name}' "
                                 f"[{prev.start}, {prev.end}); sort the subtasks and start each at or after the "
                                 f"previous end frame ({fix}, so adjacent subtasks share it)")
            if start >= length:
                notes.add("subtasks starting past their episode's end dropped (the annotation tool rounds to whole "
                          "seconds)", f"episode {row['episode_index']}: {label} starts at {start}, past the "
                          f"episode ({length} frames)")
                continue
            if end > length:
                notes.add("subtask ends past their episode clipped to its length (the annotation tool rounds to "
                          "whole seconds)", f"episode {row['episode_index']}: {label} ends at {end}, past the "
                          f"episode ({length} frames)")
                end = length
            subtasks.append(Subtask(str(name), start, end))
        if subtasks:
            annotations[level] = subtasks
    check_annotations(annotations, length, where)  # the store's own rules, as a backstop
    return annotations


def _success(row: dict, labels: dict[str, np.ndarray], reward_binary: bool, where: str
             ) -> tuple[bool | None, str | None]:
    """This episode's success label and the convention it came from (module docstring)."""
    for column in EPISODE_SUCCESS_COLUMNS:
        value = _as_bool(row.get(column), f"episodes column {column}", where) if column in row else None
        if value is not None:
            return value, column
    for key in FRAME_SUCCESS_FEATURES:
        if key in labels:
            return bool(_frame_flags(labels[key], key, where)[-1]), f"{key} (last frame)"
    if reward_binary and REWARD_FEATURE in labels:
        return bool(labels[REWARD_FEATURE][-1] > 0), f"{REWARD_FEATURE} (last frame > 0)"
    return None, None


def _scan(src: Path, info: dict, state_key: str, action_key: str, notes: _Notes) -> _Source:
    """The first pass: metadata and small per-frame columns only, everything checked."""
    from lerobot.datasets import LeRobotDatasetMetadata

    try:
        meta = LeRobotDatasetMetadata(repo_id=f"local/{src.name}", root=src)
    except Exception as exc:  # lerobot raises many types for a broken folder
        raise StoreError(f"{src}: lerobot cannot read the metadata ({_one_line(exc)}); {RECOPY}") from None
    if meta.total_episodes == 0 or meta.episodes is None or len(meta.episodes) == 0:
        raise StoreError(f"{src}: the dataset has no episodes")
    sidecar, order = _read_sidecar(src, notes)
    features, skipped = _store_features(meta.features, list(meta.camera_keys), sidecar)
    columns = {k: k for k in features}
    _map_key(src, features, skipped, state_key, STATE_KEY, "--state-key")
    _map_key(src, features, skipped, action_key, ACTION_KEY, "--action-key")
    columns[STATE_KEY], columns[ACTION_KEY] = state_key, action_key
    columns = {k: columns[k] for k in features}
    cameras = [c for c in meta.camera_keys if c in features]
    cameras = [c for c in order if c in cameras] + [c for c in cameras if c not in order]
    try:
        tasks = {int(i): str(t) for t, i in zip(meta.tasks.index, meta.tasks["task_index"])}
    except (KeyError, TypeError, ValueError) as exc:
        raise StoreError(f"{src}: meta/tasks.parquet has no integer task_index column ({_one_line(exc)}); "
                         f"{RECOPY}") from None

    episodes = meta.episodes.to_pandas()  # one row per episode, stats columns already dropped
    needed = ["episode_index", "length", "data/chunk_index", "data/file_index"]
    needed += [f"videos/{c}/{s}" for c in cameras if c in meta.video_keys
               for s in ("chunk_index", "file_index", "from_timestamp")]
    lacking = [c for c in needed if c not in episodes.columns]
    if lacking:
        raise StoreError(f"{src}: meta/episodes has no column {lacking[0]!r}; the episodes metadata is incomplete, "
                         "copy the dataset again")
    episodes = episodes.sort_values("episode_index")
    if episodes["episode_index"].duplicated().any():
        dup = int(episodes["episode_index"][episodes["episode_index"].duplicated()].iloc[0])
        raise StoreError(f"{src}: episode {dup} appears twice in meta/episodes; {RECOPY}")
    total = info.get("total_episodes")
    if isinstance(total, int) and total != len(episodes):
        raise StoreError(f"{src}: info.json counts {total} episodes, meta/episodes holds {len(episodes)}; the "
                         "dataset is incomplete, copy it again")
    rows = [r.to_dict() for _, r in episodes.iterrows()]
    for row in rows:
        where = f"{src} episode {row['episode_index']}"
        for key in needed:
            row[key] = _row_number(row, key, where, float if key.endswith("from_timestamp") else int)

    label_keys = [k for k in (*FRAME_SUCCESS_FEATURES, REWARD_FEATURE)
                  if k in meta.features and _is_scalar_feature(meta.features[k])]
    table_columns = ["timestamp", *(columns[k] for k in features if meta.features[columns[k]]["dtype"] != "video")]
    per_episode = _frame_index(src, meta, rows, label_keys, table_columns, tasks, notes)
    rewards = [per_episode[int(r["episode_index"])][1].get(REWARD_FEATURE) for r in rows]
    reward_values = np.unique(np.concatenate(rewards)) if rewards and rewards[0] is not None else np.zeros(0)
    # Binary: no negatives and one positive value at most (gym_manipulator's float(success), or a
    # classifier's success_reward). Several positive values make it a dense reward, not a label.
    reward_binary = bool(len(reward_values)) and (reward_values >= 0).all() and (reward_values > 0).sum() <= 1
    plans, sources = [], {}
    annotated: dict[str, list[int]] = {}
    stages: dict[str, list[str]] = {}
    for row in rows:
        ep, length = int(row["episode_index"]), int(row["length"])
        where = f"{src} episode {ep}"
        task, labels = per_episode[ep]
        for cam in cameras:
            if cam in meta.video_keys:
                video = src / meta.video_path.format(video_key=cam, chunk_index=int(row[f"videos/{cam}/chunk_index"]),
                                                     file_index=int(row[f"videos/{cam}/file_index"]))
                if not video.is_file():
                    raise StoreError(f"{where}: video {video} is missing; the dataset is incomplete, copy its videos/ "
                                     "folder again")
        success, source = _success(row, labels, reward_binary, where)
        if source is not None:
            sources[source] = sources.get(source, 0) + 1
        if source == f"{REWARD_FEATURE} (last frame > 0)" and not success and (labels[REWARD_FEATURE] > 0).any():
            notes.add("episodes with a positive next.reward before their last frame but not on it, read as failures "
                      "(recorded with terminate_on_success off?)", f"episode {ep}")
        quality = _cell(row, QUALITY_COLUMN) or "unknown"
        if quality not in QUALITIES:
            notes.add(f"quality values outside {QUALITIES} stored as 'unknown'", f"episode {ep}: {quality!r}")
            quality = "unknown"
        annotations = _read_annotations(row, length, float(meta.fps), where, notes)
        for level, subs in annotations.items():
            annotated.setdefault(level, []).append(ep)
            for s in subs:
                if s.name not in stages.setdefault(level, []):
                    stages[level].append(s.name)
        plans.append(_Plan(ep, row, length, task, success, str(quality), annotations))
    if len(reward_values) and not reward_binary and any(p.success is None for p in plans):
        notes.add("next.reward not read as success labels (a dense reward, not gym_manipulator's 0/1)",
                  f"{len(reward_values)} distinct values from {reward_values[0]:g} to {reward_values[-1]:g}")

    report = ImportReport(
        source=str(src), destination="", status="imported", episodes=len(plans),
        frames=sum(p.length for p in plans), fps=float(meta.fps), robot_type=meta.robot_type or "unknown",
        cameras={c: features[c].shape for c in cameras}, state=state_key, action=action_key, features=features,
        skipped=skipped, tasks=sorted({p.task for p in plans}), success_sources=sources,
        successes=sum(p.success is True for p in plans), failures=sum(p.success is False for p in plans),
        unlabelled=sum(p.success is None for p in plans), annotated=annotated, stages=stages,
        episode_index=[p.index for p in plans],
    )
    return _Source(meta, features, columns, cameras, plans, report)


def _import_record(path: Path) -> tuple[EpisodeStore | None, dict | None]:
    """A store at ``path`` and the import record it carries, (None, None) when there is none."""
    try:
        store = EpisodeStore(path)
        extra = store.root.attrs.get("extra", {})
        return store, (extra.get(IMPORT_ATTR) if isinstance(extra, dict) else None)
    except Exception:  # anything at all: this only asks whether the folder is an import of ours
        return None, None


def _resume(tmp: Path, record: dict, plans: list[_Plan]) -> EpisodeStore | None:
    """The partial store an interrupted run of this same import left, open for appending (its
    uncommitted tail dropped), or None when there is nothing to resume."""
    if not tmp.exists() or _import_record(tmp)[1] != record:
        return None
    try:
        store = EpisodeStore(tmp, mode="a")
    except Exception:  # killed while creating it: zarr can fail in many ways on that; start over
        return None
    done = store.episodes
    if len(done) > len(plans) or any(info.length != plan.length for info, plan in zip(done, plans)):
        return None
    return store


def import_lerobot(src, dst, overwrite: bool = False, progress: bool = True, state_key: str = STATE_KEY,
                   action_key: str = ACTION_KEY) -> EpisodeStore:
    """Convert a local LeRobotDataset v3 folder into a new zarr store, one episode at a time.

    Cameras (video or image features) become rgb uint8 (H, W, 3); every other numeric feature is
    carried (``gt.*`` as targets, the rest as low_dim, with its LeRobot ``names``); lerobot's
    bookkeeping columns are dropped. ``state_key`` / ``action_key`` name the source features stored
    as ``observation.state`` / ``action``; both must exist. Task text, subtask annotations (SARM's
    columns) and success labels (module docstring) come from the metadata. Nothing is downloaded.

    Returns the store; its ``import_report`` attribute is an :class:`ImportReport` of what was found.
    A run killed at any point and started again with the same arguments resumes and ends with the
    same store; a re-run after a finished import returns that store (status ``already imported``).
    """
    from lerobot.utils.utils import SuppressProgressBars

    src, dst = Path(src), Path(dst)
    info = _check_source(src)
    previous = record = None
    if dst.exists() and not overwrite:
        # A finished import of this same source is what a re-run after a kill just past the final
        # rename finds: that run must end well, so it is compared with the source after the scan.
        previous, record = _import_record(dst)
        if record is None:
            raise StoreError(f"{dst} already exists; pass overwrite=True (CLI: --overwrite) or pick another path")
    _check_destination(dst, True, "zarr.json")
    options = {"state_key": state_key, "action_key": action_key}
    fingerprint = _fingerprint(src, options)
    notes = _Notes()
    with _hub_offline(), SuppressProgressBars():  # our bar, not one per datasets call
        source = _scan(src, info, state_key, action_key, notes)
        report = source.report
        report.destination = str(dst)
        report.notes = notes.lines()
        for note in report.notes:
            warnings.warn(f"{src}: {note}", stacklevel=2)
        plans = source.plans
        wanted = {"format": IMPORT_FORMAT, "source": str(src.resolve()), "fingerprint": fingerprint,
                  "episodes": len(plans), **options}
        tmp = _sibling(dst, ".partial")
        for leftover in (_sibling(dst, ".replaced"), _sibling(tmp, ".deleting")):
            _remove(leftover)  # of a run killed while swapping or deleting
        if previous is not None:
            if record == wanted and previous.n_episodes == len(plans):
                _remove(tmp)
                report.status = "already imported"
                previous.import_report = report
                return previous
            raise StoreError(f"{dst} already exists (an import of another source, other options or an older "
                             "version of it); pass overwrite=True (CLI: --overwrite) or pick another path")

        store = _resume(tmp, wanted, plans)
        if store is None:
            _remove(tmp)
            tmp.parent.mkdir(parents=True, exist_ok=True)
            store = EpisodeStore.create(tmp, source.features, fps=report.fps, robot_type=report.robot_type,
                                        cameras=source.cameras, overwrite=True)
            store.set_attr(IMPORT_ATTR, wanted)  # before any episode: a store without it is never resumed
        elif store.n_episodes:
            report.status, report.resumed_at = "resumed", store.n_episodes
        todo = plans[store.n_episodes:]
        for plan in tqdm(todo, total=len(todo), unit="ep", desc=f"import {src.name}", disable=not progress):
            store.add_episode(_read_episode(src, source, plan))
    _replace(tmp, dst)
    store = EpisodeStore(dst)
    store.import_report = report
    return store


def _decode_images(column: pa.ChunkedArray, root: Path) -> np.ndarray:
    """Image (not video) features are stored as PNG bytes in Hugging Face's image struct."""
    import io

    from PIL import Image

    frames = []
    for cell in column.to_pylist():
        raw = cell.get("bytes") if isinstance(cell, dict) else None
        source = io.BytesIO(raw) if raw else root / cell["path"]
        with Image.open(source) as img:
            frames.append(np.asarray(img.convert("RGB")))
    return np.stack(frames)


def _decode_video(path: Path, timestamps: np.ndarray) -> np.ndarray:
    """Frames at these timestamps (s) of one video file, (T, H, W, 3) uint8, via lerobot's pyav
    decoder (torchcodec cannot load here), a window at a time to bound memory."""
    from lerobot.datasets.video_utils import decode_video_frames

    out = []
    for i in range(0, len(timestamps), DECODE_WINDOW):
        window = timestamps[i : i + DECODE_WINDOW].tolist()
        chunk = decode_video_frames(path, window, TIMESTAMP_TOLERANCE_S, "pyav", return_uint8=True)
        out.append(chunk.permute(0, 2, 3, 1).numpy())
    return np.concatenate(out)


def _read_episode(src: Path, source: _Source, plan: _Plan) -> Episode:
    """One LeRobot episode, checked and labelled by the scan, with its frames, in memory."""
    meta, row, features = source.meta, plan.row, source.features
    where = f"{src} episode {plan.index}"
    path = src / meta.data_path.format(chunk_index=int(row["data/chunk_index"]),
                                       file_index=int(row["data/file_index"]))
    table_keys = [k for k in features if meta.features[source.columns[k]]["dtype"] != "video"]
    try:
        table = pq.read_table(path, columns=["frame_index", "timestamp", *{source.columns[k] for k in table_keys}],
                              filters=[("episode_index", "==", plan.index)])
        images = {}
        for key in table_keys:
            if features[key].kind == "rgb":
                images[key] = _decode_images(table.column(source.columns[key]), src)
    except (OSError, pa.ArrowException) as exc:
        raise StoreError(f"{where}: cannot read {path} ({_one_line(exc)}); {RECOPY}") from None
    except Exception as exc:  # PIL raises several types for a broken PNG
        raise StoreError(f"{where}: cannot decode an image in {path} ({_one_line(exc)}); {RECOPY}") from None
    table = table.sort_by("frame_index")
    n = table.num_rows
    if n != plan.length:
        raise StoreError(f"{where}: {path} holds {n} frames, the episodes metadata says {plan.length}; {RECOPY}")

    data = {}
    for key in table_keys:
        spec, column = features[key], source.columns[key]
        if spec.kind == "rgb":
            data[key] = images[key]
            continue
        lr_shape = tuple(int(s) for s in meta.features[column]["shape"])
        values = _column_to_numpy(table.column(column), n, lr_shape).reshape(n, *spec.shape)
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            t = int(np.argmax(~np.isfinite(values.reshape(n, -1)).all(axis=1)))
            raise StoreError(f"{where}: {column} is NaN or inf at frame {t}; the store never holds NaN: fix or drop "
                             "that episode in the dataset")
        data[key] = values.astype(spec.dtype, copy=False)
    timestamps = table.column("timestamp").to_numpy().astype(np.float64)
    for key, spec in features.items():
        if spec.kind == "rgb" and key not in data:
            video = src / meta.video_path.format(video_key=key, chunk_index=int(row[f"videos/{key}/chunk_index"]),
                                                 file_index=int(row[f"videos/{key}/file_index"]))
            try:
                frames = _decode_video(video, float(row[f"videos/{key}/from_timestamp"]) + timestamps)
            except Exception as exc:  # av / lerobot raise several types for a bad or missing file
                raise StoreError(f"{where}: cannot decode {key} from {video} ({_one_line(exc)}); the video is "
                                 "truncated or corrupt, copy the dataset again") from None
            if frames.shape[1:] != spec.shape:
                raise StoreError(f"{where}: {key} decodes to {frames.shape[1:]}, info.json declares {spec.shape}; "
                                 "fix the feature's shape in meta/info.json")
            data[key] = frames
    return Episode(data=data, task=plan.task, success=plan.success, quality=plan.quality,
                   annotations=plan.annotations)


# ====================================================================== export
def _lerobot_features(store: EpisodeStore) -> dict[str, dict]:
    """Our schema -> LeRobot's feature dict: cameras as videos, targets as float32 (scalars as (1,))."""
    features = {}
    for key, spec in store.features.items():
        if spec.kind == "rgb":
            features[key] = {"dtype": "video", "shape": spec.shape, "names": ["height", "width", "channels"]}
        else:
            shape = spec.shape or (1,)
            dtype = "float32" if spec.kind == "target" else spec.dtype
            features[key] = {"dtype": dtype, "shape": shape, "names": spec.names}
    return features


def _lerobot_frame(episode: Episode, t: int, features: dict[str, dict]) -> dict:
    """Frame ``t`` as lerobot's ``add_frame`` wants it: HWC uint8 images, (1,) for scalars."""
    frame = {"task": episode.task}
    for key, values in episode.data.items():
        ft = features[key]
        frame[key] = values[t] if ft["dtype"] == "video" else values[t].reshape(ft["shape"]).astype(ft["dtype"])
    return frame


def _temporal_proportions(per_episode: list[list[Subtask]]) -> dict[str, float]:
    """SARM's stage priors (paper formula (1)): the mean over annotated episodes of each stage's
    share of the annotated frames, renormalised, in order of first appearance."""
    shares: dict[str, list[float]] = {}
    for subtasks in per_episode:
        total = sum(s.end - s.start for s in subtasks)
        if not subtasks or total <= 0:
            continue
        frames: dict[str, int] = {}
        for s in subtasks:
            frames[s.name] = frames.get(s.name, 0) + s.end - s.start
        for name, f in frames.items():
            shares.setdefault(name, []).append(f / total)
    means = {name: sum(v) / len(v) for name, v in shares.items()}
    norm = sum(means.values())
    return {name: m / norm for name, m in means.items()} if norm > 0 else {}


def _write_episode_metadata(root: Path, store: EpisodeStore, fps: int) -> None:
    """Add our annotations (SARM's columns) and success/quality to lerobot's episodes parquet files,
    the way SARM's annotation tool does it, after ``finalize`` has closed them."""
    levels = [lvl for lvl in ANNOTATION_LEVELS if any(e.annotations.get(lvl) for e in store.episodes)]
    for path in sorted((root / "meta" / "episodes").glob("*/*.parquet")):
        table = pq.read_table(path)
        infos = [store.episodes[int(i)] for i in table.column("episode_index").to_pylist()]
        for level in levels:
            subs = [info.annotations.get(level) or None for info in infos]
            columns = {
                "subtask_names": (pa.list_(pa.string()), lambda s: s.name),
                "subtask_start_times": (pa.list_(pa.float64()), lambda s: s.start / fps),
                "subtask_end_times": (pa.list_(pa.float64()), lambda s: s.end / fps),
                "subtask_start_frames": (pa.list_(pa.int64()), lambda s: s.start),
                "subtask_end_frames": (pa.list_(pa.int64()), lambda s: s.end),
            }
            for suffix, (pa_type, get) in columns.items():
                values = pa.array([None if ss is None else [get(s) for s in ss] for ss in subs], type=pa_type)
                table = table.append_column(f"{level}_{suffix}", values)
        table = table.append_column(SUCCESS_COLUMN, pa.array([i.success for i in infos], type=pa.bool_()))
        table = table.append_column(QUALITY_COLUMN, pa.array([i.quality for i in infos], type=pa.string()))
        pq.write_table(table, path, compression="snappy")
    for level in levels:
        props = _temporal_proportions([e.annotations.get(level, []) for e in store.episodes])
        (root / "meta" / f"temporal_proportions_{level}.json").write_text(json.dumps(props, indent=2))


MIN_VIDEO_SIDE = 32


def export_lerobot(src, dst, repo_id: str = "local/roboreward", progress: bool = True,
                   overwrite: bool = False) -> Path:
    """Write a zarr store as a LeRobotDataset v3 folder with lerobot's own writer; returns ``dst``.

    lerobot loads the result with ``LeRobotDataset(repo_id, root=dst, video_backend="pyav")``.
    Cameras are encoded as videos (lossy: AV1 at lerobot's default quality), everything else is
    written exactly. Nothing is uploaded; ``repo_id`` is only recorded.
    """
    from lerobot.datasets import LeRobotDataset
    from lerobot.utils.utils import SuppressProgressBars

    src, dst = Path(src), Path(dst)
    store = EpisodeStore(src)
    if store.n_episodes == 0:
        raise StoreError(f"{src}: the store has no episodes to export")
    fps = int(round(store.fps))
    if abs(store.fps - fps) > 1e-6:
        raise StoreError(f"{src}: fps {store.fps} is not an integer; LeRobot datasets need an integer fps")
    small = [(cam, store.features[cam].shape[:2]) for cam in store.cameras if min(store.features[cam].shape[:2]) < MIN_VIDEO_SIDE]
    if small:
        # Measured: lerobot's AV1 encoder (SVT-AV1) kills the process with SIGFPE on 16 and 24 px frames; 32 px works.
        cam, (h, w) = small[0]
        raise StoreError(f"{src}: camera {cam} is {h}x{w} px; LeRobot's AV1 video encoder needs at least "
                         f"{MIN_VIDEO_SIDE} px per side (smaller frames crash it); generate or import the store at a larger size")
    tmp = _prepare_destination(dst, overwrite, "meta/info.json")
    features = _lerobot_features(store)
    with _hub_offline(), SuppressProgressBars():  # our bar, not one per datasets call
        dataset = LeRobotDataset.create(repo_id, fps, root=tmp, robot_type=store.robot_type, features=features,
                                        use_videos=True, video_backend="pyav")
        try:
            bar = tqdm(range(store.n_episodes), unit="ep", desc=f"export {src.name}", disable=not progress)
            for index in bar:
                episode = store.read_episode(index)  # one episode in memory at a time
                for t in range(episode.length):
                    dataset.add_frame(_lerobot_frame(episode, t, features))
                # Sequential encoding: the parallel path forks a process pool per episode, which is
                # slower for small frames and unsafe with the zarr/blosc threads alive in this process.
                dataset.save_episode(parallel_encoding=False)
        finally:
            dataset.finalize()
    _write_episode_metadata(tmp, store, fps)
    sidecar = {"schema_version": SCHEMA_VERSION, "fps": store.fps, "cameras": store.cameras,
               "features": {k: f.to_json() for k, f in store.features.items()}}
    (tmp / SIDECAR).write_text(json.dumps(sidecar, indent=2))
    _replace(tmp, dst)
    return dst
