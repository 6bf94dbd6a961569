"""Crash and resume, command by command, as a user meets them: each writer and trainer of the CLI
runs in a real subprocess, is SIGKILLed at a seeded random moment once it is working, is run again
with the same command, and must end equal to an uninterrupted run: array bytes and safetensors
tensors bit for bit (every computation here is deterministic on one thread), and for the trainers
also the step segments each process ran (``roboreward.training.run_segments``), so a re-run that
silently started again from step 0 (same weights) fails.

Kept fast: one tiny generated store (2 episodes, 32 px), built once per module by the uninterrupted
``data generate`` and copied as the input of the other commands; where a test needs its own
uninterrupted reference, it runs beside the killed process, so the two share the cores.
(``tests/data/test_crash.py`` kills the store writer itself at many more points; ``tests/test_training.py``
kills the shared training loop mid-checkpoint.)
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import zarr
from safetensors.torch import load_file

from roboreward.data import EpisodeStore
from roboreward.data.validate import check_store
from roboreward.training import latest_checkpoint, run_segments

SEED = 20261201
ENV = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
       "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
EPISODES = 2
GENERATE = ["data", "generate", "--task", "pick_place", "--episodes", str(EPISODES), "--mix", "expert=0.5,failure=0.5",
            "--image-size", "32", "--workers", "1"]
# Batches of 16 make blocks of 128 frames: the cache commits several times per camera.
CACHE = ["--image-size", "32", "--batch-size", "16"]
FEATURE_KEY = "efficientnet_lite0-579344248a-32px"
REWARD_STEPS, BC_STEPS = 80, 150
REWARD_YAML = f"""\
model: {{type: sarm, window: 4, frame_gap: 2, d_model: 32, n_heads: 2, n_layers: 1, mlp_ratio: 2, max_rewind: 2,
        state_key: observation.state}}
train: {{steps: {REWARD_STEPS}, batch_size: 8, lr: 1.0e-3, warmup_steps: 2, val_every: 40, ckpt_every: 5, log_every: 10}}
data: {{image_size: 32, val_fraction: 0.34, val_clips: 16}}
"""
BC_YAML = f"""\
policy: {{type: bc, horizon: 4, hidden_dim: 32, n_layers: 2}}
train: {{steps: {BC_STEPS}, batch_size: 16, warmup_steps: 2, val_every: 50, ckpt_every: 10, log_every: 10}}
data: {{image_size: 32, val_fraction: 0.34, val_clips: 32}}
"""


# ---------------------------------------------------------------------------------------- helpers
def cli(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "roboreward.cli", *map(str, args)]


def start(args: list[str], log: Path, kill_at: str | None = None) -> subprocess.Popen:
    """Run the CLI; ``kill_at`` (``<point>:<n>``, roboreward.faults) makes it SIGKILL itself there."""
    env = {**ENV, "ROBOREWARD_KILL_AT": kill_at} if kill_at else ENV
    with open(log, "w") as f:  # the child keeps its own descriptor
        return subprocess.Popen(args, env=env, stdout=f, stderr=subprocess.STDOUT)


def killed_at_point(proc: subprocess.Popen, log: Path) -> None:
    proc.wait(timeout=240)
    assert proc.returncode == -signal.SIGKILL, f"exit {proc.returncode}, not killed at its point\n{log.read_text()[-2000:]}"


def finish(proc: subprocess.Popen, log: Path, timeout: float = 240) -> str:
    proc.wait(timeout=timeout)
    text = log.read_text()
    assert proc.returncode == 0, f"exit {proc.returncode}: {' '.join(map(str, proc.args[3:]))}\n{text[-3000:]}"
    return text


def run(args: list[str], log: Path) -> str:
    return finish(start(args, log), log)


def kill_when(proc: subprocess.Popen, log: Path, ready: Callable[[], bool], delay: float, timeout: float = 120) -> None:
    """SIGKILL ``proc`` ``delay`` seconds after ``ready()`` first holds; fails if it ends first
    (then the test would only check a run that was never interrupted)."""
    deadline = time.monotonic() + timeout
    while not _safe(ready):
        if proc.poll() is not None:
            pytest.fail(f"{proc.args[3:6]} ended (rc {proc.returncode}) before its kill point\n{log.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{proc.args[3:6]} never reached its kill point\n{log.read_text()[-2000:]}")
        time.sleep(0.002)
    time.sleep(delay)
    if proc.poll() is not None:
        pytest.fail(f"{proc.args[3:6]} ended (rc {proc.returncode}) before the kill {delay:.3f}s after its marker; "
                    "make the run longer or the delay shorter")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def _safe(ready: Callable[[], bool]) -> bool:
    try:
        return bool(ready())
    except Exception:  # a store or file caught mid-write by the poll: not ready yet
        return False


def n_committed(path: Path) -> int:
    return EpisodeStore(path).n_episodes


def contents(path: Path) -> dict:
    """Every group's attributes and every array's dtype, shape and bytes in the zarr at ``path``."""
    out: dict = {}

    def walk(group: zarr.Group, prefix: str) -> None:
        out[f"{prefix}/ attrs"] = json.dumps(dict(group.attrs), sort_keys=True, default=str)
        for name, arr in sorted(group.arrays()):
            values = np.asarray(arr[...])
            out[f"{prefix}/{name}"] = (str(values.dtype), values.shape, values.tobytes())
        for name, sub in sorted(group.groups()):
            walk(sub, f"{prefix}/{name}")

    with warnings.catch_warnings():
        # A kill can leave zarr's own temporary files (``*.partial``) beside the keys it was
        # replacing; zarr skips them with a warning, and so does this comparison.
        warnings.filterwarnings("ignore", "Object at .* is not recognized as a component", UserWarning)
        walk(zarr.open_group(str(path), mode="r"), "")
    return out


def assert_same_store(got: Path, want: Path) -> None:
    a, b = contents(got), contents(want)
    assert sorted(a) == sorted(b), sorted(set(a) ^ set(b))
    for key in a:
        if key.endswith(" attrs"):
            assert a[key] == b[key], f"{key}: {a[key][:300]} != {b[key][:300]}"
        else:
            assert a[key][:2] == b[key][:2], f"{key}: {a[key][:2]} != {b[key][:2]}"
            assert a[key][2] == b[key][2], f"{key} differs from the uninterrupted run"


def assert_same_tensors(got: Path, want: Path) -> None:
    a, b = load_file(str(got)), load_file(str(want))
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and a[k].numpy().tobytes() == b[k].numpy().tobytes(), k


def checkpoint_step(out: Path) -> int:
    ckpt = latest_checkpoint(out)
    return 0 if ckpt is None else int(ckpt.name.removeprefix("step_"))


def assert_resumed_run(killed: Path, straight: Path, steps: int, killed_at: int, rerun_log: str) -> None:
    """Bit-equal to the uninterrupted run, and really resumed: the second process started at the
    killed one's last checkpoint and ran only the steps after it."""
    assert 0 < killed_at < steps
    assert f"from step_{killed_at} (step {killed_at} of {steps})" in rerun_log
    assert run_segments(killed) == [[0, killed_at], [killed_at, steps]]
    assert run_segments(straight) == [[0, steps]]
    assert_same_tensors(killed / "model" / "model.safetensors", straight / "model" / "model.safetensors")
    final = f"checkpoints/step_{steps}"
    assert_same_tensors(killed / final / "model.safetensors", straight / final / "model.safetensors")
    assert_same_tensors(killed / final / "training_state.safetensors", straight / final / "training_state.safetensors")


