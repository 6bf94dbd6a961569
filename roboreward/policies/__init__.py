"""Policies behind one API (base.Policy) and RA-BC weighting (rabc); importing this package
registers the built-in policies."""
from .base import POLICIES, Policy, PolicyConfig, make_policy, register_policy
from .bc import BCConfig, BCDataset, BCPolicy

__all__ = ["POLICIES", "BCConfig", "BCDataset", "BCPolicy", "Policy", "PolicyConfig", "make_policy", "register_policy"]
