"""Fixtures for the hardware tests: a tiny generated sim store, a state-only BC policy trained on it
(and one that reads the simulator's object poses), all at 32 px so they build in seconds."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ENV = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
BC_YAML = """\
policy: {{type: bc, cameras: [], horizon: 4, hidden_dim: 32, n_layers: 2{extra}}}
train: {{steps: 40, batch_size: 16, warmup_steps: 2, val_every: 40, ckpt_every: 40, log_every: 10}}
data: {{image_size: 32, val_fraction: 0.34, val_clips: 16}}
"""


def cli(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "roboreward.cli", *map(str, args)], env={**ENV, **kw.pop("env", {})},
                          capture_output=True, text=True, **kw)


def ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="session")
def hw(tmp_path_factory) -> dict[str, Path]:
    # Built through the CLI's main in this process: the subprocess path of each command has its own tests.
    from roboreward.cli import main

    base = tmp_path_factory.mktemp("hw")
    store = base / "pp.zarr"
    assert main(["data", "generate", "--task", "pick_place", "--episodes", "3", "--mix", "expert=1.0", "--image-size",
                 "32", "--workers", "1", "--out", str(store)]) == 0
    (base / "bc.yaml").write_text(BC_YAML.format(extra=""))
    assert main(["bc", "train", "--config", str(base / "bc.yaml"), "--dataset", str(store), "--out", str(base / "bc")]) == 0
    (base / "bc_env.yaml").write_text(BC_YAML.format(extra=", env_state_key: observation.environment_state"))
    assert main(["bc", "train", "--config", str(base / "bc_env.yaml"), "--dataset", str(store), "--out",
                 str(base / "bc_env")]) == 0
    return {"store": store, "policy": base / "bc" / "model", "env_policy": base / "bc_env" / "model", "base": base}
