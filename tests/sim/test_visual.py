"""Visual variation (sim/visual.py): per-episode colours, lights, camera poses and distractors,
drawn reproducibly per seed and recorded, changing the pixels but never the physics; the held-out
and randomised recipes in datasets/; and the plain scene left exactly as it was."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import gymnasium as gym
import mujoco
import numpy as np
import pytest

import roboreward.sim  # noqa: F401  (registers the envs)
from roboreward.config import ConfigError
from roboreward.data.generate import Recipe, generate_store
from roboreward.data.store import EpisodeStore
from roboreward.sim.env import EnvConfig, SO101Env
from roboreward.sim.scene import scene_xml
from roboreward.sim.scripted import generate_episode
from roboreward.sim.tasks import TASKS, make_task
from roboreward.sim.visual import VisualConfig, check_visual_config, make_visual_config, parse_colour

DATASETS = Path(__file__).resolve().parents[2] / "datasets"
PHYSICS_KEYS = ("observation.state", "action", "observation.environment_state", "gt.progress", "gt.stage",
                "gt.stage_progress", "gt.success")
IMAGE_KEYS = ("observation.images.front", "observation.images.wrist")
EVERYTHING = {
    "object_colours": {"cube": {"hsv": [[-30, 0.5, 0.5], [60, 1, 1]]}, "bowl": {"palette": [[0.1, 0.3, 0.9], [0.2, 0.8, 0.9]]}},
    "table_colour": {"rgb": [[0.3, 0.3, 0.3], [0.9, 0.9, 0.9]]},
    "light_intensity": [0.6, 1.3], "light_ambient": [0.2, 0.5], "light_tilt_deg": [0, 40],
    "light_colour": {"rgb": [[0.8, 0.8, 0.8], [1, 1, 1]]},
    "camera_jitter_pos_m": {"front": 0.02, "wrist": 0.003}, "camera_jitter_deg": {"front": 3, "wrist": 2},
    "distractors": [1, 3],
}


def _hash(a) -> str:
    a = np.ascontiguousarray(a)
    return hashlib.sha256(str((a.shape, a.dtype.str)).encode() + a.tobytes()).hexdigest()[:16]


# -- the plain scene is unchanged ---------------------------------------------------------------------
# Hashes of episodes generated at 32 px by the code before visual variation existed (commit be2711a),
# per MuJoCo version (physics differs between versions; the old code was run under each). Image hashes
# also need the renderer they were made with (Mesa llvmpipe through EGL).
GOLDEN_RENDERER = "llvmpipe"
GOLDEN = {
    "4.0.0": {
        ("pick_place", "expert", 0): {
            "action": "87af832277c4431f", "gt.progress": "11182067f6c1a115", "gt.stage": "1bb06549122e0254",
            "gt.stage_progress": "13f89ba18deefd04", "gt.success": "885a5ecf0e5d7601",
            "observation.environment_state": "e74be06f980c6c4d", "observation.images.front": "3943e2117d5392a8",
            "observation.images.wrist": "d492b9f47f9d4798", "observation.state": "420441f0949a803f"},
        ("stack", "suboptimal", 1): {
            "action": "5c58a036c09e2047", "gt.progress": "7e8691c5e7e87a76", "gt.stage": "5368e8ce252ab57b",
            "gt.stage_progress": "75d15d3d65ed757f", "gt.success": "c0ebe30ee4261926",
            "observation.environment_state": "9539e9639deb45e9", "observation.images.front": "4d4c427895846d36",
            "observation.images.wrist": "c2efc0b94fe900fa", "observation.state": "1a140838982ef3e8"},
        ("drawer", "failure", 2): {
            "action": "a4f5f351d5450a5b", "gt.progress": "92b6e680f8ad689e", "gt.stage": "aa469b33a347bf66",
            "gt.stage_progress": "778d6d296b53db3b", "gt.success": "8366046b51294596",
            "observation.environment_state": "0e2de9a9cdb94a86", "observation.images.front": "d20df41723e6fa5f",
            "observation.images.wrist": "86ba598c832748d3", "observation.state": "7ea06b772d7e1119"},
    },
    "3.3.0": {
        ("pick_place", "expert", 0): {
            "action": "573bd15c02678d75", "gt.progress": "1b80467cbfe58894", "gt.stage": "1bb06549122e0254",
            "gt.stage_progress": "532388c52d3c8712", "gt.success": "c77858a0c033826b",
            "observation.environment_state": "ce2fcb0c4e35f373", "observation.images.front": "32851d85de64137f",
            "observation.images.wrist": "214c5553f225f2ad", "observation.state": "6badcde8c3a225f9"},
        ("stack", "suboptimal", 1): {
            "action": "e782d8e93b8777bd", "gt.progress": "0ddda1e8d596fffd", "gt.stage": "947f4fa9eba1ef2d",
            "gt.stage_progress": "73ed89c8f86d97cb", "gt.success": "dbba4b8cccd7823c",
            "observation.environment_state": "d49d319218564b20", "observation.images.front": "b7cd039770e5daf3",
            "observation.images.wrist": "f1b4cbf6b47a8504", "observation.state": "10b454e8040e1c53"},
        ("drawer", "failure", 2): {
            "action": "eed20db52419a098", "gt.progress": "8868cacfa5298424", "gt.stage": "aa469b33a347bf66",
            "gt.stage_progress": "6919f9459b67886b", "gt.success": "8366046b51294596",
            "observation.environment_state": "05feeedba92d4202", "observation.images.front": "505b29444cd4067a",
            "observation.images.wrist": "d82ac962c4d827ca", "observation.state": "3b2750f2b21b3a94"},
    },
}
# A 3-episode store from Recipe(task=pick_place, episodes=3, mix 0.34/0.33/0.33, image_size=32, seed=10):
# each array's bytes, and the episode entries as sorted JSON.
GOLDEN_STORE = {
    "4.0.0": {
        "action": "6038cbbf7e91ba47", "gt.progress": "c9e907b9eb8fa412", "gt.stage": "8aa6ff3f6b350f67",
        "gt.stage_progress": "a701ed903e3009e2", "gt.success": "33d2411904b97d9f",
        "observation.environment_state": "abc87f297c0e3e49", "observation.images.front": "70b117f64d15f807",
        "observation.images.wrist": "f92e9d21f8257831", "observation.state": "c49113d0baff1234",
        "episodes": "ac1e5e1160e047b9",
    },
    "3.3.0": {
        "action": "fbd7ca2c4a0dbd9b", "gt.progress": "022032c5d7c3a00f", "gt.stage": "8aa6ff3f6b350f67",
        "gt.stage_progress": "f8290fa4c93c5054", "gt.success": "afac9fcf5dd82da0",
        "observation.environment_state": "9c15f36bdd5dd410", "observation.images.front": "ddd59be0803cdc81",
        "observation.images.wrist": "54e0c7a9fa9cc2d1", "observation.state": "32cdedfbdbd19d53",
        "episodes": "ac1e5e1160e047b9",
    },
}


def _renderer_name() -> str:
    env = SO101Env(EnvConfig(image_size=16))
    try:
        env.reset(seed=0)
        env.render_camera("front")
        from OpenGL import GL

        return (GL.glGetString(GL.GL_RENDERER) or b"").decode()
    except Exception:
        return "unknown"
    finally:
        env.close()


def _golden_keys() -> tuple[str, ...]:
    if mujoco.__version__ not in GOLDEN:
        pytest.skip(f"golden hashes were made with MuJoCo {', '.join(GOLDEN)}, this is {mujoco.__version__}")
    images = GOLDEN_RENDERER in _renderer_name()
    return PHYSICS_KEYS + (IMAGE_KEYS if images else ())


@pytest.mark.parametrize("task,quality,seed", sorted(GOLDEN["4.0.0"]))
def test_default_config_episode_is_unchanged(task, quality, seed):
    """Without visual options an episode is bit for bit what the generator wrote before visual
    variation existed, so the committed benchmark recipes regenerate the same datasets."""
    keys = _golden_keys()
    ep = generate_episode(task, quality, seed, image_size=32)
    assert ep.info == {}
    got = {k: _hash(ep.data[k]) for k in keys}
    assert got == {k: GOLDEN[mujoco.__version__][(task, quality, seed)][k] for k in keys}


def test_default_recipe_store_is_unchanged(tmp_path):
    keys = _golden_keys()
    recipe = Recipe(task="pick_place", episodes=3, mix={"expert": 0.34, "suboptimal": 0.33, "failure": 0.33},
                    image_size=32, seed=10)
    store = generate_store(tmp_path / "s.zarr", recipe, workers=1, progress=False)
    entries = store.root.attrs["roboreward"]["episodes"]
    assert all("info" not in e for e in entries)  # no visual options: the entries are as before
    assert "visual" not in store.root.attrs["extra"]["recipe"]
    got = {k: hashlib.sha256(np.ascontiguousarray(store.array(k)[:]).tobytes()).hexdigest()[:16] for k in keys}
    assert got == {k: GOLDEN_STORE[mujoco.__version__][k] for k in keys}
    episodes = hashlib.sha256(json.dumps(entries, sort_keys=True).encode()).hexdigest()[:16]
    assert episodes == GOLDEN_STORE[mujoco.__version__]["episodes"]


@pytest.mark.parametrize("task", sorted(TASKS))
def test_plain_scene_compiles_as_before(task):
    """An empty VisualConfig compiles the task's plain scene: same MJCF, so the same model."""
    t = make_task(task)
    plain = mujoco.MjModel.from_xml_string(scene_xml(t.assets_xml(), t.worldbody_xml(), 1 / 480, t.extra_xml()))
    for visual in (None, {}, VisualConfig()):
        env = SO101Env(EnvConfig(task=task, cameras=(), visual=visual))
        assert env._visual is None and env.visual.is_default
        for name in ("nbody", "ngeom", "nmat", "ntex", "nlight"):
            assert getattr(env.model, name) == getattr(plain, name), name
        for name in ("geom_rgba", "mat_rgba", "light_pos", "light_diffuse", "cam_pos", "cam_quat", "tex_data"):
            np.testing.assert_array_equal(getattr(env.model, name), getattr(plain, name), err_msg=name)
        assert env.reset(seed=0)[1]["visual"] == {}
        env.close()


