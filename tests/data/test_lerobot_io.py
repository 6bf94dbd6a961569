"""LeRobot v3 interop: datasets written by lerobot's own writer import exactly (video within codec
tolerance), and our stores survive export -> lerobot load -> import."""
import json
import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before lerobot / huggingface_hub are imported

from lerobot.datasets import LeRobotDataset  # noqa: E402

from roboreward.data import Episode, EpisodeStore, FeatureSpec, StoreError, Subtask  # noqa: E402
from roboreward.data.lerobot_io import export_lerobot, import_lerobot  # noqa: E402

FPS = 5
H, W = 48, 64
CAMERAS = ("observation.images.front", "observation.images.wrist")
JOINTS = ["shoulder_pan.pos", "shoulder_lift.pos", "elbow_flex.pos", "gripper.pos"]
# AV1 at lerobot's default crf 30 on these smooth frames: mean abs error ~1.3 levels; the
# neighbouring frame is ~8.4 levels away.
MAX_MEAN_ABS_DIFF = 4.0


def _frame(episode: int, t: int, camera: int) -> np.ndarray:
    """A smooth image whose brightness steps 12 levels per frame: a codec keeps it close, and a
    frame decoded at the wrong time is far off."""
    yy, xx = np.mgrid[0:H, 0:W]
    img = np.stack(
        [20 + 12 * t + xx, 30 + 2 * yy + 40 * camera + 20 * episode, np.full_like(xx, 200 - 12 * t)],
        axis=-1,
    )
    return img.astype(np.uint8)


def _check_frames(decoded: np.ndarray, original: np.ndarray) -> None:
    """Within codec tolerance, and each decoded frame is nearest to its own source frame."""
    assert decoded.dtype == np.uint8 and decoded.shape == original.shape
    assert _mean_abs_diff(decoded, original) < MAX_MEAN_ABS_DIFF
    for t, frame in enumerate(decoded):
        assert int(np.argmin([_mean_abs_diff(frame, o) for o in original])) == t


def _mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


# ---------------------------------------------------------------- a dataset written by lerobot
LENGTHS = (15, 10, 12)
TASKS = ("pick the cube", "pick the cube", "place the cube in the bowl")
# SARM annotation tool input: MM:SS timestamps, each end equal to the next start.
SPARSE = {
    0: [("reach", "00:00", "00:01"), ("grasp", "00:01", "00:03")],
    1: [("reach", "00:00", "00:02")],
    2: [("reach", "00:00", "00:01"), ("place", "00:01", "00:03")],  # ends past the 12-frame episode
}
DENSE = {0: [("a", "00:00", "00:01"), ("b", "00:01", "00:02"), ("c", "00:02", "00:03")]}


@pytest.fixture(scope="module")
def lerobot_source(tmp_path_factory):
    """3 episodes, 2 video cameras, written with lerobot's writer and annotated with SARM's own
    annotation writer. Returns (root, generated arrays per episode)."""
    root = tmp_path_factory.mktemp("lerobot") / "so101_pick"
    features = {
        "observation.state": {"dtype": "float32", "shape": (4,), "names": JOINTS},
        "action": {"dtype": "float32", "shape": (4,), "names": JOINTS},
        "next.reward": {"dtype": "float32", "shape": (1,), "names": None},
        "gt.progress": {"dtype": "float32", "shape": (1,), "names": None},
        **{c: {"dtype": "video", "shape": (H, W, 3), "names": ["height", "width", "channels"]} for c in CAMERAS},
    }
    ds = LeRobotDataset.create("local/so101_pick", FPS, root=root, robot_type="so101_follower", features=features,
                               use_videos=True, video_backend="pyav")
    rng = np.random.default_rng(0)
    truth = []
    for ep, length in enumerate(LENGTHS):
        arrays = {
            "observation.state": rng.normal(size=(length, 4)).astype(np.float32),
            "action": rng.normal(size=(length, 4)).astype(np.float32),
            "next.reward": rng.random((length, 1)).astype(np.float32),
            "gt.progress": np.linspace(0, 1, length, dtype=np.float32)[:, None],
            **{c: np.stack([_frame(ep, t, i) for t in range(length)]) for i, c in enumerate(CAMERAS)},
        }
        for t in range(length):
            ds.add_frame({**{k: v[t] for k, v in arrays.items()}, "task": TASKS[ep]})
        ds.save_episode(parallel_encoding=False)
        truth.append(arrays)
    ds.finalize()

    from lerobot.data_processing.sarm_annotations.subtask_annotation import (
        Subtask as SarmSubtask,
        SubtaskAnnotation,
        Timestamp,
        save_annotations_to_dataset,
    )

    def sarm(spec):
        return {
            ep: SubtaskAnnotation(
                subtasks=[SarmSubtask(name=n, timestamps=Timestamp(start=s, end=e)) for n, s, e in subs]
            )
            for ep, subs in spec.items()
        }

    save_annotations_to_dataset(root, sarm(SPARSE), FPS, prefix="sparse")
    save_annotations_to_dataset(root, sarm(DENSE), FPS, prefix="dense")
    return root, truth


