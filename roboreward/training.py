"""The one training loop, shared by reward models and BC policies (SB3's ``common/`` idea).

``fit(build, dataset, config, out)`` trains anything with ``loss(batch) -> {"loss": ..., ...}`` and
``save_pretrained(path)`` on HF Accelerate: plain ``python`` on a CPU, or
``accelerate launch --num_processes N ...`` on N GPUs (bf16 autocast there with
``mixed_precision: auto``). It runs AdamW with linear warmup then cosine decay, gradient clipping,
a tqdm bar and TensorBoard scalars (``<out>/tb``) on the main process, a validation callback
(model -> {metric: value}) every ``val_every`` steps, printed as one line per validation (``tqdm.write``,
so the bar stays whole), and checkpoints every ``ckpt_every`` steps.

Seeded from ``train.seed`` throughout. ``build`` is a zero-argument function returning the model:
``fit`` seeds torch/numpy/python from ``config.seed`` right before calling it, so the initial
weights of every model trained here (reward models, policies) are a function of the seed, and no
trainer needs its own copy of that step. (An already-built module is accepted too; then its
initialisation is the caller's business, as in tests that fix it themselves.)

Exact resume after SIGKILL. Everything a step depends on is a function of (seed, step) or is in the
checkpoint:
- the data: global batch ``k`` is positions ``k*B .. (k+1)*B - 1`` of the endless stream
  perm(seed, epoch 0) ++ perm(seed, epoch 1) ++ ..., computed directly (nothing to replay); with N
  processes each takes its contiguous slice of the same global batch, so the batches do not depend
  on N;
- in-step randomness (dropout, augmentations): every process re-seeds torch/numpy/python from
  (seed, step, rank) before each step, so it needs no RNG history (the saved RNG states below are
  restored too, for whatever runs between steps);
- weights, AdamW moments, scheduler, step: in the checkpoint, bit for bit.
Validation runs with forked RNG so it never changes training, whatever ``val_every`` is.

What was actually run is recorded too: ``training_state.json`` holds ``segments``, one
``[step it started from, step it reached]`` pair per process that trained the run up to that
checkpoint, e.g. ``[[0, 37], [37, 100]]`` for a run killed after its step-37 checkpoint and resumed
(steps a killed process ran after its last checkpoint are redone, so they are not listed). So a
test can tell a real resume from a run that silently started again at step 0 (same weights, one
segment).

Checkpoint layout (no pickle anywhere; every file is safetensors or JSON)::

    <out>/checkpoints/step_<N>/model.safetensors     the model's save_pretrained
                              /config.json
                              /training_state.safetensors   optimizer tensors, RNG states
                              /training_state.json          step, segments, scheduler, optimizer
                                                            hyper-parameters, RNG scalars, run config
    <out>/checkpoints/latest                          "step_<N>": the newest complete checkpoint

A checkpoint is written into a temporary folder, fsynced and renamed into place; only then is
``latest`` replaced (tmp + os.replace), so it never names a half-written folder. The last
``keep_checkpoints`` are kept. The final model goes to ``<out>/model/`` the same way.
"""
from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate
from tqdm.auto import tqdm

from .errors import RoborewardError

MIXED_PRECISION = ("auto", "no", "bf16")
CHECKPOINTS = "checkpoints"
LATEST = "latest"
STATE_TENSORS = "training_state.safetensors"
STATE_JSON = "training_state.json"
MODEL_FILES = ("config.json", "model.safetensors")
FORMAT_VERSION = 1


class TrainError(RoborewardError):
    """A training run that cannot start or continue; one-line message naming the fix."""