# -- draws: reproducible, recorded, independent ---------------------------------------------------------
def test_draws_are_reproducible_per_seed_and_recorded():
    env = SO101Env(EnvConfig(task="pick_place", image_size=32, visual=EVERYTHING))
    try:
        first = env.reset(seed=3)[1]["visual"]
        following = env.reset()[1]["visual"]
        again = env.reset(seed=3)[1]["visual"]
        assert again == first and env.reset()[1]["visual"] == following  # seeded like np_random
        assert following != first and env.reset(seed=4)[1]["visual"] != first
        assert set(first) >= {"object_colours", "table_colour", "light_intensity", "light_ambient", "light_tilt_deg",
                              "light_colour", "cameras", "distractors"}
        assert set(first["object_colours"]) == {"cube", "bowl"} and 1 <= len(first["distractors"]) <= 3
        assert json.loads(json.dumps(first)) == first  # plain JSON
    finally:
        env.close()
    # The generator records the same draw with the episode, and the store keeps it.
    ep = generate_episode("pick_place", "expert", 3, image_size=32, visual=EVERYTHING)
    assert ep.info == {"visual": first}


def test_options_draw_from_their_own_streams():
    """Turning one option on does not change what another draws for the same seed, nor the poses."""
    colours = {"object_colours": EVERYTHING["object_colours"]}
    both = {**colours, "light_intensity": [0.5, 1.5], "distractors": 2}
    draws = []
    for visual in (colours, both, None):
        env = SO101Env(EnvConfig(task="pick_place", cameras=(), visual=visual))
        obs, info = env.reset(seed=11)
        draws.append((info["visual"].get("object_colours"), obs["observation.environment_state"]))
        env.close()
    assert draws[0][0] == draws[1][0]
    np.testing.assert_array_equal(draws[0][1], draws[2][1])
    np.testing.assert_array_equal(draws[1][1], draws[2][1])


