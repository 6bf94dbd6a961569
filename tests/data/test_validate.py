"""check_store / validate: real stores damaged on disk, one one-line message per problem."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import zarr

from roboreward.data import EpisodeStore, StoreError
from roboreward.data.cache import cache_embeddings
from roboreward.data.validate import Problem, check_store, validate

FRONT = "observation.images.front"


def edit_schema(path, fn):
    """Edit the root zarr.json's roboreward attribute in place, as a hand-edit or a foreign tool would."""
    doc_path = path / "zarr.json"
    doc = json.loads(doc_path.read_text())
    result = fn(doc["attributes"])
    if result is not None:
        doc["attributes"] = result
    doc_path.write_text(json.dumps(doc))


def schema(fn):
    """Apply ``fn`` to the roboreward schema dict (mutating it in place)."""

    def edit(attrs):
        fn(attrs["roboreward"])

    return edit


def replace_array(path, key, values):
    """Delete data/<key> and write ``values`` in its place (a writer with the wrong dtype or shape)."""
    group = zarr.open_group(str(path / "data"), mode="r+")
    del group[key]
    group.create_array(key, data=values)


def errors(problems):
    return [p for p in problems if p.severity == "error"]


def warnings(problems):
    return [p for p in problems if p.severity == "warning"]


def one_error(path) -> str:
    problems = check_store(path)
    assert all(isinstance(p, Problem) for p in problems)
    for p in problems:
        assert "\n" not in p.message, p.message
    errs = errors(problems)
    assert len(errs) == 1, problems
    with pytest.raises(StoreError) as info:
        validate(path)
    assert str(info.value) == errs[0].message
    return errs[0].message


# ---------------------------------------------------------------- valid stores


def test_valid_store_has_no_problems(store_path):
    assert check_store(store_path) == []
    store = validate(store_path)
    assert store.n_episodes == 3


def test_empty_store_is_valid(tmp_path, make_store):
    make_store(tmp_path / "s.zarr", n_episodes=0, lengths=[])
    assert check_store(tmp_path / "s.zarr") == []


def test_uncommitted_tail_is_a_warning_not_an_error(store_path, make_episode):
    # What an interrupted writer leaves: arrays and episode_ends written, root attributes not.
    store = EpisodeStore(store_path)
    total = store.n_frames
    extra = make_episode(3, 5)
    root = zarr.open_group(str(store_path), mode="r+")
    for key in ("observation.images.front", "action"):
        arr = root["data"][key]
        arr.resize((total + 5, *arr.shape[1:]))
        arr[total:] = extra.data[key]
    problems = check_store(store_path)
    assert errors(problems) == []
    warns = warnings(problems)
    assert len(warns) == 2
    assert warns[0].message.startswith(f"data/{FRONT}: 5 uncommitted frames after the last episode")
    assert warns[1].message.startswith("data/action: 5 uncommitted frames")
    assert all("\n" not in w.message for w in warns)
    assert str(warns[1]).startswith("warning: data/action")
    assert validate(store_path).n_episodes == 3  # warnings do not fail validation


# ---------------------------------------------------------------- malformed stores (errors)


def test_missing_data_key(store_path):
    shutil.rmtree(store_path / "data" / "action")
    assert one_error(store_path) == "data/action: declared in the schema but missing from the store"


def test_missing_data_group(store_path):
    shutil.rmtree(store_path / "data")
    problems = check_store(store_path)
    assert [p.severity for p in problems] == ["error"] * 5
    assert problems[0].message == "data/action: declared in the schema but missing from the store"
    assert {p.message.split(":")[0] for p in problems} == {
        "data/action", "data/gt.progress", "data/observation.images.front", "data/observation.images.wrist",
        "data/observation.state",
    }
    with pytest.raises(StoreError, match="^data/action: declared in the schema but missing"):
        validate(store_path)


def test_unknown_data_key(store_path):
    zarr.open_group(str(store_path / "data"), mode="r+").create_array("observation.velocity", shape=(30, 6), dtype="float32")
    msg = one_error(store_path)
    assert msg.startswith("data/observation.velocity: not declared in the schema's features")


def test_array_shorter_than_episode_ends(store_path):
    arr = zarr.open_array(str(store_path / "data" / "action"), mode="r+")
    arr.resize((25, 6))  # 30 frames committed
    msg = one_error(store_path)
    assert msg == "data/action: length mismatch: 25 frames but episode_ends needs 30"


def test_wrong_dtype(store_path):
    values = zarr.open_array(str(store_path / "data" / "action"), mode="r")[:]
    replace_array(store_path, "action", values.astype(np.float64))
    assert one_error(store_path) == "data/action: dtype float64, the schema declares float32"


