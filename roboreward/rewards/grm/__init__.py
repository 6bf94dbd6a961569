"""GRM: Robo-Dopamine's relative-progress ("hop") reward model over cached frozen-encoder features."""
from .configuration_grm import GRMConfig
from .data_grm import GRMPairs, chain, hop_label, state_progress, two_hot
from .modeling_grm import GRM, GRMStream

__all__ = ["GRM", "GRMConfig", "GRMPairs", "GRMStream", "chain", "hop_label", "state_progress", "two_hot"]
