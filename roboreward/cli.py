"""`roboreward <group> <command>`: the command line.

Each command is a function registered with ``@command(group, name, help)`` that receives the parsed
arguments; its options are declared with ``@arg``. Bad input raises RoborewardError and is printed
as one line (``error: ...``) with exit status 2; a bad flag or value gives one argparse line too.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from .errors import RoborewardError

COMMANDS: dict[tuple[str, str], dict] = {}
GROUP_HELP = {
    "data": "demonstration stores: generate, inspect, validate, import/export LeRobot, cache features",
    "demo": "the main job end to end on embedded defaults",
    "reward": "reward models: train, eval, annotate",
    "bc": "behaviour cloning policies (RA-BC weighting): train",
    "sim": "simulated SO-101 tasks: evaluate policies",
    "rl": "online RL in the sim tasks (SB3) with learned, oracle or sparse rewards: train, eval",
    "deploy": "a policy on an arm (LeRobot's so101_follower, koch_follower, or the sim twin) behind the safety layer, recorded",
}


def arg(*flags, **kwargs):
    """Declare one option of a command (argparse's add_argument arguments)."""

    def deco(fn):
        fn.__dict__.setdefault("_args", []).insert(0, (flags, kwargs))
        return fn

    return deco


def command(group: str, name: str | None, help: str):
    """Register ``roboreward <group> <name>``; ``name=None`` makes the group itself the command."""
    def deco(fn: Callable[[argparse.Namespace], int | None]):
        if (group, name) in COMMANDS:
            raise ValueError(f"command {group} {name} registered twice")
        COMMANDS[(group, name)] = {"fn": fn, "help": help, "args": fn.__dict__.get("_args", [])}
        return fn

    return deco


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message):  # argparse prints usage + message; one line with a pointer to --help is clearer
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _existing_path(value: str) -> Path:
    path = Path(value)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{value}: no such file or folder")
    return path


def _int_in(low: int, high: int | None = None):
    """argparse type: an int in [low, high]; anything else is one argparse line before any work."""

    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
        if high is None and number < low:
            raise argparse.ArgumentTypeError(f"{number} must be >= {low}")
        if high is not None and not low <= number <= high:
            raise argparse.ArgumentTypeError(f"{number} is outside [{low}, {high}]")
        return number

    parse.__name__ = "int"
    return parse


def _fraction(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not 0.0 < number <= 1.0:
        raise argparse.ArgumentTypeError(f"{number} is outside (0, 1]")
    return number


def _key_value(value: str) -> tuple[str, object]:
    """argparse type: ``KEY=VALUE`` with VALUE read as a YAML scalar (``stage``, ``1e-3``, ``true``)."""
    import yaml

    key, sep, raw = value.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"{value!r} is not KEY=VALUE (e.g. readout_filter=stage)")
    try:
        parsed = yaml.safe_load(raw) if raw.strip() else raw
    except yaml.YAMLError:
        parsed = raw
    return key.strip(), parsed


READOUT_HELP = ("KEY=VALUE: change how the checkpoint's outputs are read, no retraining (repeatable; for SARM: "
                "readout, readout_filter=stage, filter_back_prob, filter_evidence)")


def _load_reward(path: Path, readout: list[tuple[str, object]] | None):
    from .rewards.base import RewardModel

    return RewardModel.from_pretrained(path, overrides=dict(readout or ()))


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, default=str))


# ---------------------------------------------------------------------------------------- data
@command("data", "inspect", "print a store's schema and summary")
@arg("dataset", type=_existing_path, help="zarr store")
@arg("--json", action="store_true", help="print the summary as JSON")
def _data_inspect(args):
    from .data import EpisodeStore
    from .data.cache import cache_status

    store = EpisodeStore(args.dataset)
    summary = store.summary()
    summary["feature_caches"] = cache_status(store)
    if args.json:
        _print_json(summary)
        return 0
    print(format_summary(summary))
    return 0


