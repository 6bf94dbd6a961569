"""The shared training loop: learning, checkpoint files (no pickle), exact resume after a real
SIGKILL, the ``latest`` pointer, config checks."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_model
from torch import nn
from torch.utils.data import Dataset

from roboreward import training
from roboreward.training import TrainConfig, TrainError, fit, latest_checkpoint, warmup_cosine

TESTS = Path(__file__).parent


@pytest.fixture(autouse=True)
def one_thread():
    # The toy model is tiny: one thread is ~10x faster than two fighting over 2 busy cores, and the
    # killed child process uses the same setting, so both runs do the same arithmetic.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class ToyModel(nn.Module):
    """y = f(x) regression with dropout, so in-step randomness matters for exact resume."""

    def __init__(self, slow: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 32), nn.GELU(), nn.Dropout(0.1), nn.Linear(32, 1))
        self.slow = slow

    def loss(self, batch):
        if self.slow:
            time.sleep(self.slow)
        pred = self.net(batch["x"]).squeeze(-1)
        mse = ((pred - batch["y"]) ** 2).mean()
        return {"loss": mse, "mae": (pred - batch["y"]).abs().mean().detach()}

    def save_pretrained(self, path):
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.json").write_text(json.dumps({"type": "toy"}))
        save_model(self, str(path / "model.safetensors"))
        return path


class ToyData(Dataset):
    def __init__(self, n: int = 200):
        rng = np.random.default_rng(0)
        self.x = torch.from_numpy(rng.standard_normal((n, 8)).astype(np.float32))
        self.y = torch.sin(self.x[:, 0] * 2) + 0.5 * self.x[:, 1]

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i]}


def toy_config(**kw) -> TrainConfig:
    base = dict(steps=60, batch_size=16, lr=3e-3, warmup_steps=5, val_every=20, ckpt_every=10, keep_checkpoints=2,
                log_every=5, seed=3)
    base.update(kw)
    return TrainConfig(**base)


def run_toy(out, slow: float = 0.0, validate=None, **kw) -> Path:
    """Fresh model from a fixed init seed, then ``fit`` (which resumes when ``out`` has checkpoints)."""
    torch.manual_seed(0)
    model = ToyModel(slow)
    return fit(model, ToyData(), toy_config(**kw), out, validate=validate, progress=False)


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


# ------------------------------------------------------------------------------------ config
def test_config_validation_names_field_and_values():
    with pytest.raises(TrainError, match="mixed_precision 'fp16' is not one of"):
        TrainConfig(mixed_precision="fp16")
    with pytest.raises(TrainError, match="keep_checkpoints must be an int >= 1"):
        TrainConfig(keep_checkpoints=0)
    with pytest.raises(TrainError, match="lr must be > 0"):
        TrainConfig(lr=0.0)
    assert training.resolve_mixed_precision("auto", torch.device("cuda")) == "bf16"
    assert training.resolve_mixed_precision("auto", torch.device("cpu")) == "no"
    assert training.resolve_mixed_precision("no") == "no"


def test_schedule_and_data_order():
    # Warmup reaches the peak at the last warmup step; cosine ends at 0.
    assert warmup_cosine(0, 4, 20) == pytest.approx(0.25) and warmup_cosine(3, 4, 20) == 1.0
    assert warmup_cosine(4, 4, 20) == 1.0 and warmup_cosine(20, 4, 20) == pytest.approx(0.0)
    full = training.StepBatchSampler(10, 4, seed=1, start=0, end=6)
    batches = list(full)
    # Every epoch is a permutation; batches run across epoch boundaries; nothing dropped.
    flat = np.concatenate(batches)
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:20]) == list(range(10))
    # A resumed sampler yields exactly the remaining batches; two processes split each global batch.
    assert list(training.StepBatchSampler(10, 4, seed=1, start=3, end=6)) == batches[3:]
    halves = [list(training.StepBatchSampler(10, 4, 1, 0, 6, rank=r, world=2)) for r in (0, 1)]
    assert [a + b for a, b in zip(*halves)] == batches
    with pytest.raises(TrainError, match="divisible"):
        training.StepBatchSampler(10, 5, 1, 0, 6, rank=0, world=2)


# ------------------------------------------------------------------------------------ learning and files
def test_loss_falls_and_outputs(tmp_path):
    calls = []

    def validate(model):
        assert not model.training and not torch.is_grad_enabled()
        data, dev = ToyData(), next(model.parameters()).device
        calls.append(1)
        return {"mse": float(((model.net(data.x.to(dev)).squeeze(-1).cpu() - data.y) ** 2).mean())}

    torch.manual_seed(0)
    model = ToyModel()
    data = ToyData()
    with torch.no_grad():
        before = float(((model.net(data.x).squeeze(-1) - data.y) ** 2).mean())
    final = fit(model, data, toy_config(steps=150, val_every=50, ckpt_every=50), tmp_path / "run",
                validate=validate, progress=False)
    assert final == tmp_path / "run" / "model"
    model.eval().cpu()
    with torch.no_grad():
        after = float(((model.net(data.x).squeeze(-1) - data.y) ** 2).mean())
    assert after < 0.5 * before, (before, after)
    assert len(calls) == 3  # steps 50, 100, 150
    assert sorted(p.name for p in final.iterdir()) == ["config.json", "model.safetensors"]
    # Last K checkpoints kept; latest names the newest.
    ckpts = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["latest", "step_100", "step_150"]
    assert (ckpts / "latest").read_text().strip() == "step_150"
    # TensorBoard events with the loss terms, lr, steps/s and val metrics.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "run" / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/mae", "train/grad_norm", "train/lr", "train/steps_per_s", "val/mse"} <= tags


def test_checkpoint_files_are_safetensors_and_json(tmp_path):
    run_toy(tmp_path / "run", steps=20)
    ckpt = latest_checkpoint(tmp_path / "run")
    assert ckpt.name == "step_20"
    names = sorted(p.name for p in ckpt.iterdir())
    assert names == ["config.json", "model.safetensors", "training_state.json", "training_state.safetensors"]
    for p in ckpt.iterdir():
        head = p.read_bytes()[:2]
        assert head != b"\x80\x04" and not p.read_bytes().startswith(b"PK"), f"{p.name} looks like a pickle/zip"
    meta = json.loads((ckpt / "training_state.json").read_text())
    assert meta["step"] == 20 and meta["run_config"]["train"]["seed"] == 3 and meta["num_processes"] == 1
    assert meta["mixed_precision"] == ("bf16" if torch.cuda.is_available() else "no")  # mixed_precision: auto
    tensors = load_file(str(ckpt / "training_state.safetensors"))
    assert any(".exp_avg_sq" in k for k in tensors) and "s.rng.torch" in tensors
    # Everything that is not a tensor is plain JSON: scheduler, hyper-parameters.
    assert meta["state"]["scheduler"]["last_epoch"] == 20


# ------------------------------------------------------------------------------------ exact resume
CHILD = """
import sys
sys.path.insert(0, {tests!r})
import torch
torch.set_num_threads(1)
import test_training as t
t.run_toy({out!r}, slow=0.01, steps=120, ckpt_every=7, keep_checkpoints=3)
"""


def test_resume_after_sigkill_equals_uninterrupted_run(tmp_path):
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-c", CHILD.format(tests=str(TESTS), out=str(out))], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    latest = out / "checkpoints" / "latest"
    deadline = time.time() + 60
    try:
        # Kill once a few checkpoints exist, i.e. mid-run, quite likely mid-write (one every 7 steps).
        while time.time() < deadline and proc.poll() is None:
            if latest.is_file() and latest.read_text().strip() in ("step_35", "step_42", "step_49", "step_56"):
                break
            time.sleep(0.005)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "model").exists()
    ckpt = latest_checkpoint(out)
    assert ckpt is not None and 35 <= int(ckpt.name[5:]) < 120
    # The pointer names a complete folder whose files all load.
    named = out / "checkpoints" / latest.read_text().strip()
    assert training._complete(named)
    load_file(str(named / "training_state.safetensors"))
    json.loads((named / "training_state.json").read_text())

    resumed = run_toy(out, steps=120, ckpt_every=7, keep_checkpoints=3)
    straight = run_toy(tmp_path / "straight", steps=120, ckpt_every=7, keep_checkpoints=3)
    assert_same_weights(resumed, straight)
    # Not a silent restart from step 0 (which would give the same weights): the second process
    # started at the killed one's last checkpoint and ran only the remaining steps.
    killed_at = int(ckpt.name[5:])
    assert training.run_segments(out) == [[0, killed_at], [killed_at, 120]]
    assert training.run_segments(tmp_path / "straight") == [[0, 120]]
    # Not vacuous: the run moved the weights a long way from their initialisation.
    torch.manual_seed(0)
    init = ToyModel().state_dict()
    assert not torch.allclose(weights(straight)["net.0.weight"], init["net.0.weight"], atol=1e-3)
    # Optimizer moments too: the final checkpoints agree bit for bit.
    a = load_file(str(out / "checkpoints" / "step_120" / "training_state.safetensors"))
    b = load_file(str(tmp_path / "straight" / "checkpoints" / "step_120" / "training_state.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a if "optimizer" in k)


def test_crash_while_writing_a_checkpoint_keeps_latest_valid(tmp_path, monkeypatch):
    out = tmp_path / "run"
    real = training.save_dir_atomic

    def dies_at_step_20(dest, write):
        if dest.name == "step_20":
            tmp = dest.with_name(f".tmp_{dest.name}_{os.getpid()}")
            tmp.mkdir(parents=True)
            (tmp / "model.safetensors").write_bytes(b"half")  # what a kill mid-write leaves
            raise KeyboardInterrupt("killed mid-write")
        return real(dest, write)

    monkeypatch.setattr(training, "save_dir_atomic", dies_at_step_20)
    with pytest.raises(KeyboardInterrupt):
        run_toy(out, steps=40)
    assert (out / "checkpoints" / "latest").read_text().strip() == "step_10"
    assert latest_checkpoint(out).name == "step_10"
    monkeypatch.setattr(training, "save_dir_atomic", real)
    resumed = run_toy(out, steps=40)
    assert not list((out / "checkpoints").glob(".tmp_*"))  # the half-written folder is cleaned up
    assert_same_weights(resumed, run_toy(tmp_path / "straight", steps=40))
    assert training.run_segments(out) == [[0, 10], [10, 40]]


def test_builder_is_seeded_from_train_seed(tmp_path):
    # fit seeds right before build(), so the initial weights follow train.seed wherever the global
    # RNG stood before (here: drawn from on purpose).
    def init_of(seed, out):
        torch.rand(int(seed) + 7)
        seen = {}

        def build():
            model = ToyModel()
            seen.update({k: v.clone() for k, v in model.state_dict().items()})
            return model

        fit(build, ToyData(), toy_config(steps=1, seed=seed), out, progress=False)
        return seen

    a, b, c = init_of(5, tmp_path / "a"), init_of(5, tmp_path / "b"), init_of(6, tmp_path / "c")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["net.0.weight"], c["net.0.weight"])
    assert_same_weights(tmp_path / "a" / "model", tmp_path / "b" / "model")


def test_validation_is_printed_one_line_each(tmp_path, capsys):
    run_toy(tmp_path / "run", steps=20, val_every=10, validate=lambda model: {"loss": 0.1234567, "acc": torch.tensor(0.5)})
    lines = [line for line in capsys.readouterr().out.splitlines() if " val " in line]
    assert lines == ["step 10/20  val loss 0.1235  acc 0.5", "step 20/20  val loss 0.1235  acc 0.5"]


def test_validation_does_not_change_training(tmp_path):
    def noisy_validate(model):
        torch.rand(1000)  # draws from the global RNG; must not shift training's randomness
        np.random.rand(10)
        return {"x": 1.0}

    a = run_toy(tmp_path / "a", steps=30, val_every=5, validate=noisy_validate)
    b = run_toy(tmp_path / "b", steps=30, val_every=0)
    assert_same_weights(a, b)


def test_resume_with_a_different_config_is_refused(tmp_path):
    out = tmp_path / "run"
    run_toy(out, steps=20)
    with pytest.raises(TrainError, match=r"different config \(train.lr: 0.003 there, 0.001 now\)"):
        run_toy(out, steps=20, lr=1e-3)
    with pytest.raises(TrainError, match="train.steps"):
        training.check_resume_config(out, {"train": asdict(toy_config(steps=30))})
    # Logging and checkpoint cadence do not change the weights: allowed.
    assert training.check_resume_config(out, {"train": asdict(toy_config(steps=20, log_every=1, ckpt_every=3))})
    # A field the saved run predates resumes at its off value (it trained without it), not at another.
    same = asdict(toy_config(steps=20))
    for off in (0, 0.0, None, False, {}, []):
        assert training.check_resume_config(out, {"train": same, "data": {"augment_copies": off}})
    with pytest.raises(TrainError, match=r"different config \(data: None there, \{'augment_copies': 3\} now\)"):
        training.check_resume_config(out, {"train": same, "data": {"augment_copies": 3}})
    # A finished run re-run with the same config just rewrites the final model, training nothing.
    assert_same_weights(run_toy(out, steps=20), out / "checkpoints" / "step_20")
    assert training.run_segments(out) == [[0, 20]]


DDP_CHILD = """
import sys, torch
torch.set_num_threads(1)
sys.path.insert(0, {tests!r})
import test_training as t
t.run_toy(sys.argv[1], steps=int(sys.argv[2]), ckpt_every=10)
"""


@pytest.mark.slow
def test_two_processes_resume_exactly(tmp_path):
    """Two processes (DDP over gloo on CPU, as `accelerate launch --cpu --num_processes 2` runs it):
    the global batch is split between them, gradients are averaged, only the main process writes,
    and a resumed two-process run equals an uninterrupted one."""
    script = tmp_path / "child.py"
    script.write_text(DDP_CHILD.format(tests=str(TESTS)))
    # CUDA hidden: this checks the CPU (gloo) path; on a 1-GPU host a second process would ask for cuda:1.
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}

    def launch(out, steps):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(script), str(out), str(steps)]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        errors = [line for line in done.stderr.splitlines() if "Error" in line or "error" in line]
        assert done.returncode == 0, "\n".join(errors[:30]) or done.stderr[-3000:]

    launch(tmp_path / "straight", 30)
    # A copy cut back to step 20 is what a kill between steps 20 and 29 leaves (step_30 and model/
    # are the only files written after step 20; tb events are purged on resume).
    shutil.copytree(tmp_path / "straight", tmp_path / "resumed")
    ckpts = tmp_path / "resumed" / "checkpoints"
    shutil.rmtree(ckpts / "step_30")
    shutil.rmtree(tmp_path / "resumed" / "model")
    (ckpts / "latest").write_text("step_20\n")
    launch(tmp_path / "resumed", 30)
    assert_same_weights(tmp_path / "resumed" / "model", tmp_path / "straight" / "model")
    assert training.run_segments(tmp_path / "resumed") == [[0, 20], [20, 30]]
    # Only the main process wrote: one event file per launch, no stray temporary folders.
    assert len(list((tmp_path / "straight" / "tb").iterdir())) == 1
    assert len(list((tmp_path / "resumed" / "tb").iterdir())) == 2
    assert not list(ckpts.glob(".tmp_*"))