def test_wrong_per_frame_shape(store_path):
    values = zarr.open_array(str(store_path / "data" / "observation.state"), mode="r")[:]
    replace_array(store_path, "observation.state", values[:, :5])
    msg = one_error(store_path)
    assert msg == "data/observation.state: per-frame shape (5,), the schema declares (6,)"


def test_unknown_schema_version(store_path):
    edit_schema(store_path, schema(lambda m: m.update(schema_version=99)))
    msg = one_error(store_path)
    assert str(store_path) in msg
    assert "schema_version 99 is not supported (this roboreward reads 1)" in msg


def test_missing_schema_attrs(store_path):
    edit_schema(store_path, lambda attrs: {k: v for k, v in attrs.items() if k != "roboreward"})
    msg = one_error(store_path)
    assert msg.endswith("root attributes have no 'roboreward' schema; not a roboreward store")


def test_schema_missing_features(store_path):
    edit_schema(store_path, schema(lambda m: m.pop("features")))
    msg = one_error(store_path)
    assert "malformed schema in root attributes" in msg and "features" in msg


def test_missing_episode_ends(store_path):
    shutil.rmtree(store_path / "meta" / "episode_ends")
    assert one_error(store_path).endswith("missing array meta/episode_ends")


def test_episode_ends_wrong_dtype(store_path):
    ends = zarr.open_array(str(store_path / "meta" / "episode_ends"), mode="r")[:]
    group = zarr.open_group(str(store_path / "meta"), mode="r+")
    del group["episode_ends"]
    group.create_array("episode_ends", data=ends.astype(np.int32))
    assert one_error(store_path).endswith("meta/episode_ends has dtype int32, expected int64")


def test_episode_ends_not_monotonic(store_path):
    ends = zarr.open_array(str(store_path / "meta" / "episode_ends"), mode="r+")
    assert ends[:].tolist() == [7, 17, 30]
    ends[1] = 5
    msg = one_error(store_path)
    assert msg.endswith("meta/episode_ends is not strictly increasing at episode 1 (7 -> 5)")


def test_episode_ends_shorter_than_episodes(store_path):
    zarr.open_array(str(store_path / "meta" / "episode_ends"), mode="r+").resize((2,))
    assert one_error(store_path).endswith("meta/episode_ends has 2 entries but 3 episodes are committed")


def test_episode_length_disagrees_with_episode_ends(store_path):
    edit_schema(store_path, schema(lambda m: m["episodes"][1].update(length=11)))
    msg = one_error(store_path)
    assert msg.endswith("episode 1 has length 11 in the attributes but 10 frames by meta/episode_ends")


def test_annotation_outside_episode(store_path):
    # episode 2 has 13 frames
    edit_schema(store_path, schema(lambda m: m["episodes"][2]["annotations"]["sparse"][-1].__setitem__(2, 15)))
    msg = one_error(store_path)
    assert msg.startswith("episode 2: sparse subtask 1 'grasp' [6, 15) lies outside the episode [0, 13)")


def test_overlapping_subtasks(store_path):
    edit_schema(store_path, schema(lambda m: m["episodes"][0]["annotations"].update(dense=[["a", 0, 4], ["b", 3, 7]])))
    msg = one_error(store_path)
    assert msg.startswith("episode 0: dense subtask 1 'b' starts at 3, before the previous one ends (4)")


def test_unsorted_subtasks(store_path):
    edit_schema(store_path, schema(lambda m: m["episodes"][1]["annotations"].update(sparse=[["grasp", 5, 10], ["reach", 0, 5]])))
    msg = one_error(store_path)
    assert msg.startswith("episode 1: sparse subtask 1 'reach' starts at 0, before the previous one ends (10)")
    assert "sorted" in msg


def test_unknown_annotation_level(store_path):
    edit_schema(store_path, schema(lambda m: m["episodes"][0]["annotations"].update(medium=[["a", 0, 3]])))
    msg = one_error(store_path)
    assert msg.startswith("episode 0: unknown annotation level 'medium'")


def test_malformed_annotation_entry(store_path):
    edit_schema(store_path, schema(lambda m: m["episodes"][0]["annotations"].update(sparse=[["a", 0]])))
    msg = one_error(store_path)
    assert "annotation ['a', 0] is not [name, start_frame, end_frame]" in msg