def format_summary(s: dict) -> str:
    lines = [
        f"store      {s['path']}",
        f"episodes   {s['episodes']}   frames {s['frames']}   fps {s['fps']:g}   robot {s['robot_type']}",
        f"tasks      {'; '.join(s['tasks'])}",
        f"cameras    {', '.join(s['cameras'])}",
        "features   " + ", ".join(f"{k} {tuple(v['shape'])} {v['dtype']} [{v['kind']}]" for k, v in s["features"].items()),
        "quality    episodes  success",
    ]
    for q, v in s["quality"].items():
        rate = "n/a" if v["success_rate"] is None else f"{100 * v['success_rate']:.0f}%"
        lines.append(f"  {q:<10} {v['episodes']:>6}  {rate:>7}")
    if s["stage_seconds"]:
        lines.append("stages     mean s  (min-max)")
        for name, v in s["stage_seconds"].items():
            lines.append(f"  {name:<16} {v['mean']:5.2f}  ({v['min']:.2f}-{v['max']:.2f})")
    for key, c in s.get("feature_caches", {}).items():
        lines.append(f"features/{key}: {c['done']}/{s['frames']} frames, dim {c['dim']}" + (f", ERROR {c['error']}" if c["error"] else ""))
    return "\n".join(lines)


@command("data", "validate", "full check of a store (every chunk read and decoded); exit status 1 if it has errors")
@arg("dataset", type=_existing_path, help="zarr store")
@arg("--quick", "--no-scan", dest="quick", action="store_true",
     help="only check that every chunk file exists: skip decoding chunks and scanning values for NaN/inf")
def _data_validate(args):
    from .data.validate import check_store

    problems = check_store(args.dataset, scan_data=not args.quick)
    for p in problems:
        print(p)
    errors = sum(p.severity == "error" for p in problems)
    mode = " (quick: chunks listed, not decoded)" if args.quick else ""
    print(f"{args.dataset}: {'INVALID' if errors else 'valid'} ({errors} errors, {len(problems) - errors} warnings){mode}")
    return 1 if errors else 0


@command("data", "repair", "copy a damaged store's intact episodes into a new store (optionally regenerating the rest)")
@arg("dataset", type=_existing_path, help="damaged zarr store (never modified)")
@arg("--out", required=True, type=Path, help="zarr store to write the repaired copy to")
@arg("--regenerate", action="store_true",
     help="rebuild damaged episodes from the recipe of a store made by `data generate` instead of dropping them")
@arg("--overwrite", action="store_true")
def _data_repair(args):
    from .data.repair import repair_store

    r = repair_store(args.dataset, args.out, regenerate=args.regenerate, overwrite=args.overwrite)
    print(f"{r['out']}: kept {len(r['kept'])} of {r['episodes']} episodes"
          + (f", regenerated {r['regenerated']}" if r["regenerated"] else "")
          + (f", dropped {r['dropped']}" if r["dropped"] else ""))
    if r["regenerated_differently"]:
        print(f"note: regenerated episodes {r['regenerated_differently']} differ from the originals "
              "(the store was written by another generator version)")
    for key, n in r["feature_caches"].items():
        print(f"features/{key}: {n} frames copied; run `roboreward data cache-embeddings {r['out']}` to finish it")
    if r["progress_not_copied"]:
        print(f"progress annotations {r['progress_not_copied']} are not copied; run `roboreward reward annotate "
              f"--model <model> --dataset {r['out']}` again")


@command("data", "merge", "join stores of one robot and schema into one (a multi-task training set), episodes in order")
@arg("datasets", nargs="+", type=_existing_path, help="zarr stores to join, in order (only read)")
@arg("--out", required=True, type=Path, help="zarr store to write")
@arg("--overwrite", action="store_true")
def _data_merge(args):
    from .data.merge import merge_stores

    r = merge_stores(args.datasets, args.out, overwrite=args.overwrite)
    print(f"{r['out']}: {r['total']} episodes ("
          + ", ".join(f"{n} from {path}" for path, n in r["episodes"].items()) + f"), tasks: {r['tasks']}")
    for key in r["feature_caches"]:
        print(f"features/{key}: carried over")
    if r["progress_not_copied"]:
        print(f"progress annotations {r['progress_not_copied']} are not copied; run `roboreward reward annotate "
              f"--model <model> --dataset {r['out']}` on the merged store")


@command("data", "import-lerobot", "convert a local LeRobotDataset v3 folder into a zarr store (resumes an interrupted run)")
@arg("source", type=_existing_path, help="LeRobotDataset v3 root folder (meta/info.json inside)")
@arg("--out", required=True, type=Path, help="zarr store to write")
@arg("--state-key", default="observation.state", help="source feature to store as observation.state")
@arg("--action-key", default="action", help="source feature to store as action")
@arg("--overwrite", action="store_true")
def _data_import(args):
    import warnings

    from .data.lerobot_io import import_lerobot

    # The report prints the importer's own warnings as notes; recording them keeps them from also
    # appearing as warnings' two-line "file:line: UserWarning" form. Others are shown in one line.
    with warnings.catch_warnings(record=True) as caught:
        store = import_lerobot(args.source, args.out, overwrite=args.overwrite, state_key=args.state_key,
                               action_key=args.action_key)
    report = store.import_report
    print(report)
    for w in caught:
        text = str(w.message).strip().splitlines()[0] if str(w.message).strip() else w.category.__name__
        if not any(note in text for note in report.notes):
            print(f"warning: {text}", file=sys.stderr)


