"""Online RL with learned rewards: sparse vs naive vs potential-based shaping (SARM, GRM) vs the
oracle's potential, in the sim tasks, with SB3's SAC or sb3-contrib's CrossQ (per setting).

Per task (the narrow-layout RL recipes ``datasets/<task>_rl.yaml``): the recipe's store is
generated, SARM and GRM are trained on it with their standard configs (configs/reward/), a base
policy is behaviour-cloned on its expert episodes (configs/bc/bc_state.yaml), and every cell
(task, scheme, seed) runs ``roboreward rl train`` with configs/rl/sac.yaml + BENCH_RL: residual
SAC over that base policy, the same budget and the same demos (the store's first 20 successful
episodes replayed into the replay buffer) for every scheme. A cell writes
``benchmarks/results/bench_rl/<task>_<scheme>_s<seed>.json`` when it finishes and is skipped when
that file exists, so the grid fills over several runs (``--max-minutes`` stops starting new cells);
an interrupted cell resumes from its checkpoint in the work folder. A running cell holds a lock file
(``runs/<cell>.lock`` in the work folder), so two processes may share the grid on two cores
(``OMP_NUM_THREADS=1``, e.g. ``--seeds 0,1,2`` twice): each cell runs once.

Speed (measured by the narrow setting unless ``--no-speed``; run it alone): env steps/s of 4 and 8
envs under random actions, state only, with the cameras rendered and no model, and with each reward
model streaming in the loop (also with the encoder run by TorchScript instead of ONNX Runtime), timed in
interleaved rounds; and the SAC learner's gradient steps/s in SB3 (and in SBX, SB3's JAX twin, where it is installed).

Writes benchmarks/results/bench_rl.json (cells, per task x scheme summary, speed) and bench_rl.png
(learning curves: true success vs env steps; learned return vs true success).

``--setting`` picks one of SETTINGS, each described beside its entry there (the learner, start and budget
it changes, and what its trial showed). ``--setting shift``: the same base policy (cloned on the
narrow layout) put to work where the objects stand 0-1.5 cm further forward
(``datasets/<task>_shift.yaml``), where it mostly fails; the reward models, the replayed demos and
the RL env come from that recipe, and the residual may correct by up to 4 deg per step (SHIFT_RL).
Cells in ``benchmarks/results/bench_rl_shift/``, results in ``bench_rl_shift.json`` / ``.png`` (likewise
for every other setting); no speed section (the narrow setting's measures the loop).

Reward models checked on the learner's own episodes (``--check``, ONPOLICY): the base policy's
deterministic rollouts in the RL layout are recorded (``sim eval --record``) and every prepared model
is read on 100 of them (``reward_check`` in the results), beside the same models trained without the
joint state (``_nostate``, NOSTATE, cameras only). The schemes ``pbrs_sarm_onpolicy`` and
``pbrs_grm_onpolicy`` (run by name, outside the planned grid) use SARM and GRM trained on the RL
store joined with another 100 such rollouts; ``pbrs_sarm_nostate`` and ``pbrs_grm_nostate`` (also by
name) the cameras-only models. Every cell's kept policy (``best/``) is also rolled out on those 100
check seeds (``best_check`` in the cell file), which never picked it.

    python benchmarks/bench_rl.py [--quick] [--setting narrow|shift] [--tasks pick_place,stack] [--schemes ...]
                                  [--seeds 0,1,2] [--steps 20000] [--max-minutes 170] [--check]
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SCHEMES = {  # name -> (reward, shaping)
    "sparse": ("sparse", "sparse"),
    "naive_sarm": ("sarm", "naive"),
    "pbrs_sarm": ("sarm", "pbrs"),
    "pbrs_grm": ("grm", "pbrs"),
    "oracle_pbrs": ("oracle", "pbrs"),
    "pbrs_sarm_onpolicy": ("sarm_onpolicy", "pbrs"),
    "pbrs_grm_onpolicy": ("grm_onpolicy", "pbrs"),
    "pbrs_sarm_nostate": ("sarm_nostate", "pbrs"),
    "pbrs_grm_nostate": ("grm_nostate", "pbrs"),
}
MODELS = {"sarm": "configs/reward/sarm.yaml", "grm": "configs/reward/grm.yaml"}
NOSTATE = {"model": {"state_key": None}}
"""What the `_nostate` models of ``--check`` (and the `_nostate` schemes) change: cameras only. The base
policy's failures end in arm poses no scripted episode has, which the models that add the joint state
read as finished."""
GRID = ("sparse", "naive_sarm", "pbrs_sarm", "pbrs_grm", "oracle_pbrs")
"""The planned grid's schemes (the default of --schemes); the `_onpolicy` and `_nostate` ones are run by name."""
ONPOLICY = {"episodes": 100, "train_seed": 200_000, "check_seed": 100_000}
"""The base policy's own rollouts in the RL layout (``sim eval --record``, deterministic, the RL
episodes' horizon): 100 from seed 200000 join the RL store to train the `_onpolicy` reward models;
100 from seed 100000, never trained on, are where every model is checked (``reward_check``). The
learned potentials read the learner's failed episodes far above their true progress; the scripted
failures in the store do not look like the base policy's near misses (a cube released beside the
bowl)."""
PINNED = {"sarm": {"model": {"done_key": None, "filter_min_stay_frac": 0.0}, "data": {"augment_copies": 0}}}
"""What the grid's reward models change in their configs: SARM as the grid's first 18 cells trained
it (2026-12-02 to -05: stage filter, change gate and stage hold, but no done stage, no photometric
copies and no minimum stay, which became the default later), so all 30 cells share one SARM recipe.
The robust default is a different potential; measuring it is another grid."""
GOALS = {"speedup_vs_sparse": 3.0, "steps_rate_with_model": 0.5}
BENCH_RL = {"demo_episodes": 20, "bc_steps": 0, "ent_coef": "0.01", "learning_rate": 1e-4, "max_step_deg": 1.0,
            "max_step_gripper": 5.0, "eval_every": 2500, "eval_episodes": 40, "checkpoint_every": 2500}