def test_gym_make_takes_visual_options():
    env = gym.make("roboreward/SO101Stack-v0", image_size=32, visual={"object_colours": {"cube_a": [0.2, 0.7, 0.25]}})
    try:
        obs, info = env.reset(seed=0)
        assert info["visual"]["object_colours"]["cube_a"] == [0.2, 0.7, 0.25]
        assert "visual" not in env.step(obs["observation.state"])[4]  # drawn once, at reset
    finally:
        env.close()


# -- pixels change, physics does not ------------------------------------------------------------------
OPTIONS = {
    "object_colours": ({"object_colours": {"cube": [0.2, 0.7, 0.25], "bowl": {"hsv": [[280, 0.6, 0.6], [320, 1, 1]]}}}, IMAGE_KEYS),
    "table_colour": ({"table_colour": [0.3, 0.5, 0.35]}, IMAGE_KEYS),
    "light": ({"light_intensity": 0.5, "light_ambient": 0.2, "light_tilt_deg": 45, "light_colour": [1, 0.8, 0.55]}, IMAGE_KEYS),
    "front_camera": ({"camera_offset_pos_m": {"front": [0.05, 0.03, 0]}, "camera_jitter_deg": {"front": 3}},
                     ("observation.images.front",)),
    "wrist_camera": ({"camera_jitter_pos_m": {"wrist": 0.003}, "camera_offset_deg": {"wrist": [4, 0, 0]}},
                     ("observation.images.wrist",)),
    "distractors": ({"distractors": 4}, ("observation.images.front",)),
    "textures": ({"table_texture": "grid", "object_texture": ["noise", "bold_checker"]}, IMAGE_KEYS),
}