@command("data", "export-lerobot", "write a zarr store as a LeRobotDataset v3 folder")
@arg("dataset", type=_existing_path, help="zarr store")
@arg("--out", required=True, type=Path, help="folder for the LeRobotDataset")
@arg("--repo-id", default="local/roboreward", help="repo id recorded in the dataset (nothing is uploaded)")
@arg("--overwrite", action="store_true")
def _data_export(args):
    from .data.lerobot_io import export_lerobot

    export_lerobot(args.dataset, args.out, repo_id=args.repo_id, overwrite=args.overwrite)
    print(f"exported {args.dataset} -> {args.out}")


@command("data", "cache-embeddings", "encode every frame of every camera once with a frozen encoder (resumable)")
@arg("dataset", type=_existing_path, help="zarr store")
@arg("--config", type=_existing_path, default=None,
     help="reward training YAML (configs/reward/*.yaml): cache the encoder, weights, size and layer its data section names")
@arg("--encoder", default=None, help="registered encoder or timm architecture (default efficientnet_lite0)")
@arg("--encoder-weights", default=None, help="local weights file (default: the encoder's offline weights)")
@arg("--image-size", type=_int_in(16, 1024), default=None,
     help="square input size of the encoder (16..1024; default 96, the size every configs/reward/*.yaml trains on)")
@arg("--batch-size", type=_int_in(1), default=None, help="frames per encoder call (>= 1; default 64)")
@arg("--layer", default=None, help="cache this backbone module's pooled output instead of the final features (e.g. blocks.3)")
def _data_cache(args):
    from .config import load_config
    from .rewards.train import RewardTrainConfig, cache_for_training

    # One source of defaults: the reward training config (its data section), so that a cache made
    # here with no flags, or with --config C, is exactly the one `reward train --config C` reads.
    data = load_config(RewardTrainConfig, args.config).data
    flags = {"encoder": args.encoder, "encoder_weights": args.encoder_weights, "image_size": args.image_size,
             "encoder_layer": args.layer, "encode_batch_size": args.batch_size}
    data = dataclasses.replace(data, **{k: v for k, v in flags.items() if v is not None})
    # The same caching `reward train` does: the encoder's cache, then any photometric copies the
    # config asks for (data.augment_copies), each resumable.
    key, copies = cache_for_training(Path(args.dataset), data)
    print(f"features/{key} complete in {args.dataset}")
    for copy in copies:
        print(f"features/{copy} complete in {args.dataset} (photometric copy)")


@command("data", "generate", "write a store of scripted sim demonstrations (resumes an interrupted run)")
@arg("--recipe", type=_existing_path, default=None, help="dataset recipe YAML (datasets/*.yaml); flags below override it")
@arg("--task", default=None, help="sim task name (pick_place, stack, drawer)")
@arg("--episodes", type=_int_in(1), default=None)
@arg("--mix", default=None, help="quality mix, e.g. expert=0.5,suboptimal=0.3,failure=0.2")
@arg("--image-size", type=_int_in(16, 512), default=None, help="square camera resolution (16..512)")
@arg("--seed", type=_int_in(0), default=None)
@arg("--out", required=True, type=Path, help="zarr store to write")
@arg("--workers", type=_int_in(0), default=0, help="parallel generator processes (0 = one per core)")
@arg("--overwrite", action="store_true")
def _data_generate(args):
    store = _generate(args)
    print(format_summary(store.summary()))


def _generate(args):
    from .data.generate import Recipe, generate_store

    if args.recipe is None and args.task is None:
        raise RoborewardError("pass --task (pick_place, stack, drawer) or --recipe datasets/<name>.yaml")
    base = Recipe.from_yaml(args.recipe) if args.recipe else Recipe()
    overrides = {k: getattr(args, k) for k in ("task", "episodes", "image_size", "seed", "mix") if getattr(args, k) is not None}
    recipe = dataclasses.replace(base, **overrides)  # re-runs __post_init__ validation
    return generate_store(args.out, recipe, workers=args.workers, overwrite=args.overwrite)