# ---------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("crash")


@pytest.fixture(scope="module")
def generated(work) -> Path:
    """The uninterrupted ``data generate``: the reference of test_generate, the input of the rest."""
    path = work / "generated" / "pp.zarr"
    path.parent.mkdir()
    run(cli(*GENERATE, "--out", path), work / "generate.log")
    return path


@pytest.fixture(scope="module")
def cached(work, generated) -> Path:
    """A copy of ``generated`` with its feature cache from an uninterrupted ``data cache-embeddings``."""
    path = work / "cached" / "pp.zarr"
    shutil.copytree(generated, path)
    run(cli("data", "cache-embeddings", path, *CACHE), work / "cache.log")
    return path


@pytest.fixture(scope="module")
def reward_run(work, cached) -> Path:
    """An uninterrupted ``reward train`` on ``cached``."""
    (work / "reward.yaml").write_text(REWARD_YAML)
    out = work / "reward_straight"
    run(cli("reward", "train", "--config", work / "reward.yaml", "--dataset", cached, "--out", out), work / "reward.log")
    return out


def copy_store(src: Path, dest: Path, features: bool = True) -> Path:
    """A copy of the store ``src``, without its feature cache unless ``features``."""
    shutil.copytree(src, dest, ignore=None if features else shutil.ignore_patterns("features"))
    # zarr 3 lists a group's members from the folders on disk, so leaving the folder out drops the cache.
    assert features or "features" not in zarr.open_group(str(dest), mode="r")
    return dest


# ---------------------------------------------------------------------------------------- data
def test_generate(generated, tmp_path):
    rng = np.random.default_rng([SEED, 1])
    out = tmp_path / "pp.zarr"
    args = cli(*GENERATE, "--out", out)
    # Mid-write of episode k (its arrays written, not committed) or right after committing it.
    point, k = [("store.arrays_written", 1), ("store.arrays_written", 2), ("store.committed", 1)][int(rng.integers(3))]
    killed_at_point(start(args, tmp_path / "killed.log", kill_at=f"{point}:{k}"), tmp_path / "killed.log")
    assert n_committed(out) == (k if point == "store.committed" else k - 1)
    assert not [p for p in check_store(out) if p.severity == "error"]
    run(args, tmp_path / "rerun.log")
    assert check_store(out) == []
    assert_same_store(out, generated)


