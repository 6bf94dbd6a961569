"""Frozen encoders: images through timm (offline default weights), task text."""
from .image import (
    IMAGE_ENCODERS,
    EncoderError,
    ImageEncoder,
    ImageEncoderConfig,
    encoder_for_cache_key,
    encoder_from_info,
    make_image_encoder,
    register_image_encoder,
)

__all__ = [
    "IMAGE_ENCODERS",
    "EncoderError",
    "ImageEncoder",
    "ImageEncoderConfig",
    "encoder_for_cache_key",
    "encoder_from_info",
    "make_image_encoder",
    "register_image_encoder",
]
