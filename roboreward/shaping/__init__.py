"""Reward shaping for online RL: the schemes (``schemes.py``) and the env wrappers that feed any
registered reward model's stream and log every term (``wrapper.py``)."""
from .schemes import GOLD, SCHEMES, ShapingConfig, shape
from .wrapper import (ModelPotential, OraclePotential, PolicyObservation, Potential, ShapedReward, ShapedRewardVecEnv,
                      ZeroPotential, encoder_of, make_potential)

__all__ = ["GOLD", "SCHEMES", "ModelPotential", "OraclePotential", "PolicyObservation", "Potential", "ShapedReward",
           "ShapedRewardVecEnv", "ShapingConfig", "ZeroPotential", "encoder_of", "make_potential", "shape"]