# ---------------------------------------------------------------------------------------- reward
def _held_out(model_path: Path, dataset: Path, which: str) -> list[int] | None:
    """Episode ids for ``--episodes``: ``all``, ``val`` (the held-out split recorded at training
    time next to the model) or a comma list."""
    if which == "all":
        return None
    if which != "val":
        try:
            return [int(x) for x in which.split(",")]
        except ValueError:
            raise RoborewardError(f"--episodes {which!r} is not all, val or a comma list of episode ids") from None
    for candidate in (model_path / "split.json", model_path.parent / "split.json"):
        if candidate.is_file():
            split = json.loads(candidate.read_text())
            trained_on = split.get("dataset")
            if trained_on:
                recorded = Path(trained_on).expanduser()
                # A relative path was typed in the training run's working directory, which is not
                # recorded: try the cwd and every folder above the run folder (`--out runs/x` was
                # given from one of them), so an eval from another directory still finds the store.
                bases = [Path.cwd(), *candidate.resolve().parent.parents, candidate.resolve().parent]
                places = {recorded.resolve()} if recorded.is_absolute() else {(b / recorded).resolve() for b in bases}
                if dataset.resolve() not in places:
                    raise RoborewardError(
                        f"--episodes val: the model was trained on {trained_on} (recorded in {candidate}), not "
                        f"{dataset.resolve()}; pass that store, or --episodes with ids the model did not train on "
                        "(--episodes all would score its training episodes too)"
                    )
            return list(split["val"])
    raise RoborewardError(f"--episodes val: no split.json beside {model_path}; pass --episodes all or a list")


@command("reward", "train", "train a reward model on a store's cached features (resumes from <out> after any interruption)")
@arg("--config", type=_existing_path, default=None, help="YAML such as configs/reward/sarm.yaml (default: built-in SARM defaults)")
@arg("--dataset", required=True, type=_existing_path, help="zarr store")
@arg("--out", type=Path, default=None, help="run folder: checkpoints/, model/, split.json, tb/ (default outputs/runs/<dataset>_<model type>)")
@arg("--steps", type=_int_in(1), default=None, help="override train.steps")
@arg("--seed", type=_int_in(0), default=None, help="override train.seed (initial weights and batch order)")
def _reward_train(args):
    from .config import load_config
    from .rewards.train import RewardTrainConfig, train_reward

    config = load_config(RewardTrainConfig, args.config)
    if args.out is None:
        args.out = Path("outputs/runs") / f"{args.dataset.name.removesuffix('.zarr')}_{config.model['type']}"
        print(f"run folder: {args.out}")
    for name in ("steps", "seed"):
        if getattr(args, name) is not None:
            config.train = dataclasses.replace(config.train, **{name: getattr(args, name)})
    model_dir = train_reward(config, args.dataset, args.out)
    print(f"model: {model_dir}\nnext:  roboreward reward eval --model {model_dir} --dataset {args.dataset}")


@command("reward", "eval", "VOC, MAE, stage accuracy, AUROC and reversed-episode checks, with plots and overlay videos")
@arg("--model", required=True, type=_existing_path, help="reward model checkpoint folder (config.json + model.safetensors)")
@arg("--dataset", required=True, type=_existing_path, help="zarr store")
@arg("--out", type=Path, default=None, help="output folder (default <model>/eval)")
@arg("--episodes", default="val", help="val (held-out split of training), all, or ids like 3,7,9")
@arg("--level", default=None, help="sparse or dense (default: every level the model has)")
@arg("--videos", type=_int_in(0), default=2, help="overlay mp4s to write")
@arg("--plots", type=_int_in(0), default=8, help="per-episode progress plots to write")
@arg("--readout", type=_key_value, action="append", default=None, help=READOUT_HELP)
def _reward_eval(args):
    from .eval.evaluate import evaluate_reward, summary_text

    out = args.out or args.model / "eval"
    model = _load_reward(args.model, args.readout)
    metrics = evaluate_reward(
        model, args.dataset, out, episodes=_held_out(args.model, args.dataset, args.episodes),
        level=args.level, videos=args.videos, plots=args.plots,
    )
    print(summary_text(metrics))
    print(f"wrote {out / 'metrics.json'} (+ plots and videos)")


