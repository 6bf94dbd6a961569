"""Real arms (and the sim twin) behind LeRobot's Robot API, the safety layer, and the deploy loop.

- ``make_arm(config)``: LeRobot's ``so101_follower`` / ``koch_follower`` or ``sim_so101`` (arms.py);
- ``SafeArm`` / ``SafetyConfig``: clamps, rate limits, watchdog, safe stop (safety.py);
- ``deploy``: policies (and reward models) on an arm at the dataset's fps, recorded (deploy.py).
"""
from .arms import ARM_TYPES, arm_config, make_arm
from .safety import ArmError, SafeArm, SafetyConfig

__all__ = ["ARM_TYPES", "ArmError", "SafeArm", "SafetyConfig", "arm_config", "make_arm"]