def test_import_lerobot(work, generated, tmp_path):
    rng = np.random.default_rng([SEED, 2])
    source = work / "lerobot"
    if not source.exists():
        run(cli("data", "export-lerobot", generated, "--out", source), work / "export.log")
    out, ref = tmp_path / "killed" / "pp.zarr", tmp_path / "straight" / "pp.zarr"
    args = cli("data", "import-lerobot", source, "--out", out)
    partial = out.with_name(out.name + ".partial")
    # Killed after writing episode k's arrays, before its commit (k - 1 episodes committed), or just
    # after a commit: exact points, since the whole import of this tiny source takes ~0.2 s.
    k = int(rng.integers(1, EPISODES + 1))
    point = str(rng.choice(["store.arrays_written", "store.committed"]))
    killed_at_point(start(args, tmp_path / "killed.log", kill_at=f"{point}:{k}"), tmp_path / "killed.log")
    assert not out.exists() and n_committed(partial) == (k if point == "store.committed" else k - 1)
    run(args, tmp_path / "rerun.log")
    assert not partial.exists()
    # The uninterrupted reference in this process (LeRobot is imported here already: 10 s less than a
    # process of its own); the import does no floating-point work that threads could change.
    from roboreward.cli import main

    assert main(["data", "import-lerobot", str(source), "--out", str(ref)]) == 0
    assert_same_store(out, ref)