@command("reward", "adapt", "fine-tune a reward model to a new task from one expert demonstration (GRM)")
@arg("--model", required=True, type=_existing_path, help="reward model checkpoint folder")
@arg("--dataset", required=True, type=_existing_path, help="zarr store holding the demonstration")
@arg("--episode", required=True, type=_int_in(0), help="index of the expert demonstration in the store")
@arg("--out", required=True, type=Path, help="folder for the adapted model (config.json + model.safetensors)")
@arg("--steps", type=_int_in(0), default=150, help="fine-tuning steps (0: only the new task's references and embedding)")
@arg("--lr", type=float, default=1e-4, help="fine-tuning learning rate")
@arg("--keep-state", action="store_true",
     help="keep the joint state as an input (default: cameras only; from one demo the state is learnt as progress)")
@arg("--readout", type=_key_value, action="append", default=None,
     help="KEY=VALUE: a readout field saved with the adapted model (repeatable; e.g. smooth_frames=8)")
def _reward_adapt(args):
    from .data.cache import ensure_features
    from .data.store import EpisodeStore
    from .rewards.base import RewardModel

    model = _load_reward(args.model, args.readout)  # the adapted model's config starts from the base's
    store = EpisodeStore(args.dataset)
    store.episode_range(args.episode)
    if type(model).adapt is RewardModel.adapt:  # refused before any encoding
        model.adapt(store, args.episode, args.out)
    ensure_features(store, getattr(model.config, "feature_key", None), announce=True)
    out = model.adapt(EpisodeStore(args.dataset), args.episode, args.out, steps=args.steps, lr=args.lr,
                      keep_state=args.keep_state)
    print(f"adapted model: {out}\nnext:  roboreward reward eval --model {out} --dataset {args.dataset} --episodes all")


@command("reward", "annotate", "progress of every frame into the store and a LeRobot sarm_progress.parquet")
@arg("--model", required=True, type=_existing_path, help="reward model checkpoint folder")
@arg("--dataset", required=True, type=_existing_path, help="zarr store")
@arg("--name", default=None, help="name of the progress group in the store (default: the model type)")
@arg("--parquet", type=Path, default=None, help="where to write LeRobot's progress parquet (default: <store stem>.sarm_progress.parquet beside the store)")
@arg("--readout", type=_key_value, action="append", default=None, help=READOUT_HELP)
def _reward_annotate(args):
    from .rewards.annotate import annotate

    info = annotate(_load_reward(args.model, args.readout), args.dataset, name=args.name, parquet_path=args.parquet)
    print(f"progress/{info['name']} ({', '.join(info['levels'])}) for {info['frames']} frames; parquet {info['parquet']}")


# ---------------------------------------------------------------------------------------- bc
@command("bc", "train", "behaviour cloning on a store, optionally weighted by RA-BC (resumes from <out>)")
@arg("--dataset", required=True, type=_existing_path, help="zarr store")
@arg("--out", required=True, type=Path, help="run folder: checkpoints/, model/, split.json, weights.json, tb/")
@arg("--config", type=_existing_path, default=None,
     help="YAML with policy/train/data/weights sections; policy.type: bc (cached features), vision_bc (pixels), "
          "act or diffusion (LeRobot's, saved in LeRobot's format); see configs/bc/")
@arg("--weights", choices=("none", "soft", "rabc", "hard"), default=None,
     help="RA-BC weighting (overrides weights.mode): soft (= rabc, LeRobot's formula), hard (keep chunks with gain > kappa)")
@arg("--progress", default=None, help="gt.progress, a progress annotation name in the store, or a sarm_progress.parquet")
@arg("--min-final-progress", type=_fraction, default=None,
     help="also drop episodes whose final progress stays below this (e.g. 0.5); overrides weights.min_final_progress")
@arg("--qualities", nargs="+", default=None, help="train only on episodes with these quality labels (e.g. expert)")
@arg("--steps", type=_int_in(1), default=None, help="override train.steps")
@arg("--seed", type=_int_in(0), default=None, help="override train.seed (initialisation and batch order)")
def _bc_train(args):
    from .config import load_config
    from .policies.train import BCTrainConfig, train_bc

    config = load_config(BCTrainConfig, args.config)
    if args.weights == "rabc":
        args.weights = "soft"
    changes = {k: v for k, v in (("mode", args.weights), ("source", args.progress),
                                  ("min_final_progress", args.min_final_progress)) if v is not None}
    if changes:
        config.weights = dataclasses.replace(config.weights, **changes)
    for name in ("steps", "seed"):
        if getattr(args, name) is not None:
            config.train = dataclasses.replace(config.train, **{name: getattr(args, name)})
    if args.qualities is not None:
        config.qualities = list(args.qualities)
    print(f"model: {train_bc(config, args.dataset, args.out)}")