"""What every cell adds to configs/rl/sac.yaml. Residual RL (``rl.envs.ResidualAction``): the action
corrects, by up to 1 deg and 5 gripper units per step, the targets of a base policy behaviour-cloned
on the store's expert episodes (configs/bc/bc_state.yaml), the same base and the same 20 replayed
demos for every scheme. A fixed small entropy coefficient and a lower learning rate keep the
residual near zero until the critic knows better: with SAC's defaults (learned entropy from 0.1,
lr 3e-4, 2 deg) the deterministic success fell from 50% to 20% in 10k steps even with the oracle's
potential, and with joint-delta actions from a behaviour-cloned SB3 actor (the first version of this
grid, cells in results/bench_rl_joint_delta/) no cell ever succeeded."""
SHIFT_RL = {**BENCH_RL, "max_step_deg": 4.0, "max_step_gripper": 10.0, "learning_rate": 3e-4, "shaping_scale": 0.1}
"""What the shift setting changes (measured with the oracle's potential and sparse, seed 0, before the
grid): a correction of 1 deg cannot move the arm the 1-1.5 cm the shift asks, so the residual goes
up to 4 deg at SAC's default learning rate. The shaping term is scaled by 0.1: at scale 1, the
oracle's potential is near 0.95 on the step before a success, so a success nets only 1 - 0.95 of
reward on that step (Phi = 0 after a true termination) and the oracle cell ended at 0.20 with its
furthest progress at 0.6-0.9; at 0.1 it ended at 0.30 (sparse: 0.25)."""
SHIFT_GOAL1 = {**SHIFT_RL, "goal_potential": 1.0, "shaping_scale": 1.0}
"""The shift setting with Phi = 1 after a success (``goal_potential``) and the shaping term at full weight."""
SHIFT_CROSSQ = {**SHIFT_GOAL1, "algo": "crossq", "ent_coef": "0.001"}
"""The shifted layout with sb3-contrib's CrossQ, the shaping term at full weight, Phi = 1 after a success and an
entropy coefficient of 0.001. At 0.01 the entropy bonus outweighs the task: about 0.01 x 7 nats per step over
150-200 steps against a return of at most 2 (r_gold plus the potential's rise), so the training policy
stays near its widest (std 0.73-0.86 of the 4-degree step) and the deterministic policy peaks and falls
back (SAC and CrossQ alike). Seed-0 trials at 0.001: the oracle's potential reached 0.95 success at
17,500 steps and sparse 0.83 at 15,000 (at 0.01: peaks 0.50 and 0.08, finals 0.00-0.03)."""

SHIFT_CROSSQ_WARM = {**SHIFT_CROSSQ, "actor_warmup": 5000, "zero_residual": True}
"""SHIFT_CROSSQ with the policy started as the base policy exactly (``zero_residual``) and kept there for the
first 5,000 env steps while only the critic learns (``actor_warmup``)."""


class Setting(NamedTuple):
    rl_recipe: str    # datasets/<rl_recipe>.yaml: the RL env, the replayed demos and the reward models' store
    base_recipe: str  # datasets/<base_recipe>.yaml: the store whose experts the base policy is cloned on
    rl: dict          # what every cell adds to configs/rl/sac.yaml


SETTINGS = {
    "narrow": Setting("{task}_rl", "{task}_rl", BENCH_RL),
    "shift": Setting("{task}_shift", "{task}_rl", SHIFT_RL),
    # Three gradient updates per env step: in a seed-0 trial the oracle's potential ended at 0.68 success, sparse at 0.08.
    "shift_utd3": Setting("{task}_shift", "{task}_rl", {**SHIFT_RL, "updates_per_step": 3.0}),
    # Phi = 1 after a success (``goal_potential``) and the shaping term at full weight: a seed-0 trial of the
    # oracle's potential peaked at 0.57 success (shift: 0.30), at 15,000 steps.
    "shift_goal1": Setting("{task}_shift", "{task}_rl", SHIFT_GOAL1),
    # The same with sb3-contrib's CrossQ in place of SAC (no target networks, batch renormalisation in both
    # networks): SAC's runs peaked and fell back (finals 0.05-0.42 after peaks of 0.57-0.72).
    "shift_goal1_crossq": Setting("{task}_shift", "{task}_rl", {**SHIFT_GOAL1, "algo": "crossq"}),
    # CrossQ with an entropy coefficient of 0.001 instead of 0.01 (SHIFT_CROSSQ).
    "shift_crossq": Setting("{task}_shift", "{task}_rl", SHIFT_CROSSQ),
    # The same with SB3's SAC in place of CrossQ: which of the two changes made the learner hold its gains.
    "shift_sac_ent001": Setting("{task}_shift", "{task}_rl", {**SHIFT_CROSSQ, "algo": "sac"}),
    # CrossQ as in shift_crossq, but the policy starts as the base policy exactly (zero_residual) and stays there
    # for the first 5,000 env steps while only the critic learns (actor_warmup): in shift_crossq every run started
    # at 0.05-0.23 (a random residual over the base policy's 0.23), fell to 0.00-0.07 by its second evaluation and
    # stayed near zero until 10-12.5k steps.
    "shift_crossq_warm": Setting("{task}_shift", "{task}_rl", SHIFT_CROSSQ_WARM),
    # shift_crossq_warm with the stochastic policy's initial spread at 0.3 (before the squash; ~1.2 deg) in place of
    # about 1: during the warm-up the training episodes of shift_crossq_warm succeeded 0-8% of the time while the
    # deterministic (base) policy succeeded in 0.23 of its evaluations.
    "shift_crossq_warm_std": Setting("{task}_shift", "{task}_rl", {**SHIFT_CROSSQ_WARM, "init_std": 0.3}),
    # shift_crossq_warm with the actor's rate rising linearly over the 5,000 env steps after the warm-up
    # (``actor_ramp``): every shift_crossq_warm run fell from the base policy's 0.23 to 0.00-0.20 in the 2,500 steps
    # after the warm-up, before it climbed. Seed-0 trial (pbrs SARM, sparse): the fall stays (0.00 / 0.03 at 7,500),
    # 80% at 17,500 / 15,000 steps (shift_crossq_warm: 12,500 / 20,000); not adopted.
    "shift_crossq_ramp": Setting("{task}_shift", "{task}_rl", {**SHIFT_CROSSQ_WARM, "actor_ramp": 5000}),
    # The learner of shift_crossq_warm in the narrow layout (the base policy's own): the second task of the CrossQ
    # grid, stack, has no shifted recipe, and its base policy already fails 7 of 10 tries in the narrow layout.
    "narrow_crossq_warm": Setting("{task}_rl", "{task}_rl", SHIFT_CROSSQ_WARM),
    # The same with twice the budget: in 20,000 steps stack's oracle cell went from 0.28 to 0.33 success while its
    # training episodes were still rising (0.36 at the end). Seeds 0-2 (2026-12-07): no scheme reaches 80% in 40,000.
    "narrow_crossq_warm_40k": Setting("{task}_rl", "{task}_rl", {**SHIFT_CROSSQ_WARM, "steps": 40000}),
}
BASE_POLICY = "configs/bc/bc_state.yaml"
QUICK_RL = {"n_envs": 2, "max_episode_steps": 60, "learning_starts": 32, "batch_size": 32, "net_arch": [64, 64],
            "eval_every": 150, "eval_episodes": 2, "checkpoint_every": 150, "demo_episodes": 2}