def test_nan_in_float_array(store_path):
    arr = zarr.open_array(str(store_path / "data" / "gt.progress"), mode="r+")
    arr[12] = np.nan  # episode 1 spans frames [7, 17)
    assert one_error(store_path) == (
        "data/gt.progress: NaN or inf at frame 12 (episode 1); values are never zero-filled, fix the source"
    )


def test_inf_in_low_dim_first_frame_of_episode(store_path):
    arr = zarr.open_array(str(store_path / "data" / "action"), mode="r+")
    arr[17, 3] = np.inf  # first frame of episode 2
    assert one_error(store_path).startswith("data/action: NaN or inf at frame 17 (episode 2)")


def test_nan_found_even_with_uncommitted_tail(store_path):
    """An interrupted write leaving a tail must not hide a NaN in the committed frames."""
    arr = zarr.open_array(str(store_path / "data" / "action"), mode="r+")
    arr[3, 0] = np.nan
    arr.resize((34, 6))
    problems = check_store(store_path)
    assert [p.message.split(":")[0] for p in problems] == ["data/action", "data/action"]
    assert errors(problems)[0].message.startswith("data/action: NaN or inf at frame 3 (episode 0)")
    assert warnings(problems)[0].message.startswith("data/action: 4 uncommitted frames")


def test_camera_not_rgb(store_path):
    edit_schema(store_path, schema(lambda m: m["cameras"].append("observation.state")))
    msg = one_error(store_path)
    assert msg.endswith("camera 'observation.state' is not declared as an rgb feature")


def test_camera_not_a_feature(store_path):
    edit_schema(store_path, schema(lambda m: m.update(cameras=["observation.images.top"])))
    assert one_error(store_path).endswith("camera 'observation.images.top' is not declared as an rgb feature")


def test_bad_episode_labels(store_path):
    def damage(m):
        m["episodes"][0]["task"] = "  "
        m["episodes"][1]["success"] = "yes"
        m["episodes"][2]["quality"] = "great"

    edit_schema(store_path, schema(damage))
    problems = check_store(store_path)
    assert [str(p) for p in problems] == [
        "error: episode 0: empty task text",
        "error: episode 1: success flag 'yes' is not true/false/null",
        "warning: episode 2: quality label 'great' is not one of ('expert', 'suboptimal', 'failure', 'unknown')",
    ]
    with pytest.raises(StoreError, match="^episode 0: empty task text$"):
        validate(store_path)


def test_several_problems_reported_together(store_path):
    shutil.rmtree(store_path / "data" / "action")
    zarr.open_array(str(store_path / "data" / "gt.progress"), mode="r+").resize((20,))
    edit_schema(store_path, schema(lambda m: m["episodes"][0]["annotations"].update(medium=[])))
    msgs = [p.message for p in errors(check_store(store_path))]
    assert len(msgs) == 3
    assert msgs[0] == "data/action: declared in the schema but missing from the store"
    assert msgs[1] == "data/gt.progress: length mismatch: 20 frames but episode_ends needs 30"
    assert msgs[2].startswith("episode 0: unknown annotation level 'medium'")


# ---------------------------------------------------------------- feature caches


def mean_color(frames):
    return torch.from_numpy(np.asarray(frames)).float().mean(dim=(1, 2)) / 255.0


def test_complete_feature_cache_is_valid(store_path):
    cache_embeddings(store_path, mean_color, "mean-color", batch_size=4, progress=False)
    assert check_store(store_path) == []


def test_incomplete_feature_cache_is_a_warning(store_path):
    cache_embeddings(store_path, mean_color, "mean-color", batch_size=4, progress=False)
    zarr.open_group(str(store_path / "features" / "mean-color"), mode="r+").attrs["done"] = 10
    problems = check_store(store_path)
    assert errors(problems) == []
    assert len(problems) == 1
    assert problems[0].message.startswith("features/mean-color: covers 10 of 30 frames; run `roboreward data cache-embeddings`")
    assert "\n" not in problems[0].message


def test_feature_cache_missing_camera_is_an_error(store_path):
    cache_embeddings(store_path, mean_color, "mean-color", batch_size=4, progress=False)
    shutil.rmtree(store_path / "features" / "mean-color" / "observation.images.wrist")
    assert one_error(store_path) == "features/mean-color: no array for camera observation.images.wrist"


def test_feature_cache_wrong_dim_is_an_error(store_path):
    cache_embeddings(store_path, mean_color, "mean-color", batch_size=4, progress=False)
    zarr.open_group(str(store_path / "features" / "mean-color"), mode="r+").attrs["dim"] = 5
    msg = one_error(store_path)
    assert msg == "features/mean-color: observation.images.front has shape (30, 3), expected at least (30, 5)"