@command("sim", "eval", "roll a policy out in a sim task: success rate with a 95% interval, videos")
@arg("--policy", required=True, type=_existing_path,
     help="policy folder: bc train's model/, or a LeRobot ACT / Diffusion folder (also lerobot-train's pretrained_model/)")
@arg("--task", default=None, help="pick_place, stack or drawer (default: the --recipe's task)")
@arg("--recipe", type=_existing_path, default=None,
     help="dataset recipe (datasets/*.yaml): roll out in its task, object randomisation (task_config) and look (visual)")
@arg("--episodes", type=_int_in(1), default=20)
@arg("--out", type=Path, default=None, help="output folder (default <policy>/sim_eval_<task>)")
@arg("--envs", type=_int_in(1, 256), default=4, help="environments stepped in lockstep (one batch per step)")
@arg("--image-size", type=_int_in(16, 512), default=None,
     help="camera resolution (default: a pixel policy's training size, else 128; match the training data)")
@arg("--execute", type=_int_in(1), default=None,
     help="actions of each predicted chunk to execute (default: LeRobot's n_action_steps, else horizon/2)")
@arg("--max-steps", type=_int_in(1), default=300)
@arg("--videos", type=_int_in(0), default=2)
@arg("--seed", type=_int_in(0), default=100_000, help="first rollout's env seed (then +1 each); far from recipes' seeds")
@arg("--record", type=Path, default=None,
     help="zarr store to write every rollout into, with the sim's ground truth and stage annotations, to check or "
          "train a reward model on this policy's own episodes (created, or completed by re-running the same command)")
def _sim_eval(args):
    from .policies.evaluate import evaluate_policy
    from .sim.scripted import PLANS

    task_config = visual = None
    if args.recipe is not None:
        from .data.generate import Recipe

        recipe = Recipe.from_yaml(args.recipe)
        if args.task is not None and args.task != recipe.task:
            raise RoborewardError(f"--task {args.task} differs from the recipe's task {recipe.task}; give one of them")
        args.task, task_config, visual = recipe.task, recipe.task_config, recipe.visual
    if args.task is None:
        raise RoborewardError("give --task (pick_place, stack, drawer) or --recipe datasets/<name>.yaml")
    if args.task not in PLANS:
        raise RoborewardError(f"unknown task {args.task!r}; available: {sorted(PLANS)}")
    out = args.out or args.policy / f"sim_eval_{args.task}"
    r = evaluate_policy(args.policy, args.task, args.episodes, out, image_size=args.image_size, n_envs=args.envs,
                        execute=args.execute, max_steps=args.max_steps, videos=args.videos, task_config=task_config,
                        visual=visual, record=args.record, seed=args.seed)
    print(f"{args.task}: success {r['successes']}/{r['episodes']} = {r['success_rate']:.2f} "
          f"(95% CI {r['ci95'][0]:.2f}-{r['ci95'][1]:.2f}); {out / 'sim_eval.json'}"
          + (f"; rollouts recorded in {args.record}" if args.record else ""))


# ---------------------------------------------------------------------------------------- rl
@command("rl", "train", "online RL (SB3 SAC/PPO) in a sim task, rewarded by a reward model, the oracle or success (resumes from <out>)")
@arg("--out", required=True, type=Path, help="run folder: checkpoints/, model/, curves.json, tb/")
@arg("--config", type=_existing_path, default=None, help="YAML of RLConfig fields (e.g. configs/rl/sac.yaml)")
@arg("--task", default=None, help="pick_place, stack or drawer")
@arg("--reward", default=None, help="reward model folder (roboreward reward train's <out>/model), oracle or sparse")
@arg("--shaping", choices=("pbrs", "naive", "sparse"), default=None, help="how the reward model's progress becomes reward")
@arg("--demos", type=_existing_path, default=None, help="store of demonstrations of the task: they seed the replay buffer")
@arg("--bc-steps", type=_int_in(0), default=None, help="behaviour-clone the actor on the demos for this many steps first")
@arg("--base-policy", type=_existing_path, default=None,
     help="residual RL: a state policy folder (bc train's <out>/model) whose targets the RL action corrects")