def env() -> dict:
    return {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "HF_HUB_OFFLINE": "1"}


def cli(*args, log: Path | None = None) -> None:
    cmd = [sys.executable, "-m", "roboreward.cli", *map(str, args)]
    if log is None:
        subprocess.run(cmd, check=True, env=env(), cwd=ROOT)
        return
    with open(log, "a") as f:
        subprocess.run(cmd, check=True, env=env(), cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)


def prepare(task: str, work: Path, quick: bool, setting: str = "narrow", onpolicy: bool = False,
            check: bool = False) -> dict:
    """The task's store and its trained reward models (reused when present), and the base policy,
    cloned on the experts of the setting's base store (the RL store itself in the narrow setting).
    ``onpolicy``: also the `_onpolicy` models, trained on the store joined with the base policy's own
    rollouts in the RL layout (ONPOLICY). ``check``: also the `_nostate` models (NOSTATE), read by
    ``reward_check`` beside the others."""
    import yaml

    rl_recipe, base_recipe, _ = SETTINGS[setting]

    def store_of(name: str) -> Path:
        store = work / f"{name}.zarr"
        cli("data", "generate", "--recipe", ROOT / f"datasets/{name}.yaml", "--out", store,
            *(["--episodes", 4, "--image-size", 32, "--mix", "expert=0.75,failure=0.25"] if quick else []))
        return store

    recipe = ROOT / f"datasets/{rl_recipe.format(task=task)}.yaml"
    store = store_of(rl_recipe.format(task=task))
    models = {name: train_model(name, config, store, work / f"{name}_{task}", work, quick, setting)
              for name, config in MODELS.items()}
    base = work / f"base_{task}"
    if not (base / "model" / "config.json").is_file():
        base_store = store if base_recipe == rl_recipe else store_of(base_recipe.format(task=task))
        cli("bc", "train", "--config", ROOT / BASE_POLICY, "--dataset", base_store, "--out", base, "--qualities", "expert",
            *(["--steps", 40] if quick else []))
    prep = {"store": store, "models": models, "base_policy": base / "model", "setting": setting, "recipe": recipe,
            "task_config": yaml.safe_load(recipe.read_text()).get("task_config", {})}
    if onpolicy:
        # The base policy's own episodes in the RL layout join the store for the `_onpolicy` models.
        rollouts = base_rollouts(task, prep, work, ONPOLICY["train_seed"], quick)
        merged = work / f"{rl_recipe.format(task=task)}+base_rollouts.zarr"
        if not (merged / "zarr.json").is_file():
            cli("data", "merge", store, rollouts, "--out", merged)
        for name, config in MODELS.items():
            models[f"{name}_onpolicy"] = train_model(name, config, merged, work / f"{name}_onpolicy_{task}", work, quick, setting)
    if check:  # the same models without the joint state, read beside them (no scheme uses them)
        for name, config in MODELS.items():
            models[f"{name}_nostate"] = train_model(name, config, store, work / f"{name}_nostate_{task}", work, quick, setting,
                                                    extra=NOSTATE)
    return prep


def train_model(name: str, config: str, store: Path, run: Path, work: Path, quick: bool, setting: str,
                extra: dict | None = None) -> Path:
    """``reward train`` of one of MODELS on ``store`` into ``run`` (reused when done); its model folder.
    ``extra``: config fields changed on top (``NOSTATE``)."""
    import yaml

    from roboreward.config import config_data

    if not (run / "model" / "config.json").is_file():
        cfg = config_data(ROOT / config)  # with any ``base:`` resolved, since the copy lives elsewhere
        # The narrow grid keeps its first cells' SARM recipe (PINNED); the shift grid, new, trains today's defaults.
        for section, fields in (PINNED.get(name, {}) if setting == "narrow" else {}).items():
            cfg[section].update(fields)
        for section, fields in (extra or {}).items():
            cfg[section].update(fields)
        if quick:
            cfg["data"]["image_size"] = 32
            cfg["data"]["val_fraction"] = 0.25
        written = work / f"{run.name}{'_quick' if quick else ''}.yaml"  # beside its run, one per run
        written.write_text(yaml.safe_dump(cfg))
        cli("reward", "train", "--config", written, "--dataset", store, "--out", run, *(["--steps", 40] if quick else []))
    return run / "model"


