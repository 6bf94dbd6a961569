"""Reward models behind one API (base.RewardModel); importing this package registers the built-ins."""
from .base import (
    REWARD_MODELS,
    CheckpointError,
    RewardModel,
    RewardModelConfig,
    RewardStream,
    make_reward_model,
    register_reward_model,
    reward_config_from_dict,
)
from .baselines import SuccessClassifier, TimeRegression
from .grm import GRM
from .perceptual import Perceptual
from .sarm import SARM, SARMConfig

__all__ = [
    "GRM", "REWARD_MODELS", "Perceptual", "SARM", "SuccessClassifier", "TimeRegression", "CheckpointError", "RewardModel", "RewardModelConfig", "RewardStream", "SARMConfig",
    "make_reward_model", "register_reward_model", "reward_config_from_dict",
]
