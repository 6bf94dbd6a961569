"""drawer: pull a drawer open by its handle, then put a cube inside it.

Scene: a low cabinet whose drawer (an open-top tray on a slide joint) opens towards the robot; a
handle bar stands 4 cm proud of the drawer front, so closed jaws can hook behind it and pull.
The cube starts on the table beside the cabinet.

Stages: reach_handle (grasp point to the hook point behind the bar), open_drawer (slide travel up
to ``open_threshold``), grasp_cube (reach and close on the cube), transport (carry it over the
drawer's open part), place (lower and release it inside).

Success (geometric): the drawer is open at least ``open_threshold``, the cube's centre lies inside
the tray's inner walls (less a third of the cube) and below their top, and neither jaw touches it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import Task, check_exclude, check_ranges, register_task, set_free_pose, uniform_outside
from .pick_place import cube_body

# Tray (drawer) geometry in the drawer body's frame, metres.
TRAY_INNER = 0.062  # half inner length and width
TRAY_FLOOR = 0.009  # top of the tray's floor
TRAY_TOP = 0.051  # top of the tray's walls
HANDLE_X = -0.116  # handle bar axis (the drawer front's outer face is at -0.068)
HANDLE_Z = 0.035
CABINET_FRONT = -0.075  # front edge of the cabinet roof, relative to the cabinet centre
ROOF_TOP = 0.062
# Closed jaws are two 1 cm pads centred 21 mm from the grasp site along the jaw axis (see
# so101.xml); with yaw 0 that axis is world +x, so this puts the pads mid-way into the gap.
HOOK_SITE_X = -0.089 + 0.021


@dataclass
class DrawerConfig:
    cube_size: float = 0.025
    """Cube edge (m)."""
    cube_mass: float = 0.03
    """Cube mass (kg)."""
    cabinet_x_range: tuple[float, float] = (0.30, 0.32)
    """Forward range (m) of the cabinet centre: the opened drawer must stay inside the arm's reach."""
    cabinet_y_range: tuple[float, float] = (-0.04, 0.04)
    """Sideways range (m) of the cabinet centre."""
    cube_side_offset: tuple[float, float] = (0.11, 0.13)
    """Sideways distance (m) of the cube from the cabinet centre, clear of the drawer's sweep."""
    cube_x_range: tuple[float, float] = (0.15, 0.21)
    """Forward range (m) of the cube."""
    cube_x_exclude: tuple[float, float] | None = None
    """A forward band (m) inside ``cube_x_range`` where the cube is never placed: a layout held out of a
    training recipe that covers the workspace round it (``datasets/drawer_randomised_wide.yaml``)."""
    cube_side_exclude: tuple[float, float] | None = None
    """Likewise a band of ``cube_side_offset`` the cube is never placed in."""
    open_distance: float = 0.075
    """How far (m) the expert pulls the drawer out."""
    open_threshold: float = 0.05
    """Slide travel (m) that counts as open: enough for the cube and the open jaws."""
    drawer_damping: float = 3.0
    """Slide damping (N s/m): a drawer with some drag stays where it is left."""

    def __post_init__(self):
        if not 0 < self.open_threshold <= self.open_distance <= 0.09:
            raise ValueError("need 0 < open_threshold <= open_distance <= 0.09 m (the slide's travel)")
        check_ranges(self, "cabinet_x_range", "cabinet_y_range", "cube_side_offset", "cube_x_range")
        check_exclude(self, "cube_x_range", "cube_x_exclude")
        check_exclude(self, "cube_side_offset", "cube_side_exclude")


def _box(name, pos, size, rgba):
    return (f'<geom name="{name}" type="box" pos="{pos[0]} {pos[1]} {pos[2]}" '
            f'size="{size[0]} {size[1]} {size[2]}" rgba="{rgba}"/>')


