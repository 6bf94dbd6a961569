"""Every bad input is one line, before any work, and never changes a store.

A table of malformed inputs across the command line: stores, configs, recipes, checkpoints,
parquets and CLI values. Each case runs the real CLI entry point (in this process, for speed; the
subprocess path is covered by tests/test_cli.py) and asserts the exit status, exactly one line
starting with ``error`` that names the problem, no traceback anywhere, and that no store it was
given changed a byte. Report commands (``data validate``) print their findings on stdout and exit 1.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from roboreward.cli import main
from roboreward.data import EpisodeStore
from roboreward.data.cache import cache_embeddings

FRONT = "observation.images.front"


# ---------------------------------------------------------------------------------------- helpers
def digest(path: Path) -> str | None:
    if not path.exists():
        return None
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def edit_schema(path: Path, fn: Callable[[dict], None]) -> None:
    doc = json.loads((path / "zarr.json").read_text())
    fn(doc["attributes"]["roboreward"])
    (path / "zarr.json").write_text(json.dumps(doc))


def chunk(path: Path, key: str, k: int) -> Path:
    arr = zarr.open_group(str(path), mode="r")[key]
    return path / key / arr.metadata.encode_chunk_key((k,) + (0,) * (len(arr.shape) - 1))


class MeanColour:
    def __call__(self, frames):
        return torch.from_numpy(np.asarray(frames, np.float32).mean(axis=(1, 2)))


@dataclass
class Case:
    name: str
    argv: list[str]
    expect: str
    """Text the error line (or, for reports, stdout) must contain."""
    prep: Callable[[dict, Path], None] | None = None
    """Makes ``{case}`` (a path in the case's own folder) before the run."""
    code: int = 2
    report: bool = False
    """A report command: findings on stdout, exit 1, nothing on stderr."""
    files: dict[str, str] = field(default_factory=dict)
    """Files written into the case folder before the run: name -> text."""


# ---------------------------------------------------------------------------------------- the world
@pytest.fixture(scope="module")
def world(tmp_path_factory, make_store) -> dict[str, Path]:
    """One valid store, a reward-model and a policy checkpoint, and a valid parquet; every case
    damages a copy or points at these (which must never change)."""
    base = tmp_path_factory.mktemp("world")
    good, _ = make_store(base / "good.zarr", n_episodes=4, image_size=32, lengths=[20, 18, 22, 16])
    tiny, _ = make_store(base / "tiny.zarr", n_episodes=1, image_size=16, lengths=[10])
    featured = base / "featured.zarr"
    make_store(featured, n_episodes=4, image_size=32, lengths=[20, 18, 22, 16])
    cache_embeddings(featured, MeanColour(), "mean-colour", progress=False)

    from roboreward.policies.base import make_policy, policy_class
    from roboreward.rewards.base import make_reward_model, reward_model_class
    from roboreward.rewards.annotate import write_progress_parquet

    store = EpisodeStore(featured)
    torch.manual_seed(0)
    sarm_cfg = reward_model_class("sarm").config_class.from_store(store, "mean-colour", window=2, frame_gap=1, d_model=16,
                                                                   n_heads=2, n_layers=1, mlp_ratio=2, max_rewind=1)
    make_reward_model(sarm_cfg).save_pretrained(base / "model")
    bc_cfg = policy_class("bc").config_class.from_store(store, None, cameras=[], horizon=4, window=2, hidden_dim=16, n_layers=1)
    make_policy(bc_cfg).save_pretrained(base / "policy")
    act_cfg = policy_class("act").config_class.from_store(good, lerobot={"chunk_size": 4, "n_action_steps": 2, "dim_model": 16,
                                                                       "n_heads": 2, "dim_feedforward": 32, "n_encoder_layers": 1,
                                                                       "n_vae_encoder_layers": 1, "latent_dim": 4})
    make_policy(act_cfg).save_pretrained(base / "act")
    write_progress_parquet(store, {"sparse": np.zeros(store.n_frames, np.float32)}, base / "progress.parquet")
    return {"good": good.path, "tiny": tiny.path, "featured": featured, "model": base / "model", "policy": base / "policy",
            "parquet": base / "progress.parquet", "act": base / "act"}


# ---------------------------------------------------------------------------------------- preps
def copy_good(w, case):
    shutil.copytree(w["good"], case)


def copy_dir(key):
    def prep(w, case):
        shutil.copytree(w[key], case)
    return prep


def damaged(fn):
    def prep(w, case):
        shutil.copytree(w["good"], case)
        fn(case)
    return prep


def schema_edit(fn):
    return damaged(lambda p: edit_schema(p, fn))


def delete_chunk(key, k):
    return damaged(lambda p: chunk(p, key, k).unlink())


def garbage_chunk(key, k):
    return damaged(lambda p: chunk(p, key, k).write_bytes(b"\x28\xb5\x2f\xfd definitely not zstd"))


def nan_state(p):
    arr = zarr.open_group(str(p), mode="r+")["data/observation.state"]
    values = arr[:]
    values[5, 2] = np.nan
    arr[:] = values


def model_edit(fn):
    def prep(w, case):
        shutil.copytree(w["model"], case)
        fn(case)
    return prep


def config_json(fn):
    def edit(case):
        cfg = json.loads((case / "config.json").read_text())
        fn(cfg)
        (case / "config.json").write_text(json.dumps(cfg))
    return model_edit(edit)


def truncate(name, keep=40):
    def edit(case):
        data = (case / name).read_bytes()
        (case / name).write_bytes(data[:keep])
    return edit


def not_a_store(w, case):
    case.mkdir()
    (case / "notes.txt").write_text("hello")


def bare_zarr_group(w, case):
    zarr.open_group(str(case), mode="w")


def lerobot_folder(info: str | None):
    def prep(w, case):
        (case / "meta").mkdir(parents=True)
        if info is not None:
            (case / "meta" / "info.json").write_text(info)
    return prep


def truncated_parquet(w, case):
    (case.parent / "bad.parquet").write_bytes(w["parquet"].read_bytes()[:100])


def wrong_columns_parquet(w, case):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"index": np.arange(3), "value": np.zeros(3)}), case.parent / "bad.parquet")


