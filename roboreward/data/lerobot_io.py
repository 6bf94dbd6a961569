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
neighbour by one frame. So frame values are copied unchanged both ways; on import an end past the
episode (the tool rounds to whole seconds) is clipped to the episode length, and a subtask that
starts at or after the end is dropped, each with a warning.

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
import json
import math
import os
import shutil
import warnings
from collections.abc import Iterator
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
# lerobot's own loader tolerance for matching a decoded frame to its timestamp.
TIMESTAMP_TOLERANCE_S = 1e-4
# Decode at most this many frames per pyav call: lerobot's decoder holds every frame it decodes
# plus a (queries x decoded) distance matrix, so a whole long episode at once would not be bounded.
DECODE_WINDOW = 256


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


def _prepare_destination(dst: Path, overwrite: bool, marker: str) -> Path:
    """Check ``dst`` and return a sibling temporary path to build into, renamed into place at the
    end, so an interrupted conversion never leaves a half-written ``dst`` behind.

    ``overwrite`` replaces only an empty folder or one holding ``marker`` (what this conversion
    writes): a mistyped path must not delete an unrelated folder.
    """
    if dst.exists():
        if not overwrite:
            raise StoreError(f"{dst} already exists; pass overwrite=True (CLI: --overwrite) or pick another path")
        if not dst.is_dir() or (any(dst.iterdir()) and not (dst / marker).exists()):
            raise StoreError(f"{dst} exists and has no {marker}; refusing to overwrite it, remove it yourself")
    tmp = dst.with_name(dst.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)  # leftover of an interrupted run of ours
    tmp.parent.mkdir(parents=True, exist_ok=True)
    return tmp


def _replace(tmp: Path, dst: Path) -> None:
    if dst.exists():
        shutil.rmtree(dst)
    tmp.rename(dst)


# ====================================================================== import
def _check_source(src: Path) -> dict:
    """Validate a local LeRobotDataset v3 folder before lerobot sees it: lerobot would otherwise
    try to download whatever is missing from the Hub."""
    if not src.is_dir():
        raise StoreError(f"{src}: no such folder; pass the root of a local LeRobotDataset (meta/info.json inside)")
    info_path = src / "meta" / "info.json"
    if not info_path.is_file():
        raise StoreError(f"{src}: no meta/info.json; not a LeRobotDataset folder")
    try:
        info = json.loads(info_path.read_text())
    except (OSError, ValueError) as exc:
        raise StoreError(f"{info_path}: unreadable ({_one_line(exc)})") from None
    version = info.get("codebase_version") if isinstance(info, dict) else None
    if version != LEROBOT_VERSION:
        raise StoreError(
            f"{src}: codebase_version {version!r} is not {LEROBOT_VERSION!r}; convert it first with lerobot's "
            "convert_dataset_v21_to_v30 script"
        )
    for needed in ("meta/tasks.parquet", "meta/episodes", "data"):
        if not (src / needed).exists():
            raise StoreError(f"{src}: {needed} is missing; the dataset is incomplete")
    return info


def _names(names, size: int) -> list[str] | None:
    """LeRobot ``names`` -> our per-dimension list: a flat list, or a one-entry dict of one
    (e.g. older datasets' ``{"motors": [...]}``); anything else is not per-dimension."""
    if isinstance(names, dict) and len(names) == 1:
        names = next(iter(names.values()))
    if isinstance(names, (list, tuple)) and len(names) == size and all(isinstance(n, str) for n in names):
        return list(names)
    return None


def _read_sidecar(src: Path) -> tuple[dict[str, FeatureSpec], list[str]]:
    """Feature specs and camera order from the ``meta/roboreward.json`` our export wrote, if any."""
    path = src / SIDECAR
    if not path.is_file():
        return {}, []
    try:
        value = json.loads(path.read_text())
        return {k: FeatureSpec.from_json(v) for k, v in value["features"].items()}, list(value["cameras"])
    except (OSError, ValueError, KeyError, TypeError) as exc:  # StoreError is a ValueError
        warnings.warn(f"{path}: ignored, unreadable ({_one_line(exc)})", stacklevel=3)
        return {}, []


