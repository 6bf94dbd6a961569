"""pick_place: pick up a cube and put it in a bowl.

Stages: reach (grasp point to the cube), grasp (jaw closing until both jaws hold it), transport
(lift it and carry it over the bowl), place (lower it into the bowl and let go).

Success (geometric): the cube's centre lies inside the bowl's inner radius (less a margin of a
third of the cube), below the bowl's rim, and neither jaw touches it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import Task, check_exclude, check_ranges, register_task, sample_apart, set_free_pose, uniform_outside, xy_dist

__all__ = ["PickPlaceConfig", "PickPlaceTask", "bowl_geoms", "cube_body"]


@dataclass
class PickPlaceConfig:
    cube_size: float = 0.025
    """Cube edge length (m); the SO-101 jaw comfortably holds 2-4 cm."""
    cube_mass: float = 0.03
    """Cube mass (kg), a light plastic block."""
    bowl_inner_radius: float = 0.048
    """Bowl inner radius (m)."""
    bowl_height: float = 0.03
    """Bowl rim height above the table (m)."""
    x_range: tuple[float, float] = (0.15, 0.25)
    """Forward range (m from the base) for cube and bowl centres: inside the arm's top-down reach."""
    y_range: tuple[float, float] = (-0.13, 0.13)
    """Sideways range (m) for cube and bowl centres."""
    min_separation: float = 0.11
    """Minimum distance (m) between cube and bowl centres, so the cube never starts in the bowl."""
    cube_yaw_deg: float = 45.0
    """The cube's yaw is drawn from +-this (deg)."""
    cube_y_range: tuple[float, float] | None = None
    """Sideways range (m) of the cube alone; None = ``y_range``. With ``bowl_y_range`` it keeps the two
    on fixed sides, a narrower task family (the scripted grasp's wrist roll then varies smoothly)."""
    bowl_y_range: tuple[float, float] | None = None
    """Sideways range (m) of the bowl alone; None = ``y_range``."""
    x_exclude: tuple[float, float] | None = None
    """A forward band (m) inside ``x_range`` where no object centre is drawn: a layout held out of a
    training recipe that covers the workspace around it (``datasets/stack_randomised_wide.yaml``)."""

    def __post_init__(self):
        if not 0.015 <= self.cube_size <= 0.04:
            raise ValueError(f"cube_size={self.cube_size} must be in [0.015, 0.04] m (the jaw's span)")
        if self.bowl_inner_radius <= self.cube_size:
            raise ValueError("bowl_inner_radius must exceed cube_size so the cube fits")
        if not 0.0 <= self.cube_yaw_deg <= 45.0:
            raise ValueError(f"cube_yaw_deg={self.cube_yaw_deg} must be in [0, 45]")
        check_ranges(self, "x_range", "y_range", "cube_y_range", "bowl_y_range")
        check_exclude(self, "x_range", "x_exclude")


def bowl_geoms(radius: float, height: float, rgba: str, segments: int = 16) -> str:
    """A bowl from primitives: a thin disc and a ring of wall boxes (MuJoCo has no concave primitive)."""
    wall = 0.005
    seg_len = 2 * np.pi * (radius + wall) / segments / 2 * 1.08
    parts = [
        f'<geom name="bowl_base" type="cylinder" size="{radius + wall:.4f} 0.002" pos="0 0 0.002" rgba="{rgba}"/>'
    ]
    for i in range(segments):
        a = 2 * np.pi * i / segments
        c, s = np.cos(a), np.sin(a)
        parts.append(
            f'<geom name="bowl_wall{i}" type="box" size="{wall:.4f} {seg_len:.4f} {height / 2:.4f}" '
            f'pos="{(radius + wall) * c:.4f} {(radius + wall) * s:.4f} {height / 2:.4f}" '
            f'euler="0 0 {a:.4f}" rgba="{rgba}"/>'
        )
    return "\n".join(parts)


def cube_body(name: str, size: float, mass: float, rgba: str) -> str:
    h = size / 2
    return (
        f'<body name="{name}" pos="0.2 0 {h}"><freejoint name="{name}_joint"/>'
        f'<geom name="{name}" type="box" size="{h} {h} {h}" mass="{mass}" rgba="{rgba}" condim="4" '
        f'friction="1.2 0.02 0.001" solref="0.004 1" solimp="0.95 0.99 0.001"/></body>'
    )


