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
    with pytest.warns(UserWarning) as caught:
        store = import_lerobot(root, tmp_path_factory.mktemp("imported") / "store.zarr", progress=False)
    assert any("ends at 15, past the episode" in str(w.message) for w in caught)
    return store


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
        "observation.state": {"dtype": "float32", "shape": (2,), "names": ["x", "y"]},
        "action": {"dtype": "float32", "shape": (2,), "names": ["x", "y"]},
        "observation.images.top": {"dtype": "image", "shape": (16, 24, 3), "names": ["height", "width", "channels"]},
    }
    ds = LeRobotDataset.create("local/images", FPS, root=root, features=features, use_videos=False)
    frames = np.stack([_frame(0, t, 0)[:16, :24] for t in range(6)])
    actions = np.arange(12, dtype=np.float32).reshape(6, 2)
    for t in range(6):
        ds.add_frame({"observation.state": -actions[t], "action": actions[t], "observation.images.top": frames[t],
                      "task": "look"})
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


# ---------------------------------------------------------------- someone else's dataset: conventions
S = 32  # lerobot's AV1 encoder dies (SIGFPE) on 16x16 frames; 32x32 encodes
TINY_CAM = "observation.images.top"


def _tiny_dataset(root, lengths, frame_columns=None, extra_features=None, state_key="observation.state",
                  action=True):
    """A dataset written by lerobot's writer: one 32x32 video camera, 2-d state and action, plus
    per-frame ``frame_columns`` {key: fn(episode, t, length) -> value} declared in ``extra_features``."""
    features = {
        state_key: {"dtype": "float32", "shape": (2,), "names": ["x", "y"]},
        **({"action": {"dtype": "float32", "shape": (2,), "names": ["x", "y"]}} if action else {}),
        TINY_CAM: {"dtype": "video", "shape": (S, S, 3), "names": ["height", "width", "channels"]},
        **(extra_features or {}),
    }
    ds = LeRobotDataset.create("local/tiny", FPS, root=root, robot_type="so101_follower", features=features,
                               use_videos=True, video_backend="pyav")
    for ep, length in enumerate(lengths):
        for t in range(length):
            frame = {state_key: np.array([ep, t], np.float32), TINY_CAM: _frame(ep, t, 0)[:S, :S], "task": "tiny"}
            if action:
                frame["action"] = np.array([t, -ep], np.float32)
            for key, fn in (frame_columns or {}).items():
                frame[key] = fn(ep, t, length)
            ds.add_frame(frame)
        ds.save_episode(parallel_encoding=False)
    ds.finalize()
    return root


def _add_episode_columns(root, columns: dict):
    """Append per-episode columns {name: (pyarrow type, [value per episode])} to the episodes
    metadata, as SARM's annotation tool adds its columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for path in sorted((root / "meta" / "episodes").glob("*/*.parquet")):
        table = pq.read_table(path)
        index = table.column("episode_index").to_pylist()
        for name, (pa_type, values) in columns.items():
            table = table.append_column(name, pa.array([values[i] for i in index], type=pa_type))
        pq.write_table(table, path)


def _flag(value):
    return np.array([value], dtype=bool)


def _reward(value):
    return np.array([value], dtype=np.float32)


REWARD_DONE = {"next.reward": {"dtype": "float32", "shape": (1,), "names": None},
               "next.done": {"dtype": "bool", "shape": (1,), "names": None}}


@pytest.fixture(scope="module")
def tiny_source(tmp_path_factory):
    """Plain dataset (no labels, no annotations) that error tests copy and break."""
    return _tiny_dataset(tmp_path_factory.mktemp("tiny") / "tiny", (6, 5))


def _copy(src, tmp_path):
    import shutil

    return shutil.copytree(src, tmp_path / "src")


def test_success_from_next_reward_and_done(tmp_path):
    """gym_manipulator (HIL-SERL): next.reward = float(success), 1.0 on the frame that ends a success,
    next.done on every episode's last frame, successful or not."""
    rewards = {0: lambda t, n: float(t == n - 1),  # success: terminated on it
               1: lambda t, n: 0.0,  # failure / time-out: done, reward 0
               2: lambda t, n: float(t == 1)}  # success flagged mid-way, episode went on: ends as a failure
    root = _tiny_dataset(tmp_path / "hil", (4, 5, 4), extra_features=REWARD_DONE, frame_columns={
        "next.reward": lambda ep, t, n: _reward(rewards[ep](t, n)),
        "next.done": lambda ep, t, n: _flag(t == n - 1),
    })
    with pytest.warns(UserWarning, match="positive next.reward before their last frame"):
        store = import_lerobot(root, tmp_path / "s.zarr", progress=False)
    assert [e.success for e in store.episodes] == [True, False, False]
    report = store.import_report
    assert report.success_sources == {"next.reward (last frame > 0)": 3}
    assert "success labels: from next.reward (last frame > 0) (3 of 3 episodes): 1 succeeded, 2 failed" in str(report)
    done = store.read_episode(0).data["next.done"]  # carried as a feature too, as bool
    assert done.dtype == np.bool_ and done[:, 0].tolist() == [False, False, False, True]