def base_rollouts(task: str, prep: dict, work: Path, seed: int, quick: bool) -> Path:
    """The base policy's deterministic rollouts in the RL recipe's layout, recorded by ``sim eval
    --record`` (ground truth and stage annotations from the sim, at the store's image size and the
    RL episodes' horizon), seeds ``seed``, ``seed + 1``, ...; reused when complete."""
    from roboreward.data.store import EpisodeStore

    n = check_episodes(quick)
    out = work / f"base_rollouts_{task}_{seed}.zarr"
    if (out / "zarr.json").is_file() and EpisodeStore(out).n_episodes >= n:
        return out
    size = EpisodeStore(prep["store"]).features["observation.images.front"].shape[0]
    cli("sim", "eval", "--policy", prep["base_policy"], "--recipe", prep["recipe"], "--episodes", n, "--image-size", size,
        "--max-steps", rl_config(prep["setting"], quick)["max_episode_steps"], "--videos", 0, "--seed", seed, "--out", work / f"sim_eval_base_{task}_{seed}",
        "--record", out)
    return out


def reward_check(task: str, prep: dict, work: Path, quick: bool) -> dict:
    """Every prepared reward model read on the base policy's own rollouts (``ONPOLICY['check_seed']``,
    never trained on): what ``reward eval`` reports there, in short. The RL learner starts from this
    policy, so this is how the potential grades the episodes it will see first."""
    store = base_rollouts(task, prep, work, ONPOLICY["check_seed"], quick)
    out = {}
    for name, model in prep["models"].items():
        folder = work / f"check_{name}_{task}"
        metrics = folder / "metrics.json"
        m = json.loads(metrics.read_text()) if metrics.is_file() else {}
        if "step_agreement" not in m:  # not evaluated yet, or by a version without it
            cli("reward", "eval", "--model", model, "--dataset", store, "--episodes", "all", "--out", folder,
                "--plots", 0, "--videos", 0)
            m = json.loads(metrics.read_text())
        agree = m["step_agreement"]
        level = m["primary_level"]
        finals = [(e["success"], e["final_progress"][level]) for e in m["per_episode"]]
        succ = [f for ok, f in finals if ok]
        fail = [f for ok, f in finals if not ok]
        out[name] = {"fingerprint": fingerprint(model), "successes": len(succ), "failures": len(fail),
                     "auroc": m["auroc"], "auroc_tied": m.get("auroc_tied"), "voc": m["voc"],
                     "final_success_mean": float(np.mean(succ)) if succ else None,
                     "final_failure_mean": float(np.mean(fail)) if fail else None,
                     "failures_ending_above_0.9": int(sum(f > 0.9 for f in fail)),
                     "finish_over_hover": (m.get("finish_vs_hover") or {}).get("higher_share"),
                     # What pbrs pays step by step: do the potential's changes follow the true progress's?
                     "step_corr": agree["corr"], "variation_ratio": agree["variation_ratio"]}
    return out


def check_episodes(quick: bool) -> int:
    """How many rollouts a check set holds (the base policy's recorded ones, a kept policy's)."""
    return 4 if quick else ONPOLICY["episodes"]


def best_check(run: Path, quick: bool) -> dict | None:
    """The run's best policy (``<run>/best``, chosen on the training's evaluation seeds 10000-10039)
    rolled out by ``rl eval`` on the 100 seeds the base policy's check rollouts use
    (``ONPOLICY['check_seed']``, never an evaluation seed): the policy a user would keep, measured
    fairly. None when the run folder is not in this work folder (cells of an earlier preparation)."""
    if not (run / "best" / "config.json").is_file():
        return None
    out = run / "best_check"
    if not (out / "rl_eval.json").is_file():
        cli("rl", "eval", "--policy", run / "best", "--episodes", check_episodes(quick), "--videos", 0, "--seed", ONPOLICY["check_seed"],
            "--out", out)
    r = json.loads((out / "rl_eval.json").read_text())
    return {"episodes": r["episodes"], "seed": ONPOLICY["check_seed"], "success": r["success_rate"], "ci95": r["ci95"],
            "best_step": json.loads((run / "best" / "config.json").read_text()).get("evaluation", {}).get("step")}


def cell_name(task: str, scheme: str, seed: int) -> str:
    """A cell's name: its result file, run folder, config, log and lock are named after it."""
    return f"{task}_{scheme}_s{seed}"


def claim_cell(lock: Path) -> Path | None:
    """Take the cell's lock file (its holder's pid), or None while a live process holds it: several
    ``bench_rl.py`` processes can then be given overlapping seeds and each cell runs once. A lock
    left by a process that died (kill -9, a reboot) is taken over; the cell's ``rl train`` resumes
    from its last checkpoint."""

    lock.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                holder, age = lock.read_text().strip(), time.time() - lock.stat().st_mtime
            except FileNotFoundError:  # released meanwhile: try again
                continue
            if not holder and age < 10:  # its holder is writing its pid now
                return None
            try:
                if holder:
                    os.kill(int(holder), 0)
                    return None  # alive
            except PermissionError:  # alive, another user's
                return None
            except (ProcessLookupError, ValueError):
                pass
            lock.unlink(missing_ok=True)  # its holder is gone
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return lock
    return None


