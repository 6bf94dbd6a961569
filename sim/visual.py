"""Visual variation: per-episode appearance of a task scene, for domain randomisation in training and
for held-out looks at evaluation (a real arm never sees the objects, light and camera placement of
its training data).

``VisualConfig`` holds, per option, either a RANGE to draw from each episode or a FIXED value (a
range with low == high, a one-colour palette). Every option defaults to "as compiled", and with all
defaults nothing here runs: the scene's MJCF, the model and every rendered frame are those of a
plain env, bit for bit (tests/sim/test_visual.py holds the hashes).

Appearance and physics stay apart:
- colours, lights, camera poses and surface patterns are edited in the compiled model at reset
  (``geom_rgba``, ``mat_rgba``, ``geom_matid``, ``light_pos/dir/diffuse``, the headlight,
  ``cam_pos/cam_quat``); none of these enters the dynamics or a task's success detector. The
  patterns' textures and materials are compiled in only when a texture option is set, and an
  episode's pattern is a switch of material (every texture is uploaded to the renderer once);
- distractors are extra static bodies, compiled in only when ``distractors`` > 0, whose geoms have
  no collision (contype = conaffinity = 0): the arm would pass through one, so they are placed
  away from everything the task and the arm use (``Task.workspace_xy``), in the front camera's
  view but not between it and the workspace;
- draws come from their own RNG stream per option, derived from the episode seed, never from the
  env's ``np_random``: the object poses of every seed are those of a plain env, and turning one
  option on does not change what another option draws for the same seed.
"""
from __future__ import annotations

import colorsys
import zlib
from dataclasses import dataclass, field

import mujoco
import numpy as np

from .scene import TABLE_CHECKER, TEXTURES

__all__ = ["VisualConfig", "VisualRandomiser", "check_visual_config", "copy_statistics", "distractor_xml",
           "make_visual_config"]

CAMERA_NAMES = ("front", "wrist")
MAX_DISTRACTORS = 8
TOP_LIGHT = "top"
LIGHT_TARGET = np.array([0.2, 0.0, 0.0])
"""Point the overhead lamp aims at whatever its tilt (the middle of the tasks' workspace)."""
NO_TEXTURE = "none"
"""A texture option's name for the compiled surface: the wood checker table, a plain object."""
TABLE_TINT = tuple(float(v) for v in TABLE_CHECKER[0].split())
"""The table's colour when a pattern is drawn without a ``table_colour``: the default wood."""
HIDDEN_GROUP = 3
"""Geom group the renderer's default options do not draw (0-2 are drawn): an unused distractor
shape sits there."""


# -- colour specs ---------------------------------------------------------------------------------
def _rgb(value, where: str) -> np.ndarray:
    arr = np.asarray(value, dtype=float) if isinstance(value, (list, tuple)) else None
    if arr is None or arr.shape != (3,) or not np.all((arr >= 0) & (arr <= 1)):
        raise ValueError(f"{where}={value!r} must be an [r, g, b] colour with each value in [0, 1]")
    return arr


@dataclass(frozen=True)
class ColourSpec:
    """A parsed colour spec: ``kind`` fixed | rgb | hsv | palette, and its numbers."""

    kind: str
    values: tuple

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        v = np.asarray(self.values, dtype=float)
        if self.kind == "fixed":
            return v.copy()
        if self.kind == "palette":
            return v[int(rng.integers(len(v)))].copy()
        x = rng.uniform(v[0], v[1])
        if self.kind == "rgb":
            return x
        return np.array(colorsys.hsv_to_rgb((x[0] % 360.0) / 360.0, x[1], x[2]))

    def contains(self, rgb) -> bool:
        """Whether ``rgb`` can be drawn from this spec (held-out recipes check their colours with it)."""
        rgb, v = np.asarray(rgb, float), np.asarray(self.values, float)
        if self.kind in ("fixed", "palette"):
            return bool(np.any(np.all(np.isclose(v.reshape(-1, 3), rgb, atol=1e-6), axis=1)))
        if self.kind == "rgb":
            return bool(np.all(rgb >= v[0] - 1e-9) and np.all(rgb <= v[1] + 1e-9))
        h, s, val = colorsys.rgb_to_hsv(*rgb)
        hue = (h * 360.0 - v[0][0]) % 360.0 + v[0][0]  # the hue's turn that starts at the low end
        eps = 1e-6
        return bool(hue <= v[1][0] + eps and v[0][1] - eps <= s <= v[1][1] + eps and v[0][2] - eps <= val <= v[1][2] + eps)