@pytest.fixture(scope="module")
def plain_episode():
    return generate_episode("pick_place", "expert", 5, image_size=48)


@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_each_option_changes_pixels_not_physics(option, plain_episode):
    visual, changed = OPTIONS[option]
    ep = generate_episode("pick_place", "expert", 5, image_size=48, visual=visual)
    for key in PHYSICS_KEYS:
        np.testing.assert_array_equal(ep.data[key], plain_episode.data[key], err_msg=f"{option} changed {key}")
    assert ep.success and ep.success == plain_episode.success
    assert ep.annotations == plain_episode.annotations
    for key in IMAGE_KEYS:
        differs = not np.array_equal(ep.data[key], plain_episode.data[key])
        assert differs == (key in changed), f"{option}: {key} {'unchanged' if not differs else 'changed'}"
    # A visible change, not one stray pixel.
    front = np.abs(ep.data[changed[0]].astype(int) - plain_episode.data[changed[0]].astype(int)).max(-1)
    assert (front > 10).mean() > 0.002, f"{option}: only {(front > 10).mean():.4f} of the pixels changed"


def test_textures_switch_materials_per_episode_and_none_keeps_the_compiled_surface():
    """Patterns are drawn per episode and part from their own stream, recorded, and set as the
    geom's material; ``none`` leaves the compiled one; the table keeps its tint (wood by default)."""
    env = SO101Env(EnvConfig(task="stack", cameras=(), visual={"table_texture": ["grid", "none"],
                                                                 "object_texture": ["noise", "none", "checker"]}))
    try:
        m = env.model
        table, plain = m.geom("table").id, m.material("table_mat").id
        seen = set()
        for seed in range(12):
            info = env.reset(seed=seed)[1]["visual"]
            name = info["table_texture"]
            seen.add(name)
            want = plain if name == "none" else m.material(f"table_{name}").id
            assert m.geom_matid[table] == want
            # A pattern takes the wood tint; the compiled checker carries the wood in its texture.
            np.testing.assert_allclose(m.mat_rgba[want, :3], [1, 1, 1] if name == "none" else [0.78, 0.72, 0.62], atol=1e-6)
            for part, pattern in info["object_texture"].items():
                got = m.geom_matid[m.geom(part).id]
                assert got == (-1 if pattern == "none" else m.material(f"object_{pattern}").id), (seed, part)
                seen.add(pattern)
            again = env.reset(seed=seed)[1]["visual"]
            assert again["table_texture"] == name and again["object_texture"] == info["object_texture"]
        assert seen == {"grid", "noise", "checker", "none"}
    finally:
        env.close()