@register_task
class PickPlaceTask(Task):
    name = "pick_place"
    stages = ("reach", "grasp", "transport", "place")
    objects = ("cube", "bowl")
    visual_parts = {"cube": ("cube",), "bowl": ("bowl_*",)}
    instruction = "Pick up the red cube and place it in the bowl."

    @staticmethod
    def default_config() -> PickPlaceConfig:
        return PickPlaceConfig()

    def worldbody_xml(self) -> str:
        c = self.config
        return (
            cube_body("cube", c.cube_size, c.cube_mass, "0.85 0.15 0.12 1")
            + f'<body name="bowl" pos="0.2 0.1 0">{bowl_geoms(c.bowl_inner_radius, c.bowl_height, "0.2 0.45 0.85 1")}</body>'
        )

    def reset(self, rng: np.random.Generator) -> None:
        c = self.config
        cube_xy, bowl_xy = sample_apart(
            rng, [lambda r, y=y: [uniform_outside(r, c.x_range, c.x_exclude), r.uniform(*y)] for y in
                  (c.cube_y_range or c.y_range, c.bowl_y_range or c.y_range)], c.min_separation, 2
        )
        yaw = np.radians(c.cube_yaw_deg)
        set_free_pose(self.data, "cube_joint", [*cube_xy, c.cube_size / 2], rng.uniform(-yaw, yaw))
        self.model.body("bowl").pos[:2] = bowl_xy
        self._reset_tracking()

    def workspace_xy(self):
        c = self.config
        ys = [v for r in (c.y_range, c.cube_y_range, c.bowl_y_range) if r is not None for v in r]
        # Margin: the bowl's outer radius, or the open jaw (~6 cm) swinging round the cube; a
        # suboptimal demo's detour carries up to 7 cm sideways.
        mx, my = c.bowl_inner_radius + 0.04, c.bowl_inner_radius + 0.07
        return (c.x_range[0] - mx, min(ys) - my), (c.x_range[1] + mx, max(ys) + my)

    # The expert and the detectors share these geometric facts.
    def keep_out_xy(self) -> list[np.ndarray]:
        return [self.data.body("bowl").xpos.copy()]

    def object_pos(self) -> np.ndarray:
        return self.data.body("cube").xpos

    def target_pos(self) -> np.ndarray:
        """Where the cube's centre should end up."""
        return self.data.body("bowl").xpos + [0, 0, self.config.cube_size / 2 + 0.004]

    def object_size(self) -> float:
        return self.config.cube_size

    def is_free_spot(self, xy) -> bool:
        """Whether a table spot is clear of the bowl (for the wrong_place failure)."""
        return xy_dist(xy, self.data.body("bowl").xpos) > self.config.bowl_inner_radius + 0.04

    def in_bowl(self) -> bool:
        c, cube = self.config, self.object_pos()
        bowl = self.data.body("bowl").xpos
        return xy_dist(cube, bowl) < c.bowl_inner_radius - c.cube_size / 3 and cube[2] < c.bowl_height + 0.5 * c.cube_size

    def _measure(self):
        c = self.config
        cube_geom = self.model.geom("cube").id
        cube = self.object_pos()
        held = self.update_held(cube_geom, cube)
        touching = any(self.jaw_contacts(cube_geom))
        in_bowl = self.in_bowl()
        d_reach = float(np.linalg.norm(self.grasp_point() - cube))
        d_bowl = xy_dist(cube, self.data.body("bowl").xpos)
        lift = cube[2] - c.cube_size / 2
        terms = {
            "reach_dist": d_reach,
            "bowl_dist": d_bowl,
            "lift_height": float(lift),
            "held": float(held),
            "in_bowl": float(in_bowl),
        }
        success = in_bowl and not touching
        # Hysteresis: the cube must be well inside the rim to enter "place", and leave the bowl's
        # outline to drop back to "transport".
        over_bowl = d_bowl < (c.bowl_inner_radius + 0.01 if self._stage == 3 else c.bowl_inner_radius - c.cube_size / 3)
        if success or (over_bowl and (held or in_bowl)):
            carry = self.entry_value("carry_height", lift)
            return 3, 0.9 * (1 - lift / carry) if not in_bowl else 0.9, success, terms
        if held:
            d0 = self.entry_value("bowl_dist", d_bowl)
            lift_frac = np.clip(lift / 0.04, 0, 1)
            return 2, 0.2 * lift_frac + 0.8 * (1 - d_bowl / d0), False, terms
        if d_reach < 0.02:
            return 1, self.closing_fraction(np.radians(70), np.radians(28)), False, terms
        d0 = self.entry_value("reach_dist", d_reach)
        return 0, 1 - d_reach / d0, False, terms
