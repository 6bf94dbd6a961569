"""Reward-model quality in domain and on held-out visual variants, per task and training data.

For each task and each training recipe (``datasets/<task>_mixed.yaml``, the standard look, and
``datasets/<task>_randomised.yaml``, domain-randomised looks that exclude every held-out value):
generate the store, train the reward model with its config for each seed, then evaluate it
- in domain: the held-out episodes of its own training store (``--episodes val``);
- on each held-out variant ``datasets/<task>_heldout_<variant>.yaml`` (control = standard look on
  unseen seeds, then colours, light, camera, distractors, textures: the control's episodes with one
  factor changed; layout: other episodes with the objects nearer the base and wider apart than in
  any training recipe), every episode,
all through the `roboreward` command line a user would run. Each (task, training data, seed,
evaluation set) is a cell whose metrics.json is kept in the work folder, so an interrupted run
resumes where it stopped (stores, feature caches, runs and evaluations are reused).

Figures per cell (goals of issue 10 in brackets): VOC on successes [>= 0.95], AUROC of final
progress success vs failure [>= 0.95], finish > hover share of successes [1.0], lowest final
progress of a success [>= 0.85], share of successes whose progress drops after success [0],
progress rise over a 2 s freeze [<= 0.01], final-progress gap success - failure, stage accuracy,
MAE vs the simulator's progress, and the successes/failures the figures rest on. Writes
benchmarks/results/bench_reward_quality.json.

    python benchmarks/bench_reward_quality.py [--quick] [--tasks pick_place,stack] [--train mixed,randomised] [--label L --config C]
        [--variants control,colours,light,camera,distractors] [--seeds 0,1,2] [--config configs/reward/sarm.yaml]
        [--label L --readout readout_filter=stage,readout_gate=0.05]

``--readout`` re-reads the models trained with ``--config`` (no retraining) with other readout fields
(``reward eval --readout``); its cells are ``<train>+<label>`` and its evaluations
``<run>/eval_<set>+<label>``; ``--of done`` re-reads the ``+done`` runs instead (cells
``<train>+done+<label>``: ``--train randomised --of done --label minstay --readout filter_min_stay=30``). Unlabelled SARM cells read SARM as published (``readout_filter=none``,
``readout_gate=0``); the robust readout that configs/reward/sarm.yaml sets is measured by
``--label robust --readout readout_filter=stage,readout_gate=0.05`` (``--label hold`` adds
``readout_hold=stage``). The `+done` rows, SARM as configs/reward/sarm.yaml trains and reads it since
2026-12-05 (done stage, stage hold): ``--train randomised --label done --as-configured``. ``--as-configured`` evaluates a
``--label``/``--config`` variant with the readout its own config sets (``--label lite1 --config
configs/reward/sarm_lite1.yaml --as-configured``: the robust SARM over another encoder).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from roboreward.config import config_data  # noqa: E402
from roboreward.eval.evaluate import AUROC_TIE  # noqa: E402
from roboreward.eval.metrics import auroc  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
GOALS = {"voc": 0.95, "auroc": 0.95, "finish_over_hover": 1.0, "min_final_success": 0.85, "post_success_drop_share": 0.0,
         "freeze_rise_max": 0.01}
VARIANTS = ("control", "colours", "light", "camera", "distractors", "textures", "layout")
FIGURES = ("voc", "auroc", "auroc_tied", "finish_over_hover", "min_final_success", "post_success_drop_share", "freeze_rise_max",
           "final_gap", "stage_accuracy", "mae")


def cli(*args) -> None:
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-m", "roboreward.cli", *map(str, args)], check=True, env=env, cwd=ROOT)


def figures(m: dict) -> dict:
    """The cell's figures from a metrics.json of `reward eval`. ``auroc_tied`` (finals within
    AUROC_TIE counted as ties) is recomputed from the per-episode finals, so older metrics.json
    files give it too."""
    level = m["primary_level"]
    finals = [e["final_progress"][level] for e in m["per_episode"] if e["success"]]
    labelled = [e for e in m["per_episode"] if e["success"] is not None]
    tied = None
    if any(e["success"] for e in labelled) and not all(e["success"] for e in labelled):
        tied = auroc([e["final_progress"][level] for e in labelled], [e["success"] for e in labelled], tie=AUROC_TIE)
    get = lambda section, key: (m.get(section) or {}).get(key)  # noqa: E731
    return {
        "voc": m.get("voc"), "auroc": m.get("auroc"), "auroc_tied": tied, "stage_accuracy": m.get("stage_accuracy"), "mae": m.get("mae"),
        "finish_over_hover": get("finish_vs_hover", "higher_share"),
        "finish_margin_mean": get("finish_vs_hover", "margin_mean"),
        "min_final_success": float(min(finals)) if finals else None,
        "post_success_drop_share": get("post_success", "drop_share"),
        "post_success_drop_max": get("post_success", "drop_max"),
        "final_hold_change_min": get("final_hold", "change_min"),
        "freeze_rise_max": get("freeze_drift", "rise_max"),
        "final_gap": get("final_progress_gap", "gap"),
        "n_success": (m.get("counts", {}).get("auroc") or {}).get("n_success"),
        "n_failure": (m.get("counts", {}).get("auroc") or {}).get("n_failure"),
    }


def meets(f: dict) -> bool:
    ok = []
    for key, goal in GOALS.items():
        # AUROC's goal is checked with ties counted as ties where the cell has that figure.
        v = f.get("auroc_tied") if key == "auroc" and f.get("auroc_tied") is not None else f.get(key)
        if v is None:
            continue
        ok.append(v <= goal if key in ("post_success_drop_share", "freeze_rise_max") else v >= goal)
    return bool(ok) and all(ok)


def main():
    p = common.parser(__doc__)
    p.add_argument("--tasks", default=None, help="default pick_place,stack,drawer (--quick: pick_place)")
    p.add_argument("--train", default=None, help="training recipes datasets/<task>_<name>.yaml (default mixed,randomised; --quick: mixed)")
    p.add_argument("--variants", default=None, help=f"default {','.join(VARIANTS)} (--quick: colours)")
    p.add_argument("--seeds", default="0")
    p.add_argument("--config", default=str(ROOT / "configs/reward/sarm.yaml"))
    p.add_argument("--label", default="", help="names a model variant (another --config): its runs are <train>+<label>")
    p.add_argument("--readout", default="", help="KEY=VALUE,...: evaluate the --config models with these readout fields (needs --label)")
    p.add_argument("--as-configured", action="store_true",
                   help="evaluate a --label/--config variant with the readout its config sets (default: SARM as published)")
    p.add_argument("--of", default="", help="with --readout: re-read the runs of this --label (e.g. done) instead of the "
                   "unlabelled ones; cells are <train>+<of>+<label>")
    p.add_argument("--refigure", action="store_true",
                   help="recompute every cell's figures from the metrics.json files in the work folder (no training or "
                        "evaluation), e.g. after a figure was added; cells whose files are gone keep theirs")
    args = p.parse_args()
    readout = [kv for kv in args.readout.split(",") if kv]
    if args.of and not readout:
        p.error("--of names the runs a --readout variant re-reads; give --readout and --label too")
    if readout and not args.label:
        p.error("--readout needs --label to name the cells it writes")
    # Unlabelled SARM cells measure SARM as published (no stage filter, no change gate), whatever
    # readout the config sets; the robust readout is the `--label robust --readout ...` cells.
    base_readout = (["readout_filter=none", "readout_gate=0"]
                    if config_data(args.config).get("model", {}).get("type", "sarm") == "sarm"
                    and not args.as_configured else [])
    if args.as_configured and (readout or not args.label):
        p.error("--as-configured goes with --label and --config (a variant trained with its own config), not --readout")
    # --quick: the same pipeline and figures on one task, one variant, 6 + 4 episodes at 32 px, 100 steps.
    args.tasks = args.tasks or ("pick_place" if args.quick else "pick_place,stack,drawer")
    args.train = args.train or ("mixed" if args.quick else "mixed,randomised")
    args.variants = args.variants or ("colours" if args.quick else ",".join(VARIANTS))
    work = Path(args.workdir or ROOT / "outputs" / ("quality_quick" if args.quick else "quality"))
    record = {"quick": args.quick, "goals": GOALS, "cells": {}}
    # Cells of earlier runs (other tasks, seeds or variants) are kept: each run adds or refreshes its own.
    previous = args.out or common.RESULTS / f"bench_reward_quality{'_quick' if args.quick else ''}.json"
    if previous.is_file():
        record["cells"].update(json.loads(previous.read_text()).get("cells", {}))
    if args.refigure:
        refigure(record, work)
        summarise(record, args.out)
        return
    size = ["--image-size", 32] if args.quick else []
    # Seeds outermost: every task and training set gets its first seed before any gets a second, and
    # the JSON is rewritten after each cell, so a run cut short still leaves a complete first pass.
    for seed in (int(s) for s in args.seeds.split(",")):
        for task in args.tasks.split(","):
            # Tasks without a randomised recipe or held-out variants (drawer today) get what they have.
            for train in [t for t in args.train.split(",") if (ROOT / f"datasets/{task}_{t}.yaml").is_file()]:
                store = work / f"{task}_{train}.zarr"
                cli("data", "generate", "--recipe", ROOT / f"datasets/{task}_{train}.yaml", "--out", store,
                    *(["--episodes", 6, *size] if args.quick else []))
                trained = f"{train}+{args.of}" if args.of else train  # the runs a readout variant re-reads
                condition = f"{trained}+{args.label}" if args.label else train
                # A readout variant reads the models trained with --config alone; a config variant trains its own.
                run = work / f"sarm_{task}_{trained if readout else condition}_s{seed}"
                suffix = f"+{args.label}" if readout else ""
                t0 = time.perf_counter()
                trained_before = (run / "model" / "config.json").is_file()
                if not (readout and trained_before):  # a readout variant needs only the model
                    cli("reward", "train", "--config", args.config, "--dataset", store, "--out", run, "--seed", seed,
                        *(["--steps", 100] if args.quick else []))
                train_seconds = time.perf_counter() - t0
                evals = {"in_domain": (store, "val")}
                for v in args.variants.split(","):
                    if (ROOT / f"datasets/{task}_heldout_{v}.yaml").is_file():
                        evals[v] = (work / f"{task}_heldout_{v}.zarr", "all")
                for name, (eval_store, episodes) in evals.items():
                    if name != "in_domain":
                        cli("data", "generate", "--recipe", ROOT / f"datasets/{task}_heldout_{name}.yaml", "--out", eval_store,
                            *(["--episodes", 4, *size] if args.quick else []))
                    out = run / f"eval_{name}{suffix}"
                    if not (out / "metrics.json").is_file():  # the cell is done once its metrics exist
                        cli("reward", "eval", "--model", run / "model", "--dataset", eval_store, "--out", out,
                            "--episodes", episodes, "--videos", 1 if name in ("in_domain", "colours") else 0, "--plots", 4,
                            *[a for kv in (readout or base_readout) for a in ("--readout", kv)])
                    f = figures(json.loads((out / "metrics.json").read_text()))
                    key = f"{task}/{condition}/s{seed}/{name}"
                    # A finished run re-run only resumes (seconds): keep the time its training took.
                    f["train_seconds"] = ((record["cells"].get(key) or {}).get("train_seconds") if trained_before else train_seconds) \
                        if name == "in_domain" and not readout else None
                    f["readout"] = readout or ("as configured" if args.as_configured else None)
                    f["config"] = str(Path(args.config).resolve().relative_to(ROOT)) if Path(args.config).resolve().is_relative_to(ROOT) else args.config
                    record["cells"][key] = f
                    summarise(record, args.out, quiet=True)
    summarise(record, args.out)


def refigure(record: dict, work: Path) -> None:
    """Recompute the figures of every cell whose metrics.json is still in ``work``: a cell
    ``<task>/<train>[+a[+b]]/s<seed>/<set>`` was evaluated into ``sarm_<task>_<run>_s<seed>/eval_<set>[+<rest>]``,
    its run the longest prefix of the +parts that has such a file (a readout variant re-reads a shorter run)."""
    found = 0
    for key, cell in record["cells"].items():
        task, condition, seed, name = key.split("/")
        parts = condition.split("+")
        for i in range(len(parts), 0, -1):
            suffix = "".join(f"+{x}" for x in parts[i:])
            path = work / f"sarm_{task}_{'+'.join(parts[:i])}_{seed}" / f"eval_{name}{suffix}" / "metrics.json"
            if path.is_file():
                cell.update(figures(json.loads(path.read_text())))
                found += 1
                break
    print(f"refigured {found} of {len(record['cells'])} cells from {work}")


def summarise(record: dict, out, quiet: bool = False) -> None:
    """Aggregate the cells over seeds, print the table (unless ``quiet``) and write the JSON."""
    rows, summary = [], {}
    keys = sorted({k.rsplit("/", 2)[0] + "|" + k.rsplit("/", 1)[1] for k in record["cells"]})
    for key in keys:
        group, name = key.split("|")
        cells = [f for k, f in record["cells"].items() if k.startswith(group + "/") and k.endswith("/" + name)]
        agg = {}
        for fig in FIGURES:
            vals = [c[fig] for c in cells if c.get(fig) is not None]
            agg[fig] = {"mean": float(np.mean(vals)), "std": float(np.std(vals)), "n": len(vals)} if vals else None
        agg["n_success"], agg["n_failure"] = cells[0].get("n_success"), cells[0].get("n_failure")
        agg["seeds"] = len(cells)
        agg["goals_met"] = all(meets(c) for c in cells)
        summary[f"{group}/{name}"] = agg
        task, train = group.split("/")
        rows.append([task, train, name, *(agg[f]["mean"] if agg[f] else "n/a" for f in FIGURES),
                     f"{agg['n_success']}/{agg['n_failure']}", agg["goals_met"]])
    record["summary"] = summary
    if not quiet:
        print(common.table(rows, ["task", "trained on", "evaluated on", "VOC", "AUROC", "finish>hover", "min final (succ)",
                                  "drop share", "freeze rise", "final gap", "stage acc", "MAE", "succ/fail", "goals met"]))
    common.write("bench_reward_quality", record, out)


if __name__ == "__main__":
    main()
