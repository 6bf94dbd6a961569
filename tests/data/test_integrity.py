"""A damaged store is never read as data: chunk files deleted or overwritten on disk are found by
validate, refused by every reader with one line naming array, episode and frames, and recovered
by `data repair` (dropping the damaged episodes, or regenerating them from the recipe)."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from roboreward.data import EpisodeStore
from roboreward.data.cache import cache_embeddings, cached_features
from roboreward.data.repair import repair_store
from roboreward.data.sampler import ClipConfig, ClipDataset
from roboreward.data.store import DamagedStoreError
from roboreward.data.validate import check_store, damaged_episodes

FRONT = "observation.images.front"
ENV = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def cli(*args):
    return subprocess.run([sys.executable, "-m", "roboreward.cli", *map(str, args)], capture_output=True, text=True,
                          env=ENV, timeout=300)


def tree_digest(path) -> str:
    """Hash of every file name and content under ``path``: equal digests = unchanged store."""
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def chunk_file(path, key: str, k: int):
    arr = EpisodeStore(path).root[key]
    return path / key / arr.metadata.encode_chunk_key((k,) + (0,) * (len(arr.shape) - 1))


class FakeEncoder:
    """Mean colour per frame as a 3-d feature: deterministic and instant."""

    def __call__(self, frames):
        return torch.from_numpy(np.asarray(frames, dtype=np.float32).mean(axis=(1, 2)))


def errors(path, **kw):
    return [p.message for p in check_store(path, **kw) if p.severity == "error"]


@pytest.fixture
def store5(tmp_path, make_store):
    """Five episodes of 20 frames: image chunks of 16 frames straddle episodes. 32 px: LeRobot's
    AV1 encoder (export) dies with SIGFPE on 16 px frames."""
    path = tmp_path / "s.zarr"
    make_store(path, n_episodes=5, lengths=[20] * 5, image_size=32)
    return path


def test_deleted_image_chunk_is_reported_and_refused(store5):
    chunk_file(store5, f"data/{FRONT}", 2).unlink()  # frames 32-47: episodes 1 and 2
    for quick in (False, True):
        errs = errors(store5, scan_data=not quick)
        assert any(f"data/{FRONT}: chunk c/2/0/0/0 (frames 32-47, episodes 1-2) is missing" in e for e in errs), errs
        assert any("damaged episodes [1, 2]" in e and "data repair" in e for e in errs), errs
    store = EpisodeStore(store5)
    assert damaged_episodes(store) == [1, 2]
    with pytest.raises(DamagedStoreError, match=r"frames 32-47, episodes 1-2\) is missing.*data repair"):
        store.array(FRONT)[30:40]
    with pytest.raises(DamagedStoreError):
        store.read_episode(2)
    assert store.read_episode(0).data[FRONT].shape == (20, 32, 32, 3)  # intact frames still read
    clips = ClipDataset(store, ClipConfig(window=2, frame_gap=1))
    clips[5]
    with pytest.raises(DamagedStoreError):
        clips[35]


def test_deleted_state_chunk_is_never_zero_filled(store5):
    chunk_file(store5, "data/observation.state", 0).unlink()
    assert any("data/observation.state: chunk c/0/0 (frames 0-99, episodes 0-4) is missing" in e for e in errors(store5))
    store = EpisodeStore(store5)
    with pytest.raises(DamagedStoreError, match="observation.state"):
        store.array("observation.state")[:]
    with pytest.raises(DamagedStoreError):
        ClipDataset(store, ClipConfig(window=2))[0]  # low-dim arrays are read on first use


def test_garbage_chunk_is_found_by_decoding_only(store5):
    chunk_file(store5, f"data/{FRONT}", 1).write_bytes(b"not zstd at all")
    assert any("chunk c/1/0/0/0 (frames 16-31, episodes 0-1) cannot be decoded" in e for e in errors(store5))
    assert errors(store5, scan_data=False) == []  # --quick lists chunk files only, and says so
    proc = cli("data", "validate", "--quick", store5)
    assert proc.returncode == 0 and "quick: chunks listed, not decoded" in proc.stdout
    proc = cli("data", "validate", store5)
    assert proc.returncode == 1 and "cannot be decoded" in proc.stdout
    with pytest.raises(DamagedStoreError, match="cannot be decoded"):
        cache_embeddings(store5, FakeEncoder(), "fake", progress=False)


def test_cli_readers_give_one_line_on_a_damaged_store(store5, tmp_path):
    chunk_file(store5, f"data/{FRONT}", 3).write_bytes(b"\x28\xb5\x2f\xfd garbage")
    before = tree_digest(store5)
    for args in (["data", "export-lerobot", store5, "--out", tmp_path / "lr"],
                 ["data", "cache-embeddings", store5, "--image-size", 32]):
        proc = cli(*args)
        lines = [line for line in proc.stderr.splitlines() if line.startswith("error")]
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert len(lines) == 1 and f"data/{FRONT}: chunk c/3/0/0/0" in lines[-1], proc.stderr
        assert "data repair" in lines[-1]
    assert tree_digest(store5) == before


def test_all_zero_chunks_are_written(tmp_path, make_store, make_episode):
    """zarr skips chunks equal to the fill value by default; here each is written, so a missing one
    can only mean damage."""
    store, _ = make_store(tmp_path / "z.zarr", n_episodes=1, lengths=[32])
    black = make_episode(1, 32)

    black.data[FRONT][:] = 0
    black.data["observation.state"][:] = 0
    store.add_episode(black)
    assert chunk_file(store.path, f"data/{FRONT}", 3).is_file()
    assert check_store(store.path) == []
    assert (EpisodeStore(store.path).array(FRONT)[32:64] == 0).all()


def test_damaged_feature_cache_is_reported_and_refused(store5):
    key = cache_embeddings(store5, FakeEncoder(), "fake", progress=False)
    chunk_file(store5, f"features/{key}/{FRONT}", 0).unlink()
    assert any(f"features/{key}/{FRONT}: chunk c/0/0 (frames 0-99" in e for e in errors(store5))
    with pytest.raises(DamagedStoreError):
        cached_features(EpisodeStore(store5), key)[FRONT][0:4]


def test_failed_cache_run_leaves_the_store_unchanged(store5):
    before = tree_digest(store5)

    def broken(frames):
        raise RuntimeError("encoder exploded")

    with pytest.raises(RuntimeError):
        cache_embeddings(store5, broken, "broken", progress=False)
    with pytest.raises(Exception, match="batch_size"):
        cache_embeddings(store5, FakeEncoder(), "fake", batch_size=0, progress=False)
    for size in (0, -5):
        assert cli("data", "cache-embeddings", store5, "--image-size", size).returncode == 2
    assert cli("data", "cache-embeddings", store5, "--batch-size", 0).returncode == 2
    assert tree_digest(store5) == before
    assert check_store(store5) == []


def test_repair_drops_damaged_episodes_and_keeps_the_rest(store5, tmp_path):
    key = cache_embeddings(store5, FakeEncoder(), "fake", progress=False)
    chunk_file(store5, f"data/{FRONT}", 2).unlink()  # episodes 1 and 2
    before = tree_digest(store5)
    report = repair_store(store5, tmp_path / "fixed.zarr", progress=False)
    assert report["kept"] == [0, 3, 4] and report["dropped"] == [1, 2]
    assert tree_digest(store5) == before  # the damaged store is never written
    fixed, old = EpisodeStore(tmp_path / "fixed.zarr"), EpisodeStore(store5)
    assert check_store(fixed.path) == []  # a feature cache covering only episode 0 is a warning at most
    assert fixed.n_episodes == 3
    for new_i, old_i in enumerate(report["kept"]):
        for k in ("observation.state", "observation.images.wrist"):
            np.testing.assert_array_equal(fixed.read_episode(new_i).data[k], old.read_episode(old_i).data[k])
    # The kept episodes' cached features come along (no re-encoding), in the new order.
    assert report["feature_caches"] == {key: 60}
    copied, original = cached_features(fixed, key)[FRONT][:], cached_features(old, key)[FRONT][:]
    np.testing.assert_array_equal(copied, np.concatenate([original[0:20], original[60:100]]))


def test_repair_regenerates_a_generated_store_exactly(tmp_path):
    src, ref = tmp_path / "gen.zarr", tmp_path / "ref.zarr"
    args = ["--task", "pick_place", "--episodes", 3, "--image-size", 16, "--workers", 1]
    assert cli("data", "generate", *args, "--out", src).returncode == 0
    shutil.copytree(src, ref)  # the store as generated, before the damage
    chunk_file(src, "data/observation.images.wrist", 14).unlink()
    damaged = damaged_episodes(EpisodeStore(src))
    assert len(damaged) >= 1
    proc = cli("data", "repair", src, "--out", tmp_path / "fixed.zarr", "--regenerate")
    assert proc.returncode == 0 and f"regenerated {damaged}" in proc.stdout, proc.stderr
    fixed, good = EpisodeStore(tmp_path / "fixed.zarr"), EpisodeStore(ref)
    assert check_store(fixed.path) == []
    for key in good.features:
        np.testing.assert_array_equal(fixed.array(key)[:], good.array(key)[:])
    # A store without a recipe cannot be regenerated: one line that says what to do instead.
    proc = cli("data", "repair", fixed.path, "--out", tmp_path / "again.zarr", "--regenerate")
    assert proc.returncode == 0  # nothing damaged: nothing to regenerate


def test_repair_regenerates_the_recorded_look(tmp_path):
    """A store generated with visual options gets its damaged episodes back in their own look."""
    src = tmp_path / "vis.zarr"
    recipe = tmp_path / "r.yaml"
    recipe.write_text("task: pick_place\nepisodes: 2\nmix: {expert: 1.0}\nimage_size: 16\n"
                      "visual: {object_colours: {cube: [0.2, 0.7, 0.25]}, light_intensity: [0.7, 1.3]}\n")
    assert cli("data", "generate", "--recipe", recipe, "--workers", 1, "--out", src).returncode == 0
    good = tmp_path / "copy.zarr"
    shutil.copytree(src, good)
    chunk_file(src, f"data/{FRONT}", 0).unlink()
    proc = cli("data", "repair", src, "--out", tmp_path / "fixed.zarr", "--regenerate")
    assert proc.returncode == 0 and "differ" not in proc.stdout, proc.stdout + proc.stderr
    fixed, want = EpisodeStore(tmp_path / "fixed.zarr"), EpisodeStore(good)
    np.testing.assert_array_equal(fixed.array(FRONT)[:], want.array(FRONT)[:])
    assert [e.info for e in fixed.episodes] == [e.info for e in want.episodes] and want.episodes[0].info


def test_repair_refuses_regenerate_without_recipe(store5, tmp_path):
    chunk_file(store5, "data/action", 0).unlink()
    proc = cli("data", "repair", store5, "--out", tmp_path / "x.zarr", "--regenerate")
    assert proc.returncode == 2 and "records no recipe" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.zarr").exists()