def rl_config(setting: str, quick: bool) -> dict:
    """configs/rl/sac.yaml with what the setting (and --quick) change: what every cell of the setting
    trains with, and whose horizon the recorded base-policy rollouts share."""
    import yaml

    cfg = yaml.safe_load((ROOT / "configs/rl/sac.yaml").read_text())
    cfg.update(SETTINGS[setting].rl)
    if quick:
        cfg.update(QUICK_RL)
    return cfg


def run_cell(task: str, scheme: str, seed: int, prep: dict, work: Path, steps: int, quick: bool) -> dict:
    import yaml

    reward, shaping = SCHEMES[scheme]
    reward = str(prep["models"][reward]) if reward in prep["models"] else reward
    cfg = rl_config(prep["setting"], quick)
    cfg.update(task=task, reward=reward, shaping=shaping, seed=seed, steps=steps, demos=str(prep["store"]),
               base_policy=str(prep["base_policy"]),
               task_config=prep["task_config"], progress=False)
    run = work / "runs" / cell_name(task, scheme, seed)
    run.mkdir(parents=True, exist_ok=True)
    (run.parent / f"{run.name}.yaml").write_text(yaml.safe_dump(cfg))
    t0 = time.perf_counter()
    cli("rl", "train", "--config", run.parent / f"{run.name}.yaml", "--out", run, log=run.parent / f"{run.name}.log")
    curve = json.loads((run / "curves.json").read_text())["curve"]
    from roboreward.rl.train import steps_to

    return {"task": task, "scheme": scheme, "seed": seed, "steps": steps, "seconds": time.perf_counter() - t0,
            "steps_to_80": steps_to(curve), "final_success": curve[-1]["eval_success"],
            "start_success": curve[0]["eval_success"],
            "final_max_progress": curve[-1]["eval_max_progress"],
            "final_ci95": curve[-1]["eval_ci95"], "curve": curve, "config": cfg,
            # The base policy, the grid's models and the cell's own: not every model prepared beside them.
            "fingerprints": {name: fingerprint(path) for name, path in [("base_policy", prep["base_policy"]),
                                                                          *prep["models"].items()]
                             if name in ("base_policy", *MODELS, SCHEMES[scheme][0])}}


def fingerprint(model: Path) -> str:
    """The first 12 hex digits of the sha256 of a model folder's weights: cells filled by later runs
    (which regenerate the store and retrain the models when the work folder is gone) record which
    models they used, so a grid mixed from two preparations shows it."""
    import hashlib

    h = hashlib.sha256()
    for f in sorted(Path(model).glob("*.safetensors")):
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


# ---------------------------------------------------------------------------------------- speed
def env_loop(task: str, prep: dict | None, model: str | None, cameras: bool, n_envs: int = 4, runtime: str | None = None):
    """One vector step of ``n_envs`` envs under random actions with the reward terms computed, as a
    callable, and the function that closes it (``runtime``: what runs the model's encoder on the CPU,
    ``ImageEncoder.use``; None: the encoder's default, the fastest that builds)."""
    from stable_baselines3.common.vec_env import DummyVecEnv

    from roboreward.rewards import RewardModel
    from roboreward.rl.envs import POLICY_KEYS, make_env
    from roboreward.shaping import ModelPotential, ShapedRewardVecEnv, ShapingConfig, ZeroPotential, encoder_of
    from roboreward.sim.tasks import make_task

    reward = RewardModel.from_pretrained(prep["models"][model]) if model else None
    encoder = encoder_of(reward) if reward is not None else None
    if encoder is not None and runtime is not None:
        encoder.use(runtime)
    size = encoder.config.image_size if encoder is not None else 96
    cams = ("front", "wrist") if cameras else ()
    venv = DummyVecEnv([lambda: make_env(task, cams, size, 200, prep["task_config"] if prep else None) for _ in range(n_envs)])
    potential = ModelPotential(reward, n_envs, make_task(task).instruction, encoder) if reward is not None else ZeroPotential()
    shaped = ShapedRewardVecEnv(venv, ShapingConfig(scheme="pbrs" if reward is not None else "sparse"), potential, POLICY_KEYS)
    rng = np.random.default_rng(0)
    shaped.reset()
    return (lambda: shaped.step(rng.uniform(-1, 1, (n_envs, 6)).astype(np.float32))), shaped.close


def loop_rates(task: str, prep: dict, loops: dict[str, dict], seconds: float, rounds: int = 3) -> dict[str, float]:
    """Env steps/s of each loop (``name -> env_loop`` arguments), measured in ``rounds`` rounds that
    take every loop in turn, ``seconds / rounds`` each, and the median of its rounds: this machine's
    speed drifts by 10-30% over minutes, and one loop timed after another would carry the drift
    into their ratio."""
    built: dict = {}
    samples: dict[str, list[float]] = {name: [] for name in loops}
    try:
        for name, kw in loops.items():
            built[name] = env_loop(task, prep, **kw)
        for _ in range(rounds):
            for name, (step, _close) in built.items():
                samples[name].append(common.rate(step, loops[name].get("n_envs", 4), min_seconds=seconds / rounds))
    finally:
        for _step, close in built.values():
            close()
    return {name: float(np.median(v)) for name, v in samples.items()}