@arg("--algo", choices=("sac", "tqc", "crossq", "ppo"), default=None, help="sac (default), tqc, crossq (sb3-contrib) or ppo")
@arg("--steps", type=_int_in(1), default=None, help="env steps in total")
@arg("--envs", type=_int_in(1, 64), default=None, help="envs stepped together")
@arg("--gamma", type=float, default=None, help="the learner's discount (also the shaping discount)")
@arg("--seed", type=_int_in(0), default=None)
def _rl_train(args):
    from .config import check_fields, from_dict, load_config
    from .rl.train import RLConfig, steps_to, train_rl

    base = load_config(RLConfig, args.config)
    changes = {k: v for k, v in (("task", args.task), ("reward", args.reward), ("shaping", args.shaping),
                                  ("demos", None if args.demos is None else str(args.demos)), ("bc_steps", args.bc_steps),
                                  ("base_policy", None if args.base_policy is None else str(args.base_policy)),
                                  ("algo", args.algo), ("steps", args.steps), ("n_envs", args.envs),
                                  ("gamma", args.gamma), ("seed", args.seed)) if v is not None}
    config = from_dict(RLConfig, check_fields(RLConfig, {**dataclasses.asdict(base), **changes}), where="rl config")
    r = train_rl(config, args.out)
    reached = steps_to(r["curve"])
    final = r["final"]
    print(f"{config.task} {config.scheme}: true success {final['eval_success']:.2f} after {r['steps']} env steps "
          f"(95% CI {final['eval_ci95'][0]:.2f}-{final['eval_ci95'][1]:.2f}); 80% reached at "
          f"{reached if reached is not None else 'not reached'}; policy {args.out / 'model'}")
    if r["best"]:
        print(f"best evaluation: {r['best']['eval_success']:.2f} at step {r['best']['step']}; "
              f"that policy: {args.out / 'best'}")


@command("rl", "eval", "roll an rl train policy out: true success with a 95% interval, videos")
@arg("--policy", required=True, type=_existing_path,
     help="rl train run folder (its final model/), or <run>/best (the policy of its best evaluation)")
@arg("--episodes", type=_int_in(1), default=20)
@arg("--envs", type=_int_in(1, 64), default=4)
@arg("--videos", type=_int_in(0), default=2)
@arg("--seed", type=_int_in(0), default=100_000, help="first rollout seed (far from the training envs' seeds)")
@arg("--out", type=Path, default=None, help="output folder (default <policy>/rl_eval)")
@arg("--record", type=Path, default=None,
     help="zarr store to write every rollout into (as sim eval --record): check or train a reward model on this policy's episodes")
def _rl_eval(args):
    from .rl.train import load_policy, rollout_success

    algo, config = load_policy(args.policy)
    out = args.out or args.policy / "rl_eval"
    out.mkdir(parents=True, exist_ok=True)
    r = rollout_success(algo, config, args.episodes, seed=args.seed, n_envs=args.envs, videos=args.videos, out=out,
                        desc=f"rl eval {config.task}", record=args.record)
    (out / "rl_eval.json").write_text(json.dumps(r, indent=2))
    print(f"{config.task}: success {r['successes']}/{r['episodes']} = {r['success_rate']:.2f} "
          f"(95% CI {r['ci95'][0]:.2f}-{r['ci95'][1]:.2f}); {out / 'rl_eval.json'}"
          + (f"; rollouts recorded in {args.record}" if args.record else ""))


# ---------------------------------------------------------------------------------------- deploy
@command("deploy", None, "run a policy on an arm at the dataset's fps behind the safety layer; record episodes as training data")
@arg("--robot.type", dest="robot_type", required=True, help="sim_so101, so101_follower, so100_follower or koch_follower")
@arg("--robot.port", dest="robot_port", default=None, help="serial port of a real arm (e.g. /dev/ttyACM0)")
@arg("--robot.id", dest="robot_id", default=None, help="arm id (names LeRobot's calibration file)")
@arg("--robot.cameras", dest="robot_cameras", default=None,
     help="a real arm's cameras, LeRobot style: '{front: {type: opencv, index_or_path: 0, width: 640, height: 480, fps: 30}}'")
