"""SARM: stage-aware reward model over cached frozen-encoder features."""
from .configuration_sarm import SARMConfig
from .data_sarm import SARMDataset, StageSet, StageTargets, episode_batch, sarm_targets, stage_priors
from .modeling_sarm import SARM, SARMStream, append_rewind, rewind_index

__all__ = [
    "SARM", "SARMConfig", "SARMDataset", "SARMStream", "StageSet", "StageTargets",
    "append_rewind", "episode_batch", "rewind_index", "sarm_targets", "stage_priors",
]