@register_task
class DrawerTask(Task):
    name = "drawer"
    stages = ("reach_handle", "open_drawer", "grasp_cube", "transport", "place")
    objects = ("drawer", "cube")
    visual_parts = {"cube": ("cube",), "drawer": ("tray_*",), "cabinet": ("cabinet_*",), "handle": ("handle*",)}
    instruction = "Open the drawer, then put the red cube inside it."

    @staticmethod
    def default_config() -> DrawerConfig:
        return DrawerConfig()

    def worldbody_xml(self) -> str:
        c = self.config
        wood, tray, metal = "0.45 0.3 0.18 1", "0.62 0.45 0.28 1", "0.75 0.75 0.78 1"
        cabinet = "".join([
            _box("cabinet_roof", (0, 0, ROOF_TOP - 0.004), (0.075, 0.078, 0.004), wood),
            _box("cabinet_left", (0, 0.075, 0.027), (0.075, 0.003, 0.027), wood),
            _box("cabinet_right", (0, -0.075, 0.027), (0.075, 0.003, 0.027), wood),
            _box("cabinet_back", (0.078, 0, 0.027), (0.003, 0.078, 0.027), wood),
        ])
        wall_h, wall_z = (TRAY_TOP - TRAY_FLOOR) / 2, (TRAY_TOP + TRAY_FLOOR) / 2
        drawer = "".join([
            _box("tray_floor", (0, 0, 0.006), (0.068, 0.068, 0.003), tray),
            _box("tray_front", (-0.065, 0, wall_z), (0.003, 0.068, wall_h), tray),
            _box("tray_back", (0.065, 0, wall_z), (0.003, 0.068, wall_h), tray),
            _box("tray_left", (0, 0.065, wall_z), (0.068, 0.003, wall_h), tray),
            _box("tray_right", (0, -0.065, wall_z), (0.068, 0.003, wall_h), tray),
            _box("handle_post_l", (-0.0905, 0.028, HANDLE_Z), (0.0225, 0.004, 0.004), metal),
            _box("handle_post_r", (-0.0905, -0.028, HANDLE_Z), (0.0225, 0.004, 0.004), metal),
            f'<geom name="handle" type="capsule" fromto="{HANDLE_X} -0.034 {HANDLE_Z} {HANDLE_X} 0.034 {HANDLE_Z}" '
            f'size="0.006" rgba="{metal}"/>',
        ])
        return (
            f'<body name="cabinet" pos="0.31 0 0">{cabinet}</body>'
            f'<body name="drawer" pos="0.31 0 0">'
            f'<joint name="drawer_slide" type="slide" axis="-1 0 0" range="0 0.09" damping="{c.drawer_damping}" '
            f'frictionloss="0.3"/><inertial pos="0 0 0.02" mass="0.15" diaginertia="0.0003 0.0003 0.0004"/>'
            f'{drawer}</body>'
            + cube_body("cube", c.cube_size, c.cube_mass, "0.85 0.15 0.12 1")
        )

    def extra_xml(self) -> str:
        # The tray slides inside the cabinet on an ideal slide joint; wall-to-wall contacts there
        # would only add solver friction that a real drawer's runners do not have.
        return '<contact><exclude body1="cabinet" body2="drawer"/></contact>'

    def reset(self, rng: np.random.Generator) -> None:
        c = self.config
        cab = np.array([rng.uniform(*c.cabinet_x_range), rng.uniform(*c.cabinet_y_range)])
        self.model.body("cabinet").pos[:2] = cab
        self.model.body("drawer").pos[:2] = cab
        self.data.joint("drawer_slide").qpos[0] = 0.0
        side = -1.0 if cab[1] >= 0 else 1.0
        cube_xy = [uniform_outside(rng, c.cube_x_range, c.cube_x_exclude),
                   cab[1] + side * uniform_outside(rng, c.cube_side_offset, c.cube_side_exclude)]
        set_free_pose(self.data, "cube_joint", [*cube_xy, c.cube_size / 2], rng.uniform(-np.pi / 4, np.pi / 4))
        self._reset_tracking()

    # -- geometry shared by the detectors and the expert ----------------------------------------
    def opening(self) -> float:
        return float(self.data.joint("drawer_slide").qpos[0])

    def hook_point(self) -> np.ndarray:
        """Grasp-site position that puts the closed jaws between the handle bar and the drawer front."""
        return self.data.body("drawer").xpos + [HOOK_SITE_X, 0.0, HANDLE_Z]

    def workspace_xy(self):
        c = self.config
        side = c.cube_side_offset[1] + c.cube_size
        # The cabinet (+-8 cm), the drawer pulled out towards the robot with its handle (~21 cm in
        # front of the cabinet's centre), and the cube beside the cabinet with the open jaw round it.
        x_lo = min(c.cabinet_x_range[0] - 0.21, c.cube_x_range[0] - 0.06)
        x_hi = c.cabinet_x_range[1] + 0.10
        return (x_lo, c.cabinet_y_range[0] - side - 0.06), (x_hi, c.cabinet_y_range[1] + side + 0.06)

    def keep_out_xy(self) -> list[np.ndarray]:
        return [self.data.body("drawer").xpos.copy()]

    def object_pos(self) -> np.ndarray:
        return self.data.body("cube").xpos

    def object_size(self) -> float:
        return self.config.cube_size

    def target_pos(self) -> np.ndarray:
        """Centre of the drawer's exposed part, where the cube should go."""
        drawer = self.data.body("drawer").xpos
        exposed_back = CABINET_FRONT + self.opening()  # roof edge, in the drawer's frame
        x = (-TRAY_INNER + min(exposed_back, TRAY_INNER)) / 2
        return drawer + [x, 0.0, TRAY_FLOOR + self.config.cube_size / 2 + 0.002]

    def roof_point(self) -> np.ndarray:
        return self.data.body("cabinet").xpos + [-0.03, 0.0, ROOF_TOP + self.config.cube_size / 2]

    def is_free_spot(self, xy) -> bool:
        cab = self.data.body("cabinet").xpos
        return abs(xy[1] - cab[1]) > 0.11

    def in_drawer(self) -> bool:
        rel = self.object_pos() - self.data.body("drawer").xpos
        margin = TRAY_INNER - self.config.cube_size / 3
        return abs(rel[0]) < margin and abs(rel[1]) < margin and 0 < rel[2] < TRAY_TOP

    def _measure(self):
        c = self.config
        geom = self.model.geom("cube").id
        cube = self.object_pos()
        held = self.update_held(geom, cube)
        opening = self.opening()
        is_open = opening >= c.open_threshold
        in_drawer = self.in_drawer()
        d_handle = float(np.linalg.norm(self.grasp_point() - self.hook_point()))
        d_reach = float(np.linalg.norm(self.grasp_point() - cube))
        target = self.target_pos()
        d_target = float(np.linalg.norm((cube - target)[:2]))
        terms = {"handle_dist": d_handle, "drawer_opening": opening, "reach_dist": d_reach,
                 "target_dist": d_target, "held": float(held), "in_drawer": float(in_drawer)}
        success = is_open and in_drawer and not any(self.jaw_contacts(geom))
        if not is_open and not in_drawer:
            if opening > 0.004 or d_handle < 0.015:
                return 1, opening / c.open_threshold, False, terms
            return 0, 1 - d_handle / self.entry_value("handle_dist", d_handle), False, terms
        rel = cube - self.data.body("drawer").xpos
        over_tray = abs(rel[0]) < TRAY_INNER and abs(rel[1]) < TRAY_INNER
        if not over_tray and self._stage == 4:  # hysteresis at the tray's outline
            over_tray = abs(rel[0]) < TRAY_INNER + 0.015 and abs(rel[1]) < TRAY_INNER + 0.015
        if success or (over_tray and (held or in_drawer)):
            h = float(cube[2] - target[2])
            return 4, 0.9 if in_drawer else 0.9 * (1 - h / self.entry_value("height", h)), success, terms
        if held:
            return 3, 1 - d_target / self.entry_value("target_dist", d_target), False, terms
        reach = 1 - d_reach / self.entry_value("reach_dist", d_reach)
        closing = self.closing_fraction(np.radians(70), np.radians(28)) if d_reach < 0.02 else 0.0
        return 2, 0.7 * reach + 0.3 * closing, False, terms