@pytest.mark.parametrize("key,dtype", [("next.success", "bool"), ("is_success", "float32")])
def test_success_from_frame_feature_last_frame(tmp_path, key, dtype):
    """lerobot_eval records next.success per frame (and a dense next.reward): success is its value at
    the last frame, so an episode that succeeds and then undoes it is a failure."""
    flags = {0: lambda t, n: t >= n - 2, 1: lambda t, n: t == 2}
    root = _tiny_dataset(tmp_path / "eval", (5, 5), extra_features={
        key: {"dtype": dtype, "shape": (1,), "names": None},
        "next.reward": {"dtype": "float32", "shape": (1,), "names": None},
    }, frame_columns={
        key: lambda ep, t, n: np.array([flags[ep](t, n)], dtype=dtype),
        "next.reward": lambda ep, t, n: _reward(t / n),  # dense: not a label, and not needed here
    })
    store = import_lerobot(root, tmp_path / "s.zarr", progress=False)
    assert [e.success for e in store.episodes] == [True, False]
    assert store.import_report.success_sources == {f"{key} (last frame)": 2}
    assert store.import_report.notes == []  # dense next.reward is not worth a note when labels exist


def test_success_priority_per_episode(tmp_path):
    """Per episode, the first convention with a value: roboreward_success, then an episodes column
    success / is_success, then frame features; null means "ask the next one"."""
    import pyarrow as pa

    final = {0: 1.0, 1: 1.0, 2: 0.0, 3: 0.0}
    root = _tiny_dataset(tmp_path / "mixed", (4, 4, 4, 4), extra_features=REWARD_DONE, frame_columns={
        "next.reward": lambda ep, t, n: _reward(final[ep] if t == n - 1 else 0.0),
        "next.done": lambda ep, t, n: _flag(t == n - 1),
    })
    _add_episode_columns(root, {
        "roboreward_success": (pa.bool_(), [None, None, True, None]),
        "success": (pa.bool_(), [False, None, None, None]),
        "is_success": (pa.int64(), [None, None, None, 1]),
    })
    store = import_lerobot(root, tmp_path / "s.zarr", progress=False)
    assert [e.success for e in store.episodes] == [False, True, True, True]
    assert store.import_report.success_sources == {
        "success": 1, "next.reward (last frame > 0)": 1, "roboreward_success": 1, "is_success": 1}


def test_no_labels_no_annotations_report(tiny_source, tmp_path):
    store = import_lerobot(tiny_source, tmp_path / "s.zarr", progress=False)
    assert all(e.success is None and e.annotations == {} for e in store.episodes)
    report = store.import_report
    assert report.status == "imported" and report.episodes == 2 and report.frames == 11
    assert report.cameras == {TINY_CAM: (S, S, 3)} and report.state == "observation.state"
    text = str(report).splitlines()
    assert text[0].startswith("imported 2 episodes, 11 frames at 5 fps (robot so101_follower)")
    assert f"cameras: {TINY_CAM} (32x32)" in text
    assert "state: observation.state (2: x, y); action: action (2: x, y)" in text
    assert any(line.startswith("success labels: none") and "no AUROC" in line for line in text)
    assert any(line.startswith("annotations: none — reward train uses one stage 'task' per episode") for line in text)


def test_report_of_annotated_dataset(imported):
    """The lerobot-written fixture: two cameras, SARM sparse annotations in every episode, dense in one,
    a dense (random) next.reward that is no success label."""
    report = imported.import_report
    assert list(report.cameras) == list(CAMERAS)
    assert report.annotated == {"sparse": [0, 1, 2], "dense": [0]}
    assert report.stages == {"sparse": ["reach", "grasp", "place"], "dense": ["a", "b", "c"]}
    text = str(report)
    assert "annotations: sparse in 3 of 3 episodes (reach, grasp, place); dense in 1 of 3 episodes (a, b, c)" in text
    assert "annotation_mode dense needs dense annotations in every episode (missing in episodes 1, 2)" in text
    assert "other features: next.reward, gt.progress (target)" in text
    assert any("ends at 15, past the episode (12 frames)" in n for n in report.notes)
    assert any(n.startswith("next.reward not read as success labels") for n in report.notes)


