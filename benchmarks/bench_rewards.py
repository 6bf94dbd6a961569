"""Every reward model side by side: SARM, GRM, perceptual rewards and the two baselines, on the same
held-out episodes, in domain and on the held-out visual variants, with fit time and streaming speed.

Per task (pick_place, stack, drawer) and training seed, each model is trained (or fitted) on the
task's standard dataset (``datasets/<task>_mixed.yaml``, the work folder of
``bench_reward_quality.py``, whose SARM runs and stores are reused) with its own config, then
evaluated through ``roboreward reward eval`` a user would run: in domain on the 20 held-out episodes
of its training split, and on every held-out variant recipe of the task (``<task>_heldout_*``,
20 unseen episodes each). SARM is read with the stage filter and change gate of
configs/reward/sarm.yaml (its cells are ``bench_reward_quality``'s ``+robust`` cells).

Speed (``--speed`` or ``--quick``; run it alone): streaming frames/s of each model for 8 envs over
cached features, and training steps/s at batch 8 next to LeRobot's SARM step measured by
``bench_sarm.py`` (benchmarks/results/bench_sarm.json).

Writes benchmarks/results/bench_rewards.json (every cell, the summary over seeds) and
bench_rewards.png. Each cell (model, task, seed, evaluation set) is kept in the work folder, so an
interrupted run resumes where it stopped.

    python benchmarks/bench_rewards.py [--quick] [--models sarm,grm,...] [--tasks ...] [--seeds 0,1,2] [--speed]
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from bench_reward_quality import FIGURES, VARIANTS, cli, figures  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODELS = {
    "sarm": ("configs/reward/sarm.yaml", ["readout_filter=stage", "readout_gate=0.05"], "+robust"),
    # SARM as configs/reward/sarm.yaml trains and reads it today (done stage, photometric copies, per-stage
    # minimum stay; since 2026-12-06), in runs of its own: the `sarm` row's runs came from the 2026-12-02 default.
    "sarm+aug+stay": ("configs/reward/sarm.yaml", [], ""),
    "grm": ("configs/reward/grm.yaml", [], ""),
    "perceptual": ("configs/reward/perceptual.yaml", [], ""),
    "perceptual+steps8": ("configs/reward/perceptual_steps8.yaml", [], ""),  # 8 steps, temperature 2
    # 4 steps read through the smoothing readout (a moving average over 10 frames), and the
    # recommended config: 8 steps, the smoothing and the change gate (readouts given explicitly, so
    # a fit made by perceptual_steps8.yaml, the same fit, is read the same way).
    "perceptual+smooth": ("configs/reward/perceptual.yaml", ["smooth_frames=10"], "+smooth"),
    "perceptual+steps8+smooth": ("configs/reward/perceptual_smooth.yaml", ["smooth_frames=10", "readout_gate=0.025"], "+smooth_gate"),
    "time_regression": ("configs/reward/time_regression.yaml", [], ""),
    "success_classifier": ("configs/reward/success_classifier.yaml", [], ""),
    "grm+median": ("configs/reward/grm.yaml", ["fusion=median"], "+median"),  # GRM's fits read another way
}
READS_FITS_OF = {"grm+median": "grm"}
"""Rows that only read another row's trained models through other readout fields: they never
train; a cell whose model is not there yet is skipped (run that row first)."""
GOALS = {"grm": {"voc": 0.95, "auroc": 0.95}, "perceptual": {"voc": 0.8}}
"""Per model family (the name before any ``+``): a variant row is held to its family's goals."""


def train_once(model: str, config: str, store: Path, run: Path, seed: int, quick: bool) -> float | None:
    """Train (or fit) unless ``run`` holds the model; returns the seconds it took (kept in the run
    folder so a resumed benchmark still reports it), None when unknown."""
    record = run / "bench_train.json"
    if (run / "model" / "config.json").is_file():
        return json.loads(record.read_text())["seconds"] if record.is_file() else None
    t0 = time.perf_counter()
    cli("reward", "train", "--config", ROOT / config, "--dataset", store, "--out", run, "--seed", seed,
        *(["--steps", 60] if quick else []))
    seconds = time.perf_counter() - t0
    record.write_text(json.dumps({"seconds": seconds}) + "\n")
    return seconds


