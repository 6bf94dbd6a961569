"""Encoders beyond the default: any timm architecture from a local file, hub refs offline, cache keys."""
from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

from roboreward.encoders import EncoderError, encoder_for_cache_key, make_image_encoder


def test_any_timm_architecture_from_a_local_safetensors_file(tmp_path):
    torch.manual_seed(0)
    source = timm.create_model("resnet18", pretrained=False)
    path = tmp_path / "resnet18.safetensors"
    save_file(source.state_dict(), str(path))
    enc = make_image_encoder("resnet18", path, image_size=32)
    loaded = enc.backbone.state_dict()
    assert torch.equal(loaded["conv1.weight"], source.state_dict()["conv1.weight"])
    feats = enc(np.random.default_rng(0).integers(0, 255, (3, 40, 40, 3), dtype=np.uint8))
    assert feats.shape == (3, enc.dim) and torch.isfinite(feats).all()
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
