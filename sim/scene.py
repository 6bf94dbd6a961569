"""Scene assembly: the SO-101 model, a table, lights, the fixed front camera and a task's objects.

A task contributes MJCF fragments (``<asset>`` and ``<worldbody>`` children); everything that every
task shares (timestep, rendering quality, table, cameras) lives here so the tasks stay short.
"""
from __future__ import annotations

import numpy as np

from .robot import MODEL_PATH

# Fixed scene camera: in front of the arm and to its right, looking back at the workspace so the arm
# and the objects both stay in view at any pose the tasks use.
FRONT_CAMERA_POS = (0.56, -0.26, 0.44)
FRONT_CAMERA_TARGET = (0.16, 0.0, 0.07)


def lookat_xyaxes(pos, target, up=(0.0, 0.0, 1.0)) -> str:
    """MJCF ``xyaxes`` for a camera at ``pos`` looking at ``target`` (MuJoCo cameras look along -z)."""
    forward = np.asarray(target, float) - np.asarray(pos, float)
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, up)
    right /= np.linalg.norm(right)
    cam_up = np.cross(right, forward)
    return " ".join(f"{v:.5f}" for v in (*right, *cam_up))


TABLE_CHECKER = ("0.78 0.72 0.62", "0.74 0.68 0.58")
"""The table's checker colours: light wood."""
NEUTRAL_CHECKER = ("1 1 1", "0.94 0.94 0.94")
"""A faint grey-white checker, tinted to any colour by the table material's rgba (visual variation)."""


TEXTURES = {
    # name: (texture attributes, table texrepeat, object texrepeat per metre). Neutral light greys,
    # so a material's colour (the table colour, an object's colour) tints them as it tints the
    # plain checker.
    "checker": (f'builtin="checker" rgb1="{NEUTRAL_CHECKER[0]}" rgb2="{NEUTRAL_CHECKER[1]}"', "8 8", "40 40"),
    "bold_checker": ('builtin="checker" rgb1="1 1 1" rgb2="0.62 0.62 0.62"', "8 8", "40 40"),
    "grid": ('builtin="flat" rgb1="1 1 1" mark="edge" markrgb="0.55 0.55 0.55"', "10 10", "60 60"),
    "cross": ('builtin="flat" rgb1="1 1 1" mark="cross" markrgb="0.6 0.6 0.6"', "6 6", "40 40"),
    "noise": ('builtin="flat" rgb1="1 1 1" mark="random" random="0.3" markrgb="0.55 0.55 0.55"', "3 3", "8 8"),
    "gradient": ('builtin="gradient" rgb1="1 1 1" rgb2="0.5 0.5 0.5"', "1 1", "10 10"),
}
"""Surface patterns of the texture options (``visual.table_texture`` / ``object_texture``), each
compiled as one texture and two materials, ``table_<name>`` and ``object_<name>`` (uniform mapping
on objects, so a 3 cm cube shows a few tiles), only into scenes that use texture options."""


def texture_assets(names) -> str:
    """MJCF ``<asset>`` children for the texture patterns ``names`` (see ``TEXTURES``)."""
    out = []
    for name in names:
        attrs, table_repeat, object_repeat = TEXTURES[name]
        out.append(f'<texture name="pattern_{name}" type="2d" {attrs} width="64" height="64"/>'
                   f'<material name="table_{name}" texture="pattern_{name}" texrepeat="{table_repeat}"/>'
                   f'<material name="object_{name}" texture="pattern_{name}" texrepeat="{object_repeat}" texuniform="true"/>')
    return "".join(out)


def scene_xml(assets: str, worldbody: str, timestep: float, extra: str = "",
              table_checker: tuple[str, str] = TABLE_CHECKER) -> str:
    """The full MJCF of one task scene. ``timestep`` is set so an integer number of substeps makes
    one control period; ``extra`` holds other top-level sections (e.g. ``<contact>`` excludes);
    ``table_checker`` the two colours of the table's checker texture."""
    return f"""
<mujoco model="so101_scene">
  <include file="{MODEL_PATH.as_posix()}"/>
  <!-- implicitfast keeps the stiff position servos and jaw contacts stable at a 2 ms step;
       the elliptic cone with impratio>1 makes friction grasps hold without creeping. -->
  <option timestep="{timestep:.8f}" integrator="implicitfast" cone="elliptic" impratio="10"/>
  <visual>
    <!-- No shadows and no multisampling: ~50x faster offscreen rendering on CPU (FACTS.md). -->
    <quality shadowsize="0" offsamples="0"/>
    <global offwidth="512" offheight="512"/>
    <headlight ambient="0.45 0.45 0.45" diffuse="0.5 0.5 0.5" specular="0.1 0.1 0.1"/>
  </visual>
  <asset>
    <texture name="table_tex" type="2d" builtin="checker" rgb1="{table_checker[0]}" rgb2="{table_checker[1]}"
             width="64" height="64"/>
    <material name="table_mat" texture="table_tex" texrepeat="8 8"/>
    <texture name="sky" type="skybox" builtin="gradient" rgb1="0.55 0.6 0.68" rgb2="0.2 0.22 0.26"
             width="32" height="32"/>
    {assets}
  </asset>
  <worldbody>
    <light name="top" pos="0.2 0 1.0" dir="0 0 -1" diffuse="0.55 0.55 0.55" castshadow="false"/>
    <geom name="table" type="plane" size="0.6 0.6 0.2" material="table_mat" contype="1" conaffinity="1"
          condim="3" friction="0.8 0.005 0.0001"/>
    <camera name="front" pos="{' '.join(map(str, FRONT_CAMERA_POS))}"
            xyaxes="{lookat_xyaxes(FRONT_CAMERA_POS, FRONT_CAMERA_TARGET)}" fovy="50"/>
    {worldbody}
  </worldbody>
  {extra}
</mujoco>
"""
