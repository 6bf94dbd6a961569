"""The Policy API shared by BC policies: registry by name, ``config.json`` + ``model.safetensors``
checkpoints (never pickles), on the same mechanism as reward models (``roboreward.pretrained``).

- ``loss(batch) -> {"loss": ..., ...}``: for ``roboreward.training.fit``; per-sample losses are
  reduced with the batch's ``weight`` (RA-BC) by ``rabc.weighted_mean``.
- ``select_action(...) -> (B, H, A)``: an action chunk in dataset (LeRobot) units.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..pretrained import Pretrained, Registry, TypedConfig


@dataclass
class PolicyConfig(TypedConfig):
    """Base of every policy config; subclasses default ``type`` to their registered name."""

    kind: ClassVar[str] = "policy"


REGISTRY = Registry("policy", "policy", builtins="roboreward.policies")
POLICIES = REGISTRY.classes
"""Registered policies: name -> class."""
register_policy = REGISTRY.register
policy_class = REGISTRY.get


def make_policy(config: PolicyConfig | dict[str, Any]) -> "Policy":
    """Build the registered policy named by ``config.type`` (a config object or a plain dict)."""
    return REGISTRY.make(config, "policy")


class Policy(Pretrained, abstract=True):
    """Base of every policy; subclasses set ``name`` and ``config_class`` (checked at definition)."""

    registry: ClassVar[Registry] = REGISTRY
    config_base: ClassVar[type] = PolicyConfig
    name: ClassVar[str]
    config_class: ClassVar[type[PolicyConfig]]

    def loss(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    STAT_FIELDS = ("state_mean", "state_std", "action_mean", "action_std", "env_state_mean", "env_state_std")

    def register_statistics(self) -> None:
        """The config's dataset statistics as non-persistent buffers (they come from config.json),
        so they follow ``.to(device)``."""
        for name in self.STAT_FIELDS:
            self.register_buffer(name, torch.tensor(getattr(self.config, name), dtype=torch.float32), persistent=False)