def learner_rates(seconds: float) -> dict:
    """Env steps/s with one gradient step each (batch 256, 256x256 MLPs, one env) on Pendulum-v1: SB3's
    SAC, sb3-contrib's CrossQ and TQC, and SBX's SAC where it is importable (``pip install sbx-rl``;
    not a dependency)."""
    import gymnasium as gym

    libs = {"sb3": ("stable_baselines3", "SAC"), "sb3_crossq": ("sb3_contrib", "CrossQ"), "sb3_tqc": ("sb3_contrib", "TQC"),
            "sbx": ("sbx", "SAC")}
    out = {}
    for lib, (module, name) in libs.items():
        try:
            cls = getattr(__import__(module, fromlist=[name]), name)
        except ImportError:
            out[lib] = None
            continue
        algo = cls("MlpPolicy", gym.make("Pendulum-v1"), learning_starts=256, batch_size=256,
                   policy_kwargs={"net_arch": [256, 256]}, seed=0, verbose=0)
        algo.learn(300)  # fills the buffer past learning_starts and compiles (SBX)
        steps = [0]
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            algo.learn(200, reset_num_timesteps=False)
            steps[0] += 200
        out[lib] = steps[0] / (time.perf_counter() - t0)  # env steps/s with one update per step
    return out


def model_costs(task: str, prep: dict, model: str, seconds: float, n_envs: int = 4) -> dict:
    """Where a vector step's reward time goes: the frozen encoder on every camera's new frames (one
    call) and the model's stream step over the features, in ms per vector step of ``n_envs``."""
    import torch

    from roboreward.rewards import RewardModel
    from roboreward.shaping import ModelPotential
    from roboreward.sim.tasks import make_task

    reward = RewardModel.from_pretrained(prep["models"][model])
    potential = ModelPotential(reward, n_envs, make_task(task).instruction)
    size = potential.encoder.config.image_size
    rng = np.random.default_rng(0)
    obs = {c: rng.integers(0, 256, (n_envs, size, size, 3), dtype=np.uint8) for c in potential.cameras}
    if potential.state_key:
        obs[potential.state_key] = np.zeros((n_envs, reward.config.state_dim), np.float32)
    inputs = potential.inputs(obs)
    potential.stream.reset(list(range(n_envs)))
    with torch.inference_mode():
        encode = common.rate(lambda: potential.inputs(obs), 1, min_seconds=seconds)
        stream = common.rate(lambda: potential.stream.step(inputs, potential.task), 1, min_seconds=seconds)
    frames = n_envs * len(potential.cameras)
    return {"n_envs": n_envs, "frames_per_step": frames, "image_size": size, "encoder_runtime": potential.encoder.runtime,
            "encoder_ms": 1e3 / encode, "encoder_ms_per_frame": 1e3 / encode / frames, "stream_ms": 1e3 / stream}


def speed(task: str, prep: dict, quick: bool) -> dict:
    seconds = 1.5 if quick else 12.0
    models = list(prep["models"])

    def loops(n_envs: int) -> dict[str, dict]:
        out = {"cameras": dict(model=None, cameras=True, n_envs=n_envs)}
        out.update({f"cameras+{n}": dict(model=n, cameras=True, n_envs=n_envs) for n in models})
        # the same loop with the encoder's TorchScript graph (the runtime before ONNX Runtime): what ORT saves
        out.update({f"cameras+{n}_torchscript_encoder": dict(model=n, cameras=True, n_envs=n_envs, runtime="torchscript")
                    for n in models})
        return out

    rates = loop_rates(task, prep, {"state_only": dict(model=None, cameras=False), **loops(4)}, seconds)
    # 8 envs: the encoder's batch doubles (a frame costs less in a bigger batch), rendering per env does not
    rates8 = loop_rates(task, prep, loops(8), seconds)
    return {"task": task, "rounds": 3, "env_steps_per_s": rates,
            "with_model_over_cameras": {n: rates[f"cameras+{n}"] / rates["cameras"] for n in models},
            "env_steps_per_s_8_envs": rates8,
            "with_model_over_cameras_8_envs": {n: rates8[f"cameras+{n}"] / rates8["cameras"] for n in models},
            "ms_per_vector_step_4_envs": {
                "cameras": 4e3 / rates["cameras"],
                **{n: model_costs(task, prep, n, seconds / 6, n_envs=4) for n in models}},
            "sac_env_steps_per_s": learner_rates(2.0 if quick else 20.0)}


# ---------------------------------------------------------------------------------------- report
def summarise(cells: dict, record: dict) -> dict:
    summary: dict = {}
    for c in cells.values():
        s = summary.setdefault(c["task"], {}).setdefault(c["scheme"], {"seeds": [], "final_success": [], "steps_to_80": [],
                                                                          "final_max_progress": []})
        s["seeds"].append(c["seed"])
        s["final_max_progress"].append(c["final_max_progress"])
        s.setdefault("final_learned_progress", []).append(c["curve"][-1].get("train_final_progress"))
        s["final_success"].append(c["final_success"])
        s["steps_to_80"].append(c["steps_to_80"])
        if c.get("best_check"):
            s.setdefault("best_check_success", []).append(c["best_check"]["success"])
    for task, schemes in summary.items():
        sparse = schemes.get("sparse")
        for name, s in schemes.items():
            s["final_success_mean"] = float(np.mean(s["final_success"]))
            s["final_max_progress_mean"] = float(np.mean(s["final_max_progress"]))
            best = s.get("best_check_success") or []
            s["best_check_mean"] = float(np.mean(best)) if best else None
            learned = [x for x in s["final_learned_progress"] if x is not None]
            s["final_learned_progress_mean"] = float(np.mean(learned)) if learned else None
            reached = [x for x in s["steps_to_80"] if x is not None]
            s["reached_80"] = f"{len(reached)}/{len(s['steps_to_80'])}"
            s["steps_to_80_median"] = float(np.median(reached)) if len(reached) * 2 > len(s["steps_to_80"]) else None
            if sparse and name != "sparse":
                sp = sparse["steps_to_80"]
                s["speedup_vs_sparse"] = None if s["steps_to_80_median"] is None else (
                    "sparse never reached 80%" if all(x is None for x in sp) else
                    float(np.median([x for x in sp if x is not None])) / s["steps_to_80_median"])
    return summary


