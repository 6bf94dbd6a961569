"""EpisodeStore: create / append / read round trip on a real zarr store, and loud rejection of bad episodes."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from roboreward.data import SCHEMA_VERSION, Episode, EpisodeInfo, EpisodeStore, FeatureSpec, StoreError, Subtask

FRONT = "observation.images.front"
WRIST = "observation.images.wrist"


def assert_episode_equal(got: Episode, want: Episode):
    assert set(got.data) == set(want.data)
    for key, value in want.data.items():
        np.testing.assert_array_equal(got.data[key], value, err_msg=key)
        assert got.data[key].dtype == value.dtype, key
    assert got.task == want.task
    assert got.success == want.success
    assert got.quality == want.quality
    assert got.annotations == want.annotations
    assert got.info == want.info


def test_round_trip_exact(tmp_path, make_store):
    store, episodes = make_store(tmp_path / "s.zarr", n_episodes=3, lengths=[5, 9, 4])
    assert store.n_episodes == 3
    assert store.n_frames == 18
    np.testing.assert_array_equal(store.episode_ends, [5, 14, 18])
    np.testing.assert_array_equal(store.episode_starts, [0, 5, 14])
    for i, want in enumerate(episodes):
        assert_episode_equal(store.read_episode(i), want)
    np.testing.assert_array_equal(store.episode_index(), [0] * 5 + [1] * 9 + [2] * 4)
    # Time-major concatenation on disk, exactly what was written.
    np.testing.assert_array_equal(store.array("action")[:], np.concatenate([e.data["action"] for e in episodes]))


def test_reopen_reads_same_content_and_schema(tmp_path, make_store):
    path = tmp_path / "s.zarr"
    _, episodes = make_store(path, n_episodes=2, lengths=[6, 3])
    store = EpisodeStore(path)
    assert store.mode == "r"
    assert store.fps == 10.0
    assert store.robot_type == "so101_follower"
    assert store.cameras == [FRONT, WRIST]
    assert store.features["observation.state"] == FeatureSpec((6,), "float32", "low_dim", store.features["action"].names)
    assert store.features["observation.state"].names[0] == "shoulder_pan.pos"
    assert store.features[FRONT] == FeatureSpec((16, 16, 3), "uint8", "rgb")
    assert store.features["gt.progress"].shape == ()
    assert store.keys("rgb") == [FRONT, WRIST]
    assert store.keys("target") == ["gt.progress"]
    for i, want in enumerate(episodes):
        assert_episode_equal(store.read_episode(i), want)
    # read a subset of keys
    ep = store.read_episode(1, keys=["action"])
    assert list(ep.data) == ["action"]
    # the schema on disk is versioned and holds the commit record
    meta = json.loads((path / "zarr.json").read_text())["attributes"]["roboreward"]
    assert meta["schema_version"] == SCHEMA_VERSION
    assert [e["length"] for e in meta["episodes"]] == [6, 3]
    assert meta["episodes"][0]["annotations"]["sparse"] == [["reach", 0, 3], ["grasp", 3, 6]]


def test_append_after_reopen(tmp_path, make_store, make_episode):
    path = tmp_path / "s.zarr"
    _, episodes = make_store(path, n_episodes=2, lengths=[4, 5])
    store = EpisodeStore(path, mode="a")
    extra = make_episode(7, 6, seed=3)
    assert store.add_episode(extra) == 2
    reread = EpisodeStore(path)
    assert reread.n_episodes == 3 and reread.n_frames == 15
    for i, want in enumerate([*episodes, extra]):
        assert_episode_equal(reread.read_episode(i), want)


def test_episode_info_round_trip_and_left_out_when_empty(tmp_path, make_store, make_episode):
    """``Episode.info`` (free-form JSON, e.g. a generator's drawn scene appearance) is stored in the
    episode's entry and read back; an empty one writes no key, so stores without it are unchanged
    and the schema version stays."""
    store, _ = make_store(tmp_path / "s.zarr", n_episodes=1, lengths=[4])
    ep = make_episode(1, 5)
    ep.info = {"visual": {"object_colours": {"cube": [0.2, 0.7, 0.25]}, "distractors": [], "light_intensity": 0.45},
               "note": (1, 2)}
    store.add_episode(ep)
    reread = EpisodeStore(store.path)
    want = {"visual": ep.info["visual"], "note": [1, 2]}  # as JSON: a tuple reads back as a list
    assert reread.episodes[1].info == want and reread.read_episode(1).info == want
    assert reread.episodes[0].info == {} and reread.read_episode(0).info == {}
    meta = json.loads((store.path / "zarr.json").read_text())["attributes"]["roboreward"]
    assert "info" not in meta["episodes"][0] and meta["episodes"][1]["info"] == want
    assert meta["schema_version"] == SCHEMA_VERSION == 1
    # Readers take the keys they know and ignore others: that is how code older than ``info`` reads it.
    assert EpisodeInfo.from_json({**meta["episodes"][1], "from_the_future": 1}).info == want
    # Non-JSON info is refused before anything is written.
    frames = reread.n_frames
    append = EpisodeStore(store.path, mode="a")
    for bad, pattern in [({"x": np.float32(1.0)}, "info is not JSON"), ([1], "info must be a dict"),
                         ({"x": float("nan")}, "info is not JSON")]:
        ep.info = bad
        with pytest.raises(StoreError, match=f"episode 2: {pattern}"):
            append.add_episode(ep)
    assert EpisodeStore(store.path).n_frames == frames and append.n_episodes == 2


def test_read_only_store_refuses_writes(store_path, make_episode):
    store = EpisodeStore(store_path)
    with pytest.raises(StoreError, match="read-only; open with mode='a'"):
        store.add_episode(make_episode(0, 4))
    with pytest.raises(StoreError, match="mode 'w' is not 'r' or 'a'"):
        EpisodeStore(store_path, mode="w")


def test_summary(tmp_path, make_store):
    store, _ = make_store(tmp_path / "s.zarr", n_episodes=3, lengths=[10, 20, 6])
    s = EpisodeStore(store.path).summary()
    assert s["episodes"] == 3
    assert s["frames"] == 36
    assert s["fps"] == 10.0
    assert s["cameras"] == [FRONT, WRIST]
    assert s["tasks"] == ["pick the cube 0", "pick the cube 1"]
    # episodes 0, 1 are expert successes, episode 2 a failure
    assert s["quality"] == {
        "expert": {"episodes": 2, "success_rate": 1.0},
        "failure": {"episodes": 1, "success_rate": 0.0},
    }
    # sparse stages: reach = first half, grasp = second half; at 10 fps
    reach = s["stage_seconds"]["reach"]
    assert reach["min"] == pytest.approx(0.3) and reach["max"] == pytest.approx(1.0)
    assert reach["mean"] == pytest.approx((5 + 10 + 3) / 3 / 10)
    assert set(s["stage_seconds"]) == {"reach", "grasp"}
    json.dumps(s)  # printable by the CLI


def test_summary_unknown_success_rate(tmp_path, make_store, make_episode):
    store, _ = make_store(tmp_path / "s.zarr", n_episodes=1, lengths=[4])
    ep = make_episode(5, 4)
    ep.success = None
    ep.quality = "unknown"
    store.add_episode(ep)
    assert store.summary()["quality"]["unknown"] == {"episodes": 1, "success_rate": None}


def test_empty_store(tmp_path, make_store):
    store, _ = make_store(tmp_path / "s.zarr", n_episodes=0, lengths=[])
    reread = EpisodeStore(store.path)
    assert reread.n_episodes == 0 and reread.n_frames == 0
    assert reread.summary()["episodes"] == 0
    with pytest.raises(StoreError, match="episode 0 does not exist"):
        reread.read_episode(0)


# ---------------------------------------------------------------- add_episode rejections


def _bad(make_episode, **changes) -> Episode:
    ep = make_episode(0, 5)
    for key, value in changes.items():
        if value is None:
            del ep.data[key]
        else:
            ep.data[key] = value
    return ep


@pytest.fixture
def empty_store(tmp_path, make_store):
    store, _ = make_store(tmp_path / "s.zarr", n_episodes=0, lengths=[])
    return store


def _assert_rejected_and_untouched(store, episode, pattern):
    with pytest.raises(StoreError, match=pattern) as info:
        store.add_episode(episode)
    assert "\n" not in str(info.value)
    # nothing committed, nothing written
    reread = EpisodeStore(store.path)
    assert reread.n_episodes == 0
    assert all(reread.array(k).shape[0] == 0 for k in reread.features)


def test_rejects_missing_key(empty_store, make_episode):
    ep = _bad(make_episode, action=None)
    _assert_rejected_and_untouched(empty_store, ep, r"episode 0: missing keys \['action'\]; .*never zero-filled")


def test_rejects_unknown_key(empty_store, make_episode):
    ep = _bad(make_episode, **{"observation.velocity": np.zeros((5, 6), np.float32)})
    _assert_rejected_and_untouched(empty_store, ep, r"episode 0: unknown keys \['observation.velocity'\]; declare them")


def test_rejects_wrong_shape(empty_store, make_episode):
    ep = _bad(make_episode, action=np.zeros((5, 7), np.float32))
    _assert_rejected_and_untouched(
        empty_store, ep, r"episode 0: action has per-frame shape \(7,\), the store declares \(6,\)"
    )
    ep = _bad(make_episode, **{FRONT: np.zeros((5, 16, 8, 3), np.uint8)})
    _assert_rejected_and_untouched(empty_store, ep, r"observation.images.front has per-frame shape \(16, 8, 3\)")


def test_rejects_wrong_dtype(empty_store, make_episode):
    ep = _bad(make_episode, **{FRONT: np.zeros((5, 16, 16, 3), np.float32)})
    _assert_rejected_and_untouched(
        empty_store, ep, r"episode 0: observation.images.front has dtype float32, the store declares uint8"
    )
    ep = _bad(make_episode, **{FRONT: np.zeros((5, 16, 16, 3), np.int64)})
    _assert_rejected_and_untouched(empty_store, ep, r"observation.images.front has dtype int64, the store declares uint8")
    ep = _bad(make_episode, action=np.zeros((5, 6), np.complex64))
    _assert_rejected_and_untouched(empty_store, ep, r"action has dtype complex64, the store declares float32")


def test_accepts_float64_low_dim_and_stores_declared_dtype(empty_store, make_episode):
    ep = make_episode(0, 5)
    ep.data["action"] = ep.data["action"].astype(np.float64)
    empty_store.add_episode(ep)
    got = EpisodeStore(empty_store.path).read_episode(0).data["action"]
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, ep.data["action"].astype(np.float32))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_rejects_non_finite(empty_store, make_episode, bad):
    ep = make_episode(0, 5)
    ep.data["observation.state"][3, 2] = bad
    _assert_rejected_and_untouched(empty_store, ep, r"episode 0: observation.state has NaN or inf values")


def test_rejects_length_mismatch_and_empty(empty_store, make_episode):
    ep = make_episode(0, 5)
    ep.data["action"] = ep.data["action"][:4]
    _assert_rejected_and_untouched(empty_store, ep, r"episode arrays differ in length \(.*action=4")
    ep = make_episode(0, 5)
    ep.data = {k: v[:0] for k, v in ep.data.items()}
    _assert_rejected_and_untouched(empty_store, ep, r"episode 0: has no frames")


@pytest.mark.parametrize(
    "annotations, pattern",
    [
        ({"sparse": [Subtask("reach", 0, 6)]}, r"episode 0: sparse subtask 0 'reach' \[0, 6\) lies outside the episode \[0, 5\)"),
        ({"dense": [Subtask("reach", -1, 2)]}, r"episode 0: dense subtask 0 'reach' \[-1, 2\) lies outside"),
        ({"sparse": [Subtask("a", 0, 3), Subtask("b", 2, 5)]}, r"sparse subtask 1 'b' starts at 2, before the previous one ends \(3\)"),
        ({"sparse": [Subtask("b", 3, 5), Subtask("a", 0, 3)]}, r"sparse subtask 1 'a' starts at 0, .*must be sorted"),
        ({"sparse": [Subtask("a", 2, 2)]}, r"sparse subtask 0 'a' is empty or reversed \[2, 2\)"),
        ({"medium": [Subtask("a", 0, 2)]}, r"episode 0: unknown annotation level 'medium'"),
    ],
    ids=["past-end", "negative", "overlap", "unsorted", "empty", "level"],
)
def test_rejects_bad_annotations(empty_store, make_episode, annotations, pattern):
    ep = make_episode(0, 5)
    ep.annotations = annotations
    _assert_rejected_and_untouched(empty_store, ep, pattern)


def test_rejection_after_commits_keeps_index(tmp_path, make_store, make_episode):
    store, _ = make_store(tmp_path / "s.zarr", n_episodes=2, lengths=[3, 4])
    ep = make_episode(2, 5)
    del ep.data["gt.progress"]
    with pytest.raises(StoreError, match=r"^episode 2: missing keys \['gt.progress'\]"):
        store.add_episode(ep)
    assert store.add_episode(make_episode(2, 5)) == 2
    assert EpisodeStore(store.path).n_frames == 12


# ---------------------------------------------------------------- create / open errors


def test_create_errors(tmp_path, store_path):
    feats = {"a": FeatureSpec((2,), "float32", "low_dim")}
    with pytest.raises(StoreError, match="already exists; pass overwrite=True"):
        EpisodeStore.create(store_path, feats, fps=10)
    with pytest.raises(StoreError, match="at least one feature"):
        EpisodeStore.create(tmp_path / "x.zarr", {}, fps=10)
    with pytest.raises(StoreError, match="fps must be > 0, got 0"):
        EpisodeStore.create(tmp_path / "x.zarr", feats, fps=0)
    with pytest.raises(StoreError, match="camera 'a' is not an rgb feature"):
        EpisodeStore.create(tmp_path / "x.zarr", feats, fps=10, cameras=["a"])
    with pytest.raises(StoreError, match="rgb features must be uint8"):
        FeatureSpec((16, 16), "uint8", "rgb")
    with pytest.raises(StoreError, match="feature kind 'depth' is not one of"):
        FeatureSpec((16, 16), "float32", "depth")
    # overwrite=True replaces the old store
    store = EpisodeStore.create(store_path, feats, fps=10, overwrite=True)
    assert EpisodeStore(store.path).n_episodes == 0


def test_open_errors(tmp_path):
    with pytest.raises(StoreError, match="no such store"):
        EpisodeStore(tmp_path / "missing.zarr")
    (tmp_path / "junk").mkdir()
    with pytest.raises(StoreError) as info:
        EpisodeStore(tmp_path / "junk")
    assert "junk" in str(info.value) and "\n" not in str(info.value)


def test_unknown_feature_key(store_path):
    store = EpisodeStore(store_path)
    with pytest.raises(StoreError, match=r"no feature 'nope'; the store has \['action', "):
        store.array("nope")


def test_append_mode_refuses_store_with_short_array(store_path):
    import zarr

    zarr.open_array(str(store_path / "data" / "action"), mode="r+").resize((20, 6))
    with pytest.raises(StoreError, match=r"data/action has 20 frames, fewer than the 30 committed"):
        EpisodeStore(store_path, mode="a")


def test_set_attr_survives_appends(tmp_path, make_store, make_episode):
    store, _ = make_store(tmp_path / "s.zarr", n_episodes=1, lengths=[4])
    store.set_attr("recipe", {"task": "pick", "n": 3})
    store.add_episode(make_episode(1, 3))
    reread = EpisodeStore(store.path)
    assert reread.root.attrs["extra"] == {"recipe": {"task": "pick", "n": 3}}
    assert reread.n_episodes == 2
    with pytest.raises(StoreError, match="attribute 'episodes' is part of the schema"):
        store.set_attr("episodes", [])
    with pytest.raises(StoreError, match="opened read-only"):
        reread.set_attr("recipe", {})


# ---------------------------------------------------------------- pickling


def test_pickle_round_trip(store_path):
    store = EpisodeStore(store_path)
    before = store.read_episode(1)  # opens the zarr handles
    clone = pickle.loads(pickle.dumps(store))
    assert clone.path == store.path and clone.mode == "r"
    assert clone.n_episodes == 3
    assert_episode_equal(clone.read_episode(1), before)


def test_pickle_append_mode(tmp_path, make_store, make_episode):
    store, _ = make_store(tmp_path / "s.zarr", n_episodes=1, lengths=[4])
    clone = pickle.loads(pickle.dumps(store))
    assert clone.add_episode(make_episode(1, 3)) == 1
    assert EpisodeStore(store.path).n_episodes == 2
