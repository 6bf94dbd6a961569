"""SARM: stage-aware reward model over cached frozen-encoder features."""
from .configuration_sarm import SARMConfig
from .data_sarm import SARMDataset
from .modeling_sarm import SARM, SARMStream, append_rewind, filter_stage, rewind_index, stage_transitions

__all__ = [
    "SARM", "SARMConfig", "SARMDataset", "SARMStream", "append_rewind", "filter_stage", "rewind_index",
    "stage_transitions",
]