def print_tables(record: dict) -> None:
    rows = []
    for task, schemes in record["summary"].items():
        for name, s in schemes.items():
            rows.append([task, name, s["reached_80"], s["steps_to_80_median"] or "not reached", s["final_success_mean"],
                         s["final_max_progress_mean"], ",".join(str(x) for x in s["seeds"])])
    if rows:
        print(common.table(rows, ["task", "scheme", "reached 80%", "steps to 80% (median)", "final success",
                                  "final max gt progress", "seeds"]))
    sp = record.get("speed")
    if sp:
        r = sp["env_steps_per_s"]
        print(common.table([[k, v, v / r["cameras"]] for k, v in r.items()], ["env loop (4 envs)", "env steps/s", "vs cameras"]))
        if sp.get("env_steps_per_s_8_envs"):
            r8 = sp["env_steps_per_s_8_envs"]
            print(common.table([[k, v, v / r8["cameras"]] for k, v in r8.items()], ["env loop (8 envs)", "env steps/s", "vs cameras"]))
        if sp.get("ms_per_vector_step_4_envs"):
            ms = sp["ms_per_vector_step_4_envs"]
            print(common.table([[n, ms["cameras"], c["encoder_ms"], c["encoder_ms_per_frame"], c["stream_ms"]]
                                for n, c in ms.items() if n != "cameras"],
                               ["model (4 envs)", "cameras+physics ms", "encoder ms", "encoder ms/frame", "stream ms"]))
        ls = sp["sac_env_steps_per_s"]
        print("Learners on Pendulum-v1, one update per step (env steps/s): " + learner_line(ls))


ALGO_NAMES = {"sac": "SB3 SAC", "crossq": "CrossQ (sb3-contrib)", "tqc": "TQC (sb3-contrib)", "ppo": "SB3 PPO"}
"""How tables name an ``rl train`` algorithm (``RLConfig.algo``)."""


def learner_line(rates: dict) -> str:
    """The learner rates of ``learner_rates`` in one line, each against SB3's SAC."""
    names = {"sb3": ALGO_NAMES["sac"], "sb3_crossq": ALGO_NAMES["crossq"], "sb3_tqc": ALGO_NAMES["tqc"], "sbx": "SBX SAC"}
    parts = [f"{label} {rates[k]:.0f}" + ("" if k == "sb3" else f" ({rates[k] / rates['sb3']:.2f}x)")
             for k, label in names.items() if rates.get(k)]
    return ", ".join(parts) + ("" if rates.get("sbx") else "; SBX not installed")


def chart(record: dict, png: Path) -> None:
    from matplotlib.figure import Figure

    tasks = sorted({c["task"] for c in record["cells"].values()})
    if not tasks:
        return
    fig = Figure(figsize=(5.5 * len(tasks), 7.5))
    axes = fig.subplots(2, len(tasks), squeeze=False)
    colours = dict(zip(SCHEMES, ("#888888", "#d95f02", "#1b9e77", "#7570b3", "#000000", "#e7298a",
                                 "#66a61e", "#e6ab02", "#a6761d")))
    for j, task in enumerate(tasks):
        for scheme in SCHEMES:
            cells = [c for c in record["cells"].values() if c["task"] == task and c["scheme"] == scheme]
            if not cells:
                continue
            for k, c in enumerate(cells):
                steps = [r["step"] for r in c["curve"]]
                axes[0, j].plot(steps, [r["eval_success"] for r in c["curve"]], color=colours[scheme], alpha=0.8,
                                label=f"{scheme} ({len(cells)} seeds)" if k == 0 else None)
                axes[0, j].plot(steps, [r.get("eval_max_progress", np.nan) for r in c["curve"]], color=colours[scheme],
                                alpha=0.6, ls=":")
                if scheme != "sparse":  # sparse has no potential
                    pts = [(r["step"], r["train_final_progress"]) for r in c["curve"] if r.get("train_final_progress") is not None]
                    if pts:
                        axes[1, j].plot(*zip(*pts), "o-", ms=3, color=colours[scheme], alpha=0.8,
                                        label=f"{scheme}: potential at episode end" if k == 0 else None)
                axes[1, j].plot(steps, [r.get("train_success") or 0.0 for r in c["curve"]], color=colours[scheme],
                                alpha=0.5, ls=":", label=f"{scheme}: true success" if k == 0 else None)
        axes[0, j].set(title=f"{task}: eval success (solid), gt progress (dotted)", xlabel="env steps",
                       ylabel="success / progress", ylim=(-0.03, 1.03))
        axes[0, j].axhline(0.8, color="#cccccc", lw=0.8, ls="--")
        axes[1, j].set(title=f"{task}: learned potential vs true success", xlabel="env steps",
                       ylabel="potential / success", ylim=(-0.03, 1.03))
        axes[0, j].legend(fontsize=7)
        axes[1, j].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=90)