def test_cache_embeddings(cached, generated, tmp_path):
    rng = np.random.default_rng([SEED, 3])
    path = copy_store(generated, tmp_path / "pp.zarr")
    args = cli("data", "cache-embeddings", path, *CACHE)
    group = path / "features" / FEATURE_KEY
    # Killed after block m's features are written, before its `done` counter (m - 1 blocks of 128
    # frames committed): the worst moment, at an exact point.
    n = EpisodeStore(path).n_frames
    m = int(rng.integers(1, (n - 1) // 128 + 2))
    killed_at_point(start(args, tmp_path / "killed.log", kill_at=f"cache.block_written:{m}"), tmp_path / "killed.log")
    assert zarr.open_group(str(group), mode="r").attrs["done"] == 128 * (m - 1)
    run(args, tmp_path / "rerun.log")
    assert_same_store(path, cached)


# ---------------------------------------------------------------------------------------- trainers
def test_reward_train(work, cached, reward_run, tmp_path):
    rng = np.random.default_rng([SEED, 4])
    out = tmp_path / "run"
    args = cli("reward", "train", "--config", work / "reward.yaml", "--dataset", cached, "--out", out)
    proc = start(args, tmp_path / "killed.log")
    kill_when(proc, tmp_path / "killed.log", lambda: (out / "checkpoints" / "latest").is_file(), float(rng.uniform(0.0, 0.4)))
    killed_at = checkpoint_step(out)
    rerun = run(args, tmp_path / "rerun.log")
    assert_resumed_run(out, reward_run, REWARD_STEPS, killed_at, rerun)


def test_bc_train(cached, tmp_path):
    rng = np.random.default_rng([SEED, 5])
    (tmp_path / "bc.yaml").write_text(BC_YAML)
    out, ref = tmp_path / "run", tmp_path / "straight"
    args = cli("bc", "train", "--config", tmp_path / "bc.yaml", "--dataset", cached, "--out", out)
    straight = start(cli("bc", "train", "--config", tmp_path / "bc.yaml", "--dataset", cached, "--out", ref),
                     tmp_path / "straight.log")
    proc = start(args, tmp_path / "killed.log")
    kill_when(proc, tmp_path / "killed.log", lambda: (out / "checkpoints" / "latest").is_file(), float(rng.uniform(0.0, 0.4)))
    killed_at = checkpoint_step(out)
    rerun = run(args, tmp_path / "rerun.log")
    finish(straight, tmp_path / "straight.log")
    assert_resumed_run(out, ref, BC_STEPS, killed_at, rerun)


@pytest.mark.parametrize("phase", ["encoding", "writing"])
def test_reward_annotate(cached, reward_run, tmp_path, phase):
    """Killed while it builds the missing feature cache, or once it writes the progress group."""
    rng = np.random.default_rng([SEED, 6, phase == "writing"])
    features = phase == "writing"
    out = copy_store(cached, tmp_path / "killed" / "pp.zarr", features)
    ref = copy_store(cached, tmp_path / "straight" / "pp.zarr", features)
    model = reward_run / "model"
    straight = start(cli("reward", "annotate", "--model", model, "--dataset", ref), tmp_path / "straight.log")
    args = cli("reward", "annotate", "--model", model, "--dataset", out)
    if phase == "encoding":
        # At an exact point: after block m of the cache it builds (512 frames a block) is written,
        # before its `done` counter (a timer after the first block let a fast run finish first).
        m = int(rng.integers(1, (EpisodeStore(out).n_frames - 1) // 512 + 2))
        killed_at_point(start(args, tmp_path / "killed.log", kill_at=f"cache.block_written:{m}"), tmp_path / "killed.log")
    else:
        proc = start(args, tmp_path / "killed.log")
        marker, delay = out / "progress" / "sarm" / "zarr.json", rng.uniform(0.0, 0.01)
        kill_when(proc, tmp_path / "killed.log", marker.is_file, float(delay))
    assert not (out.parent / "pp.sarm_progress.parquet").exists()  # written last: the kill came before
    run(args, tmp_path / "rerun.log")
    finish(straight, tmp_path / "straight.log")
    assert_same_store(out, ref)
    got, want = pq.read_table(out.parent / "pp.sarm_progress.parquet"), pq.read_table(ref.parent / "pp.sarm_progress.parquet")
    assert got.equals(want) and got.schema.metadata == want.schema.metadata


# ---------------------------------------------------------------------------------------- rl
RL_STEPS = 96
RL_YAML = """\
n_envs: 2
max_episode_steps: 12
learning_starts: 16
batch_size: 16
buffer_size: 4000
net_arch: [32, 32]
eval_every: 32
eval_episodes: 2
checkpoint_every: 32
demo_episodes: 1
"""


def test_rl_train(cached, reward_run, tmp_path):
    """SAC with pbrs over the SARM trained above, its demos replayed from the store, killed twice:
    first while writing its second checkpoint (step 64: files written, folder not yet renamed), then,
    resumed from step 32, right after renaming its next checkpoint (step 64 again) into place and
    before the pointer to it moves. SB3's rollout state (the episodes in flight) is not a checkpoint's
    business, so the resumed run is not bit-equal to an uninterrupted one; what must hold is that each
    run continues from the newest complete checkpoint (its weights, optimizers and replay buffer) to
    the full budget, with the evaluations up to that checkpoint kept once."""
    (tmp_path / "rl.yaml").write_text(RL_YAML)
    out = tmp_path / "rl"
    args = cli("rl", "train", "--config", tmp_path / "rl.yaml", "--task", "pick_place", "--reward", reward_run / "model",
               "--shaping", "pbrs", "--demos", cached, "--bc-steps", "10", "--steps", str(RL_STEPS), "--out", out)
    ckpts = out / "checkpoints"

    def complete() -> list[int]:
        return sorted(int(p.name[5:]) for p in ckpts.iterdir() if p.name.startswith("step_") and (p / "state.json").is_file())

    killed_at_point(start(args, tmp_path / "killed1.log", kill_at="rl.checkpoint_files:2"), tmp_path / "killed1.log")
    assert complete() == [32]
    assert list(ckpts.glob(".tmp_*")), "the kill should leave a half-written checkpoint behind"
    killed_at_point(start(args, tmp_path / "killed2.log", kill_at="rl.checkpoint_committed:1"), tmp_path / "killed2.log")
    assert complete() == [32, 64] and not list(ckpts.glob(".tmp_*"))
    killed_state = json.loads((ckpts / "step_64" / "state.json").read_text())
    assert killed_state["resumed_at"] == [32]
    text = run(args, tmp_path / "rerun.log")
    assert "true success" in text and "80% reached at" in text
    assert not list(ckpts.glob(".tmp_*"))
    state = json.loads((ckpts / f"step_{RL_STEPS}" / "state.json").read_text())
    assert state["resumed_at"] == [32, 64] and state["num_timesteps"] == RL_STEPS
    assert state["demo_transitions"] == killed_state["demo_transitions"] > 0  # demos were added once, before step 0
    assert state["replay"]["transitions"] == killed_state["replay"]["transitions"] + (RL_STEPS - 64)
    curve = json.loads((out / "curves.json").read_text())["curve"]
    assert [r["step"] for r in curve] == [0, 32, 64, 96]  # step 0: the warm-started policy, evaluated once
    assert all(r["train_return"] is not None for r in curve[2:])  # episodes of 12 steps ended and were logged
    assert (out / "model" / "policy.safetensors").is_file() and list((out / "tb").rglob("events.out.tfevents*"))
    # The trained policy rolls out through rl eval.
    text = run(cli("rl", "eval", "--policy", out, "--episodes", "2", "--videos", "1"), tmp_path / "eval.log")
    report = json.loads((out / "rl_eval" / "rl_eval.json").read_text())
    assert report["episodes"] == 2 and len(list((out / "rl_eval" / "videos").glob("*.mp4"))) == 1
