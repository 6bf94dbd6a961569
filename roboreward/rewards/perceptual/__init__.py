"""Perceptual rewards after Sermanet et al. 2016: steps discovered in a handful of demonstrations,
a diagonal Gaussian per step over its most discriminative frozen-encoder features."""
from .modeling_perceptual import Perceptual, PerceptualConfig, discriminative_features, segment_demo

__all__ = ["Perceptual", "PerceptualConfig", "discriminative_features", "segment_demo"]