def tiny_safetensors(w, case):
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(3)}, str(case.parent / "w.safetensors"))


def other_tasks(w, case):
    shutil.copytree(w["featured"], case)

    def rename(meta):
        for e in meta["episodes"]:
            e["task"] = "open the fridge"
    edit_schema(case, rename)


# ---------------------------------------------------------------------------------------- the table
GEN = ["data", "generate", "--out", "{tmp}/new.zarr"]
TRAIN = ["reward", "train", "--dataset", "{featured}", "--out", "{tmp}/run", "--config", "{tmp}/c.yaml"]
BC = ["bc", "train", "--dataset", "{featured}", "--out", "{tmp}/run"]
BC_CFG = ["bc", "train", "--dataset", "{featured}", "--out", "{tmp}/run", "--config", "{tmp}/c.yaml"]
EVAL = ["reward", "eval", "--dataset", "{featured}", "--out", "{tmp}/eval", "--episodes", "all", "--model"]
SIM = ["sim", "eval", "--out", "{tmp}/sim", "--episodes", "1"]
RL = ["rl", "train", "--out", "{tmp}/rl", "--steps", "10"]


def other_cameras(w, case):
    shutil.copytree(w["model"], case)
    cfg = json.loads((case / "config.json").read_text())
    cfg["cameras"] = ["observation.images.top", "observation.images.side"]
    (case / "config.json").write_text(json.dumps(cfg))


def with_recipe(task):
    def prep(w, case):
        shutil.copytree(w["good"], case)
        zarr.open_group(str(case), mode="r+").attrs["extra"] = {"recipe": {"task": task, "seed": 0}}
    return prep
CAMERA_POLICY = "policy: {type: bc, cameras: []}\n"

