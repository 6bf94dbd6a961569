"""Photometric augmentation for training a reward model on frozen-encoder features.

A frozen encoder's features are cached once per frame, so augmenting pixels means caching the same
frames again under a change of appearance: ``copies`` extra caches of the training store, each
frame drawn through its episode's own photometric change (brightness, contrast, a per-channel
colour gain and a gamma curve, and where ``hue`` is set a rotation of every colour's hue). One
change holds for a whole episode and for every camera of it, as a change of light would; the episode's draw depends only on (seed, copy, episode), so a cache
extended by new episodes or resumed after a crash gets the same values. Training then reads each
clip from the original cache or one of the copies (``ClipConfig.feature_copies``); evaluation and
streaming read the original encoder on the frames as they are.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from ..config import ConfigError


def _range(name: str, value, low: float, high: float) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"augment.{name} must be [min, max], got {value!r}") from None
    if not low <= a <= b <= high:
        raise ConfigError(f"augment.{name} must be [min, max] with {low} <= min <= max <= {high}, got {value!r}")
    return a, b


def _change(cast: np.ndarray, brightness, contrast, gamma, grey) -> np.ndarray:
    """uint8 intensities of the change after the colour cast: ``cast`` (float32 in [0, 1]) and the
    other factors and the frame's mean grey broadcast against it. Used on pixels
    (``reference_apply``) and on the 256 levels of each frame's tables (``apply``)."""
    x = (cast - grey) * contrast + grey  # contrast
    x = np.clip(x * brightness, 0.0, 1.0)  # brightness
    x = x ** gamma  # gamma
    return np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)


def hue_matrix(degrees: float) -> np.ndarray:
    """The (3, 3) float32 RGB matrix that rotates colours by ``degrees`` about the grey axis (1, 1, 1):
    greys stay, R+G+B is kept, a rotation by 120 degrees maps red to green."""
    u = np.full(3, 1 / np.sqrt(3))
    cos, sin = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    cross = np.array([[0, -u[2], u[1]], [u[2], 0, -u[0]], [-u[1], u[0], 0]])
    return (cos * np.eye(3) + (1 - cos) * np.outer(u, u) + sin * cross).astype(np.float32)


def _turned(params: np.ndarray) -> np.ndarray:
    """Rows of ``params`` whose hue rotation is not zero (6-column rows have none)."""
    return np.flatnonzero(params[:, 6]) if params.shape[1] > 6 else np.empty(0, dtype=np.int64)