def speed(models: list[str], work: Path, task: str) -> dict:
    """Streaming frames/s (8 envs, cached features) and training steps/s at batch 8 per model."""
    import torch
    from torch.utils.data import DataLoader

    from roboreward.data.store import EpisodeStore
    from roboreward.rewards import RewardModel

    torch.set_num_threads(2)
    store = EpisodeStore(work / f"{task}_mixed.zarr")
    out = {}
    for name in models:
        run = work / f"{name}_{task}_mixed_s0"
        if not (run / "model").is_dir():
            continue
        model = RewardModel.from_pretrained(run / "model")
        cfg = model.config
        batch = type(model).episode_batch(store, cfg, [0])
        obs_at = lambda t: {k: v[:, t].expand(8, *v.shape[2:]) for k, v in batch.items() if torch.is_tensor(v) and k != "lengths"}  # noqa: E731
        stream, n = model.stream(8), int(batch["lengths"][0])
        frames = [obs_at(t) for t in range(n)]
        task_str = batch["task"][0]
        state = {"t": 0}

        def step():
            if state["t"] == n:
                stream.reset()
                state["t"] = 0
            stream.step(frames[state["t"]], task_str)
            state["t"] += 1

        row = {"stream_frames_per_s_8_envs": common.rate(step, 8)}
        if type(model).trained_by_gradient():
            data = type(model).training_samples(store, cfg, list(range(min(20, store.n_episodes))))
            loader = DataLoader(data, batch_size=8, shuffle=True, drop_last=True)
            batches = iter(loader)
            model.train()
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

            def train_step():
                nonlocal batches
                try:
                    batch = next(batches)
                except StopIteration:  # a new epoch, as a training loop would start one
                    batches = iter(loader)
                    batch = next(batches)
                loss = model.loss(batch)["loss"]
                opt.zero_grad()
                loss.backward()
                opt.step()

            row["train_steps_per_s_batch_8"] = common.rate(train_step, 1, min_seconds=3.0)
        out[name] = row
    lerobot = common.RESULTS / "bench_sarm.json"
    if lerobot.is_file():
        lr = json.loads(lerobot.read_text())["lerobot"]["train_steps_per_s"]
        for row in out.values():
            if "train_steps_per_s_batch_8" in row:
                row["vs_lerobot_sarm_train"] = row["train_steps_per_s_batch_8"] / lr
        out["lerobot_sarm_train_steps_per_s_batch_8"] = lr
    return out


def standard_store(work: Path, task: str) -> Path:
    """``<work>/<task>_mixed.zarr`` from ``datasets/<task>_mixed.yaml`` (generated, or resumed, if
    not complete)."""
    store = work / f"{task}_mixed.zarr"
    cli("data", "generate", "--recipe", ROOT / f"datasets/{task}_mixed.yaml", "--out", store)
    return store


def base_model(work: Path, base_task: str, seed: int, quick: bool) -> Path | None:
    """GRM trained on ``base_task``'s standard data: ``pick_place`` the cell's own run; a multi-task
    base ``a+b`` is trained here (once per seed) on the stores of a and b joined by ``data merge``."""
    if "+" not in base_task:
        model = work / f"grm_{base_task}_mixed_s{seed}" / "model"
        return model if model.is_dir() else None
    stores = [standard_store(work, t) for t in base_task.split("+")]
    merged = work / f"{base_task}_mixed.zarr"
    if not merged.is_dir():
        cli("data", "merge", *stores, "--out", merged)
    run = work / f"grm_{base_task}_mixed_s{seed}"
    train_once("grm", MODELS["grm"][0], merged, run, seed, quick)
    return run / "model"


# Rows of the adaptation table: (label, adapted model, fine-tuned?, `reward adapt` flags, `reward eval --readout`).
ADAPT_ROWS = (
    ("before", "before", False, ["--keep-state"], None),
    ("after", "after", True, [], None),
    ("after_state", "after_state", True, ["--keep-state"], None),
    ("after_smooth8", "after", True, [], "smooth_frames=8"),  # the "after" model read through an 8-frame average
)


def adaptation(work: Path, base_task: str, target: str, seeds: list[int], steps: int, quick: bool) -> dict:
    """One-shot adaptation of GRM trained on ``base_task`` (one task, or several joined with ``+``)
    to ``target``: the first expert episode of ``<target>_mixed`` is the demo; evaluated on every
    other episode of that store, before (the new task's references and an embedding set to the mean
    of the known ones, no fine-tuning: --steps 0, the base's inputs kept) and after ``steps`` of
    fine-tuning on the demo's pairs, as ``reward adapt`` does by default (cameras only), with the
    joint state kept (``after_state``), and the default read through an 8-frame average (``after_smooth8``)."""
    from roboreward.data.store import EpisodeStore

    store = standard_store(work, target)
    st = EpisodeStore(store)
    demo = next(e for e in range(st.n_episodes) if st.episodes[e].quality == "expert" and st.episodes[e].success)
    others = ",".join(str(e) for e in range(st.n_episodes) if e != demo)
    out = {"base_task": base_task, "target": target, "demo_episode": demo, "steps": steps, "seeds": {}}
    for seed in seeds:
        base = base_model(work, base_task, seed, quick)
        if base is None:
            continue
        row = {}
        for label, model, n, flags, readout in ADAPT_ROWS:
            folder = work / f"grm_{base_task}_to_{target}_s{seed}_{model}"
            if not (folder / "config.json").is_file():
                cli("reward", "adapt", "--model", base, "--dataset", store, "--episode", demo, "--out", folder,
                    "--steps", steps if n else 0, *flags)
            ev = work / f"grm_{base_task}_to_{target}_s{seed}_{label}_eval"
            if not (ev / "metrics.json").is_file():
                cli("reward", "eval", "--model", folder, "--dataset", store, "--out", ev, "--episodes", others,
                    "--videos", 0, "--plots", 2, *(["--readout", readout] if readout else []))
            row[label] = figures(json.loads((ev / "metrics.json").read_text()))
        out["seeds"][str(seed)] = row
    return out