CASES = [
    # --- the command line itself
    Case("unknown group", ["datta", "inspect", "{good}"], "invalid choice: 'datta'"),
    Case("unknown command", ["data", "inspekt", "{good}"], "invalid choice: 'inspekt'"),
    Case("missing store path", ["data", "inspect", "{tmp}/nowhere.zarr"], "no such file or folder"),
    Case("validate missing path", ["data", "validate", "{tmp}/nowhere.zarr"], "no such file or folder"),
    Case("generate without --out", ["data", "generate", "--task", "stack"], "the following arguments are required: --out"),
    Case("generate without task or recipe", GEN, "pass --task"),
    Case("episodes not a number", [*GEN, "--task", "stack", "--episodes", "many"], "'many' is not an integer"),
    Case("episodes zero", [*GEN, "--task", "stack", "--episodes", "0"], "0 must be >= 1"),
    Case("image size too small", [*GEN, "--task", "stack", "--image-size", "8"], "8 is outside [16, 512]"),
    Case("image size too big", [*GEN, "--task", "stack", "--image-size", "4096"], "4096 is outside [16, 512]"),
    Case("negative workers", [*GEN, "--task", "stack", "--workers", "-1"], "-1 must be >= 0"),
    Case("negative seed", [*GEN, "--task", "stack", "--seed", "-3"], "-3 must be >= 0"),
    Case("unknown task", [*GEN, "--task", "juggle"], "unknown task 'juggle'"),
    Case("mix above one", [*GEN, "--task", "stack", "--mix", "expert=2"], "sums to 2, not 1"),
    Case("mix below one", [*GEN, "--task", "stack", "--mix", "expert=0.5,failure=0.3"], "sums to 0.8, not 1"),
    Case("mix unknown quality", [*GEN, "--task", "stack", "--mix", "expert=1,great=0"], "quality 'great'"),
    Case("mix without weight", [*GEN, "--task", "stack", "--mix", "expert"], "is not quality=weight"),
    Case("mix not a number", [*GEN, "--task", "stack", "--mix", "expert=abc"], "is not quality=weight"),
    Case("mix negative", [*GEN, "--task", "stack", "--mix", "expert=-0.5,failure=1.5"], "negative"),
    Case("generate over another store", ["data", "generate", "--task", "stack", "--episodes", "2", "--out", "{good}"],
         "was not made by `data generate`"),
    Case("recipe file missing", [*GEN, "--recipe", "{tmp}/nope.yaml"], "no such file or folder"),
    # --- recipes
    Case("recipe bad yaml", [*GEN, "--recipe", "{tmp}/r.yaml"], "not valid YAML", files={"r.yaml": "task: [stack\n"}),
    Case("recipe unknown key", [*GEN, "--recipe", "{tmp}/r.yaml"], "unknown key 'tsk'", files={"r.yaml": "tsk: stack\n"}),
    Case("recipe not a mapping", [*GEN, "--recipe", "{tmp}/r.yaml"], "expected a mapping", files={"r.yaml": "- stack\n"}),
    Case("recipe mix sums to 1.3", [*GEN, "--recipe", "{tmp}/r.yaml"], "sums to 1.3, not 1",
         files={"r.yaml": "task: stack\nmix: {expert: 0.6, suboptimal: 0.4, failure: 0.3}\n"}),
    Case("recipe zero episodes", [*GEN, "--recipe", "{tmp}/r.yaml"], "episodes must be >= 1",
         files={"r.yaml": "task: stack\nepisodes: 0\n"}),
    Case("recipe episodes text", [*GEN, "--recipe", "{tmp}/r.yaml"], "expected int, got 'ten'",
         files={"r.yaml": "task: stack\nepisodes: ten\n"}),
    Case("recipe tiny images", [*GEN, "--recipe", "{tmp}/r.yaml"], "image_size must be in [16, 512]",
         files={"r.yaml": "task: stack\nimage_size: 8\n"}),
    Case("recipe unknown task", [*GEN, "--recipe", "{tmp}/r.yaml"], "unknown task 'juggle'", files={"r.yaml": "task: juggle\n"}),
    Case("recipe task_config list", [*GEN, "--recipe", "{tmp}/r.yaml"], "task_config must be a mapping",
         files={"r.yaml": "task: stack\ntask_config: [1, 2]\n"}),
    Case("recipe task_config unknown field", [*GEN, "--recipe", "{tmp}/r.yaml"], "cube_colour",
         files={"r.yaml": "task: pick_place\ntask_config: {cube_colour: red}\n"}),
    Case("recipe demonstrator unknown field", [*GEN, "--recipe", "{tmp}/r.yaml"], "unknown key 'keepout'",
         files={"r.yaml": "task: pick_place\ndemonstrator: {keepout: false}\n"}),
    Case("recipe demonstrator not a mapping", [*GEN, "--recipe", "{tmp}/r.yaml"], "demonstrator must be a mapping",
         files={"r.yaml": "task: pick_place\ndemonstrator: least_roll\n"}),
    # --- stores that are not stores, or broken metadata
    Case("folder is not zarr", ["data", "inspect", "{case}"], "not a zarr store", prep=not_a_store),
    Case("zarr without schema", ["data", "inspect", "{case}"], "not a roboreward store", prep=bare_zarr_group),
    Case("schema version from the future", ["data", "inspect", "{case}"], "schema_version 99 is not supported",
         prep=schema_edit(lambda m: m.update(schema_version=99))),
    Case("fps zero", ["data", "inspect", "{case}"], "fps must be > 0", prep=schema_edit(lambda m: m.update(fps=0))),
    Case("schema without features", ["data", "inspect", "{case}"], "malformed schema",
         prep=schema_edit(lambda m: m.pop("features"))),
    Case("unknown feature kind", ["data", "inspect", "{case}"], "feature kind 'video'",
         prep=schema_edit(lambda m: m["features"]["gt.progress"].update(kind="video"))),
    Case("camera is not rgb", ["data", "inspect", "{case}"], "camera 'action' is not declared as an rgb feature",
         prep=schema_edit(lambda m: m["cameras"].append("action"))),
    Case("episode length disagrees", ["data", "inspect", "{case}"], "episode 1 has length 99",
         prep=schema_edit(lambda m: m["episodes"][1].update(length=99))),
    Case("episode_ends deleted", ["data", "inspect", "{case}"], "missing array meta/episode_ends",
         prep=damaged(lambda p: shutil.rmtree(p / "meta" / "episode_ends"))),
    Case("episode_ends chunk deleted", ["data", "inspect", "{case}"], "meta/episode_ends: chunk c/0 (the ends of episodes 0-3) is missing",
         prep=delete_chunk("meta/episode_ends", 0)),
    Case("export with episode_ends garbage", ["data", "export-lerobot", "{case}", "--out", "{tmp}/lr"],
         "meta/episode_ends: chunk c/0", prep=garbage_chunk("meta/episode_ends", 0)),
    Case("annotation of unknown level", ["data", "validate", "{case}"], "unknown annotation level 'coarse'",
         prep=schema_edit(lambda m: m["episodes"][0]["annotations"].update(coarse=[["a", 0, 3]])), code=1, report=True),
    Case("annotation not a triple", ["data", "inspect", "{case}"], "is not [name, start_frame, end_frame]",
         prep=schema_edit(lambda m: m["episodes"][0]["annotations"].update(sparse=[["a", 0]]))),
    # --- validate reports (stdout, exit 1)
    Case("validate deleted image chunk", ["data", "validate", "{case}"], f"data/{FRONT}: chunk c/1/0/0/0 (frames 16-31, episodes 0-1) is missing",
         prep=delete_chunk(f"data/{FRONT}", 1), code=1, report=True),
    Case("validate --quick deleted image chunk", ["data", "validate", "--quick", "{case}"], "is missing",
         prep=delete_chunk(f"data/{FRONT}", 2), code=1, report=True),
    Case("validate deleted state chunk", ["data", "validate", "{case}"], "data/observation.state: chunk c/0/0 (frames 0-75",
         prep=delete_chunk("data/observation.state", 0), code=1, report=True),
    Case("validate garbage image chunk", ["data", "validate", "{case}"], "cannot be decoded",
         prep=garbage_chunk(f"data/{FRONT}", 3), code=1, report=True),
    Case("validate garbage action chunk", ["data", "validate", "{case}"], "data/action: chunk c/0/0 (frames 0-75, episodes 0-3) cannot be decoded",
         prep=garbage_chunk("data/action", 0), code=1, report=True),
    Case("validate NaN state", ["data", "validate", "{case}"], "NaN or inf at frame 5 (episode 0)",
         prep=damaged(nan_state), code=1, report=True),
    Case("validate annotation outside episode", ["data", "validate", "{case}"], "lies outside the episode",
         prep=schema_edit(lambda m: m["episodes"][0]["annotations"].update(sparse=[["a", 0, 500]])), code=1, report=True),
    Case("validate unknown array", ["data", "validate", "{case}"], "data/extra: not declared",
         prep=damaged(lambda p: zarr.open_group(str(p / "data"), mode="r+").create_array("extra", data=np.ones(3))),
         code=1, report=True),
    Case("validate repair hint", ["data", "validate", "{case}"], "damaged episodes [1, 2]: run `roboreward data repair",
         prep=delete_chunk(f"data/{FRONT}", 2), code=1, report=True),
    # --- readers of a damaged store: one line naming array, episode, frames and the fix
    Case("export deleted chunk", ["data", "export-lerobot", "{case}", "--out", "{tmp}/lr"], "is missing (its chunk file was deleted)",
         prep=delete_chunk(f"data/{FRONT}", 2)),
    Case("export garbage chunk", ["data", "export-lerobot", "{case}", "--out", "{tmp}/lr"], "cannot be decoded",
         prep=garbage_chunk("data/observation.images.wrist", 0)),
    Case("export frames too small for video", ["data", "export-lerobot", "{tiny}", "--out", "{tmp}/lr"], "needs at least 32 px"),
    Case("export not a store", ["data", "export-lerobot", "{case}", "--out", "{tmp}/lr"], "not a zarr store", prep=not_a_store),
    Case("cache deleted chunk", ["data", "cache-embeddings", "{case}", "--image-size", "32"], f"data/{FRONT}: chunk c/0/0/0/0",
         prep=delete_chunk(f"data/{FRONT}", 0)),
    Case("repair with damaged episode_ends", ["data", "repair", "{case}", "--out", "{tmp}/fixed.zarr"], "meta/episode_ends",
         prep=delete_chunk("meta/episode_ends", 0)),
    Case("repair onto itself", ["data", "repair", "{case}", "--out", "{case}"], "is the damaged store itself", prep=copy_good),
    Case("repair regenerate without recipe", ["data", "repair", "{case}", "--out", "{tmp}/fixed.zarr", "--regenerate"],
         "records no recipe", prep=delete_chunk("data/action", 0)),
    # --- cache-embeddings values: refused before the store is touched
    Case("cache image size zero", ["data", "cache-embeddings", "{good}", "--image-size", "0"], "0 is outside [16, 1024]"),
    Case("cache image size negative", ["data", "cache-embeddings", "{good}", "--image-size", "-5"], "-5 is outside [16, 1024]"),
    Case("cache batch size zero", ["data", "cache-embeddings", "{good}", "--batch-size", "0"], "0 must be >= 1"),
    Case("cache unknown encoder", ["data", "cache-embeddings", "{good}", "--encoder", "resnet_foo"], "unknown encoder 'resnet_foo'"),
    Case("cache encoder without weights", ["data", "cache-embeddings", "{good}", "--encoder", "resnet18"], "has no offline default weights"),
    Case("cache weights missing", ["data", "cache-embeddings", "{good}", "--encoder-weights", "{tmp}/w.pth"], "not found"),
    Case("cache weights garbage", ["data", "cache-embeddings", "{good}", "--encoder-weights", "{tmp}/w.pth"],
         "not a readable .safetensors or torch state-dict file",
         files={"w.pth": "this is not a checkpoint"}),
    Case("cache weights not a state dict", ["data", "cache-embeddings", "{good}", "--encoder-weights", "{tmp}/w.safetensors"],
         "match the model neither by name nor by position", prep=tiny_safetensors),
    Case("cache on not a store", ["data", "cache-embeddings", "{case}"], "not a zarr store", prep=not_a_store),
    # --- import-lerobot
    Case("import without info.json", ["data", "import-lerobot", "{case}", "--out", "{tmp}/imp.zarr"], "info.json",
         prep=lerobot_folder(None)),
    Case("import info.json not json", ["data", "import-lerobot", "{case}", "--out", "{tmp}/imp.zarr"], "info.json",
         prep=lerobot_folder("{not json")),
    Case("import old codebase version", ["data", "import-lerobot", "{case}", "--out", "{tmp}/imp.zarr"], "v2.1",
         prep=lerobot_folder(json.dumps({"codebase_version": "v2.1", "fps": 30, "features": {}}))),
    Case("import incomplete dataset", ["data", "import-lerobot", "{case}", "--out", "{tmp}/imp.zarr"], "meta/tasks.parquet is missing",
         prep=lerobot_folder(json.dumps({"codebase_version": "v3.0", "fps": 30, "features": {}}))),
    # --- reward train configs
    Case("train dataset missing", ["reward", "train", "--dataset", "{tmp}/no.zarr"], "no such file or folder"),
    Case("train config missing", ["reward", "train", "--dataset", "{featured}", "--config", "{tmp}/none.yaml"], "no such file or folder"),
    Case("train config bad yaml", TRAIN, "not valid YAML", files={"c.yaml": "model: {type: sarm\n"}),
    Case("train config unknown section", TRAIN, "unknown key 'modle'", files={"c.yaml": "modle: {type: sarm}\n"}),
    Case("train unknown model type", TRAIN, "'sarn'", files={"c.yaml": "model: {type: sarn}\n"}),
    Case("train unknown model field", TRAIN, "'d_modle'", files={"c.yaml": "model: {type: sarm, d_modle: 32}\n"}),
    Case("train model field wrong type", TRAIN, "d_model", files={"c.yaml": "model: {type: sarm, d_model: big}\n"}),
    Case("train negative steps", TRAIN, "steps must be an int >= 1", files={"c.yaml": "train: {steps: -1}\n"}),
    Case("train lr text", TRAIN, "expected float, got 'fast'", files={"c.yaml": "train: {lr: fast}\n"}),
    Case("train mixed precision", TRAIN, "mixed_precision 'fp8'", files={"c.yaml": "train: {mixed_precision: fp8}\n"}),
    Case("train val fraction", TRAIN, "val_fraction", files={"c.yaml": "data: {val_fraction: 1.5}\n"}),
    Case("train unknown encoder", TRAIN, "unknown encoder 'resnet_foo'", files={"c.yaml": "data: {encoder: resnet_foo}\n"}),
    Case("train --steps zero", ["reward", "train", "--dataset", "{featured}", "--steps", "0"], "0 must be >= 1"),
    Case("train on a damaged store", ["reward", "train", "--dataset", "{case}", "--out", "{tmp}/run"], "is missing",
         prep=delete_chunk(f"data/{FRONT}", 1)),
    # --- checkpoints
    Case("eval model missing", [*EVAL, "{tmp}/nomodel"], "no such file or folder"),
    Case("eval model without config", [*EVAL, "{case}"], "missing config.json",
         prep=model_edit(lambda c: (c / "config.json").unlink())),
    Case("eval config not json", [*EVAL, "{case}"], "not valid JSON",
         prep=model_edit(lambda c: (c / "config.json").write_text("{type: sarm"))),
    Case("eval config unknown type", [*EVAL, "{case}"], "type 'sarn' is not a registered",
         prep=config_json(lambda d: d.update(type="sarn"))),
    Case("eval config unknown field", [*EVAL, "{case}"], "'colour'", prep=config_json(lambda d: d.update(colour="red"))),
    Case("eval weights missing", [*EVAL, "{case}"], "model.safetensors",
         prep=model_edit(lambda c: (c / "model.safetensors").unlink())),
    Case("eval weights truncated", [*EVAL, "{case}"], "model.safetensors", prep=model_edit(truncate("model.safetensors"))),
    Case("eval pickle instead of safetensors", [*EVAL, "{case}"], "model.pt is there, but pickled checkpoints are never loaded",
         prep=model_edit(lambda c: ((c / "model.safetensors").unlink(), torch.save({"w": 1}, c / "model.pt")))),
    Case("eval policy given as reward model", [*EVAL, "{policy}"], "'bc'"),
    Case("eval episodes list", [*EVAL, "{model}", "--episodes", "a,b"], "is not all, val or a comma list"),
    Case("eval episodes val without split", ["reward", "eval", "--dataset", "{featured}", "--model", "{model}"], "no split.json"),
    Case("eval negative videos", [*EVAL, "{model}", "--videos", "-1"], "-1 must be >= 0"),
    Case("eval readout not key=value", [*EVAL, "{model}", "--readout", "stage"], "is not KEY=VALUE"),
    Case("eval readout of a learned field", [*EVAL, "{model}", "--readout", "d_model=64"], "'d_model' is fixed by the trained weights"),
    Case("eval readout bad value", [*EVAL, "{model}", "--readout", "readout_filter=hmm"], "readout_filter 'hmm' is not one of"),
    Case("cache unknown layer", ["data", "cache-embeddings", "{good}", "--layer", "blocks.99"], "has no layer 'blocks.99'"),
    Case("annotate model missing config", ["reward", "annotate", "--dataset", "{featured}", "--model", "{case}"],
         "missing config.json", prep=model_edit(lambda c: (c / "config.json").unlink())),
    Case("annotate store of other tasks", ["reward", "annotate", "--model", "{model}", "--dataset", "{case}"],
         "open the fridge", prep=other_tasks),
    # --- bc train
    Case("bc unknown policy key", BC_CFG, "'hidden_dims'", files={"c.yaml": "policy: {type: bc, hidden_dims: 64}\n"}),
    Case("bc unknown policy type", BC_CFG, "'transformer'", files={"c.yaml": "policy: {type: transformer}\n"}),
    Case("bc policy without type", BC_CFG, "policy needs a `type`", files={"c.yaml": "policy: {hidden_dim: 64}\n"}),
    Case("bc weights mode", BC_CFG, "weights.mode 'fancy'", files={"c.yaml": CAMERA_POLICY + "weights: {mode: fancy}\n"}),
    Case("bc weights gate yaml", BC_CFG, "min_final_progress must be in (0, 1]",
         files={"c.yaml": CAMERA_POLICY + "weights: {min_final_progress: 2}\n"}),
    Case("bc --weights choice", [*BC, "--weights", "magic"], "invalid choice: 'magic'"),
    Case("bc --min-final-progress", [*BC, "--min-final-progress", "2"], "2.0 is outside (0, 1]"),
    Case("bc --steps negative", [*BC, "--steps", "-1"], "-1 must be >= 1"),
    Case("bc truncated parquet", [*BC_CFG, "--weights", "soft", "--progress", "{tmp}/bad.parquet"], "not a readable parquet file",
         prep=truncated_parquet, files={"c.yaml": CAMERA_POLICY}),
    Case("bc parquet missing", [*BC_CFG, "--weights", "soft", "--progress", "{tmp}/gone.parquet"], "no such progress file",
         files={"c.yaml": CAMERA_POLICY}),
    Case("bc parquet wrong columns", [*BC_CFG, "--weights", "soft", "--progress", "{tmp}/bad.parquet"], "no column 'episode_index'",
         prep=wrong_columns_parquet, files={"c.yaml": CAMERA_POLICY}),
    Case("bc unknown progress name", [*BC_CFG, "--weights", "soft", "--progress", "sarm_v9"], "sarm_v9",
         files={"c.yaml": CAMERA_POLICY}),
    Case("bc unknown quality", [*BC_CFG, "--qualities", "gold"], "match no episode", files={"c.yaml": CAMERA_POLICY}),
    Case("bc state key missing", BC_CFG, "no feature 'observation.joints'",
         files={"c.yaml": "policy: {type: bc, cameras: [], state_key: observation.joints}\n"}),
    Case("bc act camera missing", BC_CFG, "observation.images.top",
         files={"c.yaml": "policy: {type: act, cameras: [observation.images.top]}\n"}),
    Case("bc act unknown lerobot field", BC_CFG, "lerobot.dim_modl is not a field of LeRobot's ACTConfig",
         files={"c.yaml": "policy: {type: act, lerobot: {dim_modl: 8}}\n"}),
    Case("bc act settings lerobot refuses", BC_CFG, "LeRobot's ACTConfig refuses",
         files={"c.yaml": "policy: {type: act, lerobot: {chunk_size: 4, n_action_steps: 8}}\n"}),
    Case("bc act features set here", BC_CFG, "lerobot.input_features is set from the store",
         files={"c.yaml": "policy: {type: act, lerobot: {input_features: {}}}\n"}),
    Case("bc lerobot policy unsupported", BC_CFG, "'pi0'", files={"c.yaml": "policy: {type: pi0}\n"}),
    Case("bc vision camera missing", BC_CFG, "reads camera 'observation.images.top'",
         files={"c.yaml": "policy: {type: vision_bc, cameras: [observation.images.top]}\n"}),
    Case("bc vision execute beyond horizon", BC_CFG, "execute 12 exceeds horizon 10",
         files={"c.yaml": "policy: {type: vision_bc, execute: 12}\n"}),
    Case("bc chunk cache negative", BC_CFG, "chunk_cache_mb must be >= 0", files={"c.yaml": "chunk_cache_mb: -5\n"}),
    # --- sim eval
    Case("sim eval pixel policy image size", [*SIM, "--task", "stack", "--policy", "{act}", "--image-size", "64"],
         "differs from the 32 px frames"),
    Case("sim eval lerobot folder without processor", [*SIM, "--task", "stack", "--policy", "{case}"],
         "missing policy_preprocessor.json",
         prep=lambda w, c: (shutil.copytree(w["act"], c), (c / "policy_preprocessor.json").unlink())),
    Case("sim eval policy missing", [*SIM, "--task", "stack", "--policy", "{tmp}/nopolicy"], "no such file or folder"),
    Case("sim eval unknown task", [*SIM, "--task", "juggle", "--policy", "{policy}"], "unknown task 'juggle'"),
    Case("sim eval no task", [*SIM, "--policy", "{policy}"], "give --task"),
    Case("sim eval zero envs", [*SIM, "--task", "stack", "--policy", "{policy}", "--envs", "0"], "0 is outside [1, 256]"),
    Case("sim eval reward model as policy", [*SIM, "--task", "stack", "--policy", "{model}"], "'sarm'"),
    Case("sim eval recipe task mismatch", [*SIM, "--task", "drawer", "--recipe", "{tmp}/r.yaml", "--policy", "{policy}"],
         "differs from the recipe's task", files={"r.yaml": "task: stack\n"}),
    Case("sim eval policy bad config", [*SIM, "--task", "stack", "--policy", "{case}"], "not valid JSON",
         prep=lambda w, c: (shutil.copytree(w["policy"], c), (c / "config.json").write_text("[1,"))),
    # --- rl
    Case("rl reward not a model", [*RL, "--reward", "{good}"], "not a reward model folder"),
    Case("rl reward other cameras", [*RL, "--reward", "{case}"], "the sim renders", prep=other_cameras),
    Case("rl reward other task", [*RL, "--reward", "{model}"], "trained on tasks"),
    Case("rl gamma above 1", [*RL, "--gamma", "1.5"], "gamma must be in (0, 1]"),
    Case("rl gamma zero", [*RL, "--gamma", "0"], "gamma must be in (0, 1]"),
    Case("rl unknown task", [*RL, "--task", "juggle"], "unknown task 'juggle'"),
    Case("rl oracle naive", [*RL, "--reward", "oracle", "--shaping", "naive"], "oracle goes with shaping: pbrs"),
    Case("rl demos of another task", [*RL, "--task", "stack", "--demos", "{case}"], "its recipe is for 'pick_place'",
         prep=with_recipe("pick_place")),
    Case("rl demos without recipe", [*RL, "--demos", "{good}"], "no recipe"),
    Case("rl base policy not a policy", [*RL, "--base-policy", "{good}"], "not a policy folder"),
    Case("rl config bad algo", [*RL, "--config", "{tmp}/r.yaml"], "algo 'ddpg' unknown", files={"r.yaml": "algo: ddpg\n"}),
    Case("rl config unknown key", [*RL, "--config", "{tmp}/r.yaml"], "unknown key 'horizon'", files={"r.yaml": "horizon: 5\n"}),
    Case("rl eval not a run", ["rl", "eval", "--policy", "{good}"], "not an rl train run"),
    # --- deploy
    Case("deploy unknown robot", ["deploy", "--robot.type=ur5", "--policy.path={policy}"], "robot.type 'ur5' unknown"),
    Case("deploy real arm without port", ["deploy", "--robot.type=so101_follower", "--policy.path={policy}"],
         "needs --robot.port"),
    Case("deploy policy missing", ["deploy", "--robot.type=sim_so101", "--policy.path={tmp}/nopolicy"], "no such file or folder"),
    Case("deploy reward model as policy", ["deploy", "--robot.type=sim_so101", "--policy.path={model}"], "'sarm'"),
    Case("deploy unknown twin camera", ["deploy", "--robot.type=sim_so101", "--robot.task=juggle", "--policy.path={policy}"],
         "juggle"),
    # --- demo
    Case("demo unknown key", ["demo", "--config", "{tmp}/d.yaml", "--out", "{tmp}/demo"], "unknown key 'tsk'",
         files={"d.yaml": "dataset: {tsk: stack}\n"}),
    Case("demo bad mix", ["demo", "--config", "{tmp}/d.yaml", "--out", "{tmp}/demo"], "sums to 1.5, not 1",
         files={"d.yaml": "dataset: {mix: {expert: 1.0, failure: 0.5}}\n"}),
]


def test_the_table_is_big_enough():
    assert len(CASES) >= 80
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_one_line(case, world, tmp_path, capsys):
    for name, text in case.files.items():
        (tmp_path / name).write_text(text)
    case_path = tmp_path / "case"
    if case.prep is not None:
        case.prep(world, case_path)
    fmt = {**{k: str(v) for k, v in world.items()}, "tmp": str(tmp_path), "case": str(case_path)}
    argv = [a.format(**fmt) for a in case.argv]
    watched = [world["good"], world["tiny"], world["featured"], world["model"], world["policy"], world["act"], case_path]
    before = [digest(p) for p in watched]
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err, out + err
    assert code == case.code, f"exit {code}\nstdout: {out}\nstderr: {err}"
    if case.report:
        assert case.expect in out, out
        assert not err.strip(), err
    else:
        lines = [line for line in err.replace("\r", "\n").splitlines() if "error" in line.lower()]
        assert len(lines) == 1, err
        assert case.expect in lines[0], lines[0]
    assert [digest(p) for p in watched] == before, "a failed command changed a store or checkpoint"
