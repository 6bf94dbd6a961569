"""Behaviour cloning with action chunking over cached image features and state (RA-BC via weights)."""
from .configuration_bc import BCConfig
from ..data import PolicyDataset as BCDataset
from .modeling_bc import BCPolicy

__all__ = ["BCConfig", "BCDataset", "BCPolicy"]
