"""``make_arm(config)``: any arm behind LeRobot's Robot API from a config dict or a LeRobot
``RobotConfig``: LeRobot's own ``so101_follower`` / ``so100_follower`` / ``koch_follower`` (built by
``lerobot.robots``, with their calibration files and cameras) and ``sim_so101``, the MuJoCo twin."""
from __future__ import annotations

from typing import Any

from .safety import ArmError
from .sim_so101 import SimSO101Config

ARM_TYPES = ("sim_so101", "so101_follower", "so100_follower", "koch_follower")


def arm_config(config: dict[str, Any]):
    """A LeRobot ``RobotConfig`` from a dict with ``type`` (one line naming a bad field)."""
    from lerobot.robots.config import RobotConfig

    config = dict(config)
    kind = config.pop("type", None)
    if config.get("calibration_dir") is not None:
        from pathlib import Path

        config["calibration_dir"] = Path(config["calibration_dir"])
    if kind not in ARM_TYPES:
        raise ArmError(f"robot.type {kind!r} unknown; choose from {', '.join(ARM_TYPES)}")
    if kind == "sim_so101":
        cls = SimSO101Config
    else:
        import lerobot.robots.koch_follower  # noqa: F401  (registers the config classes)
        import lerobot.robots.so_follower  # noqa: F401

        cls = RobotConfig.get_choice_class(kind)
    if isinstance(config.get("cameras"), dict):
        config["cameras"] = {name: camera_config(name, c) for name, c in config["cameras"].items()}
    try:
        return cls(**config)
    except TypeError as exc:
        raise ArmError(f"robot ({kind}): {exc}".replace(".__init__() ", ": ")) from None
    except ValueError as exc:
        raise ArmError(f"robot ({kind}): {exc}") from None


def camera_config(name: str, spec):
    """A LeRobot ``CameraConfig`` from ``{type: opencv, index_or_path: 0, width: 640, height: 480, fps: 30}``."""
    from lerobot.cameras import CameraConfig

    if isinstance(spec, CameraConfig):
        return spec
    if not isinstance(spec, dict) or "type" not in spec:
        raise ArmError(f"robot.cameras.{name}: expected a mapping with a type (opencv, realsense), got {spec!r}")
    spec = dict(spec)
    kind = spec.pop("type")
    try:
        __import__(f"lerobot.cameras.{kind}")  # registers the camera's config class
        return CameraConfig.get_choice_class(kind)(**spec)
    except (ImportError, KeyError):
        raise ArmError(f"robot.cameras.{name}: camera type {kind!r} unknown (LeRobot has opencv, realsense)") from None
    except (TypeError, ValueError) as exc:
        raise ArmError(f"robot.cameras.{name}: {exc}") from None


def make_arm(config):
    """The arm a config names (a dict with ``type`` or a LeRobot RobotConfig), not yet connected."""
    from lerobot.robots.utils import make_robot_from_config

    if isinstance(config, dict):
        config = arm_config(config)
    if isinstance(config, SimSO101Config):
        from .sim_so101 import SimSO101

        return SimSO101(config)
    return make_robot_from_config(config)
