"""Policies behind one API (base.Policy) and RA-BC weighting (rabc); importing this package
registers the built-in policies."""
from .base import POLICIES, Policy, PolicyConfig, make_policy, register_policy
from .bc import BCConfig, BCDataset, BCPolicy
from .data import PolicyDataset
from .lerobot import ACTWrapper, DiffusionWrapper
from .vision import VisionBCConfig, VisionBCPolicy

__all__ = ["POLICIES", "ACTWrapper", "BCConfig", "BCDataset", "BCPolicy", "DiffusionWrapper", "PolicyDataset", "VisionBCConfig", "VisionBCPolicy", "Policy", "PolicyConfig", "make_policy", "register_policy"]