@dataclass(frozen=True)
class PhotometricAugment:
    """Per-episode appearance changes drawn uniformly from these ranges (each a [min, max] pair)."""

    brightness: tuple[float, float] = (0.5, 1.4)
    """Overall intensity scale (a dimmer or brighter lamp)."""
    contrast: tuple[float, float] = (0.6, 1.3)
    """Contrast about the frame's mean grey (flat ambient light vs a hard key light)."""
    channel_gain: tuple[float, float] = (0.6, 1.2)
    """Independent scale per RGB channel, relative to the largest (a warm or cold colour cast)."""
    gamma: tuple[float, float] = (0.7, 1.5)
    """Exponent on normalised intensity (shadows lifted or deepened)."""
    hue: tuple[float, float] = (0.0, 0.0)
    """Rotation of every pixel's colour about the grey axis, in degrees, after the changes above (a
    repainted cabinet, a cube of another colour; the whole frame turns, greys stay grey). The default
    (0, 0) draws nothing and leaves the copies' keys and values as they were before this field."""
    seed: int = 0
    """Seed of the per-episode draws."""

    def __post_init__(self):
        for name, low, high in (("brightness", 0.05, 4.0), ("contrast", 0.05, 4.0), ("channel_gain", 0.05, 4.0),
                                ("gamma", 0.2, 5.0), ("hue", -180.0, 180.0)):
            object.__setattr__(self, name, _range(name, getattr(self, name), low, high))
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ConfigError(f"augment.seed must be an int >= 0, got {self.seed!r}")

    @property
    def spec(self) -> dict:
        spec = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        if self.hue == (0.0, 0.0):
            del spec["hue"]  # the copies made before hue existed keep their tag
        return spec

    @property
    def tag(self) -> str:
        """Short hash of the ranges and seed: changing any of them makes new caches."""
        return hashlib.sha256(json.dumps(self.spec, sort_keys=True).encode()).hexdigest()[:6]

    def cache_key(self, base: str, copy: int) -> str:
        """Feature-cache key of augmented copy ``copy`` (1, 2, ...) of the cache ``base``."""
        return f"{base}+photo{self.tag}-{copy}"

    def params(self, episodes: np.ndarray, copy: int) -> np.ndarray:
        """(N, 7) draws for the given episode indices: brightness, contrast, gamma, 3 channel gains,
        hue rotation in degrees (drawn last, and only where ``hue`` is set: the other six are the
        same with or without it)."""
        episodes = np.asarray(episodes, dtype=np.int64).reshape(-1)
        out = np.zeros((len(episodes), 7), dtype=np.float32)
        for i, e in enumerate(episodes):
            rng = np.random.default_rng([self.seed, int(copy), int(e)])
            gains = rng.uniform(*self.channel_gain, size=3)
            out[i, :6] = (rng.uniform(*self.brightness), rng.uniform(*self.contrast), rng.uniform(*self.gamma),
                          *(gains / gains.max()))
            if self.hue != (0.0, 0.0):
                out[i, 6] = rng.uniform(*self.hue)
        return out

    def apply(self, frames: np.ndarray, params: np.ndarray) -> np.ndarray:
        """uint8 (B, H, W, 3) frames, (B, 7) ``params`` rows (one per frame; 6 columns: no hue) -> uint8
        (B, H, W, 3).

        Every step but the hue's is a function of one pixel's channel value once the frame's mean grey
        is known, so each frame gets a 256-entry table per channel, evaluated in float32 exactly as the
        pixel-wise formula (``reference_apply``), and the frame is looked up through it (OpenCV's LUT):
        the same uint8 values several times faster than raising every pixel to its gamma. The hue
        rotation is one 3x3 colour matrix per frame (OpenCV's transform, rounded and saturated)."""
        frames = np.asarray(frames)
        p = params.astype(np.float32)
        b, h, w, c = frames.shape
        # The mean grey after the colour cast: per-channel pixel sums are exact integers.
        sums = frames.reshape(b, -1, c).sum(axis=1, dtype=np.int64).astype(np.float64)
        grey = ((sums / 255.0) * p[:, 3:6]).sum(axis=1) / (h * w * c)
        levels = np.arange(256, dtype=np.float32) / 255.0
        k = p[:, :3, None, None]  # brightness, contrast, gamma per frame, against its (3, 256) levels
        lut = _change(levels[None, None, :] * p[:, 3:6, None], k[:, 0], k[:, 1], k[:, 2],
                      grey.astype(np.float32)[:, None, None])  # (B, 3, 256)
        tables = np.ascontiguousarray(lut.transpose(0, 2, 1))[:, :, None, :]  # (B, 256, 1, 3): OpenCV's layout
        out = np.empty_like(frames, dtype=np.uint8)
        for i in range(b):
            cv2.LUT(np.ascontiguousarray(frames[i], dtype=np.uint8), tables[i], dst=out[i])
        for i in _turned(p):
            out[i] = cv2.transform(out[i], hue_matrix(float(p[i, 6])))
        return out

    @staticmethod
    def reference_apply(frames: np.ndarray, params: np.ndarray) -> np.ndarray:
        """The same change computed pixel by pixel (the definition ``apply`` tabulates)."""
        p = params.astype(np.float32)
        cast = frames.astype(np.float32) / 255.0 * p[:, 3:6][:, None, None, :]
        k = p[:, :3, None, None, None]
        out = _change(cast, k[:, 0], k[:, 1], k[:, 2], cast.mean(axis=(1, 2, 3), keepdims=True))
        for i in _turned(p):
            turned = out[i].astype(np.float32) @ hue_matrix(float(p[i, 6])).T
            out[i] = np.clip(np.rint(turned), 0, 255).astype(np.uint8)
        return out

    def transform(self, copy: int):
        """``cache_embeddings``'s ``transform`` for copy ``copy``: (frames, their episode indices) ->
        frames, each under its episode's change (drawn once per episode in the block)."""
        def apply(frames: np.ndarray, episodes: np.ndarray) -> np.ndarray:
            eps, inverse = np.unique(episodes, return_inverse=True)
            return self.apply(frames, self.params(eps, copy)[inverse])

        return apply

    def info(self, copy: int, base: str) -> dict:
        """What a copy's cache records (its group's ``augment`` attribute)."""
        return {"photometric": self.spec, "copy": copy, "of": base}


def augment_from_dict(data: dict | None) -> PhotometricAugment:
    """A PhotometricAugment from a config mapping (unknown keys: one line naming the known ones)."""
    data = dict(data or {})
    known = set(PhotometricAugment.__dataclass_fields__)
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"augment: unknown key {unknown[0]!r}; known: {', '.join(sorted(known))}")
    return PhotometricAugment(**data)
