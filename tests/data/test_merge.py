"""`data merge`: episodes of several stores in order, with their metadata and plain feature caches;
a schema difference, a repeated source or an existing output is one error line; a killed merge leaves
nothing at the output."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from roboreward.data import EpisodeStore, StoreError
from roboreward.data.cache import cache_embeddings, cache_status, cached_features
from roboreward.data.merge import merge_stores
from roboreward.data.validate import check_store


def mean_colour(frames):
    return torch.from_numpy(np.asarray(frames, np.float32).mean(axis=(1, 2)) / 255.0)


@pytest.fixture
def two(tmp_path, make_store):
    a, a_eps = make_store(tmp_path / "a.zarr", n_episodes=2, lengths=[5, 7], seed=1)
    b, b_eps = make_store(tmp_path / "b.zarr", n_episodes=3, lengths=[4, 6, 8], seed=2)
    return a.path, b.path, a_eps + b_eps


def test_merge_keeps_every_episode_in_order_with_its_metadata_and_caches(two, tmp_path, capsys):
    a, b, episodes = two
    for path in (a, b):
        cache_embeddings(path, mean_colour, "mean-colour", batch_size=4, progress=False, encoder_info={"name": "mean"})
    # A photometric copy's look follows the episode index, which the merge changes: not carried over.
    cache_embeddings(a, mean_colour, "mean-colour+copy", batch_size=4, progress=False, encoder_info={"name": "mean"},
                     transform=lambda f, e: f, transform_info={"copy": 1})
    cache_embeddings(b, mean_colour, "mean-colour+copy", batch_size=4, progress=False, encoder_info={"name": "mean"},
                     transform=lambda f, e: f, transform_info={"copy": 1})
    from roboreward.cli import main

    out = tmp_path / "m.zarr"
    assert main(["data", "merge", str(a), str(b), "--out", str(out)]) == 0
    assert "5 episodes" in capsys.readouterr().out
    merged = EpisodeStore(out)
    assert check_store(out) == []
    assert merged.n_episodes == len(episodes) == 5
    sources = [(EpisodeStore(a), i) for i in range(2)] + [(EpisodeStore(b), i) for i in range(3)]
    for j, (src, i) in enumerate(sources):
        got, want = merged.read_episode(j), src.read_episode(i)
        assert (got.task, got.success, got.quality, got.annotations) == (want.task, want.success, want.quality, want.annotations)
        for key in want.data:
            np.testing.assert_array_equal(got.data[key], want.data[key], err_msg=f"episode {j} {key}")
    assert set(cache_status(merged)) == {"mean-colour"}
    for cam, feats in cached_features(merged, "mean-colour").items():
        want = np.concatenate([cached_features(EpisodeStore(p), "mean-colour")[cam][:] for p in (a, b)])
        np.testing.assert_array_equal(feats[:], want)
    origin = merged.root.attrs["extra"]["merged_from"]
    assert [o["episodes"] for o in origin] == [2, 3]
    assert "progress" not in merged.root


def test_merge_says_progress_annotations_are_not_copied(two, tmp_path, capsys):
    a, b, _ = two
    EpisodeStore(a, mode="a").root.require_group("progress").require_group("sarm")
    from roboreward.cli import main

    assert main(["data", "merge", str(a), str(b), "--out", str(tmp_path / "m.zarr")]) == 0
    out = capsys.readouterr().out
    assert "progress annotations ['sarm'] are not copied" in out and "reward annotate" in out


def test_merge_refuses_in_one_line(two, tmp_path, make_store):
    a, b, _ = two
    other, _ = make_store(tmp_path / "c.zarr", n_episodes=1, lengths=[5], image_size=24)
    with pytest.raises(StoreError, match="observation.images.front.*same robot, cameras and features"):
        merge_stores([a, other.path], tmp_path / "x.zarr", progress=False)
    with pytest.raises(StoreError, match="named twice"):
        merge_stores([a, a], tmp_path / "x.zarr", progress=False)
    with pytest.raises(StoreError, match="one of the sources"):
        merge_stores([a, b], b, progress=False)
    (tmp_path / "taken.zarr").mkdir()
    with pytest.raises(StoreError, match="already exists; pass --overwrite"):
        merge_stores([a, b], tmp_path / "taken.zarr", progress=False)
    assert not (tmp_path / "x.zarr").exists()


def test_a_killed_merge_leaves_nothing_and_runs_again(two, tmp_path, monkeypatch):
    a, b, _ = two
    out = tmp_path / "m.zarr"
    calls = {"n": 0}
    real = EpisodeStore.add_episode

    def dies_at_fourth(self, episode):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt  # as a kill would stop it: mid-merge, the temporary store half written
        return real(self, episode)

    monkeypatch.setattr(EpisodeStore, "add_episode", dies_at_fourth)
    with pytest.raises(KeyboardInterrupt):
        merge_stores([a, b], out, progress=False)
    assert not out.exists() and (tmp_path / ".m.zarr.merge-tmp").exists()
    monkeypatch.setattr(EpisodeStore, "add_episode", real)
    merge_stores([a, b], out, progress=False)
    assert EpisodeStore(out).n_episodes == 5 and not (tmp_path / ".m.zarr.merge-tmp").exists()
