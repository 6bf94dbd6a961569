"""The MuJoCo twin of the SO-101 follower behind LeRobot's Robot API (``sim_so101``)."""
from .config_sim_so101 import SimSO101Config
from .sim_so101 import SimSO101

__all__ = ["SimSO101", "SimSO101Config"]
