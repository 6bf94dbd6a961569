"""LeRobot's own ACT and Diffusion Policy classes trained here with per-sample RA-BC weights and
saved in LeRobot's format (registered as policy types ``act`` and ``diffusion``)."""
from .configuration_lerobot import ACTWrapperConfig, DiffusionWrapperConfig, LeRobotPolicyConfig
from .modeling_lerobot import ACTWrapper, DiffusionWrapper, LeRobotPolicy

__all__ = ["ACTWrapper", "ACTWrapperConfig", "DiffusionWrapper", "DiffusionWrapperConfig", "LeRobotPolicy", "LeRobotPolicyConfig"]