def main():
    p = common.parser(__doc__)
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--train", default="mixed", help="training recipe datasets/<task>_<train>.yaml (mixed: the standard data; "
                   "randomised: domain-randomised looks); cells of another than mixed are <model>+<train>")
    p.add_argument("--tasks", default=None, help="default pick_place,stack,drawer (--quick: pick_place)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--speed", action="store_true", help="also measure streaming and training speed (run alone)")
    p.add_argument("--adapt", default="pick_place:drawer,pick_place+stack:drawer",
                   help="BASE:TARGET pairs of the one-shot GRM adaptation, comma-separated; BASE may join tasks with + "
                        "(GRM trained on their merged stores) ('' = skip)")
    p.add_argument("--adapt-steps", type=int, default=150)
    p.add_argument("--adapt-only", action="store_true",
                   help="only the adaptation section (its stores and base models made as needed); no per-task cells")
    args = p.parse_args()
    models = args.models.split(",")
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        p.error(f"unknown model {unknown[0]!r}; choose from {list(MODELS)}")
    tasks = (args.tasks or ("pick_place" if args.quick else "pick_place,stack,drawer")).split(",")
    seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",")]
    variants = ["colours"] if args.quick else args.variants.split(",")
    work = Path(args.workdir or ROOT / "outputs" / ("quality_quick" if args.quick else "quality"))
    size = ["--image-size", 32] if args.quick else []
    path = args.out or common.RESULTS / f"bench_rewards{'_quick' if args.quick else ''}.json"
    record = {"quick": args.quick, "goals": GOALS, "cells": {}, "configs": {m: MODELS[m][0] for m in MODELS}}
    fresh: set[str] = set()  # the cells this run computed
    if path.is_file():
        old = json.loads(path.read_text())
        record["cells"].update(old.get("cells", {}))
        record["speed"] = old.get("speed")
        record["adaptations"] = old.get("adaptations", {})
        if old.get("adaptation"):  # results written before several bases were measured
            ad = old["adaptation"]
            record["adaptations"].setdefault(f"{ad['base_task']}:{ad['target']}", ad)
    for seed in [] if args.adapt_only else seeds:
        for task in tasks:
            if not (ROOT / f"datasets/{task}_{args.train}.yaml").is_file():
                continue
            store = work / f"{task}_{args.train}.zarr"
            cli("data", "generate", "--recipe", ROOT / f"datasets/{task}_{args.train}.yaml", "--out", store,
                *(["--episodes", 6, *size] if args.quick else []))
            evals = {"in_domain": (store, "val")}
            for v in variants:
                if (ROOT / f"datasets/{task}_heldout_{v}.yaml").is_file():
                    evals[v] = (work / f"{task}_heldout_{v}.zarr", "all")
                    cli("data", "generate", "--recipe", ROOT / f"datasets/{task}_heldout_{v}.yaml", "--out", evals[v][0],
                        *(["--episodes", 4, *size] if args.quick else []))
            for name in models:
                config, readout, suffix = MODELS[name]
                source = READS_FITS_OF.get(name)
                run = work / f"{source or name}_{task}_{args.train}_s{seed}"
                if source and not (run / "model" / "config.json").is_file():
                    print(f"skip {name} on {task} seed {seed}: no {source} model in {run} yet")
                    continue
                seconds = None if source else train_once(name, config, store, run, seed, args.quick)
                label = name if args.train == "mixed" else f"{name}+{args.train}"
                for set_name, (eval_store, episodes) in evals.items():
                    out = run / f"eval_{set_name}{suffix}"
                    if not (out / "metrics.json").is_file():
                        cli("reward", "eval", "--model", run / "model", "--dataset", eval_store, "--out", out,
                            "--episodes", episodes, "--videos", 0, "--plots", 2, *[a for kv in readout for a in ("--readout", kv)])
                    f = figures(json.loads((out / "metrics.json").read_text()))
                    f["train_seconds"] = seconds if set_name == "in_domain" else None
                    record["cells"][f"{task}/{label}/s{seed}/{set_name}"] = f
                    fresh.add(f"{task}/{label}/s{seed}/{set_name}")
                    summarise(record, path, fresh, quiet=True)
    if args.adapt and "grm" in models and not args.quick:
        for pair in args.adapt.split(","):
            base_task, target = pair.split(":")
            if args.adapt_only or (work / f"{target}_mixed.zarr").is_dir():
                ad = adaptation(work, base_task, target, seeds, args.adapt_steps, args.quick)
                if ad["seeds"]:
                    record.setdefault("adaptations", {})[pair] = ad
    if args.speed or args.quick:
        record["speed"] = speed(models, work, tasks[0])
    summarise(record, path, fresh)


