"""stack: put the red cube on top of the blue cube.

Stages: reach (grasp point to cube A), grasp (jaws close on A), transport (lift A and carry it over
B), place (lower A onto B and let go).

Success (geometric): A's centre lies within a third of B's edge of B's centre in the horizontal
plane, A rests at B's height plus half of each cube's edge (+-6 mm), and neither jaw touches A.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import Task, check_exclude, check_ranges, register_task, sample_apart, set_free_pose, uniform_outside, xy_dist
from .pick_place import cube_body


@dataclass
class StackConfig:
    cube_a_size: float = 0.025
    """Edge (m) of the cube to pick (A)."""
    cube_b_size: float = 0.032
    """Edge (m) of the base cube (B); a bit larger than A, as in most stacking benchmarks."""
    cube_mass: float = 0.03
    """Mass (kg) of each cube."""
    x_range: tuple[float, float] = (0.15, 0.25)
    """Forward range (m) for both cubes' centres."""
    y_range: tuple[float, float] = (-0.12, 0.12)
    """Sideways range (m) for both cubes' centres."""
    min_separation: float = 0.08
    """Minimum distance (m) between the cubes, so the jaw never disturbs B while grasping A."""
    cube_yaw_deg: float = 45.0
    """Each cube's yaw is drawn from +-this (deg)."""
    cube_a_y_range: tuple[float, float] | None = None
    """Sideways range (m) of cube A alone; None = ``y_range`` (see PickPlaceConfig.cube_y_range)."""
    cube_b_y_range: tuple[float, float] | None = None
    """Sideways range (m) of cube B alone; None = ``y_range``."""
    x_exclude: tuple[float, float] | None = None
    """A forward band (m) inside ``x_range`` where no object centre is drawn: a layout held out of a
    training recipe that covers the workspace around it (``datasets/stack_randomised_wide.yaml``)."""

    def __post_init__(self):
        for name in ("cube_a_size", "cube_b_size"):
            if not 0.015 <= getattr(self, name) <= 0.04:
                raise ValueError(f"{name}={getattr(self, name)} must be in [0.015, 0.04] m")
        if not 0.0 <= self.cube_yaw_deg <= 45.0:
            raise ValueError(f"cube_yaw_deg={self.cube_yaw_deg} must be in [0, 45]")
        check_ranges(self, "x_range", "y_range", "cube_a_y_range", "cube_b_y_range")
        check_exclude(self, "x_range", "x_exclude")


@register_task
class StackTask(Task):
    name = "stack"
    stages = ("reach", "grasp", "transport", "place")
    objects = ("cube_a", "cube_b")
    visual_parts = {"cube_a": ("cube_a",), "cube_b": ("cube_b",)}
    instruction = "Stack the red cube on top of the blue cube."

    @staticmethod
    def default_config() -> StackConfig:
        return StackConfig()

    def worldbody_xml(self) -> str:
        c = self.config
        return cube_body("cube_a", c.cube_a_size, c.cube_mass, "0.85 0.15 0.12 1") + cube_body(
            "cube_b", c.cube_b_size, c.cube_mass, "0.15 0.35 0.85 1"
        )

    def reset(self, rng: np.random.Generator) -> None:
        c = self.config
        a_xy, b_xy = sample_apart(
            rng, [lambda r, y=y: [uniform_outside(r, c.x_range, c.x_exclude), r.uniform(*y)] for y in
                  (c.cube_a_y_range or c.y_range, c.cube_b_y_range or c.y_range)], c.min_separation, 2
        )
        yaw = np.radians(c.cube_yaw_deg)
        set_free_pose(self.data, "cube_a_joint", [*a_xy, c.cube_a_size / 2], rng.uniform(-yaw, yaw))
        set_free_pose(self.data, "cube_b_joint", [*b_xy, c.cube_b_size / 2], rng.uniform(-yaw, yaw))
        self._reset_tracking()

    def workspace_xy(self):
        c = self.config
        ys = [v for r in (c.y_range, c.cube_a_y_range, c.cube_b_y_range) if r is not None for v in r]
        # Margin: the open jaw round a cube, plus a suboptimal demo's sideways detour (<= 7 cm).
        mx, my = 0.08, 0.11
        return (c.x_range[0] - mx, min(ys) - my), (c.x_range[1] + mx, max(ys) + my)

    def keep_out_xy(self) -> list[np.ndarray]:
        return [self.data.body("cube_b").xpos.copy()]

    def object_pos(self) -> np.ndarray:
        return self.data.body("cube_a").xpos

    def object_size(self) -> float:
        return self.config.cube_a_size

    def target_pos(self) -> np.ndarray:
        """Where A's centre should end up: on B's top face."""
        c = self.config
        return self.data.body("cube_b").xpos + [0, 0, (c.cube_a_size + c.cube_b_size) / 2 + 0.002]

    def is_free_spot(self, xy) -> bool:
        return xy_dist(xy, self.data.body("cube_b").xpos) > 0.06

    def stacked(self) -> bool:
        c = self.config
        a, b = self.object_pos(), self.data.body("cube_b").xpos
        dz = a[2] - b[2] - (c.cube_a_size + c.cube_b_size) / 2
        return xy_dist(a, b) < c.cube_b_size / 3 and abs(dz) < 0.006

    def _measure(self):
        c = self.config
        geom = self.model.geom("cube_a").id
        a, b = self.object_pos(), self.data.body("cube_b").xpos
        held = self.update_held(geom, a)
        stacked = self.stacked()
        d_reach = float(np.linalg.norm(self.grasp_point() - a))
        d_b = xy_dist(a, b)
        height_above = float(a[2] - self.target_pos()[2])
        lift = float(a[2] - c.cube_a_size / 2)
        terms = {"reach_dist": d_reach, "xy_dist_to_b": d_b, "height_above_b": height_above,
                 "held": float(held), "stacked": float(stacked)}
        success = stacked and not any(self.jaw_contacts(geom))
        # Hysteresis: entering "place" needs A over B's face, leaving it needs A a full edge away,
        # so servo wobble at the boundary does not flip the stage back and forth.
        over_radius = c.cube_b_size if self._stage == 3 else c.cube_b_size / 2
        if success or (d_b < over_radius and (held or stacked)):
            h0 = self.entry_value("height_above", height_above)
            return 3, 0.9 if stacked else 0.9 * (1 - height_above / h0), success, terms
        if held:
            d0 = self.entry_value("dist_b", d_b)
            return 2, 0.2 * np.clip(lift / 0.06, 0, 1) + 0.8 * (1 - d_b / d0), False, terms
        if d_reach < 0.02:
            return 1, self.closing_fraction(np.radians(70), np.radians(28)), False, terms
        return 0, 1 - d_reach / self.entry_value("reach_dist", d_reach), False, terms