def parse_colour(value, where: str) -> ColourSpec:
    """A colour spec from YAML: ``[r, g, b]`` fixed; ``{rgb: [[r,g,b], [r,g,b]]}`` uniform in that box;
    ``{hsv: [[h,s,v], [h,s,v]]}`` uniform in hue (degrees; the interval may run past 360 to wrap,
    [160, 440] is every hue but 80-160), saturation and value; ``{palette: [[r,g,b], ...]}`` one of
    the list, uniformly."""
    if isinstance(value, ColourSpec):
        return value
    if isinstance(value, (list, tuple)):
        return ColourSpec("fixed", tuple(_rgb(value, where)))
    if not (isinstance(value, dict) and len(value) == 1 and next(iter(value)) in ("rgb", "hsv", "palette")):
        raise ValueError(f"{where}={value!r} must be [r, g, b], {{rgb: [low, high]}}, {{hsv: [low, high]}} "
                         "or {palette: [[r, g, b], ...]}")
    kind, body = next(iter(value.items()))
    if kind == "palette":
        if not isinstance(body, (list, tuple)) or not body:
            raise ValueError(f"{where}.palette must be a non-empty list of [r, g, b] colours")
        return ColourSpec("palette", tuple(tuple(_rgb(c, f"{where}.palette[{i}]")) for i, c in enumerate(body)))
    if not (isinstance(body, (list, tuple)) and len(body) == 2):
        raise ValueError(f"{where}.{kind}={body!r} must be a [low, high] pair of triples")
    if kind == "rgb":
        lo, hi = _rgb(body[0], f"{where}.rgb[0]"), _rgb(body[1], f"{where}.rgb[1]")
    else:
        lo, hi = (np.asarray(b, float) if isinstance(b, (list, tuple)) and len(b) == 3 else None for b in body)
        if lo is None or hi is None:
            raise ValueError(f"{where}.hsv={body!r} must be [[h, s, v], [h, s, v]]")
        if hi[0] - lo[0] > 360 or not np.all((lo[1:] >= 0) & (hi[1:] <= 1)):
            raise ValueError(f"{where}.hsv={body!r}: hue spans at most 360 deg, saturation and value lie in [0, 1]")
    if np.any(lo > hi):
        raise ValueError(f"{where}.{kind}={body!r} must have low <= high in every channel")
    return ColourSpec(kind, (tuple(lo), tuple(hi)))


def _patterns(value, where: str) -> tuple[str, ...]:
    """None (no option), a pattern name or a list of them (one drawn per episode), from ``TEXTURES``
    or ``none``."""
    if value is None:
        return ()
    names = [value] if isinstance(value, str) else value
    allowed = (*TEXTURES, NO_TEXTURE)
    if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{where}={value!r} must be a pattern name or a non-empty list of them: {', '.join(allowed)}")
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise ValueError(f"{where}: unknown pattern {unknown[0]!r}; patterns: {', '.join(allowed)}")
    return tuple(names)