def main():
    p = common.parser(__doc__, quick_takes="2.5-3 minutes: about 15 CLI runs, each importing torch")
    p.add_argument("--setting", default="narrow", choices=list(SETTINGS),
                   help="narrow: the RL recipes' own layout; shift: a narrow-layout base policy where the objects stand "
                        "further forward; the others change the learner, start or budget (SETTINGS in this file)")
    p.add_argument("--tasks", default=None, help="default: the tasks with a recipe for the setting (--quick: pick_place)")
    p.add_argument("--schemes", default=",".join(GRID),
                   help=f"default: the planned grid; also {', '.join(k for k in SCHEMES if k not in GRID)} (reward models "
                        "trained with the base policy's own rollouts, or on the cameras alone)")
    p.add_argument("--check", action="store_true",
                   help="read every prepared reward model on the base policy's own rollouts (on by default with an "
                        "_onpolicy or _nostate scheme)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--steps", type=int, default=None, help="env steps per cell (default: the setting's, else 20000; --quick 300)")
    p.add_argument("--max-minutes", type=float, default=None, help="start no new cell after this many minutes")
    p.add_argument("--no-speed", action="store_true", help="skip the speed section (keep the recorded one)")
    p.add_argument("--aggregate", action="store_true",
                   help="only rebuild bench_rl.json and the chart from the cell files (keeps the recorded speed)")
    args = p.parse_args()
    schemes = args.schemes.split(",")
    unknown = sorted(set(schemes) - set(SCHEMES))
    if unknown:
        p.error(f"unknown scheme {unknown[0]!r}; choose from {list(SCHEMES)}")
    onpolicy = any(SCHEMES[k][0].endswith("_onpolicy") for k in schemes)
    check = args.check or any(SCHEMES[k][0].endswith(("_onpolicy", "_nostate")) for k in schemes)
    tasks = (args.tasks or ("pick_place" if args.quick else ",".join(
        t for t in ("pick_place", "stack") if (ROOT / f"datasets/{SETTINGS[args.setting].rl_recipe.format(task=t)}.yaml").is_file()))).split(",")
    name = "bench_rl" if args.setting == "narrow" else f"bench_rl_{args.setting}"
    seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",")]
    steps = args.steps or (300 if args.quick else SETTINGS[args.setting].rl.get("steps", 20000))
    work = Path(args.workdir or ROOT / "outputs" / (f"{name}_quick" if args.quick else name))
    work.mkdir(parents=True, exist_ok=True)
    cells_dir = work / "cells" if args.quick else common.RESULTS / name
    cells_dir.mkdir(parents=True, exist_ok=True)
    path = args.out or common.RESULTS / f"{name}{'_quick' if args.quick else ''}.json"
    record = {"quick": args.quick, "setting": args.setting, "goals": GOALS, "steps_per_cell": steps, "schemes": {k: list(v) for k, v in SCHEMES.items()},
              "machine": common.machine()}
    old = json.loads(path.read_text()) if path.is_file() else {}
    t_start = time.perf_counter()
    preps = {}
    measure_speed = args.setting == "narrow" and not (args.aggregate or args.no_speed)
    for i, task in enumerate(tasks if not args.aggregate else []):
        todo = any(not (cells_dir / f"{cell_name(task, c, s)}.json").is_file() for s in seeds for c in schemes)
        if todo or check or (i == 0 and measure_speed):  # a finished task needs no models (the speed section reads the first)
            preps[task] = prepare(task, work, args.quick, args.setting, onpolicy=onpolicy, check=check)
    record["reward_check"] = dict(old.get("reward_check") or {})
    for task, prep in preps.items():
        if check:
            record["reward_check"][task] = reward_check(task, prep, work, args.quick)
    if args.aggregate or args.setting != "narrow":  # the narrow setting's speed section measures the loop
        record["speed"] = old.get("speed")
        if args.aggregate and old.get("machine"):
            record["machine"] = old["machine"]
    elif measure_speed:
        record["speed"] = speed(tasks[0], preps[tasks[0]], args.quick)
    elif old.get("speed"):
        record["speed"] = old["speed"]
    stopped = False
    for seed in seeds if not args.aggregate else []:
        for task in tasks:
            for scheme in schemes:
                cell = cells_dir / f"{cell_name(task, scheme, seed)}.json"
                if cell.is_file():
                    continue
                if args.max_minutes is not None and (time.perf_counter() - t_start) / 60 > args.max_minutes:
                    stopped = True
                    break
                lock_file = work / "runs" / f"{cell_name(task, scheme, seed)}.lock"
                lock = claim_cell(lock_file)
                if lock is None:
                    print(f"cell {task} {scheme} seed {seed}: skipped, another process holds it "
                          f"({lock_file}; delete that file if none does)", flush=True)
                    continue
                try:
                    print(f"cell {task} {scheme} seed {seed} ({steps} env steps)", flush=True)
                    result = run_cell(task, scheme, seed, preps[task], work, steps, args.quick)
                    got = best_check(work / "runs" / cell.stem, args.quick)  # under the cell's lock: checked once
                    if got is not None:
                        result["best_check"] = got
                    cell.write_text(json.dumps(common.portable(result), indent=1))
                finally:
                    lock.unlink(missing_ok=True)
    cells = {}
    for f in sorted(cells_dir.glob("*.json")):
        c = json.loads(f.read_text())
        if c["steps"] == steps:
            if "best_check" not in c and not args.aggregate:  # cells run before it was measured get it too
                got = best_check(work / "runs" / f.stem, args.quick)
                if got is not None:
                    c["best_check"] = got
                    f.write_text(json.dumps(common.portable(c), indent=1))
            cells[f.stem] = c
    record["cells"] = cells
    grid = sum(c["scheme"] in GRID for c in cells.values())
    planned = sorted(set(tasks) | {c["task"] for c in cells.values()})  # a run for one task still counts the others' cells
    record["cells_done"] = f"{grid}/{len(GRID) * len(planned) * 3}" if not args.quick else f"{grid}"
    record["extra_cells"] = len(cells) - grid  # cells of schemes outside the planned grid (`_onpolicy`, `_nostate`)
    record["stopped_early"] = stopped
    record["summary"] = summarise(cells, record)
    common.write(name, record, args.out)
    chart(record, path.with_suffix(".png"))
    print_tables(record)
    print(f"{record['cells_done']} grid cells{f' + {record['extra_cells']} others' if record['extra_cells'] else ''}; {path}")


if __name__ == "__main__":
    main()