def summarise(record: dict, path: Path, fresh: set[str], quiet: bool = False) -> None:
    """Merge, summarise over seeds, write (and unless ``quiet`` print the table and draw the chart).
    Another run of this benchmark (other models, say) may have written cells to the file since this
    one loaded it: those are kept, so runs side by side do not drop each other's results; this run's
    own cells (``fresh``) win."""
    if path.is_file():
        for key, cell in json.loads(path.read_text()).get("cells", {}).items():
            if key not in fresh:
                record["cells"][key] = cell
    groups: dict[str, list[dict]] = {}
    for key, f in record["cells"].items():
        task, model, _seed, set_name = key.split("/")
        groups.setdefault(f"{task}/{model}/{set_name}", []).append(f)
    summary, rows = {}, []
    for key in sorted(groups):
        cells = groups[key]
        agg = {}
        for fig in (*FIGURES, "train_seconds"):
            vals = [c[fig] for c in cells if c.get(fig) is not None]
            agg[fig] = {"mean": float(np.mean(vals)), "std": float(np.std(vals)), "n": len(vals)} if vals else None
        agg["n_success"], agg["n_failure"], agg["seeds"] = cells[0].get("n_success"), cells[0].get("n_failure"), len(cells)
        summary[key] = agg
        task, model, set_name = key.split("/")
        rows.append([task, model, set_name, *(agg[f]["mean"] if agg[f] else "n/a" for f in
                                              ("voc", "auroc", "finish_over_hover", "min_final_success", "freeze_rise_max", "mae")),
                     agg["train_seconds"]["mean"] if agg["train_seconds"] else "", len(cells)])
    record["summary"] = summary
    if not quiet:
        print(common.table(rows, ["task", "model", "evaluated on", "VOC", "AUROC", "finish>hover", "min final (succ)",
                                  "freeze rise", "MAE", "train s", "seeds"]))
        if record.get("speed"):
            print(json.dumps(record["speed"], indent=1))
        chart(summary, path.with_suffix(".png"))
    common.write("bench_rewards", record, path)


def chart(summary: dict, png: Path) -> None:
    """Grouped bars: VOC and AUROC of every model, mean over tasks, in domain vs held-out variants."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted({k.split("/")[1] for k in summary}, key=lambda m: (list(MODELS).index(m.split("+")[0]), m))
    sets = ["in_domain", *[v for v in VARIANTS if any(k.endswith("/" + v) for k in summary)]]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), sharey=True)
    for ax, fig_name in zip(axes, ("voc", "auroc")):
        width = 0.8 / max(1, len(models))
        for i, m in enumerate(models):
            vals = []
            for s in sets:
                cells = [a[fig_name]["mean"] for k, a in summary.items() if k.split("/")[1] == m and k.endswith("/" + s)
                         and a.get(fig_name)]
                vals.append(np.mean(cells) if cells else np.nan)
            ax.bar(np.arange(len(sets)) + i * width, vals, width, label=m, color=plt.cm.tab20(i % 20))
        ax.set_xticks(np.arange(len(sets)) + 0.4 - width / 2, [s.replace("_", " ") for s in sets], rotation=25, ha="right")
        ax.set_title(f"{fig_name.upper()} (mean over tasks and seeds)")
        ax.set_ylim(0, 1.05)
        ax.axhline(0.95, color="grey", lw=0.8, ls="--")
    handles, labels = axes[0].get_legend_handles_labels()
    ncol = min(len(models), 6)
    rows = -(-len(models) // ncol)
    fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=ncol)  # below the bars, not over them
    fig.tight_layout(rect=(0, 0.045 * rows + 0.02, 1, 1))
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
