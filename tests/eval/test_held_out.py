"""``reward eval --episodes val`` finds the held-out split of the right store from any working
directory, whether split.json records the store's path resolved or as typed (relative to the
training run's working directory), and still refuses another store."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from evaltoy import HELD_OUT, TRAIN

from roboreward.cli import _held_out
from roboreward.errors import RoborewardError

ENV = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _run_folder(root, recorded: str):
    """root/proj/{data/pp.zarr, runs/sarm/{model/, split.json}} as `reward train --dataset data/pp.zarr
    --out runs/sarm` run in root/proj writes it; split.json records the dataset as ``recorded``."""
    proj = root / "proj"
    (proj / "data" / "pp.zarr").mkdir(parents=True)
    (proj / "runs" / "sarm" / "model").mkdir(parents=True)
    (proj / "runs" / "sarm" / "split.json").write_text(json.dumps({"dataset": recorded, "train": TRAIN, "val": HELD_OUT}))
    (root / "elsewhere").mkdir()
    return proj


@pytest.mark.parametrize("recorded", ["data/pp.zarr", "./data/../data/pp.zarr", "ABSOLUTE"])
def test_held_out_finds_the_split_from_another_working_directory(tmp_path, monkeypatch, recorded):
    proj = _run_folder(tmp_path, str(tmp_path / "proj" / "data" / "pp.zarr") if recorded == "ABSOLUTE" else recorded)
    model = proj / "runs" / "sarm" / "model"
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert _held_out(model, proj / "data" / "pp.zarr", "val") == HELD_OUT
    monkeypatch.chdir(proj / "runs")  # relative model and dataset paths, typed from yet another folder
    assert _held_out(Path("sarm/model"), Path("../data/pp.zarr"), "val") == HELD_OUT
    (tmp_path / "link.zarr").symlink_to(proj / "data" / "pp.zarr")  # a symlink to the store is the store
    assert _held_out(model, tmp_path / "link.zarr", "val") == HELD_OUT


def test_held_out_still_refuses_another_store_and_says_what_to_do(tmp_path, monkeypatch):
    proj = _run_folder(tmp_path, "data/pp.zarr")
    other = tmp_path / "elsewhere" / "data" / "pp.zarr"  # same relative path, another folder
    other.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RoborewardError) as info:
        _held_out(proj / "runs" / "sarm" / "model", other, "val")
    message = str(info.value)
    assert "trained on data/pp.zarr" in message and str(other) in message
    assert "--episodes all would score its training episodes too" in message


def test_reward_eval_from_another_working_directory_uses_the_held_out_split(eval_store, tiny_sarm, tmp_path):
    proj = tmp_path / "proj"
    shutil.copytree(eval_store.path, proj / "data" / "eval.zarr")
    run = proj / "runs" / "sarm"
    tiny_sarm.save_pretrained(run / "model")
    # As `reward train --dataset data/eval.zarr --out runs/sarm` run in proj records it today.
    (run / "split.json").write_text(json.dumps({"dataset": "data/eval.zarr", "train": TRAIN, "val": HELD_OUT}))
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "roboreward.cli", "reward", "eval", "--model", str(run / "model"),
         "--dataset", os.path.relpath(proj / "data" / "eval.zarr", cwd), "--out", "ev", "--videos", "0", "--plots", "0"],
        cwd=cwd, capture_output=True, text=True, env=ENV, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    metrics = json.loads((cwd / "ev" / "metrics.json").read_text())
    assert metrics["episodes"] == HELD_OUT  # the held-out split, not --episodes all
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("voc ") and lines[1].startswith("after success: drop mean")
    assert "[3 succ / 3 fail]" in proc.stdout  # the figures say what they rest on
