"""annotate: progress of every frame into the store (progress/<name>) and LeRobot's
sarm_progress.parquet, read back by our reader and by LeRobot's own RA-BC reader."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
import zarr
from sarm_toy import FEATURE_KEY

from roboreward.data import EpisodeStore, StoreError
from roboreward.errors import RoborewardError
from roboreward.rewards.annotate import (
    annotate,
    default_parquet_path,
    episode_groups,
    episode_progress,
    progress_names,
    read_progress,
)
from roboreward.rewards.features import episode_batch
from roboreward.rewards.sarm import SARM, SARMConfig

COLUMNS = ["index", "episode_index", "frame_index", "progress_sparse", "progress_dense"]


@pytest.fixture
def store_copy(toy_store, tmp_path):
    path = tmp_path / "data" / "toy.zarr"
    shutil.copytree(toy_store.path, path)
    return EpisodeStore(path)


def small_model(store, **kw) -> SARM:
    torch.manual_seed(0)
    base = dict(window=4, frame_gap=2, d_model=32, n_heads=2, n_layers=1, mlp_ratio=2, dropout=0.0, max_rewind=3)
    base.update(kw)
    return SARM(SARMConfig.from_store(store, FEATURE_KEY, **base)).eval()


def test_episode_groups_respect_the_frame_budget():
    assert episode_groups([10, 10, 10], 30) == [[0, 1, 2]]
    assert episode_groups([10, 10, 10], 25) == [[0, 1], [2]]
    assert episode_groups([5, 40, 5], 30) == [[0], [1], [2]]  # a longer episode goes alone
    assert episode_groups([10, 12, 30, 3], 36) == [[0, 1], [2], [3]]


def test_annotate_writes_store_group_and_lerobot_parquet(store_copy):
    model = small_model(store_copy, annotation_mode="dual")
    summary = annotate(model, store_copy.path, batch_size=64)  # small budget: several batches
    n = store_copy.n_frames
    assert summary["name"] == "sarm" and summary["levels"] == ["sparse", "dense"] and summary["frames"] == n

    # Store group: one float32 array per level, attrs naming the model, complete=True.
    group = zarr.open_group(str(store_copy.path), mode="r")["progress/sarm"]
    assert group.attrs["complete"] is True and group.attrs["model"] == "sarm"
    assert group.attrs["feature_key"] == FEATURE_KEY and group.attrs["n_frames"] == n
    got = read_progress(store_copy, "sarm")
    assert set(got) == {"sparse", "dense"} and all(v.dtype == np.float32 and v.shape == (n,) for v in got.values())
    # Values equal the model's own progress on whole episodes, frame for frame.
    eps = list(range(store_copy.n_episodes))
    batch = episode_batch(store_copy, model.config, eps)
    for level in ("sparse", "dense"):
        want = model.progress(batch, level=level)
        expected = np.concatenate([want[i, : store_copy.episodes[e].length].numpy() for i, e in enumerate(eps)])
        np.testing.assert_allclose(got[level], expected, rtol=0, atol=1e-6)
    assert read_progress(store_copy)["sparse"] is not None  # the only annotation: name optional

    # Parquet beside the store, named after it, LeRobot's exact columns and dtypes.
    path = store_copy.path.parent / "toy.sarm_progress.parquet"
    assert summary["parquet"] == str(path)
    table = pq.read_table(path)
    assert table.column_names == COLUMNS
    assert [str(t) for t in table.schema.types] == ["int64", "int64", "int64", "float", "float"]
    assert table.schema.metadata[b"reward_model_path"] == b"sarm"
    df = pd.read_parquet(path)
    np.testing.assert_array_equal(df["index"], np.arange(n))
    np.testing.assert_array_equal(df["episode_index"], store_copy.episode_index())
    start, end = store_copy.episode_range(2)
    np.testing.assert_array_equal(df["frame_index"][start:end], np.arange(end - start))
    np.testing.assert_array_equal(df["progress_sparse"].to_numpy(), got["sparse"])
    np.testing.assert_array_equal(df["progress_dense"].to_numpy(), got["dense"])


def test_lerobot_rabc_reader_reads_our_parquet(store_copy, tmp_path):
    rabc = pytest.importorskip("lerobot.rewards.sarm.rabc")
    model = small_model(store_copy)  # sparse only
    out = tmp_path / "elsewhere" / "progress.parquet"
    summary = annotate(model, store_copy.path, name="toy_sarm", parquet_path=out)
    assert summary["parquet"] == str(out) and pq.read_table(out).column_names == COLUMNS[:4]
    weights = rabc.RABCWeights(out, chunk_size=3, head_mode="sparse", device=torch.device("cpu"))
    values = read_progress(store_copy, "toy_sarm")["sparse"]
    assert len(weights.progress_lookup) == store_copy.n_frames
    assert weights.progress_lookup[17] == pytest.approx(float(values[17]))
    start, end = store_copy.episode_range(3)
    assert weights.episode_boundaries[3] == {"start": start, "end": end}
    w, stats = weights.compute_batch_weights({"index": torch.arange(0, 40)})
    assert w.shape == (40,) and torch.isfinite(w).all()
    with pytest.raises(ValueError, match="progress_dense"):
        rabc.RABCWeights(out, chunk_size=3, head_mode="dense", device=torch.device("cpu"))


def test_two_stores_in_one_folder_keep_their_own_parquet(store_copy, tmp_path):
    rabc = pytest.importorskip("lerobot.rewards.sarm.rabc")
    other = EpisodeStore(shutil.copytree(store_copy.path, store_copy.path.parent / "other.zarr"))
    model = small_model(store_copy)
    a = annotate(model, store_copy.path)
    b = annotate(small_model(store_copy, d_model=16, n_heads=2), other.path)  # other weights, other values
    assert Path(a["parquet"]).name == "toy.sarm_progress.parquet" and Path(b["parquet"]).name == "other.sarm_progress.parquet"
    for summary, store in ((a, store_copy), (b, other)):
        # LeRobot's own RA-BC reader takes the default file as it is.
        weights = rabc.RABCWeights(summary["parquet"], chunk_size=3, head_mode="sparse", device=torch.device("cpu"))
        values = read_progress(store, "sarm")["sparse"]
        assert weights.progress_lookup[5] == pytest.approx(float(values[5]))
    assert not np.array_equal(read_progress(store_copy, "sarm")["sparse"], read_progress(other, "sarm")["sparse"])
    assert not (store_copy.path.parent / "sarm_progress.parquet").exists()


def _untouched(store_path: Path, parquet: Path) -> bool:
    root = zarr.open_group(str(store_path), mode="r")
    return "features" not in root and "progress" not in root and not parquet.exists()


def test_unusable_store_is_refused_before_caching_or_writing(store_copy, tmp_path):
    import dataclasses

    model = small_model(store_copy, state_key="observation.state")
    # A store without the feature cache: annotate would have to build it first, so every check
    # must come before that (and before any write).
    del zarr.open_group(str(store_copy.path), mode="r+")["features"]
    parquet = default_parquet_path(store_copy.path)
    cases = [
        (dataclasses.replace(model.config, tasks=["stack the cubes"]), "task 'pick the red cube' was not in model 'sarm'"),
        (dataclasses.replace(model.config, cameras=["observation.images.side"]), "has no camera 'observation.images.side'"),
        (dataclasses.replace(model.config, state_dim=7), "observation.state has 3 values per frame"),
    ]
    for config, message in cases:
        with pytest.raises(StoreError, match=message):
            annotate(SARM(config), store_copy.path)
        assert _untouched(store_copy.path, parquet), message
    with pytest.raises(RoborewardError, match="is a folder"):
        annotate(model, store_copy.path, parquet_path=tmp_path)
    assert _untouched(store_copy.path, parquet)


def test_incomplete_or_stale_annotations_are_refused(store_copy, tmp_path):
    model = small_model(store_copy)
    with pytest.raises(StoreError, match="no progress annotation 'sarm'"):
        read_progress(store_copy, "sarm")
    annotate(model, store_copy.path, parquet_path=tmp_path / "p.parquet")
    group = zarr.open_group(str(store_copy.path), mode="r+")["progress/sarm"]
    group.attrs["complete"] = False  # as if killed while rewriting
    assert progress_names(store_copy) == []
    with pytest.raises(StoreError, match="incomplete"):
        read_progress(store_copy, "sarm")
    annotate(model, store_copy.path, parquet_path=tmp_path / "p.parquet")  # re-running repairs it
    assert progress_names(store_copy) == ["sarm"]
    # The store gains an episode: the old annotation no longer covers every frame.
    appended = EpisodeStore(store_copy.path, mode="a")
    appended.add_episode(appended.read_episode(0))
    with pytest.raises(StoreError, match="run annotate again"):
        read_progress(EpisodeStore(store_copy.path), "sarm")
    with pytest.raises(Exception, match="must be letters"):
        annotate(model, store_copy.path, name="a/b")


def test_annotate_matches_the_runner_and_takes_a_checkpoint(store_copy, tmp_path):
    model = small_model(store_copy)
    ckpt = model.save_pretrained(tmp_path / "ckpt")
    annotate(ckpt, store_copy.path, name="from_ckpt", parquet_path=tmp_path / "p.parquet")
    per_ep = episode_progress(model, store_copy, None, "sparse", batch_frames=10_000)
    np.testing.assert_allclose(read_progress(store_copy, "from_ckpt")["sparse"], np.concatenate(per_ep), atol=1e-6)
