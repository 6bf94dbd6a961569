"""Demonstration data: the zarr episode store and everything that reads or writes it."""
from .schema import SCHEMA_VERSION, Episode, EpisodeInfo, FeatureSpec, StoreError, Subtask
from .store import EpisodeStore

__all__ = ["SCHEMA_VERSION", "Episode", "EpisodeInfo", "EpisodeStore", "FeatureSpec", "StoreError", "Subtask"]