@pytest.fixture(scope="module")
def imported(lerobot_source, tmp_path_factory):
    root, _ = lerobot_source
    with pytest.warns(UserWarning, match="ends at 15, past the episode"):
        return import_lerobot(root, tmp_path_factory.mktemp("imported") / "store.zarr", progress=False)


def test_import_schema(imported):
    assert imported.fps == FPS and imported.robot_type == "so101_follower"
    assert imported.cameras == list(CAMERAS)
    f = imported.features
    assert f["observation.state"] == FeatureSpec((4,), "float32", "low_dim", JOINTS)
    assert f["action"] == FeatureSpec((4,), "float32", "low_dim", JOINTS)
    assert f["next.reward"] == FeatureSpec((1,), "float32", "low_dim")  # extra LeRobot feature carried
    assert f["gt.progress"].kind == "target"
    assert f[CAMERAS[0]] == FeatureSpec((H, W, 3), "uint8", "rgb")
    assert not {"timestamp", "frame_index", "episode_index", "index", "task_index"} & set(f)


def test_import_data(imported, lerobot_source):
    _, truth = lerobot_source
    assert imported.n_episodes == len(LENGTHS)
    for ep, arrays in enumerate(truth):
        episode = imported.read_episode(ep)
        assert episode.task == TASKS[ep]
        assert episode.success is None and episode.quality == "unknown"
        for key in ("observation.state", "action", "next.reward", "gt.progress"):
            np.testing.assert_array_equal(episode.data[key], arrays[key])
        for cam in CAMERAS:
            _check_frames(episode.data[cam], arrays[cam])