@dataclass
class TrainConfig:
    steps: int = 3000
    """Optimizer steps in the whole run (a resumed run continues to this number)."""
    batch_size: int = 64
    """Global batch (split evenly over processes under ``accelerate launch``)."""
    lr: float = 3e-4
    """Peak learning rate (reached after warmup, then cosine decay to 0 at ``steps``)."""
    weight_decay: float = 0.01
    """AdamW decoupled weight decay; applied to matrices only (not biases, norms' gains)."""
    warmup_steps: int = 100
    """Steps of linear warmup from lr/warmup_steps to lr."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this; 0 = no clipping."""
    val_every: int = 500
    """Run the validation callback every this many steps (and at the last step); 0 = only at the end."""
    ckpt_every: int = 500
    """Write a resumable checkpoint every this many steps (and at the last step)."""
    keep_checkpoints: int = 2
    """How many of the newest checkpoints to keep (>= 1)."""
    num_workers: int = 0
    """DataLoader worker processes (0 = load in the training process)."""
    seed: int = 0
    """Seeds the initial weights (``fit`` builds the model right after seeding), the data order and
    all in-step randomness; same seed + config = same weights."""
    mixed_precision: str = "auto"
    """``auto`` (bf16 autocast on CUDA, fp32 on CPU), ``no`` (fp32) or ``bf16`` (bf16 on CUDA; fp32 on CPU)."""
    log_every: int = 50
    """Log training scalars (loss terms, lr, grad norm, steps/s) every this many steps."""

    # Fields that do not change the trained weights: a resumed run may change them.
    RESUME_FREE = ("val_every", "ckpt_every", "keep_checkpoints", "num_workers", "log_every")

    def __post_init__(self):
        for name, low in (("steps", 1), ("batch_size", 1), ("warmup_steps", 0), ("val_every", 0),
                          ("ckpt_every", 1), ("keep_checkpoints", 1), ("num_workers", 0), ("log_every", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise TrainError(f"{name} must be an int >= {low}, got {value!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise TrainError(f"seed must be an int >= 0, got {self.seed!r}")
        for name in ("lr", "weight_decay", "grad_clip"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise TrainError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.lr <= 0:
            raise TrainError(f"lr must be > 0, got {self.lr!r}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise TrainError(f"mixed_precision {self.mixed_precision!r} is not one of {MIXED_PRECISION}")


# ---------------------------------------------------------------------------------------- schedule
def warmup_cosine(step: int, warmup_steps: int, total_steps: int) -> float:
    """LR multiplier for the optimizer step with 0-based index ``step``: linear warmup to 1 over
    ``warmup_steps`` steps (the first step already moves), then half a cosine down to 0 at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    done = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, done)))


# ---------------------------------------------------------------------------------------- data order
class StepBatchSampler(Sampler[list[int]]):
    """Index lists for steps ``start+1 .. end`` of the endless shuffled stream (see module docstring);
    this process's slice of each global batch. Batch k depends only on (seed, k, n, batch_size)."""

    def __init__(self, n: int, batch_size: int, seed: int, start: int, end: int, rank: int = 0, world: int = 1):
        if n < 1:
            raise TrainError("the training dataset is empty")
        if batch_size % world:
            raise TrainError(f"batch_size {batch_size} must be divisible by the number of processes ({world})")
        self.n, self.batch_size, self.seed, self.start, self.end = n, batch_size, seed, start, end
        self.rank, self.world = rank, world
        self._epoch, self._perm = -1, None

    def permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            self._epoch, self._perm = epoch, np.random.default_rng([self.seed, epoch]).permutation(self.n)
        return self._perm

    def global_batch(self, step: int) -> list[int]:
        """Dataset indices of 1-based ``step``'s global batch."""
        positions = np.arange((step - 1) * self.batch_size, step * self.batch_size)
        epochs, within = np.divmod(positions, self.n)
        return [int(self.permutation(int(e))[i]) for e, i in zip(epochs, within)]

    def __len__(self) -> int:
        return max(0, self.end - self.start)

    def __iter__(self) -> Iterator[list[int]]:
        per = self.batch_size // self.world
        for step in range(self.start + 1, self.end + 1):
            yield self.global_batch(step)[self.rank * per : (self.rank + 1) * per]


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and every CUDA device), numpy's and python's global RNGs."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _step_seed(seed: int, step: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1, np.uint64)[0] >> 1)


# ---------------------------------------------------------------------------------------- no-pickle state
def split_tensors(obj: Any, tensors: dict[str, torch.Tensor], prefix: str) -> Any:
    """A JSON-able copy of ``obj`` with every tensor moved into ``tensors`` (by a path key) and
    replaced by {"__tensor__": key}. Tuples and dicts with non-string keys are tagged so
    ``join_tensors`` rebuilds them exactly."""
    if torch.is_tensor(obj):
        tensors[prefix] = obj.detach().cpu().contiguous().clone()
        return {"__tensor__": prefix}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: split_tensors(v, tensors, f"{prefix}.{k}") for k, v in obj.items()}
        return {"__items__": [[k, split_tensors(v, tensors, f"{prefix}.{k}")] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [split_tensors(v, tensors, f"{prefix}.{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [split_tensors(v, tensors, f"{prefix}.{i}") for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TrainError(f"cannot store {type(obj).__name__} at {prefix} without pickle")


def join_tensors(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__items__" in obj:
            return {k: join_tensors(v, tensors) for k, v in obj["__items__"]}
        if "__tuple__" in obj:
            return tuple(join_tensors(v, tensors) for v in obj["__tuple__"])
        return {k: join_tensors(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [join_tensors(v, tensors) for v in obj]
    return obj


def rng_state() -> dict[str, Any]:
    """torch (CPU + CUDA), numpy and python global RNG states; big parts as tensors, no pickle."""
    np_state = np.random.get_state()
    py_version, py_words, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": py_version, "words": torch.tensor(py_words, dtype=torch.int64), "gauss_next": py_gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(w) for w in p["words"].tolist()), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------------------- checkpoint files
def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    for f in path.iterdir():
        if f.is_file():
            with open(f, "rb+") as fh:
                os.fsync(fh.fileno())
    _fsync_dir(path)


def write_atomic_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so a reader sees the old or the new content, never a mix."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def save_dir_atomic(dest: Path, write: Callable[[Path], Any]) -> Path:
    """Let ``write(tmp)`` fill a temporary sibling folder, fsync it, then rename it to ``dest``."""
    tmp = dest.with_name(f".tmp_{dest.name}_{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    write(tmp)
    _fsync_tree(tmp)
    if dest.exists():  # an older copy of the same step (a re-run after the pointer was written)
        shutil.rmtree(dest)
    os.rename(tmp, dest)
    _fsync_dir(dest.parent)
    return dest


def _step_of(name: str) -> int | None:
    if name.startswith("step_") and name[5:].isdigit():
        return int(name[5:])
    return None


def _complete(folder: Path) -> bool:
    return all((folder / f).is_file() for f in (*MODEL_FILES, STATE_TENSORS, STATE_JSON))


def latest_checkpoint(out: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint folder of run ``out`` (``latest`` if it is valid, else the
    highest complete ``step_<N>``: a run killed between the rename and the pointer update)."""
    ckpts = Path(out) / CHECKPOINTS
    if not ckpts.is_dir():
        return None
    candidates = [p for p in ckpts.iterdir() if p.is_dir() and _step_of(p.name) is not None and _complete(p)]
    pointer = ckpts / LATEST
    if pointer.is_file():
        named = ckpts / pointer.read_text().strip()
        if named in candidates and _step_of(named.name) == max(_step_of(p.name) for p in candidates):
            return named
    return max(candidates, key=lambda p: _step_of(p.name)) if candidates else None


def run_segments(out: str | os.PathLike) -> list[list[int]]:
    """``[[step started from, step reached], ...]`` of the processes that trained run ``out`` up to
    its newest checkpoint (see the module docstring); [] when it has none."""
    ckpt = latest_checkpoint(out)
    if ckpt is None:
        return []
    meta = read_training_state(ckpt)
    return [list(map(int, s)) for s in meta.get("segments", [[0, meta["step"]]])]


def read_training_state(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / STATE_JSON).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise TrainError(f"{folder / STATE_JSON}: unreadable ({exc}); delete the folder to resume from an older checkpoint") from None


def check_resume_config(out: str | os.PathLike, run_config: dict[str, Any], free: Sequence[str] = ()) -> Path | None:
    """The checkpoint ``out`` would resume from (None for a fresh run); refuses (one line) when it
    was written with a different run config, ignoring ``TrainConfig.RESUME_FREE`` fields and the
    dotted paths in ``free`` (e.g. ``model.readout_filter``: how a model's outputs are read)."""
    ckpt = latest_checkpoint(out)
    if ckpt is None:
        return None
    saved = read_training_state(ckpt).get("run_config")
    diff = _first_difference(_comparable(saved, free), _comparable(run_config, free))
    if diff is not None:
        key, old, new = diff
        raise TrainError(
            f"{out} holds a run with a different config ({key}: {old!r} there, {new!r} now); "
            "use the same config to resume or a new output folder"
        )
    return ckpt


def _comparable(cfg: Any, free: Sequence[str] = ()) -> Any:
    cfg = json.loads(json.dumps(cfg))  # tuples -> lists, as stored
    if isinstance(cfg, dict):
        train = cfg.get("train") if isinstance(cfg.get("train"), dict) else cfg
        for key in TrainConfig.RESUME_FREE:
            train.pop(key, None)
        for path in free:
            *parents, leaf = path.split(".")
            node = cfg
            for name in parents:
                node = node.get(name) if isinstance(node, dict) else None
            if isinstance(node, dict):
                node.pop(leaf, None)
    return cfg


def _is_off(value: Any) -> bool:
    """None, 0, False, "", [] or a mapping of such: the value a config field added in a later version has when it
    is off, so a run written before the field existed resumes under it (it trained without it);
    any other value makes a different run."""
    if isinstance(value, dict):
        return all(_is_off(v) for v in value.values())
    return value is None or (isinstance(value, (int, float, str, list)) and not value)


def _first_difference(a: Any, b: Any, where: str = "") -> tuple[str, Any, Any] | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key not in a and _is_off(b[key]):
                continue  # a field the saved run predates, at its off value
            d = _first_difference(a.get(key), b.get(key), f"{where}.{key}" if where else key)
            if d is not None:
                return d
        return None
    return None if a == b else (where or "config", a, b)


# ---------------------------------------------------------------------------------------- the loop
class _LossModule(nn.Module):
    """Routes ``forward`` to ``model.loss`` so DDP's gradient sync and Accelerate's autocast (both
    hook ``forward``) apply to the loss call."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch):
        return self.model.loss(batch)


def _to_device(batch: Any, device: torch.device) -> Any:
    if torch.is_tensor(batch):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, list) and batch and torch.is_tensor(batch[0]):
        return [_to_device(v, device) for v in batch]
    return batch


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    # Decay matrices (linear/attention/embedding weights) only: decaying biases and norm gains
    # pulls them to 0 for no regularisation benefit.
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def process_state():
    """Accelerate's per-process state (rank, device), set up as ``Accelerator`` would: a bare
    ``PartialState()`` ignores ``accelerate launch --cpu`` (ACCELERATE_USE_CPU) and, created first,
    would leave every process of a multi-CPU launch believing it is the only one."""
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))


def resolve_mixed_precision(setting: str, device: torch.device | None = None) -> str:
    """Accelerate's mixed_precision for a TrainConfig value: bf16 only where this process trains on
    CUDA (not under ``accelerate launch --cpu`` on a GPU machine)."""
    if device is None:
        device = process_state().device
    return "bf16" if setting in ("auto", "bf16") and device.type == "cuda" else "no"


def _scalar(v: Any) -> float:
    return float(v.detach().float().item()) if torch.is_tensor(v) else float(v)


def format_validation(step: int, steps: int, metrics: dict[str, Any]) -> str:
    """One line for the terminal, e.g. ``step 500/3000  val loss 0.123  sparse.stage_acc 0.97``
    (LeRobot's and SB3's trainers print their evaluations like this); the loss first, where there is one."""
    names = sorted(metrics, key=lambda k: k != "loss")  # stable: the others keep their order
    return f"step {step}/{steps}  val " + "  ".join(f"{k} {_scalar(metrics[k]):.4g}" for k in names)


def fit(
    build: Callable[[], nn.Module] | nn.Module,
    dataset: Dataset,
    config: TrainConfig,
    out: str | os.PathLike,
    *,
    validate: Callable[[nn.Module], dict[str, float]] | None = None,
    collate_fn: Callable[[list], Any] | None = None,
    run_config: dict[str, Any] | None = None,
    resume_free: Sequence[str] = (),
    progress: bool = True,
) -> Path:
    """Train the model ``build()`` returns (``loss(batch)`` -> dict with ``"loss"``;
    ``save_pretrained(path)``), built right after seeding from ``config.seed``, on ``dataset`` for
    ``config.steps`` steps, writing into ``out``; resumes from ``out``'s newest checkpoint when there
    is one (refusing a different ``run_config``, except at the dotted paths ``resume_free``). ``build`` may also be a module already built (its
    initial weights are then the caller's). ``validate(model)`` runs on the main process with the
    unwrapped model in eval mode under no_grad; its metrics go to TensorBoard as ``val/<name>`` and
    to stdout as one line. Returns ``<out>/model``, the final ``save_pretrained`` folder."""
    from accelerate import Accelerator
    from safetensors.torch import load_file, load_model, save_file

    out = Path(out)
    run_config = {"train": asdict(config)} if run_config is None else run_config
    accelerator = Accelerator(mixed_precision=resolve_mixed_precision(config.mixed_precision))
    main = accelerator.is_main_process
    ckpts = out / CHECKPOINTS
    resume_from = check_resume_config(out, run_config, resume_free)
    if main:
        ckpts.mkdir(parents=True, exist_ok=True)
        for stale in ckpts.glob(".tmp_*"):  # left by a run killed mid-write; never pointed at
            shutil.rmtree(stale, ignore_errors=True)
        for stale in ckpts.glob(f".{LATEST}.tmp*"):
            stale.unlink(missing_ok=True)
    accelerator.wait_for_everyone()

    if isinstance(build, nn.Module):
        model = build
    else:
        # Every process seeds alike, so all build the same initial weights (DDP also broadcasts
        # rank 0's); a resumed run then overwrites them from the checkpoint.
        seed_everything(config.seed)
        model = build()
    model.train()
    optimizer = torch.optim.AdamW(_param_groups(model, config.weight_decay), lr=config.lr)
    # Stepped by hand, not through accelerator.prepare: a prepared scheduler steps once per process
    # per step, assuming each process sees its own batches; here processes share a global batch.
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, partial(warmup_cosine, warmup_steps=config.warmup_steps, total_steps=config.steps)
    )
    wrapper, optimizer = accelerator.prepare(_LossModule(model), optimizer)
    inner = accelerator.unwrap_model(wrapper).model
    device = accelerator.device

    start = 0
    segments: list[list[int]] = []  # earlier processes' [from, reached]; this one's is added at each save
    if resume_from is not None:
        meta = read_training_state(resume_from)
        if meta.get("format") != FORMAT_VERSION:
            raise TrainError(f"{resume_from}: training state format {meta.get('format')!r}, expected {FORMAT_VERSION}")
        # Read on CPU, copied into the parameters wherever they live (safetensors rejects "cpu:0").
        if hasattr(inner, "load_weights"):
            inner.load_weights(resume_from / "model.safetensors")
        else:
            load_model(inner, str(resume_from / "model.safetensors"), strict=True)
        tensors = load_file(str(resume_from / STATE_TENSORS))
        state = join_tensors(meta["state"], tensors)
        optim_state = state["optimizer"]
        optimizer.load_state_dict(optim_state)
        sched_state = dict(state["scheduler"])
        sched_state["lr_lambdas"] = [None] * len(optimizer.param_groups)
        scheduler.load_state_dict(sched_state)
        set_rng_state(state["rng"])
        start = int(meta["step"])
        # Checkpoints written before segments were recorded: one process is all that can be said.
        segments = [list(map(int, s)) for s in meta.get("segments", [[0, start]])]
        if main:
            print(f"resuming {out} from {resume_from.name} (step {start} of {config.steps})")
    if start > config.steps:
        raise TrainError(f"{resume_from} is at step {start}, beyond steps={config.steps}; use a new output folder")

    sampler = StepBatchSampler(len(dataset), config.batch_size, config.seed, start, config.steps,
                               accelerator.process_index, accelerator.num_processes)
    loader = DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collate_fn or default_collate,
        num_workers=config.num_workers,
        pin_memory=device.type == "cuda",
        # Its own generator: creating the iterator must not draw from the global RNG.
        generator=torch.Generator().manual_seed(config.seed),
    )

    writer = None
    if main:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step drops events a killed run logged after its last checkpoint, so curves do not double.
        writer = SummaryWriter(str(out / "tb"), purge_step=start + 1 if start else None)

    def save_checkpoint(step: int) -> None:
        if main:
            tensors: dict[str, torch.Tensor] = {}
            sched = {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
            state = {"optimizer": optimizer.state_dict(), "scheduler": sched, "rng": rng_state()}
            meta = {"format": FORMAT_VERSION, "step": step, "segments": [*segments, [start, step]],
                    "run_config": run_config,
                    "mixed_precision": accelerator.mixed_precision, "num_processes": accelerator.num_processes,
                    "state": split_tensors(state, tensors, "s")}

            def write(tmp: Path) -> None:
                inner.save_pretrained(tmp)
                save_file(tensors, str(tmp / STATE_TENSORS))
                (tmp / STATE_JSON).write_text(json.dumps(meta, indent=1) + "\n")

            save_dir_atomic(ckpts / f"step_{step}", write)
            write_atomic_text(ckpts / LATEST, f"step_{step}\n")
            done = sorted((p for p in ckpts.iterdir() if p.is_dir() and _step_of(p.name) is not None),
                          key=lambda p: _step_of(p.name))
            for old in done[: -config.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
        accelerator.wait_for_everyone()

    def run_validation(step: int) -> None:
        if main and validate is not None:
            inner.eval()
            np_state, py_state = np.random.get_state(), random.getstate()
            devices = list(range(torch.cuda.device_count())) if device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices), torch.no_grad():
                metrics = validate(inner)
            np.random.set_state(np_state)
            random.setstate(py_state)
            inner.train()
            for k, v in metrics.items():
                writer.add_scalar(f"val/{k}", _scalar(v), step)
            if metrics:
                tqdm.write(format_validation(step, config.steps, metrics))
            bar.set_postfix({k: f"{_scalar(v):.3g}" for k, v in list(metrics.items())[:3]}, refresh=False)
        accelerator.wait_for_everyone()

    bar = tqdm(
        total=config.steps, initial=start, unit="step", desc="train", disable=not (main and progress)
    )
    sums: dict[str, torch.Tensor] = {}
    window, t0 = 0, time.perf_counter()
    for step, batch in enumerate(loader, start=start + 1):
        s = _step_seed(config.seed, step, accelerator.process_index)
        torch.manual_seed(s)
        np.random.seed(s % 2**32)
        random.seed(s)
        terms = wrapper(_to_device(batch, device))
        loss = terms["loss"]
        accelerator.backward(loss)
        grad_norm = accelerator.clip_grad_norm_(wrapper.parameters(), config.grad_clip) if config.grad_clip > 0 else None
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

        for k, v in terms.items():
            sums[k] = sums.get(k, 0) + v.detach().float()
        if grad_norm is not None:
            sums["grad_norm"] = sums.get("grad_norm", 0) + torch.as_tensor(grad_norm, device=device).float()
        window += 1
        bar.update(1)
        if step % config.log_every == 0 or step == config.steps:
            keys = sorted(sums)
            means = accelerator.reduce(torch.stack([sums[k] for k in keys]).to(device) / window, reduction="mean")
            values = dict(zip(keys, means.tolist()))
            if not math.isfinite(values["loss"]):
                raise TrainError(f"loss is {values['loss']} at step {step}; lower train.lr or check the data")
            if main:
                elapsed = time.perf_counter() - t0
                for k, v in values.items():
                    writer.add_scalar(f"train/{k}", v, step)
                writer.add_scalar("train/lr", scheduler.get_last_lr()[0], step)
                writer.add_scalar("train/steps_per_s", window / max(elapsed, 1e-9), step)
                bar.set_postfix(loss=f"{values['loss']:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}", refresh=False)
            sums, window, t0 = {}, 0, time.perf_counter()
        if step == config.steps or (config.val_every and step % config.val_every == 0):
            run_validation(step)
        if step % config.ckpt_every == 0 or step == config.steps:
            save_checkpoint(step)
    bar.close()

    final = out / "model"
    if main:
        save_dir_atomic(final, inner.save_pretrained)
        writer.flush()
        writer.close()
    accelerator.wait_for_everyone()
    return final
