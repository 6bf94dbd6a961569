"""Visuomotor BC from the store's camera frames and joint state (a policy that can go to a real arm)."""
from .configuration_vision import VisionBCConfig
from .modeling_vision import VisionBCPolicy

__all__ = ["VisionBCConfig", "VisionBCPolicy"]