@arg("--robot.task", dest="robot_task", default=None, help="sim_so101: the sim task of the scene")
@arg("--robot.image_size", dest="robot_image_size", type=_int_in(16, 512), default=None, help="sim_so101: camera size")
@arg("--policy.path", dest="policy_path", required=True, type=_existing_path, help="policy folder (bc train's model/)")
@arg("--reward.path", dest="reward_path", type=_existing_path, default=None, help="reward model folder: live progress")
@arg("--episodes", type=_int_in(1), default=1)
@arg("--max-steps", type=_int_in(1), default=300, help="ticks per episode")
@arg("--fps", type=float, default=30.0)
@arg("--task", default=None, help="task string recorded with each episode (default: the twin's task or the reward model's)")
@arg("--record", type=Path, default=None, help="zarr store to record every episode into (created or appended)")
@arg("--success-hold", type=_int_in(0), default=0, help="end an episode when progress stays >= 1 - delta this many ticks")
@arg("--dry-run", action="store_true", help="log actions without sending them")
@arg("--no-realtime", action="store_true", help="sim twin: run as fast as the loop goes instead of at --fps")
def _deploy(args):
    from .hardware.deploy import DeployConfig, deploy
    from .hardware.safety import SafetyConfig

    robot = {"type": args.robot_type}
    for name in ("port", "id", "task", "image_size"):
        value = getattr(args, f"robot_{name}")
        if value is not None:
            robot[name] = value
    if args.robot_cameras is not None:
        import yaml

        try:
            robot["cameras"] = yaml.safe_load(args.robot_cameras)
        except yaml.YAMLError as exc:
            raise RoborewardError(f"--robot.cameras is not YAML ({str(exc).splitlines()[0]})") from None
    from .hardware import ARM_TYPES

    if args.robot_type not in ARM_TYPES:
        raise RoborewardError(f"robot.type {args.robot_type!r} unknown; choose from {', '.join(ARM_TYPES)}")
    if args.robot_type != "sim_so101" and "port" not in robot:
        raise RoborewardError(f"--robot.type {args.robot_type} needs --robot.port (e.g. /dev/ttyACM0)")
    config = DeployConfig(robot=robot, policy=str(args.policy_path), reward=None if args.reward_path is None else str(args.reward_path),
                          episodes=args.episodes, max_steps=args.max_steps, fps=args.fps, task=args.task,
                          record=None if args.record is None else str(args.record), success_hold=args.success_hold,
                          realtime=not args.no_realtime, safety=SafetyConfig(dry_run=args.dry_run, fps=args.fps))
    result = deploy(config)
    for i, ep in enumerate(result["episodes"]):
        t = ep["timing"]
        print(f"episode {i}: {ep['steps']} ticks, ended by {ep['ended_by']}"
              + (f", final progress {ep['final_progress']:.2f}" if ep["final_progress"] is not None else "")
              + (f", sim success {ep['sim_success']}" if "sim_success" in ep else "")
              + f"; tick {t['tick']['mean']:.1f} ms mean / {t['tick']['max']:.1f} max, late {t['late']['max']:.1f} ms max, "
              f"missed deadlines {ep['missed_deadlines']}; interventions {ep['interventions'] or 'none'}")
    if result["recorded"]:
        print(f"recorded: {result['recorded']}")


# ---------------------------------------------------------------------------------------- demo
@command("demo", None, "the main job on embedded defaults (configs/demo.yaml): nothing to download")
@arg("--config", type=_existing_path, default=None, help="demo config (default: the packaged configs/demo.yaml)")
@arg("--out", type=Path, default=Path("outputs/demo"), help="output folder")
def _demo(args):
    from .demo import run_demo

    return run_demo(args.config, args.out)


# ---------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="roboreward", description="Learned progress rewards for robot manipulation.")
    groups = parser.add_subparsers(dest="group", metavar="<group>", parser_class=_OneLineParser)
    group_parsers = {}
    for (group, name), spec in COMMANDS.items():
        if name is None:
            sub = groups.add_parser(group, help=spec["help"], description=spec["help"])
        else:
            if group not in group_parsers:
                gp = groups.add_parser(group, help=GROUP_HELP.get(group, ""))
                group_parsers[group] = gp.add_subparsers(dest="command", metavar="<command>", parser_class=_OneLineParser)
            sub = group_parsers[group].add_parser(name, help=spec["help"], description=spec["help"])
        for flags, kwargs in spec["args"]:
            sub.add_argument(*flags, **kwargs)
        sub.set_defaults(_fn=spec["fn"])
    return parser


def _close_progress_bars() -> None:
    """End any progress bar an error interrupted, so the error starts a line of its own."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", [])):
        bar.close()


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing at run time may reach a hub
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_fn", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args._fn(args) or 0)
    except RoborewardError as exc:
        _close_progress_bars()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; committed work is kept and the command can be re-run to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
