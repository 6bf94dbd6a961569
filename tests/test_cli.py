"""The command line as a user runs it: real subprocesses, real stores, one-line errors."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from roboreward.data import EpisodeStore
from roboreward.data.generate import quality_plan, parse_mix
from roboreward.data.validate import check_store

ENV = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "HF_HUB_OFFLINE": "1"}


def cli(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "roboreward.cli", *map(str, args)], capture_output=True, text=True, env=ENV, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_quality_plan_counts_and_interleaves():
    plan = quality_plan(10, parse_mix("expert=0.5,suboptimal=0.3,failure=0.2"))
    assert [plan.count(q) for q in ("expert", "suboptimal", "failure")] == [5, 3, 2]
    assert set(plan[:5]) == {"expert", "suboptimal", "failure"}  # any prefix is mixed


def test_generate_validate_inspect(tmp_path):
    out = tmp_path / "pp.zarr"
    proc = cli("data", "generate", "--task", "pick_place", "--episodes", 5, "--mix", "expert=0.6,failure=0.4",
               "--image-size", 32, "--out", out, "--workers", 1)
    assert "episodes   5" in proc.stdout
    store = EpisodeStore(out)
    assert store.n_episodes == 5 and store.robot_type == "so101_follower"
    assert [e.quality for e in store.episodes].count("failure") == 2
    assert all(e.success for e in store.episodes if e.quality == "expert")
    assert not any(e.success for e in store.episodes if e.quality == "failure")
    assert check_store(out) == []
    assert "valid (0 errors" in cli("data", "validate", out).stdout
    summary = json.loads(cli("data", "inspect", out, "--json").stdout)
    assert summary["quality"]["expert"]["success_rate"] == 1.0
    assert summary["quality"]["failure"]["success_rate"] == 0.0
    assert set(summary["stage_seconds"]) == {"reach", "grasp", "transport", "place"}
    # Same recipe again: nothing to do; another recipe on the same store: refused in one line.
    cli("data", "generate", "--task", "pick_place", "--episodes", 5, "--mix", "expert=0.6,failure=0.4",
        "--image-size", 32, "--out", out, "--workers", 1)
    assert EpisodeStore(out).n_episodes == 5
    bad = cli("data", "generate", "--task", "stack", "--episodes", 5, "--image-size", 32, "--out", out, check=False)
    assert bad.returncode == 2 and "different recipe" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "args, expected",
    [
        (["data", "validate", "/nonexistent/store.zarr"], "no such file or folder"),
        (["data", "generate", "--task", "juggle", "--out", "{tmp}/x.zarr"], "unknown task 'juggle'"),
        (["data", "generate", "--task", "stack", "--mix", "expert=1,great=1", "--out", "{tmp}/x.zarr"], "quality 'great'"),
        (["data", "generate", "--task", "stack", "--episodes", "many", "--out", "{tmp}/x.zarr"], "is not an integer"),
        (["data", "inspekt", "x"], "invalid choice: 'inspekt'"),
        (["demo", "--config", "{tmp}/bad.yaml", "--out", "{tmp}/demo"], "unknown key 'tsk'"),
    ],
)
def test_bad_input_gives_one_line(tmp_path, args, expected):
    (tmp_path / "bad.yaml").write_text("dataset: {tsk: stack}\n")
    proc = cli(*[a.format(tmp=tmp_path) for a in args], check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_demo_runs_on_a_small_config(tmp_path):
    config = tmp_path / "demo.yaml"
    config.write_text(
        "dataset: {task: drawer, episodes: 4, image_size: 32, mix: {expert: 0.5, failure: 0.5}}\n"
        "evaluation: {episodes: 2, mix: {expert: 0.5, failure: 0.5}}\n"
        "reward: {model: {type: sarm, d_model: 32, window: 4, max_rewind: 3}, train: {steps: 20, batch_size: 16, warmup_steps: 2,"
        " val_every: 10, ckpt_every: 10}, data: {image_size: 32, val_fraction: 0.5}}\nworkers: 1\n"
    )
    proc = cli("demo", "--config", config, "--out", tmp_path / "demo")
    assert "validating" in proc.stdout and "episodes   4" in proc.stdout and "[5/5]" in proc.stdout
    assert "evaluation set: 2 drawer episodes on unseen seeds" in proc.stdout
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert summary["dataset"]["quality"]["expert"]["episodes"] == 2
    assert -1.0 <= summary["reward"]["voc"] <= 1.0 and summary["reward"]["counts"] == {"n_success": 1, "n_failure": 1}
    assert (tmp_path / "demo" / "sarm" / "model" / "model.safetensors").is_file()
    assert list((tmp_path / "demo" / "sarm" / "eval" / "videos").glob("*.mp4"))


def test_demo_yaml_mirrors_the_embedded_defaults():
    from pathlib import Path

    from roboreward.config import load_config
    from roboreward.demo import DemoConfig

    root = Path(__file__).resolve().parent.parent
    assert load_config(DemoConfig, root / "configs" / "demo.yaml") == DemoConfig()
