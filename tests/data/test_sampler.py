"""ClipDataset and episode splits on a real store: causal clips, padding, views, targets, workers."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from roboreward.data import EpisodeStore, StoreError
from roboreward.data.cache import cache_embeddings
from roboreward.data.sampler import ClipConfig, ClipDataset, clip_indices, split_episodes

FRONT = "observation.images.front"
WRIST = "observation.images.wrist"


@pytest.fixture
def store_and_episodes(tmp_path, make_store):
    store, episodes = make_store(tmp_path / "s.zarr", n_episodes=3, lengths=[6, 11, 4])
    return EpisodeStore(store.path), episodes


# ---------------------------------------------------------------- clip_indices


def test_clip_indices_causal_inside_episode():
    idx, pad = clip_indices(t=20, start=0, window=4, frame_gap=3)
    assert idx.tolist() == [11, 14, 17, 20]
    assert pad.tolist() == [False] * 4
    assert idx[-1] == 20 and idx.max() == 20  # ends at t, never later


def test_clip_indices_repeat_episode_start():
    idx, pad = clip_indices(t=12, start=10, window=4, frame_gap=1)
    assert idx.tolist() == [10, 10, 11, 12]
    assert pad.tolist() == [True, False, False, False]
    idx, pad = clip_indices(t=10, start=10, window=3, frame_gap=5)
    assert idx.tolist() == [10, 10, 10]
    assert pad.tolist() == [True, True, False]


def test_clip_config_validation():
    with pytest.raises(StoreError, match="window must be >= 1, got 0"):
        ClipConfig(window=0)
    with pytest.raises(StoreError, match="frame_gap must be >= 1, got 0"):
        ClipConfig(frame_gap=0)


# ---------------------------------------------------------------- ClipDataset


def test_every_frame_is_a_sample(store_and_episodes):
    store, _ = store_and_episodes
    ds = ClipDataset(store, ClipConfig(window=3, frame_gap=2))
    assert len(ds) == 21
    assert [ds[i]["episode_index"] for i in range(len(ds))] == [0] * 6 + [1] * 11 + [2] * 4
    assert [int(ds[i]["frame_index"][-1]) for i in range(len(ds))] == [*range(6), *range(11), *range(4)]


def test_clip_content_matches_store(store_and_episodes):
    store, episodes = store_and_episodes
    ds = ClipDataset(store, ClipConfig(window=4, frame_gap=3, low_dim=("observation.state", "action")))
    # sample 6 + 7 = frame 7 of episode 1: frames -2, 1, 4, 7 -> 0, 1, 4, 7
    item = ds[13]
    assert item["episode_index"] == 1
    assert item["frame_index"].tolist() == [0, 1, 4, 7]
    assert item["pad_mask"].tolist() == [True, False, False, False]
    ep = episodes[1]
    for key in (FRONT, WRIST, "observation.state", "action", "gt.progress"):
        np.testing.assert_array_equal(item[key].numpy(), ep.data[key][[0, 1, 4, 7]], err_msg=key)
    assert item["task"] == ep.task
    assert item["episode_length"] == 11


def test_first_frame_of_episode_is_all_padding(store_and_episodes):
    store, episodes = store_and_episodes
    ds = ClipDataset(store, ClipConfig(window=5, frame_gap=2))
    item = ds[17]  # frame 0 of episode 2: must not leak frames of episode 1
    assert item["episode_index"] == 2
    assert item["frame_index"].tolist() == [0] * 5
    assert item["pad_mask"].tolist() == [True, True, True, True, False]
    for t in range(5):
        np.testing.assert_array_equal(item[FRONT][t].numpy(), episodes[2].data[FRONT][0])


def test_multi_view_shapes_and_dtypes(store_and_episodes):
    store, _ = store_and_episodes
    ds = ClipDataset(store, ClipConfig(window=8, frame_gap=5, low_dim=("observation.state", "action")))
    item = ds[10]
    assert item[FRONT].shape == (8, 16, 16, 3) and item[FRONT].dtype == torch.uint8
    assert item[WRIST].shape == (8, 16, 16, 3)
    assert item["observation.state"].shape == (8, 6) and item["observation.state"].dtype == torch.float32
    assert item["action"].shape == (8, 6)
    assert item["gt.progress"].shape == (8,)
    assert item["frame_index"].shape == (8,) and item["pad_mask"].dtype == torch.bool
    assert not torch.equal(item[FRONT], item[WRIST])


def test_camera_selection(store_and_episodes):
    store, _ = store_and_episodes
    ds = ClipDataset(store, ClipConfig(window=2, cameras=[WRIST]))
    assert WRIST in ds[0] and FRONT not in ds[0]
    with pytest.raises(StoreError, match="camera 'observation.images.top' is not in the store"):
        ClipDataset(store, ClipConfig(cameras=["observation.images.top"]))
    with pytest.raises(StoreError, match="no feature 'observation.velocity'"):
        ClipDataset(store, ClipConfig(low_dim=("observation.velocity",)))


def test_targets_returned_or_not(store_and_episodes):
    store, episodes = store_and_episodes
    with_targets = ClipDataset(store, ClipConfig(window=3, frame_gap=1))
    item = with_targets[6 + 5]
    np.testing.assert_allclose(item["gt.progress"].numpy(), episodes[1].data["gt.progress"][3:6])
    without = ClipDataset(store, ClipConfig(window=3, frame_gap=1, targets=False))
    assert "gt.progress" not in without[0]


def test_episode_subset(store_and_episodes):
    store, _ = store_and_episodes
    ds = ClipDataset(store, ClipConfig(window=2), episodes=[2, 0])
    assert len(ds) == 10
    assert {ds[i]["episode_index"] for i in range(len(ds))} == {0, 2}
    with pytest.raises(StoreError, match="no episodes selected"):
        ClipDataset(store, ClipConfig(), episodes=[])


def test_opens_from_path(store_and_episodes):
    store, _ = store_and_episodes
    assert len(ClipDataset(str(store.path), ClipConfig(window=2))) == 21


# ---------------------------------------------------------------- splits


def test_split_disjoint_and_covering():
    train, val = split_episodes(20, val_fraction=0.2, seed=0)
    assert len(val) == 4 and len(train) == 16
    assert set(train).isdisjoint(val)
    assert sorted(train + val) == list(range(20))


def test_split_deterministic_and_seeded():
    assert split_episodes(20, 0.2, seed=3) == split_episodes(20, 0.2, seed=3)
    vals = {tuple(split_episodes(20, 0.2, seed=s)[1]) for s in range(5)}
    assert len(vals) > 1
    assert split_episodes(20, 0.2, seed=0)[1] != split_episodes(20, 0.2, seed=1)[1]


def test_split_edge_cases():
    assert split_episodes(2, 0.2, seed=0)[1] != []  # at least one val episode when possible
    assert split_episodes(1, 0.2, seed=0) == ([0], [])
    assert split_episodes(5, 0.0, seed=0) == ([0, 1, 2, 3, 4], [])
    with pytest.raises(StoreError, match=r"val_fraction must be in \[0, 1\), got 1.0"):
        split_episodes(5, 1.0)


def test_split_feeds_datasets_without_shared_frames(store_and_episodes):
    store, _ = store_and_episodes
    train, val = split_episodes(store.n_episodes, 0.34, seed=0)
    tr = ClipDataset(store, ClipConfig(window=2), episodes=train)
    va = ClipDataset(store, ClipConfig(window=2), episodes=val)
    assert len(tr) + len(va) == store.n_frames
    assert {tr[i]["episode_index"] for i in range(len(tr))}.isdisjoint({va[i]["episode_index"] for i in range(len(va))})


# ---------------------------------------------------------------- workers


def _collect(loader):
    out = {}
    for batch in loader:
        for key, value in batch.items():
            out.setdefault(key, []).append(value)
    return {k: (torch.cat(v) if isinstance(v[0], torch.Tensor) else sum(v, [])) for k, v in out.items()}


@pytest.mark.timeout(60)
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded, use of fork:DeprecationWarning")
@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_dataloader_with_workers_matches_single_process(store_and_episodes, context):
    store, _ = store_and_episodes
    ds = ClipDataset(store, ClipConfig(window=3, frame_gap=2))
    ds[0]  # the parent has open zarr handles (and zarr's IO thread) before the workers start
    single = _collect(DataLoader(ds, batch_size=4, num_workers=0))
    # fork: workers inherit the open handles; spawn: the dataset travels pickled.
    multi = _collect(DataLoader(ds, batch_size=4, num_workers=2, multiprocessing_context=context))
    assert set(single) == set(multi)
    for key in single:
        if isinstance(single[key], torch.Tensor):
            assert torch.equal(single[key], multi[key]), key
        else:
            assert single[key] == multi[key], key
    assert multi[FRONT].shape == (21, 3, 16, 16, 3)


def test_dataset_pickles(store_and_episodes):
    store, _ = store_and_episodes
    ds = ClipDataset(store, ClipConfig(window=3, frame_gap=2))
    want = ds[9]
    clone = pickle.loads(pickle.dumps(ds))
    got = clone[9]
    for key in (FRONT, WRIST, "pad_mask", "frame_index"):
        assert torch.equal(got[key], want[key])


# ---------------------------------------------------------------- features mode


def mean_color(frames):
    return torch.from_numpy(np.asarray(frames)).float().mean(dim=(1, 2)) / 255.0


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded, use of fork:DeprecationWarning")
def test_features_mode_after_caching(store_and_episodes):
    store, episodes = store_and_episodes
    with pytest.raises(StoreError, match=r"no feature cache 'mean-color' \(have none\)"):
        ClipDataset(store, ClipConfig(window=3, features="mean-color"))
    cache_embeddings(store.path, mean_color, "mean-color", batch_size=4, progress=False)
    ds = ClipDataset(store, ClipConfig(window=3, frame_gap=2, features="mean-color"))
    item = ds[6 + 3]  # frame 3 of episode 1 -> frames 0, 1, 3
    assert FRONT not in item and WRIST not in item
    for cam in (FRONT, WRIST):
        feats = item[f"features.{cam}"]
        assert feats.shape == (3, 3) and feats.dtype == torch.float32
        want = episodes[1].data[cam][[0, 1, 3]].astype(np.float32).mean(axis=(1, 2)) / 255.0
        np.testing.assert_allclose(feats.numpy(), want, atol=1e-3)
    assert item["observation.state"].shape == (3, 6)
    multi = _collect(DataLoader(ds, batch_size=5, num_workers=2))
    assert multi[f"features.{FRONT}"].shape == (21, 3, 3)


def test_chunk_cache_gives_the_same_clips_within_its_budget(store_and_episodes):
    store, _ = store_and_episodes
    plain = ClipDataset(store, ClipConfig(window=3, frame_gap=4))
    frame = store.array(store.cameras[0])
    chunk_bytes = int(frame.chunks[0]) * int(np.prod(frame.shape[1:]))
    cached = ClipDataset(store, ClipConfig(window=3, frame_gap=4, chunk_cache_mb=1.5 * chunk_bytes / 1e6))  # forces evictions
    order = list(range(len(plain))) + list(range(len(plain) - 1, -1, -1))
    for i in order:
        a, b = plain[i], cached[i]
        for cam in store.cameras:
            assert torch.equal(a[cam], b[cam]), (i, cam)
        assert cached._cache.bytes <= 1.5 * chunk_bytes
    assert cached._cache.hits > 0 and cached._cache.misses > 0
    with pytest.raises(StoreError, match="chunk_cache_mb"):
        ClipConfig(chunk_cache_mb=-1)