def test_legacy_unprefixed_annotation_columns(tiny_source, tmp_path):
    import pyarrow as pa

    root = _copy(tiny_source, tmp_path)
    _add_episode_columns(root, {
        "subtask_names": (pa.list_(pa.string()), [["reach", "grasp"], ["reach"]]),
        "subtask_start_frames": (pa.list_(pa.int64()), [[0, 2], [0]]),
        "subtask_end_frames": (pa.list_(pa.int64()), [[2, 6], [5]]),
    })
    store = import_lerobot(root, tmp_path / "s.zarr", progress=False)
    assert store.episodes[0].annotations == {"sparse": [Subtask("reach", 0, 2), Subtask("grasp", 2, 6)]}
    assert store.episodes[1].annotations == {"sparse": [Subtask("reach", 0, 5)]}


ANNOTATION_ERRORS = {
    "mismatched lengths": ({"names": [["a", "b"], ["a"]], "start_frames": [[0, 3], [0]], "end_frames": [[3], [5]]},
                           "episode 0: sparse annotation columns differ in length .* give every subtask a name"),
    "far out of range": ({"names": [["a", "b"], ["a"]], "start_frames": [[0, 3], [0]], "end_frames": [[3, 40], [5]]},
                         r"episode 0: sparse subtask 1 'b' \[3, 40\) lies outside the episode's 6 frames; end frames "
                         "are exclusive and count from the episode's first frame"),
    "negative start": ({"names": [["a"], ["a"]], "start_frames": [[-2], [0]], "end_frames": [[6], [5]]},
                       r"episode 0: sparse subtask 0 'a' \[-2, 6\) lies outside"),
    "overlapping": ({"names": [["a"], ["a", "b"]], "start_frames": [[0], [0, 2]], "end_frames": [[6], [3, 5]]},
                    r"episode 1: sparse subtask 1 'b' \[2, 5\) overlaps or precedes 'a' \[0, 3\); sort the subtasks"),
    "empty": ({"names": [["a"], ["a"]], "start_frames": [[3], [0]], "end_frames": [[3], [5]]},
              r"episode 0: sparse subtask 0 'a' \[3, 3\) is empty or reversed"),
    "missing column": ({"names": [["a"], ["a"]], "start_frames": [[0], [0]]},
                       "episode 0: has sparse annotations but no sparse_subtask_end_frames; write all three"),
    "fractional frames": ({"names": [["a"], ["a"]], "start_frames": [[0.5], [0]], "end_frames": [[6], [5]]},
                          "episode 0: sparse subtask 0 'a' has frames 0.5..6.0, not whole frame numbers"),
}


@pytest.mark.parametrize("case", list(ANNOTATION_ERRORS))
def test_malformed_annotations(tiny_source, tmp_path, case):
    import pyarrow as pa

    columns, message = ANNOTATION_ERRORS[case]
    root = _copy(tiny_source, tmp_path)
    types = {"names": pa.list_(pa.string()), "start_frames": pa.list_(pa.float64() if case == "fractional frames"
                                                                      else pa.int64()),
             "end_frames": pa.list_(pa.float64() if case == "fractional frames" else pa.int64())}
    _add_episode_columns(root, {f"sparse_subtask_{k}": (types[k], v) for k, v in columns.items()})
    with pytest.raises(StoreError, match=message) as err:
        import_lerobot(root, tmp_path / "s.zarr", progress=False)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "s.zarr").exists() and not (tmp_path / "s.zarr.partial").exists()


def test_error_bad_success_value(tiny_source, tmp_path):
    import pyarrow as pa

    root = _copy(tiny_source, tmp_path)
    _add_episode_columns(root, {"success": (pa.string(), ["true", "maybe"])})
    with pytest.raises(StoreError, match="episode 1: episodes column success is 'maybe', not a boolean; write true"):
        import_lerobot(root, tmp_path / "s.zarr", progress=False)


def test_state_key_mapping_and_missing_state(tmp_path):
    root = _tiny_dataset(tmp_path / "joints", (4,), state_key="observation.joints")
    with pytest.raises(StoreError, match=r"no state feature 'observation.state'; the dataset's vector features are "
                                         r"\['observation.joints', 'action'\]: pass --state-key"):
        import_lerobot(root, tmp_path / "s.zarr", progress=False)
    store = import_lerobot(root, tmp_path / "s.zarr", progress=False, state_key="observation.joints")
    assert "observation.joints" not in store.features
    np.testing.assert_array_equal(store.read_episode(0).data["observation.state"][:, 1], np.arange(4))
    assert "state: observation.joints -> observation.state (2: x, y)" in str(store.import_report)


