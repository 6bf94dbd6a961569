"""Multi-stage manipulation tasks for the simulated SO-101; importing this package registers them."""
from .base import TASKS, Task, TaskState, make_task, make_task_config, register_task
from . import drawer, pick_place, stack  # noqa: F401  (registers)

__all__ = ["TASKS", "Task", "TaskState", "make_task", "make_task_config", "register_task"]