@pytest.mark.parametrize("task", sorted(TASKS))
def test_distractors_stay_clear_of_the_task(task):
    env = SO101Env(EnvConfig(task=task, cameras=(), visual={"distractors": 4}))
    try:
        lo, hi = (np.asarray(v) for v in env.task.workspace_xy())
        cam = env.model.camera("front").id
        rot = env.model.cam_quat[cam]
        mat = np.zeros(9)
        mujoco.mju_quat2Mat(mat, rot)
        view = np.tan(np.radians(env.model.cam_fovy[cam]) / 2)
        ids = [env.model.body(f"distractor{i}").id for i in range(4)]
        for seed in range(6):
            placed = env.reset(seed=seed)[1]["visual"]["distractors"]
            assert len(placed) == 4
            for d in placed:
                xy = np.asarray(d["pos"][:2])
                assert np.any(xy < lo) or np.any(xy > hi), f"{task} seed {seed}: distractor at {xy} on the workspace"
                rel = mat.reshape(3, 3).T @ (np.asarray(d["pos"]) - env.model.cam_pos[cam])
                assert rel[2] < 0 and abs(rel[0] / rel[2]) < view and abs(rel[1] / rel[2]) < view  # in the picture
            np.testing.assert_allclose(env.data.xpos[ids, :2], [d["pos"][:2] for d in placed])
            shown = np.isin(env.model.geom_bodyid, ids) & (env.model.geom_group == 0)
            assert shown.sum() == 4 and sorted(env.model.geom_type[shown] == mujoco.mjtGeom.mjGEOM_BOX) == sorted(
                d["shape"] == "box" for d in placed)  # one shape each, the one recorded
        for i in ids:  # no collision, so they cannot touch anything
            geoms = np.flatnonzero(env.model.geom_bodyid == i)
            assert not env.model.geom_contype[geoms].any() and not env.model.geom_conaffinity[geoms].any()
    finally:
        env.close()


# -- configs ------------------------------------------------------------------------------------------------
def test_bad_visual_options_are_one_line():
    cases = [
        ({"object_colour": {}}, "unknown key 'object_colour'; allowed: .*object_colours"),
        ({"object_colours": {"cube": [1.2, 0, 0]}}, r"object_colours.cube=\[1.2, 0, 0\] must be an \[r, g, b\] colour"),
        ({"object_colours": {"cube": {"hue": [0, 1]}}}, "must be \\[r, g, b\\], \\{rgb"),
        ({"light_intensity": [1.2, 0.8]}, "light_intensity=.* low <= high"),
        ({"light_azimuth_deg": 30}, "light_azimuth_deg needs light_tilt_deg"),
        ({"camera_jitter_pos_m": {"top": 0.01}}, "unknown camera 'top'; cameras: front, wrist"),
        ({"camera_offset_deg": {"front": [1, 2]}}, r"camera_offset_deg.front=\[1, 2\] must be \[x, y, z\]"),
        ({"distractors": 9}, r"distractors=\[9, 9\] must lie in \[0, 8\]"),
        ({"distractors": 1.5}, "must be a whole number"),
        ({"table_texture": "marble"}, "table_texture: unknown pattern 'marble'; patterns: checker, .*none"),
        ({"object_texture": []}, "object_texture=\\[\\] must be a pattern name or a non-empty list"),
    ]
    for options, message in cases:
        with pytest.raises(ConfigError, match=message) as info:
            make_visual_config(options)
        assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="unknown part 'bowl' for task stack; parts: cube_a, cube_b"):
        check_visual_config("stack", {"object_colours": {"bowl": [0, 0, 1]}})
    with pytest.raises(ConfigError, match="unknown part 'lid'"):
        generate_store("/nonexistent/never-written.zarr",
                       Recipe(task="drawer", episodes=1, visual={"object_colours": {"lid": [0, 0, 1]}}), progress=False)