def _store_features(src: Path, lr_features: dict, camera_keys: list[str],
                    sidecar: dict[str, FeatureSpec]) -> dict[str, FeatureSpec]:
    """Our store schema for a LeRobot feature dict, carrying every feature the schema can hold.

    Features our export wrote (``sidecar``) get their original shape, dtype and kind back while
    the element count still matches.
    """
    features: dict[str, FeatureSpec] = {}
    for key, ft in lr_features.items():
        if key in BOOKKEEPING_KEYS:
            continue
        dtype, shape = ft["dtype"], tuple(int(s) for s in ft["shape"])
        if key in camera_keys:
            if (ft.get("info") or {}).get("is_depth_map") or len(shape) != 3 or 3 not in (shape[0], shape[2]):
                warnings.warn(f"{src}: skipping {key}: only RGB cameras fit the store (got {dtype} {shape})",
                              stacklevel=3)
                continue
            hwc = shape if shape[2] == 3 else (shape[1], shape[2], shape[0])
            features[key] = FeatureSpec(hwc, "uint8", "rgb")
            continue
        try:
            np_dtype = np.dtype(dtype)
        except TypeError:
            np_dtype = None
        if np_dtype is None or np_dtype.kind not in "biuf":
            warnings.warn(f"{src}: skipping {key}: dtype {dtype!r} is not numeric", stacklevel=3)
            continue
        spec = FeatureSpec(shape, np_dtype.name, "target" if key.startswith("gt.") else "low_dim",
                           _names(ft.get("names"), math.prod(shape)))
        known = sidecar.get(key)
        if known is not None and known.kind != "rgb" and math.prod(known.shape) == math.prod(shape):
            spec = known
        features[key] = spec
    return features


def _column_to_numpy(column: pa.ChunkedArray, n: int, shape: tuple[int, ...]) -> np.ndarray:
    """A parquet column of fixed-size (nested) lists or scalars -> (n, *shape) without going
    through Python lists."""
    arr = column.combine_chunks()
    while isinstance(arr, (pa.ListArray, pa.LargeListArray, pa.FixedSizeListArray)):
        arr = arr.flatten()
    return arr.to_numpy(zero_copy_only=False).reshape(n, *shape)


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


def _cell(row: dict, key: str):
    value = row.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def _read_annotations(row: dict, length: int, where: str) -> dict[str, list[Subtask]]:
    """SARM's per-episode annotation columns -> ours (same end convention; see module docstring)."""
    annotations: dict[str, list[Subtask]] = {}
    for level in ANNOTATION_LEVELS:
        columns = [f"{level}_{s}" for s in ANNOTATION_SUFFIXES]
        if level == "sparse" and columns[0] not in row:
            columns = list(ANNOTATION_SUFFIXES)  # SARM's legacy unprefixed columns mean sparse
        names, starts, ends = (_cell(row, c) for c in columns)
        if names is None or starts is None or ends is None:
            continue
        if not len(names) == len(starts) == len(ends):
            raise StoreError(f"{where}: {level} annotation columns differ in length "
                             f"({len(names)} names, {len(starts)} starts, {len(ends)} ends)")
        subtasks = []
        for name, start, end in zip(names, starts, ends):
            start, end = max(int(start), 0), int(end)
            if end > length:
                warnings.warn(f"{where}: {level} subtask '{name}' ends at {end}, past the episode ({length}); "
                              "clipped", stacklevel=4)
                end = length
            if start >= length:
                warnings.warn(f"{where}: {level} subtask '{name}' starts at {start}, past the episode ({length}); "
                              "dropped", stacklevel=4)
                continue
            subtasks.append(Subtask(str(name), start, end))
        if subtasks:
            annotations[level] = subtasks
    check_annotations(annotations, length, where)
    return annotations


