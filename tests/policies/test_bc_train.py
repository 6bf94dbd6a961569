"""`roboreward bc train` end to end on a small generated sim store: plain and RA-BC weighted."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from roboreward.data.generate import Recipe, generate_store
from roboreward.policies import Policy

ENV = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "HF_HUB_OFFLINE": "1"}
CONFIG = """\
policy: {type: bc, horizon: 4, hidden_dim: 32, n_layers: 2}
train: {steps: 15, batch_size: 16, warmup_steps: 2, val_every: 100, ckpt_every: 10}
data: {image_size: 32, val_fraction: 0.25}
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("bc") / "pp.zarr"
    generate_store(path, Recipe(task="pick_place", episodes=4, mix={"expert": 0.5, "failure": 0.5}, image_size=32), workers=1, progress=False)
    return path


def run(*args):
    return subprocess.run([sys.executable, "-m", "roboreward.cli", "bc", "train", *map(str, args)],
                          capture_output=True, text=True, env=ENV, timeout=300)


def test_bc_train_plain_and_rabc(store, tmp_path):
    (tmp_path / "bc.yaml").write_text(CONFIG)
    plain = run("--dataset", store, "--out", tmp_path / "plain", "--config", tmp_path / "bc.yaml")
    assert plain.returncode == 0, plain.stderr
    policy = Policy.from_pretrained(tmp_path / "plain" / "model")
    assert policy.config.horizon == 4
    weighted = run("--dataset", store, "--out", tmp_path / "rabc", "--config", tmp_path / "bc.yaml",
                   "--weights", "soft", "--progress", "gt.progress")
    assert weighted.returncode == 0, weighted.stderr
    info = json.loads((tmp_path / "rabc" / "weights.json").read_text())
    assert info["mode"] == "soft"
    # 2 expert + 2 failure episodes, 1 held out: the training split has both.
    assert info["mean_weight"]["failure"] < info["mean_weight"]["expert"]


def test_bc_train_bad_progress_source_is_one_line(store, tmp_path):
    (tmp_path / "bc.yaml").write_text(CONFIG)
    bad = run("--dataset", store, "--out", tmp_path / "x", "--config", tmp_path / "bc.yaml", "--weights", "soft",
              "--progress", "sarm")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and "sarm" in bad.stderr


def test_sim_eval_rolls_out_a_trained_policy(store, tmp_path):
    (tmp_path / "bc.yaml").write_text(CONFIG)
    assert run("--dataset", store, "--out", tmp_path / "run", "--config", tmp_path / "bc.yaml").returncode == 0
    proc = subprocess.run(
        [sys.executable, "-m", "roboreward.cli", "sim", "eval", "--policy", str(tmp_path / "run" / "model"), "--task",
         "pick_place", "--episodes", "3", "--envs", "2", "--image-size", "32", "--max-steps", "12", "--videos", "1",
         "--out", str(tmp_path / "eval")], capture_output=True, text=True, env=ENV, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "eval" / "sim_eval.json").read_text())
    assert report["episodes"] == 3 and len({r["seed"] for r in report["rollouts"]}) == 3
    assert all(r["steps"] <= 12 for r in report["rollouts"])
    low, high = report["ci95"]
    assert 0.0 <= low <= report["success_rate"] <= high <= 1.0
    assert len(list((tmp_path / "eval" / "videos").glob("*.mp4"))) == 1


def test_wilson_interval_by_hand():
    from roboreward.policies.evaluate import wilson_interval

    low, high = wilson_interval(0, 10)
    assert low == 0.0 and abs(high - 0.2775) < 1e-3
    low, high = wilson_interval(5, 10)
    assert abs(low - 0.2366) < 1e-3 and abs(high - 0.7634) < 1e-3