def test_colour_specs():
    rng = np.random.default_rng(0)
    wrap = parse_colour({"hsv": [[300, 0.5, 0.5], [420, 1, 1]]}, "c")  # magenta through red to yellow-green
    for _ in range(50):
        rgb = wrap.sample(rng)
        assert wrap.contains(rgb) and np.all((rgb >= 0) & (rgb <= 1))
    assert not wrap.contains([0.1, 0.2, 0.9]) and not wrap.contains([0.2, 0.7, 0.25])  # blue, green
    palette = parse_colour({"palette": [[1, 0, 0], [0, 0, 1]]}, "c")
    assert {tuple(palette.sample(rng)) for _ in range(30)} == {(1.0, 0.0, 0.0), (0.0, 0.0, 1.0)}
    assert parse_colour([0.2, 0.3, 0.4], "c").sample(rng).tolist() == [0.2, 0.3, 0.4]


# -- recipes ------------------------------------------------------------------------------------------------
HELDOUT = sorted(p.name for p in DATASETS.glob("*_heldout_*.yaml"))
RANDOMISED = sorted(p.name for p in DATASETS.glob("*_randomised*.yaml"))  # every randomised training recipe


def test_the_recipes_exist_and_standard_ones_have_no_visual_options():
    for task in ("pick_place", "stack", "drawer"):
        assert {f"{task}_heldout_{v}.yaml" for v in ("control", "colours", "light", "camera", "distractors", "textures",
                                                     "layout")} <= set(HELDOUT)
        assert f"{task}_randomised.yaml" in RANDOMISED
    for name in ("pick_place_mixed", "stack_mixed", "drawer_mixed", "pick_place_rabc", "stack_rabc"):
        recipe = Recipe.from_yaml(DATASETS / f"{name}.yaml")
        assert recipe.visual == {} and "visual" not in recipe.identity()


@pytest.fixture(scope="module")
def control_episodes(tmp_path_factory):
    """The first episode of each task's held-out control recipe at 32 px."""
    out = {}
    for task in ("pick_place", "stack", "drawer"):
        recipe = dataclasses.replace(Recipe.from_yaml(DATASETS / f"{task}_heldout_control.yaml"), episodes=1, image_size=32)
        out[task] = generate_store(tmp_path_factory.mktemp(task) / "c.zarr", recipe, workers=1, progress=False).read_episode(0)
    return out


@pytest.mark.parametrize("name", HELDOUT + RANDOMISED)
def test_recipe_generates_and_records_its_look(name, tmp_path, control_episodes):
    recipe = Recipe.from_yaml(DATASETS / name)
    assert recipe.name == name.removesuffix(".yaml") and recipe.description
    if "heldout" in name:
        assert recipe.episodes == 20 and recipe.seed == 1000 and recipe.mix == {"expert": 0.5, "suboptimal": 0.3, "failure": 0.2}
    small = dataclasses.replace(recipe, episodes=1, image_size=32)
    store = generate_store(tmp_path / "r.zarr", small, workers=1, progress=False)
    ep = EpisodeStore(tmp_path / "r.zarr").read_episode(0)
    if recipe.visual:
        assert store.root.attrs["extra"]["recipe"]["visual"] == recipe.visual
        assert set(ep.info["visual"]) and store.episodes[0].info == ep.info
    else:
        assert ep.info == {}
    if "heldout" in name and not recipe.task_config:  # the look variants are the control's episodes with another look
        control = control_episodes[recipe.task]
        for key in PHYSICS_KEYS:
            np.testing.assert_array_equal(ep.data[key], control.data[key], err_msg=key)
        assert (not recipe.visual) == np.array_equal(ep.data[IMAGE_KEYS[0]], control.data[IMAGE_KEYS[0]])


def assert_band_left_out(draws, band, tol: float = 0.0) -> None:
    """No draw lies inside the open ``band`` (less ``tol`` at each edge), and draws fall on both sides of it."""
    draws = np.asarray(draws, np.float64)
    assert not ((draws > band[0] + tol) & (draws < band[1] - tol)).any()
    assert draws.min() < band[0] < band[1] < draws.max()