def import_lerobot(src, dst, overwrite: bool = False, progress: bool = True) -> EpisodeStore:
    """Convert a local LeRobotDataset v3 folder into a new zarr store, one episode at a time.

    Cameras (video or image features) become rgb uint8 (H, W, 3); every other numeric feature is
    carried (``gt.*`` as targets, the rest as low_dim, with its LeRobot ``names``); lerobot's
    bookkeeping columns are dropped. Task text, subtask annotations (SARM's columns) and our
    success/quality columns come from the episodes metadata. Nothing is downloaded.
    """
    from lerobot.datasets import LeRobotDatasetMetadata
    from lerobot.utils.utils import SuppressProgressBars

    src, dst = Path(src), Path(dst)
    _check_source(src)
    tmp = _prepare_destination(dst, overwrite, "zarr.json")
    with _hub_offline(), SuppressProgressBars():  # our bar, not one per datasets call
        try:
            meta = LeRobotDatasetMetadata(repo_id=f"local/{src.name}", root=src)
        except Exception as exc:  # lerobot raises many types for a broken folder
            raise StoreError(f"{src}: lerobot cannot read the metadata ({_one_line(exc)})") from None
        if meta.total_episodes == 0 or meta.episodes is None:
            raise StoreError(f"{src}: the dataset has no episodes")
        sidecar, order = _read_sidecar(src)
        features = _store_features(src, meta.features, list(meta.camera_keys), sidecar)
        cameras = [c for c in meta.camera_keys if c in features]
        cameras = [c for c in order if c in cameras] + [c for c in cameras if c not in order]
        tasks = {int(i): str(t) for t, i in zip(meta.tasks.index, meta.tasks["task_index"])}
        episodes = meta.episodes.to_pandas()  # one row per episode, stats columns already dropped

        store = EpisodeStore.create(tmp, features, fps=float(meta.fps), robot_type=meta.robot_type or "unknown",
                                    cameras=cameras, overwrite=True)
        table_keys = [k for k in features if meta.features[k]["dtype"] != "video"]
        for _, row in tqdm(episodes.sort_values("episode_index").iterrows(), total=len(episodes), unit="ep",
                           desc=f"import {src.name}", disable=not progress):
            row = row.to_dict()
            store.add_episode(_read_episode(src, meta, row, features, table_keys, tasks))
    _replace(tmp, dst)
    return EpisodeStore(dst)


def _read_episode(src: Path, meta, row: dict, features: dict[str, FeatureSpec], table_keys: list[str],
                  tasks: dict[int, str]) -> Episode:
    """One LeRobot episode (its episodes-metadata ``row``) as an in-memory Episode."""
    ep = int(row["episode_index"])
    where = f"{src} episode {ep}"
    path = src / meta.data_path.format(chunk_index=int(row["data/chunk_index"]),
                                       file_index=int(row["data/file_index"]))
    try:
        table = pq.read_table(path, columns=["frame_index", "timestamp", "task_index", *table_keys],
                              filters=[("episode_index", "==", ep)])
    except (OSError, pa.ArrowInvalid) as exc:
        raise StoreError(f"{where}: cannot read {path} ({_one_line(exc)})") from None
    table = table.sort_by("frame_index")
    n = table.num_rows
    if n != int(row["length"]):
        raise StoreError(f"{where}: {path} holds {n} frames, the episodes metadata says {row['length']}")

    data = {}
    for key in table_keys:
        spec = features[key]
        if spec.kind == "rgb":
            data[key] = _decode_images(table.column(key), src)
        else:
            lr_shape = tuple(int(s) for s in meta.features[key]["shape"])
            values = _column_to_numpy(table.column(key), n, lr_shape)
            data[key] = values.reshape(n, *spec.shape).astype(spec.dtype, copy=False)
    timestamps = table.column("timestamp").to_numpy().astype(np.float64)
    for key, spec in features.items():
        if spec.kind == "rgb" and key not in data:
            video = src / meta.video_path.format(video_key=key, chunk_index=int(row[f"videos/{key}/chunk_index"]),
                                                 file_index=int(row[f"videos/{key}/file_index"]))
            try:
                frames = _decode_video(video, float(row[f"videos/{key}/from_timestamp"]) + timestamps)
            except Exception as exc:  # av / lerobot raise several types for a bad or missing file
                raise StoreError(f"{where}: cannot decode {key} from {video} ({_one_line(exc)})") from None
            if frames.shape[1:] != spec.shape:
                raise StoreError(f"{where}: {key} decodes to {frames.shape[1:]}, info.json declares {spec.shape}")
            data[key] = frames

    task_ids = np.unique(table.column("task_index").to_numpy())
    if len(task_ids) > 1:
        warnings.warn(f"{where}: frames carry {len(task_ids)} tasks; the store keeps one per episode, "
                      "the first frame's", stacklevel=3)
    task = tasks[int(table.column("task_index")[0].as_py())]
    success = _cell(row, SUCCESS_COLUMN)
    quality = _cell(row, QUALITY_COLUMN) or "unknown"
    if quality not in QUALITIES:
        warnings.warn(f"{where}: quality {quality!r} is not one of {QUALITIES}; stored as 'unknown'", stacklevel=3)
        quality = "unknown"
    return Episode(data=data, task=task, success=None if success is None else bool(success), quality=quality,
                   annotations=_read_annotations(row, n, where))


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