def test_error_no_action(tmp_path):
    root = _tiny_dataset(tmp_path / "noact", (4,), action=False)
    with pytest.raises(StoreError, match="no action feature 'action'.* pass --action-key"):
        import_lerobot(root, tmp_path / "s.zarr", progress=False)


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _break_info(root):
    (root / "meta" / "info.json").write_text('{"codebase_version": "v3.0", "fps": ')


def _drop_video(root):
    next((root / "videos").rglob("*.mp4")).unlink()


def _miscount(root):
    info = json.loads((root / "meta" / "info.json").read_text())
    info["total_episodes"] = 3
    (root / "meta" / "info.json").write_text(json.dumps(info))


BAD_SOURCES = {
    "truncated data parquet": (lambda r: _truncate(next((r / "data").rglob("*.parquet"))),
                               r"data/chunk-000/file-000.parquet: cannot read it .*; the file is truncated or corrupt"),
    "truncated episodes parquet": (lambda r: _truncate(next((r / "meta" / "episodes").rglob("*.parquet"))),
                                   "meta/episodes/chunk-000/file-000.parquet: not a readable parquet file"),
    "unreadable info.json": (_break_info, "meta/info.json: unreadable"),
    "missing video": (_drop_video, "episode 0: video .*file-000.mp4 is missing; the dataset is incomplete"),
    "truncated video": (lambda r: _truncate(next((r / "videos").rglob("*.mp4"))),
                        f"episode 0: cannot decode {TINY_CAM} from .*; the video is truncated or corrupt"),
    "episode count": (_miscount, "info.json counts 3 episodes, meta/episodes holds 2"),
    "no tasks": (lambda r: (r / "meta" / "tasks.parquet").unlink(), "meta/tasks.parquet is missing"),
}


@pytest.mark.parametrize("case", list(BAD_SOURCES))
def test_error_bad_source(tiny_source, tmp_path, case):
    damage, message = BAD_SOURCES[case]
    root = _copy(tiny_source, tmp_path)
    damage(root)
    with pytest.raises(StoreError, match=message) as err:
        import_lerobot(root, tmp_path / "s.zarr", progress=False)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "s.zarr").exists()


def test_error_nan_names_source_episode(tmp_path):
    root = _tiny_dataset(tmp_path / "nan", (3, 4), extra_features={
        "observation.effort": {"dtype": "float32", "shape": (1,), "names": None}},
        frame_columns={"observation.effort": lambda ep, t, n: _reward(np.nan if (ep, t) == (1, 2) else 0.0)})
    with pytest.raises(StoreError, match="episode 1: observation.effort is NaN or inf at frame 2; the store never "
                                         "holds NaN"):
        import_lerobot(root, tmp_path / "s.zarr", progress=False)