def _range(value, where: str, low: float = -np.inf, high: float = np.inf) -> tuple[float, float] | None:
    """None, a number (fixed) or a [low, high] pair, inside [low, high]."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = (value, value)
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value) or value[0] > value[1]):
        raise ValueError(f"{where}={value!r} must be a number or a [low, high] pair with low <= high")
    if value[0] < low or value[1] > high:
        raise ValueError(f"{where}={list(value)} must lie in [{low:g}, {high:g}]")
    return float(value[0]), float(value[1])


def _per_camera(value, where: str, n: int, low: float, high: float) -> dict[str, np.ndarray]:
    """{camera: number} (n == 1) or {camera: [x, y, z]} (n == 3) for the known cameras."""
    if not isinstance(value, dict):
        raise ValueError(f"{where}={value!r} must map camera names ({', '.join(CAMERA_NAMES)}) to values")
    out = {}
    for cam, v in value.items():
        if cam not in CAMERA_NAMES:
            raise ValueError(f"{where}: unknown camera {cam!r}; cameras: {', '.join(CAMERA_NAMES)}")
        numeric = isinstance(v, (int, float, list, tuple)) and not isinstance(v, bool)
        arr = np.atleast_1d(np.asarray(v, dtype=float)) if numeric else None
        if arr is None or arr.shape != (n,) or not np.all((arr >= low) & (arr <= high)):
            shape = "a number" if n == 1 else "[x, y, z]"
            raise ValueError(f"{where}.{cam}={v!r} must be {shape} with values in [{low:g}, {high:g}]")
        out[cam] = arr
    return out


# -- the config -------------------------------------------------------------------------------------
@dataclass
class VisualConfig:
    """Appearance of a task scene, drawn per episode from the episode's seed. Ranges are
    ``[low, high]`` (a single number is a fixed value); colours are colour specs (``parse_colour``):
    ``[r, g, b]``, ``{rgb: [low, high]}``, ``{hsv: [low, high]}`` or ``{palette: [...]}``.
    Every default keeps the compiled scene as it is."""

    object_colours: dict = field(default_factory=dict)
    """Colour spec per task part (``Task.visual_parts``: pick_place cube, bowl; stack cube_a, cube_b;
    drawer cube, drawer, cabinet, handle); parts not listed keep their colour. The task's instruction
    text ("the red cube") is not changed."""
    table_colour: list | dict | None = None
    """Colour spec of the table; the table is then a faint checker of that colour. None keeps the
    default wood-coloured checker."""
    table_texture: str | list | None = None
    """Surface pattern of the table, one drawn per episode from a name or a list of names:
    ``checker`` (faint), ``bold_checker``, ``grid``, ``cross``, ``noise``, ``gradient``
    (``sim.scene.TEXTURES``) or ``none`` (the compiled wood checker); tinted by ``table_colour``
    (the default wood colour when that is None). None keeps the compiled table."""
    object_texture: str | list | None = None
    """Surface pattern of every task part (``object_colours``' parts), drawn per episode and part
    from a name or a list of names as ``table_texture`` (``none`` = plain), tinted by the part's
    colour. None keeps the objects plain."""
    light_intensity: float | list | None = None
    """Scale of the diffuse light (the overhead lamp and the camera headlight); 1 = the default scene."""
    light_ambient: float | list | None = None
    """Ambient light level in [0, 1] (the default scene has 0.45)."""
    light_tilt_deg: float | list | None = None
    """Tilt of the overhead lamp from vertical (deg, 0..80); it stays aimed at the workspace."""
    light_azimuth_deg: float | list | None = None
    """Side the tilted lamp shines from (deg about z, 0 = +x, away from the robot; 90 = +y, the
    robot's left); None with a tilt = any side."""
    light_colour: list | dict | None = None
    """Colour spec multiplied into every light (a tint); None = white."""
    camera_jitter_pos_m: dict = field(default_factory=dict)
    """Per camera (front, wrist), the largest shift (m) of its position along each of its own axes,
    drawn uniformly in +-that; the wrist camera is on the gripper, keep it to a few mm."""
    camera_jitter_deg: dict = field(default_factory=dict)
    """Per camera, the largest rotation (deg) about each of its own axes (tilt, pan, roll)."""
    camera_offset_pos_m: dict = field(default_factory=dict)
    """Per camera, a fixed shift [right, up, back] (m) in the camera's own frame (held-out placements)."""
    camera_offset_deg: dict = field(default_factory=dict)
    """Per camera, a fixed rotation [tilt up, pan left, roll] (deg) about its own axes."""
    distractors: int | list = 0
    """Number of distractor objects (static boxes and cylinders of random colour, no collision,
    placed clear of the task): a number, or [low, high] drawn per episode; at most 8."""
    distractor_size_m: tuple[float, float] = (0.02, 0.05)
    """Range of a distractor's width and, separately, its height (m)."""
    distractor_colour: list | dict = field(default_factory=lambda: {"rgb": [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]})
    """Colour spec of each distractor."""

    def __post_init__(self):
        if not isinstance(self.object_colours, dict):
            raise ValueError(f"object_colours={self.object_colours!r} must map task parts to colour specs")
        self._objects = {str(k): parse_colour(v, f"object_colours.{k}") for k, v in self.object_colours.items()}
        self._table = None if self.table_colour is None else parse_colour(self.table_colour, "table_colour")
        self._tint = None if self.light_colour is None else parse_colour(self.light_colour, "light_colour")
        self._table_patterns = _patterns(self.table_texture, "table_texture")
        self._object_patterns = _patterns(self.object_texture, "object_texture")
        self._intensity = _range(self.light_intensity, "light_intensity", 0.0, 3.0)
        self._ambient = _range(self.light_ambient, "light_ambient", 0.0, 1.0)
        self._tilt = _range(self.light_tilt_deg, "light_tilt_deg", 0.0, 80.0)
        self._azimuth = _range(self.light_azimuth_deg, "light_azimuth_deg", -360.0, 720.0)
        if self._azimuth is not None and self._tilt is None:
            raise ValueError("light_azimuth_deg needs light_tilt_deg (an untilted lamp has no side)")
        self._jitter_pos = _per_camera(self.camera_jitter_pos_m, "camera_jitter_pos_m", 1, 0.0, 0.2)
        self._jitter_rot = _per_camera(self.camera_jitter_deg, "camera_jitter_deg", 1, 0.0, 30.0)
        self._offset_pos = _per_camera(self.camera_offset_pos_m, "camera_offset_pos_m", 3, -0.3, 0.3)
        self._offset_rot = _per_camera(self.camera_offset_deg, "camera_offset_deg", 3, -45.0, 45.0)
        count = _range(self.distractors, "distractors", 0, MAX_DISTRACTORS)
        if count is None or not all(float(c).is_integer() for c in count):
            raise ValueError(f"distractors={self.distractors!r} must be a whole number or a [low, high] pair "
                             f"in [0, {MAX_DISTRACTORS}]")
        self._count = (int(count[0]), int(count[1]))
        self._size = _range(self.distractor_size_m, "distractor_size_m", 0.005, 0.08)
        self._distractor_colour = parse_colour(self.distractor_colour, "distractor_colour")

    @property
    def max_distractors(self) -> int:
        """Distractor bodies compiled into the scene."""
        return self._count[1]

    @property
    def texture_names(self) -> tuple[str, ...]:
        """Patterns whose texture and materials the scene compiles in (``scene.texture_assets``)."""
        return tuple(n for n in TEXTURES if n in self._table_patterns or n in self._object_patterns)

    @property
    def is_default(self) -> bool:
        """True when no option is set: the scene renders exactly as a plain env's."""
        return not (self._objects or self._table or self._tint or self._intensity or self._ambient or self._tilt
                    or self._jitter_pos or self._jitter_rot or self._offset_pos or self._offset_rot or self._count[1]
                    or self._table_patterns or self._object_patterns)


def make_visual_config(value=None) -> VisualConfig:
    """A VisualConfig from a VisualConfig, a dict of options (YAML) or None; bad keys and values are
    one-line ConfigErrors naming the option."""
    from roboreward.config import ConfigError, from_dict

    if isinstance(value, VisualConfig):
        return value
    try:
        return from_dict(VisualConfig, value or {}, where="visual")
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"visual: {exc}") from None


def check_visual_config(task: str, value) -> VisualConfig:
    """``make_visual_config`` plus the checks that need the task (its part names), so a recipe's
    mistakes surface before anything is generated."""
    from roboreward.config import ConfigError

    from .tasks import TASKS

    config = make_visual_config(value)
    parts = TASKS[task].visual_parts
    unknown = sorted(set(config._objects) - set(parts))
    if unknown:
        raise ConfigError(f"visual.object_colours: unknown part {unknown[0]!r} for task {task}; "
                          f"parts: {', '.join(sorted(parts))}")
    return config


def distractor_xml(n: int, size: float) -> str:
    """``n`` static distractor bodies, each with a box and a cylinder (one drawn, one hidden per
    episode), compiled at the largest size so the model's bounding radii cover every draw. No
    collision: contype = conaffinity = 0."""
    h = size / 2
    return "".join(
        f'<body name="distractor{i}" pos="0 0 {-1 - i}">'
        f'<geom name="distractor{i}_box" type="box" size="{h} {h} {h}" contype="0" conaffinity="0" rgba="0.5 0.5 0.5 1"/>'
        f'<geom name="distractor{i}_cylinder" type="cylinder" size="{h} {h}" contype="0" conaffinity="0" '
        f'group="{HIDDEN_GROUP}" rgba="0.5 0.5 0.5 1"/></body>'
        for i in range(n)
    )


def copy_statistics(source: mujoco.MjModel, target: mujoco.MjModel) -> None:
    """Give ``target`` the bounding statistics (centre, extent, mean sizes) of ``source``: they set
    the cameras' clipping planes and visual scales, and distractor bodies must not move them."""
    target.stat.center[:] = source.stat.center
    for name in ("extent", "meaninertia", "meanmass", "meansize"):
        setattr(target.stat, name, getattr(source.stat, name))


# -- small geometry helpers ---------------------------------------------------------------------------
def _quat_mul(a, b) -> np.ndarray:
    w1, x1, y1, z1 = a
    w2, x2, y2, z2 = b
    return np.array([w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2, w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
                     w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2, w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2])


def _axis_quat(axis: int, angle_rad: float) -> np.ndarray:
    q = np.zeros(4)
    q[0] = np.cos(angle_rad / 2)
    q[1 + axis] = np.sin(angle_rad / 2)
    return q


def _quat_mat(q) -> np.ndarray:
    mat = np.zeros(9)
    mujoco.mju_quat2Mat(mat, np.asarray(q, float))
    return mat.reshape(3, 3)


def camera_rotation(tilt_pan_roll_deg) -> np.ndarray:
    """Quaternion of a rotation in a camera's own frame: pan about its up axis (y), then tilt about
    its right axis (x), then roll about its viewing axis (z); +tilt looks up, +pan looks left."""
    tilt, pan, roll = np.radians(np.asarray(tilt_pan_roll_deg, float))
    return _quat_mul(_quat_mul(_axis_quat(1, pan), _axis_quat(0, tilt)), _axis_quat(2, roll))


def _cross(a, b) -> float:
    return float(a[0] * b[1] - a[1] * b[0])


def _hull(points: np.ndarray) -> np.ndarray:
    """Convex hull (counter-clockwise) of a few 2-D points (Andrew's monotone chain)."""
    pts = sorted(map(tuple, points))

    def half(seq):
        out: list = []
        for p in seq:
            while len(out) >= 2 and _cross(np.subtract(out[-1], out[-2]), np.subtract(p, out[-2])) <= 0:
                out.pop()
            out.append(p)
        return out

    lower, upper = half(pts), half(reversed(pts))
    return np.array(lower[:-1] + upper[:-1])


def _outside_by(hull: np.ndarray, p: np.ndarray) -> float:
    """How far ``p`` lies outside a convex counter-clockwise polygon (0 inside)."""
    edges = list(zip(hull, np.roll(hull, -1, axis=0)))
    if all(_cross(b - a, p - a) >= 0 for a, b in edges):
        return 0.0
    return min(float(np.linalg.norm(p - (a + np.clip((p - a) @ (b - a) / ((b - a) @ (b - a)), 0.0, 1.0) * (b - a))))
               for a, b in edges)


# -- applying it to a model ---------------------------------------------------------------------------
class VisualRandomiser:
    """Applies a VisualConfig to one compiled scene at each reset. Remembers the compiled values of
    every field it edits and starts each episode from them, so nothing accumulates across resets."""

    def __init__(self, model: mujoco.MjModel, task, config: VisualConfig):
        self.model, self.task, self.config = model, task, config
        parts = type(task).visual_parts
        unknown = sorted(set(config._objects) - set(parts))
        if unknown:
            raise ValueError(f"visual.object_colours: unknown part {unknown[0]!r} for task {task.name}; "
                             f"parts: {', '.join(sorted(parts))}")
        names = {model.geom(i).name: i for i in range(model.ngeom)}
        self.part_geoms = {
            part: [i for name, i in names.items() if any(name == p or (p.endswith("*") and name.startswith(p[:-1]))
                                                          for p in patterns)]
            for part, patterns in parts.items()
        }
        self._mat_rgba = model.mat_rgba.copy()
        self._light = model.light(TOP_LIGHT).id
        self._light_pos = model.light_pos[self._light].copy()
        self._light_dir = model.light_dir[self._light].copy()
        self._light_diffuse = model.light_diffuse[self._light].copy()
        self._head_diffuse = np.array(model.vis.headlight.diffuse)
        self._head_ambient = np.array(model.vis.headlight.ambient)
        self._cams = {c: model.camera(c).id for c in CAMERA_NAMES}
        self._cam_pos = model.cam_pos.copy()
        self._cam_quat = model.cam_quat.copy()
        self._table_mat = model.material("table_mat").id
        self._table_geom = model.geom("table").id
        self._patterns = {n: (model.material(f"table_{n}").id, model.material(f"object_{n}").id) for n in config.texture_names}
        self._distractors = [
            (model.body(f"distractor{i}").id, model.geom(f"distractor{i}_box").id, model.geom(f"distractor{i}_cylinder").id)
            for i in range(config.max_distractors)
        ]
        # Only what this class owns is restored each episode: a task moves its own static bodies
        # (the bowl, the cabinet) at reset, before this runs.
        self._distractor_bodies = [body for body, _, _ in self._distractors]
        self._distractor_geoms = [g for _, box, cyl in self._distractors for g in (box, cyl)]
        self._owned_geoms = sorted({g for ids in self.part_geoms.values() for g in ids} | set(self._distractor_geoms))
        self._geom_rgba = model.geom_rgba[self._owned_geoms].copy()
        self._geom_matid = model.geom_matid[self._owned_geoms].copy()
        self._body_pos = model.body_pos[self._distractor_bodies].copy()
        self._body_quat = model.body_quat[self._distractor_bodies].copy()
        self._geom_size = model.geom_size[self._distractor_geoms].copy()

    @staticmethod
    def stream(seed: int, episode: int, option: str) -> np.random.Generator:
        """The RNG of one option for one episode: its own stream, so options never shift each other's
        draws (nor the env's object poses)."""
        return np.random.default_rng(np.random.SeedSequence([int(seed), int(episode), zlib.crc32(option.encode())],
                                                            spawn_key=(0x715A1,)))

    def apply(self, seed: int, episode: int = 0) -> dict:
        """Draw this episode's appearance, write it into the model (before ``mj_forward``) and return
        what was drawn (JSON), option by option."""
        m, c = self.model, self.config
        m.geom_rgba[self._owned_geoms] = self._geom_rgba
        m.geom_matid[self._owned_geoms] = self._geom_matid
        m.geom_matid[self._table_geom] = self._table_mat
        m.mat_rgba[:] = self._mat_rgba
        out: dict = {}
        if c._objects:
            rng = self.stream(seed, episode, "object_colours")
            out["object_colours"] = {}
            for part in sorted(c._objects):
                rgb = c._objects[part].sample(rng)
                m.geom_rgba[self.part_geoms[part], :3] = rgb
                out["object_colours"][part] = _floats(rgb)
        if c._object_patterns:
            rng = self.stream(seed, episode, "object_texture")
            out["object_texture"] = {}
            for part in sorted(self.part_geoms):
                name = c._object_patterns[int(rng.integers(len(c._object_patterns)))]
                if name != NO_TEXTURE:  # the part's own rgba tints the pattern
                    m.geom_matid[self.part_geoms[part]] = self._patterns[name][1]
                out["object_texture"][part] = name
        table_mat = self._table_mat
        if c._table_patterns:
            name = c._table_patterns[int(self.stream(seed, episode, "table_texture").integers(len(c._table_patterns)))]
            if name != NO_TEXTURE:
                table_mat = self._patterns[name][0]
                m.geom_matid[self._table_geom] = table_mat
                m.mat_rgba[table_mat, :3] = TABLE_TINT
            out["table_texture"] = name
        if c._table is not None:
            rgb = c._table.sample(self.stream(seed, episode, "table_colour"))
            m.mat_rgba[table_mat, :3] = rgb
            out["table_colour"] = _floats(rgb)
        out.update(self._lights(seed, episode))
        out.update(self._cameras(seed, episode))
        if c.max_distractors:
            out["distractors"] = self._place_distractors(self.stream(seed, episode, "distractors"))
        return out

    def _lights(self, seed: int, episode: int) -> dict:
        m, c = self.model, self.config
        if not (c._intensity or c._ambient or c._tilt or c._tint):
            return {}
        rng = self.stream(seed, episode, "light")
        out: dict = {}
        scale = rng.uniform(*c._intensity) if c._intensity else 1.0
        tint = c._tint.sample(rng) if c._tint else np.ones(3)
        ambient = (np.full(3, rng.uniform(*c._ambient)) if c._ambient else self._head_ambient.astype(float)) * tint
        m.light_diffuse[self._light] = self._light_diffuse * scale * tint
        m.vis.headlight.diffuse[:] = self._head_diffuse * scale * tint
        m.vis.headlight.ambient[:] = ambient
        pos, direction = self._light_pos.copy(), self._light_dir.copy()
        if c._tilt:
            tilt = np.radians(rng.uniform(*c._tilt))
            azimuth = np.radians(rng.uniform(*c._azimuth)) if c._azimuth else rng.uniform(0, 2 * np.pi)
            towards_lamp = np.array([np.sin(tilt) * np.cos(azimuth), np.sin(tilt) * np.sin(azimuth), np.cos(tilt)])
            pos = LIGHT_TARGET + np.linalg.norm(self._light_pos - LIGHT_TARGET) * towards_lamp
            direction = -towards_lamp
            out.update(light_tilt_deg=float(np.degrees(tilt)), light_azimuth_deg=float(np.degrees(azimuth)))
        m.light_pos[self._light], m.light_dir[self._light] = pos, direction
        out.update(light_intensity=float(scale), light_ambient=_floats(ambient),
                   light_colour=_floats(tint), light_pos=_floats(pos), light_dir=_floats(direction))
        return out

    def _cameras(self, seed: int, episode: int) -> dict:
        m, c = self.model, self.config
        m.cam_pos[:] = self._cam_pos
        m.cam_quat[:] = self._cam_quat
        out: dict = {}
        for cam in CAMERA_NAMES:
            jp, jr = c._jitter_pos.get(cam), c._jitter_rot.get(cam)
            op, orot = c._offset_pos.get(cam), c._offset_rot.get(cam)
            if jp is None and jr is None and op is None and orot is None:
                continue
            rng = self.stream(seed, episode, f"camera:{cam}")
            shift = (op if op is not None else np.zeros(3)) + (rng.uniform(-jp[0], jp[0], 3) if jp is not None else 0.0)
            turn = (orot if orot is not None else np.zeros(3)) + (rng.uniform(-jr[0], jr[0], 3) if jr is not None else 0.0)
            i = self._cams[cam]
            q0 = self._cam_quat[i]
            m.cam_pos[i] = self._cam_pos[i] + _quat_mat(q0) @ shift
            quat = _quat_mul(q0, camera_rotation(turn))
            m.cam_quat[i] = quat / np.linalg.norm(quat)
            out[cam] = {"shift_m": _floats(shift), "rotation_deg": _floats(turn),
                        "pos": _floats(m.cam_pos[i]), "quat": _floats(m.cam_quat[i])}
        return {"cameras": out} if out else {}

    def _place_distractors(self, rng: np.random.Generator) -> list[dict]:
        """Put distractors where nothing uses the table: outside the task's workspace (grown by the
        object's radius and a margin), off the arm's base, in the front camera's view (its compiled
        pose) and not between that camera and the workspace. A distractor with no such spot left
        after a few hundred draws stays hidden, as do those beyond this episode's count (the list
        holds the placed ones)."""
        m, c = self.model, self.config
        m.body_pos[self._distractor_bodies] = self._body_pos
        m.body_quat[self._distractor_bodies] = self._body_quat
        m.geom_size[self._distractor_geoms] = self._geom_size
        m.geom_group[self._distractor_geoms] = HIDDEN_GROUP  # shown below, one shape per placed distractor
        lo, hi = (np.asarray(v, float) for v in self.task.workspace_xy())
        front = self._cams["front"]
        cam_pos, cam_rot = self._cam_pos[front], _quat_mat(self._cam_quat[front])
        view = np.tan(np.radians(m.cam_fovy[front]) / 2) * 0.85
        corridor = _hull(np.array([cam_pos[:2], lo, hi, [lo[0], hi[1]], [hi[0], lo[1]]]))
        n = int(rng.integers(c._count[0], c._count[1] + 1))
        placed: list[dict] = []
        taken: list[tuple[np.ndarray, float]] = []  # (xy, radius) of those placed
        for k, (body, box, cyl) in enumerate(self._distractors):
            if k >= n:
                break
            width, height = rng.uniform(*c._size), rng.uniform(*c._size)
            shape = "box" if rng.random() < 0.5 else "cylinder"
            rgb = c._distractor_colour.sample(rng)
            yaw = rng.uniform(-np.pi / 4, np.pi / 4)
            radius = width / np.sqrt(2) if shape == "box" else width / 2
            spot = None
            for _ in range(300):
                xy = np.array([rng.uniform(-0.10, 0.50), rng.uniform(-0.36, 0.36)])
                if np.all(xy > lo - radius - 0.02) and np.all(xy < hi + radius + 0.02):
                    continue  # on the task's workspace
                if np.linalg.norm(xy - [0.03, 0.0]) < 0.12 + radius:
                    continue  # on the arm's base
                if _outside_by(corridor, xy) < radius + 0.01:
                    continue  # between the front camera and the workspace
                if any(np.linalg.norm(xy - q) < radius + r + 0.015 for q, r in taken):
                    continue
                rel = cam_rot.T @ (np.array([xy[0], xy[1], height / 2]) - cam_pos)
                if rel[2] >= 0 or abs(rel[0] / -rel[2]) > view or abs(rel[1] / -rel[2]) > view:
                    continue  # out of the front camera's picture
                spot = xy
                break
            if spot is None:
                continue
            shown = box if shape == "box" else cyl
            m.geom_group[shown] = 0
            m.geom_size[shown] = [width / 2, width / 2, height / 2] if shape == "box" else [width / 2, height / 2, 0]
            m.geom_rgba[shown, :3] = rgb
            m.body_pos[body] = [spot[0], spot[1], height / 2]
            m.body_quat[body] = [np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)]
            placed.append({"shape": shape, "pos": _floats(m.body_pos[body]), "size_m": _floats([width, height]),
                           "yaw_deg": float(np.degrees(yaw)), "colour": _floats(rgb)})
            taken.append((spot, radius))
        return placed


def _floats(values) -> list[float]:
    return [float(v) for v in np.asarray(values, dtype=float).reshape(-1)]