@pytest.mark.parametrize("name", RANDOMISED)
def test_heldout_values_lie_outside_the_randomised_ranges(name):
    recipe = Recipe.from_yaml(DATASETS / name)
    task = recipe.task
    train = check_visual_config(task, recipe.visual)

    def held(variant):
        return check_visual_config(task, Recipe.from_yaml(DATASETS / f"{task}_heldout_{variant}.yaml").visual)

    colours = held("colours")
    for part, spec in colours._objects.items():
        for other in train._objects.values():  # unseen on any object, not only on this one
            assert not other.contains(spec.sample(np.random.default_rng(0))), part
    light = held("light")
    for attr in ("_intensity", "_ambient", "_tilt"):
        value, (lo, hi) = getattr(light, attr)[0], getattr(train, attr)
        assert not lo <= value <= hi, attr
    assert not train._tint.contains(light._tint.sample(np.random.default_rng(0)))
    camera = held("camera")
    for cam, offset in camera._offset_pos.items():
        assert np.abs(offset).max() > train._jitter_pos[cam][0]
    for cam, turn in camera._offset_rot.items():
        assert np.abs(turn).max() > train._jitter_rot[cam][0]
    assert held("distractors")._count[0] > train._count[1]
    from roboreward.sim.tasks import TASKS as TASK_CLASSES

    from roboreward.sim.tasks import make_task_config

    layout = Recipe.from_yaml(DATASETS / f"{task}_heldout_layout.yaml").task_config
    trained = make_task_config(task, recipe.task_config)
    if task == "drawer" and trained.cube_x_exclude is None:  # the cube nearer the base and further beside the cabinet
        assert layout["cube_x_range"][1] <= trained.cube_x_range[0]
        assert layout["cube_side_offset"][0] >= trained.cube_side_offset[1]
    elif task == "drawer":  # a wider layout round the held-out bands, which it leaves out
        for span, band, held_out in ((trained.cube_x_range, trained.cube_x_exclude, layout["cube_x_range"]),
                                     (trained.cube_side_offset, trained.cube_side_exclude, layout["cube_side_offset"])):
            assert band[0] <= held_out[0] and held_out[1] <= band[1]
            assert span[0] < band[0] < band[1] < span[1]  # training draws on both sides of the band
        env = SO101Env(EnvConfig(task=task, cameras=(), task_config=recipe.task_config))
        try:  # the cube's x and its distance beside the cabinet's centre over 40 resets
            draws = []
            for seed in range(40):
                env.reset(seed=seed)
                cube, cabinet = env.data.body("cube").xpos, env.model.body("cabinet").pos
                draws.append((cube[0], abs(cube[1] - cabinet[1])))
        finally:
            env.close()
        xs, sides = np.array(draws).T
        assert_band_left_out(xs, trained.cube_x_exclude)
        assert_band_left_out(sides, trained.cube_side_exclude, tol=1e-6)
    elif trained.x_exclude is None:  # the task's own layout: the held-out band lies outside it
        assert layout["x_range"][1] <= trained.x_range[0] and layout["y_range"][1] > trained.y_range[1]
    else:  # a wider layout round the held-out band, which it leaves out
        assert trained.x_exclude[0] <= layout["x_range"][0] and layout["x_range"][1] <= trained.x_exclude[1]
        env = SO101Env(EnvConfig(task=task, cameras=(), task_config=recipe.task_config))
        try:  # every object's x (environment_state holds x, y, z, cos, sin per object)
            draws = [x for seed in range(40) for x in env.reset(seed=seed)[0]["observation.environment_state"][0::5]]
        finally:
            env.close()
        assert_band_left_out(draws, trained.x_exclude)
    textures = held("textures")
    assert textures._table_patterns and textures._object_patterns
    assert not set(textures._table_patterns + textures._object_patterns) & set(train._table_patterns + train._object_patterns)
    assert held("control").is_default