# ---------------------------------------------------------------- the CLI
def test_cli_prints_report(tmp_path, capsys):
    from roboreward.cli import main

    root = _tiny_dataset(tmp_path / "hil", (4, 4), extra_features=REWARD_DONE, frame_columns={
        "next.reward": lambda ep, t, n: _reward(float(ep == 0 and t == n - 1)),
        "next.done": lambda ep, t, n: _flag(t == n - 1),
    })
    assert main(["data", "import-lerobot", str(root), "--out", str(tmp_path / "s.zarr")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("imported 2 episodes, 8 frames")
    assert "success labels: from next.reward (last frame > 0) (2 of 2 episodes): 1 succeeded, 1 failed" in out
    assert "annotations: none" in out
    assert main(["data", "import-lerobot", str(root), "--out", str(tmp_path / "s.zarr")]) == 0  # nothing to do
    assert capsys.readouterr().out.startswith("already imported")


def test_cli_bad_input_one_line(tmp_path, capsys):
    from roboreward.cli import main

    (tmp_path / "src" / "meta").mkdir(parents=True)
    (tmp_path / "src" / "meta" / "info.json").write_text(json.dumps({"codebase_version": "v2.1", "fps": 30}))
    assert main(["data", "import-lerobot", str(tmp_path / "src"), "--out", str(tmp_path / "s.zarr")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "convert_dataset_v21_to_v30" in err


# ---------------------------------------------------------------- crash safety
def _snapshot(path):
    """Everything a store holds: root attributes, every array's committed content, episode ends."""
    store = EpisodeStore(path)
    return dict(store.root.attrs), {k: store.array(k)[: store.n_frames] for k in store.features}


def _assert_same_store(a, b):
    attrs_a, arrays_a = _snapshot(a)
    attrs_b, arrays_b = _snapshot(b)
    assert attrs_a == attrs_b
    assert arrays_a.keys() == arrays_b.keys()
    for key in arrays_a:
        np.testing.assert_array_equal(arrays_a[key], arrays_b[key])


def _no_leftovers(dst):
    return sorted(p.name for p in dst.parent.iterdir() if p.name.startswith(dst.name + "."))


@pytest.fixture(scope="module")
def crash_source(tmp_path_factory):
    """6 episodes with labels and annotations; plus an uninterrupted import of it to compare with."""
    import pyarrow as pa

    base = tmp_path_factory.mktemp("crash")
    root = _tiny_dataset(base / "src", (5, 6, 7, 5, 6, 7), extra_features=REWARD_DONE, frame_columns={
        "next.reward": lambda ep, t, n: _reward(float(ep % 2 == 0 and t == n - 1)),
        "next.done": lambda ep, t, n: _flag(t == n - 1),
    })
    _add_episode_columns(root, {
        "sparse_subtask_names": (pa.list_(pa.string()), [["reach", "grasp"]] * 6),
        "sparse_subtask_start_frames": (pa.list_(pa.int64()), [[0, 2]] * 6),
        "sparse_subtask_end_frames": (pa.list_(pa.int64()), [[2, 5]] * 6),
    })
    reference = import_lerobot(root, base / "reference.zarr", progress=False)
    return root, reference.path


def test_interrupted_import_resumes_to_the_same_store(crash_source, tmp_path, monkeypatch):
    import roboreward.data.lerobot_io as lio

    root, reference = crash_source
    dst = tmp_path / "s.zarr"
    real, calls = lio._read_episode, []

    def dies_at_episode_3(*args):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt  # what the CLI gets on Ctrl-C; kill -9 is the subprocess test below
        return real(*args)

    monkeypatch.setattr(lio, "_read_episode", dies_at_episode_3)
    with pytest.raises(KeyboardInterrupt):
        import_lerobot(root, dst, progress=False)
    monkeypatch.setattr(lio, "_read_episode", real)
    assert not dst.exists() and EpisodeStore(tmp_path / "s.zarr.partial").n_episodes == 3
    store = import_lerobot(root, dst, progress=False)
    assert store.import_report.status == "resumed" and store.import_report.resumed_at == 3
    assert str(store.import_report).startswith("resumed an interrupted import after 3 episodes; 6 episodes")
    _assert_same_store(dst, reference)
    assert _no_leftovers(dst) == []


def test_rerun_after_finished_import(crash_source, tmp_path):
    """A kill just after the final rename leaves a finished store: the re-run (no --overwrite) ends
    well with it; a store of another source at the same path is still refused."""
    root, reference = crash_source
    dst = tmp_path / "s.zarr"
    import_lerobot(root, dst, progress=False)
    again = import_lerobot(root, dst, progress=False)
    assert again.import_report.status == "already imported"
    _assert_same_store(dst, reference)
    import pyarrow as pa

    changed = _copy(root, tmp_path)
    _add_episode_columns(changed, {"success": (pa.bool_(), [True] * 6)})
    with pytest.raises(StoreError, match="already exists .*an import of another source"):
        import_lerobot(changed, dst, progress=False)


def test_stale_partial_is_replaced(crash_source, tmp_path):
    """Leftovers of killed runs: a partial store of an older source, a half-created one, a folder
    caught while being deleted or swapped out. None is resumed; all are removed."""
    root, reference = crash_source
    dst = tmp_path / "s.zarr"
    _make_store(tmp_path / "s.zarr.partial")  # a store, but not an import of this source
    (tmp_path / "s.zarr.partial.deleting").mkdir()
    (tmp_path / "s.zarr.replaced").mkdir()
    store = import_lerobot(root, dst, progress=False)
    assert store.import_report.status == "imported"
    _assert_same_store(dst, reference)
    assert _no_leftovers(dst) == []
    (tmp_path / "t.zarr.partial").mkdir()
    (tmp_path / "t.zarr.partial" / "zarr.json").write_text("{")  # killed while creating it
    import_lerobot(root, tmp_path / "t.zarr", progress=False)
    _assert_same_store(tmp_path / "t.zarr", reference)