def test_import_frames_equal_lerobot_loader(imported, lerobot_source):
    """Same decoder, same timestamps: our frames are exactly what LeRobotDataset returns."""
    root, _ = lerobot_source
    ds = LeRobotDataset("local/so101_pick", root=root, video_backend="pyav")
    episode = imported.read_episode(1)
    start = LENGTHS[0]
    for t in (0, 4, LENGTHS[1] - 1):
        item = ds[start + t]
        for cam in CAMERAS:
            theirs = (item[cam].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            np.testing.assert_array_equal(episode.data[cam][t], theirs)


def test_import_annotations(imported):
    """SARM's end frames are boundaries (end == next start), i.e. exclusive like ours: unchanged,
    except the end the tool rounded past the episode, clipped to its length."""
    assert imported.episodes[0].annotations == {
        "sparse": [Subtask("reach", 0, 5), Subtask("grasp", 5, 15)],
        "dense": [Subtask("a", 0, 5), Subtask("b", 5, 10), Subtask("c", 10, 15)],
    }
    assert imported.episodes[1].annotations == {"sparse": [Subtask("reach", 0, 10)]}
    assert imported.episodes[2].annotations == {"sparse": [Subtask("reach", 0, 5), Subtask("place", 5, 12)]}


def test_import_image_dataset(tmp_path):
    """Image (PNG, not video) cameras import losslessly."""
    root = tmp_path / "images"
    features = {
        "action": {"dtype": "float32", "shape": (2,), "names": ["x", "y"]},
        "observation.images.top": {"dtype": "image", "shape": (16, 24, 3), "names": ["height", "width", "channels"]},
    }
    ds = LeRobotDataset.create("local/images", FPS, root=root, features=features, use_videos=False)
    frames = np.stack([_frame(0, t, 0)[:16, :24] for t in range(6)])
    actions = np.arange(12, dtype=np.float32).reshape(6, 2)
    for t in range(6):
        ds.add_frame({"action": actions[t], "observation.images.top": frames[t], "task": "look"})
    ds.save_episode()
    ds.finalize()
    store = import_lerobot(root, tmp_path / "store.zarr", progress=False)
    episode = store.read_episode(0)
    np.testing.assert_array_equal(episode.data["observation.images.top"], frames)
    np.testing.assert_array_equal(episode.data["action"], actions)
    assert episode.task == "look" and store.cameras == ["observation.images.top"]


# ---------------------------------------------------------------- our store -> lerobot -> our store
def _make_store(path) -> tuple[EpisodeStore, list[Episode]]:
    names = ["shoulder_pan.pos", "elbow_flex.pos", "gripper.pos"]
    features = {
        CAMERAS[1]: FeatureSpec((H, W, 3), "uint8", "rgb"),
        CAMERAS[0]: FeatureSpec((H, W, 3), "uint8", "rgb"),
        "observation.state": FeatureSpec((3,), "float32", "low_dim", names),
        "action": FeatureSpec((3,), "float32", "low_dim", names),
        "gt.progress": FeatureSpec((), "float32", "target"),
        "gt.stage": FeatureSpec((), "int64", "target"),
    }
    # wrist first on purpose: the camera order must survive the round trip
    store = EpisodeStore.create(path, features, fps=FPS, robot_type="so101_follower",
                                cameras=[CAMERAS[1], CAMERAS[0]])
    rng = np.random.default_rng(1)
    episodes = []
    for ep, (length, success, quality) in enumerate([(14, True, "expert"), (10, False, "failure")]):
        episodes.append(Episode(
            data={
                CAMERAS[0]: np.stack([_frame(ep, t, 0) for t in range(length)]),
                CAMERAS[1]: np.stack([_frame(ep, t, 1) for t in range(length)]),
                "observation.state": rng.normal(size=(length, 3)).astype(np.float32),
                "action": rng.normal(size=(length, 3)).astype(np.float32),
                "gt.progress": np.linspace(0, 1, length, dtype=np.float32),
                "gt.stage": (np.arange(length) >= length // 2).astype(np.int64),
            },
            task=f"task {ep}",
            success=success,
            quality=quality,
            annotations={
                "sparse": [Subtask("reach", 0, length // 2), Subtask("grasp", length // 2, length)],
                **({"dense": [Subtask("a", 0, 3), Subtask("b", 3, 7), Subtask("c", 8, length)]} if ep == 0 else {}),
            },
        ))
        store.add_episode(episodes[-1])
    return store, episodes


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    base = tmp_path_factory.mktemp("roundtrip")
    store, episodes = _make_store(base / "src.zarr")
    out = export_lerobot(store.path, base / "lerobot", repo_id="local/rt", progress=False)
    return out, episodes


def test_export_loads_in_lerobot(exported):
    root, episodes = exported
    ds = LeRobotDataset("local/rt", root=root, video_backend="pyav")
    assert ds.num_episodes == 2 and ds.num_frames == 24 and ds.fps == FPS
    assert ds.meta.robot_type == "so101_follower"
    assert ds.meta.features["gt.progress"]["shape"] in ((1,), [1])
    assert ds.meta.features["action"]["names"] == ["shoulder_pan.pos", "elbow_flex.pos", "gripper.pos"]
    i = 0
    for episode in episodes:
        frames = {cam: [] for cam in CAMERAS}
        for t in range(episode.length):
            item = ds[i]
            assert item["task"] == episode.task and int(item["frame_index"]) == t
            np.testing.assert_array_equal(item["action"].numpy(), episode.data["action"][t])
            np.testing.assert_array_equal(item["observation.state"].numpy(), episode.data["observation.state"][t])
            assert float(item["gt.progress"]) == float(episode.data["gt.progress"][t])
            for cam in CAMERAS:
                frames[cam].append((item[cam].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
            i += 1
        for cam in CAMERAS:
            _check_frames(np.stack(frames[cam]), episode.data[cam])


def test_export_annotation_columns(exported):
    """SARM's columns, as its annotation tool writes them, in lerobot's episodes metadata."""
    root, episodes = exported
    ds = LeRobotDataset("local/rt", root=root, video_backend="pyav")
    rows = ds.meta.episodes.to_pandas().set_index("episode_index")
    for ep, episode in enumerate(episodes):
        for level in ("sparse", "dense"):
            subs = episode.annotations.get(level)
            names = rows.loc[ep, f"{level}_subtask_names"]
            if subs is None:
                assert names is None
                continue
            assert list(names) == [s.name for s in subs]
            assert list(rows.loc[ep, f"{level}_subtask_start_frames"]) == [s.start for s in subs]
            assert list(rows.loc[ep, f"{level}_subtask_end_frames"]) == [s.end for s in subs]
            assert list(rows.loc[ep, f"{level}_subtask_end_times"]) == [s.end / FPS for s in subs]
        assert rows.loc[ep, "roboreward_success"] == episode.success
        assert rows.loc[ep, "roboreward_quality"] == episode.quality
    sparse = json.loads((root / "meta" / "temporal_proportions_sparse.json").read_text())
    assert list(sparse) == ["reach", "grasp"] and sum(sparse.values()) == pytest.approx(1.0)
    dense = json.loads((root / "meta" / "temporal_proportions_dense.json").read_text())
    assert dense == pytest.approx({"a": 3 / 13, "b": 4 / 13, "c": 6 / 13})


def test_round_trip(exported, tmp_path):
    root, episodes = exported
    back = import_lerobot(root, tmp_path / "back.zarr", progress=False)
    assert back.cameras == [CAMERAS[1], CAMERAS[0]]
    assert back.features["gt.progress"] == FeatureSpec((), "float32", "target")
    assert back.features["gt.stage"] == FeatureSpec((), "int64", "target")
    for ep, original in enumerate(episodes):
        episode = back.read_episode(ep)
        assert (episode.task, episode.success, episode.quality) == (original.task, original.success, original.quality)
        assert episode.annotations == original.annotations
        for key in ("observation.state", "action", "gt.progress", "gt.stage"):
            assert episode.data[key].dtype == original.data[key].dtype
            np.testing.assert_array_equal(episode.data[key], original.data[key])
        for cam in CAMERAS:
            _check_frames(episode.data[cam], original.data[cam])


# ---------------------------------------------------------------- errors
def test_error_missing_source(tmp_path):
    with pytest.raises(StoreError, match="no such folder"):
        import_lerobot(tmp_path / "nope", tmp_path / "out.zarr", progress=False)


def test_error_not_a_dataset(tmp_path):
    (tmp_path / "src").mkdir()
    with pytest.raises(StoreError, match="no meta/info.json"):
        import_lerobot(tmp_path / "src", tmp_path / "out.zarr", progress=False)


def test_error_old_version(tmp_path):
    (tmp_path / "src" / "meta").mkdir(parents=True)
    (tmp_path / "src" / "meta" / "info.json").write_text(json.dumps({"codebase_version": "v2.1", "fps": 30}))
    with pytest.raises(StoreError, match="codebase_version 'v2.1' is not 'v3.0'"):
        import_lerobot(tmp_path / "src", tmp_path / "out.zarr", progress=False)
    assert not (tmp_path / "out.zarr").exists()


def test_error_destination_exists(lerobot_source, exported, tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(StoreError, match="already exists; pass overwrite=True"):
        import_lerobot(lerobot_source[0], tmp_path / "taken", progress=False)
    store_path = tmp_path / "s.zarr"
    _make_store(store_path)
    with pytest.raises(StoreError, match="already exists; pass overwrite=True"):
        export_lerobot(store_path, tmp_path / "taken", progress=False)
    assert not any((tmp_path / "taken").iterdir())


def test_overwrite_replaces(lerobot_source, tmp_path):
    root, _ = lerobot_source
    dst = tmp_path / "store.zarr"
    _make_store(dst)
    with pytest.warns(UserWarning):
        store = import_lerobot(root, dst, overwrite=True, progress=False)
    assert store.n_episodes == len(LENGTHS) and store.cameras == list(CAMERAS)
    assert not dst.with_name("store.zarr.partial").exists()


def test_overwrite_refuses_unrelated_folder(lerobot_source, tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("keep me")
    with pytest.raises(StoreError, match="has no zarr.json; refusing to overwrite"):
        import_lerobot(lerobot_source[0], tmp_path / "docs", overwrite=True, progress=False)
    assert (tmp_path / "docs" / "notes.txt").exists()
