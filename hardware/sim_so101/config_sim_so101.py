"""Config of the SO-101 sim twin, registered with LeRobot's ``RobotConfig`` as ``sim_so101``."""
from __future__ import annotations

from dataclasses import dataclass, field

from lerobot.robots.config import RobotConfig


@RobotConfig.register_subclass("sim_so101")
@dataclass
class SimSO101Config(RobotConfig):
    task: str = "pick_place"
    """Sim task whose scene the arm works in (pick_place, stack, drawer)."""
    views: list[str] = field(default_factory=lambda: ["front", "wrist"])
    """Cameras, named as a real arm's ``cameras`` dict names them (``front``, ``wrist``)."""
    image_size: int = 96
    """Height and width (px) of every camera."""
    seed: int = 0
    """Seed of the first scene; each ``reset_scene`` draws the next layout."""
    task_config: dict = field(default_factory=dict)
    """Overrides of the task's default config (object ranges), as in dataset recipes."""
    visual: dict = field(default_factory=dict)
    """Appearance options (roboreward.sim.visual), as in dataset recipes."""
    fault_timeout_at: int | None = None
    """Test hook: the n-th bus read (1-based) times out, as a Feetech bus does on a bad cable."""
    fault_disconnect_at: int | None = None
    """Test hook: the arm is gone from the n-th bus read on (a pulled USB cable)."""

    def __post_init__(self):
        super().__post_init__()
        from roboreward.sim.env import CAMERAS
        from roboreward.sim.tasks import TASKS

        if self.task not in TASKS:
            raise ValueError(f"task {self.task!r} unknown; the twin has tasks {sorted(TASKS)}")

        unknown = sorted(set(self.views) - set(CAMERAS))
        if unknown:
            raise ValueError(f"sim_so101 views {unknown} unknown; the twin has cameras {list(CAMERAS)}")
