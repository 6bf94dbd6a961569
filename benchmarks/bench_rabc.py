"""RA-BC in simulation: does weighting demonstrations by learned progress recover what filtering
out the bad ones by hand (the oracle) gives, starting from plain BC on mixed-quality data?

Per task: generate the RA-BC dataset from its recipe (datasets/<task>_rabc.yaml: the standard
50/30/20 expert/suboptimal/failure mix in a narrower object layout), train SARM on it
(configs/reward/sarm.yaml) and annotate every frame with its progress, then train the BC policy
(configs/bc/bc_state.yaml) under each condition and seed, and roll each out in the same layout:

- ``plain``: every frame weight 1;
- ``rabc_sarm``: soft RA-BC weights from SARM's progress (LeRobot's formula, kappa 0.01);
- ``rabc_sarm_kappa``: the same with kappa 0.03, about half an expert chunk's gain: SARM's
  expected-value progress creeps up ~0.04 per chunk even through pauses and detours, so LeRobot's
  absolute 0.01 lets almost every chunk through at full weight;
- ``rabc_sarm_gate``: soft RA-BC weights from SARM (kappa 0.01), and episodes whose SARM final progress stays below 0.5 dropped
  (``weights.min_final_progress``; LeRobot's weights judge each chunk alone);
- ``rabc_gt``: soft RA-BC weights from the simulator's ground-truth progress;
- ``rabc_gt_kappa``: the same with kappa 0.03, so RA-BC (SARM), kappa 0.03 has its reference at
  equal kappa;
- ``expert_only``: only the expert-labelled episodes (the oracle filter);
- ``no_failures``: expert and suboptimal episodes (a diagnostic: what removing only the failed
  demos, all that progress can see, is worth).

Each task runs on two quality mixes: ``standard`` (the recipe's 50/30/20) and ``failure_heavy``
(20/30/50, closer to raw teleoperation logs), to show how the gain depends on the share of bad demos.
All policies of a task are rolled out from the same initial states (seeds 100000..). Prints
success per condition (mean and std over the training seeds, pooled 95% Wilson interval), the
gain over plain BC and the gap to the oracle next to the goals (on the standard mix: gain >= 25
points, gap <= 10),
and writes benchmarks/results/bench_rabc.json and bench_rabc.png. Every step resumes: finished
stores, runs and evaluations are reused.

    python benchmarks/bench_rabc.py [--quick] [--tasks pick_place,stack] [--mixes standard,failure_heavy]
                                    [--seeds 0,1,2] [--episodes 50]

With ``--policy vision`` the same experiment runs with the visuomotor policy
(configs/bc/vision_bc.yaml: the two cameras and the joint state, no object poses) on the recipe's
episodes rendered at 96 px, for the conditions given by ``--conditions`` (default plain, RA-BC with
SARM, RA-BC with sim progress, expert only); it writes benchmarks/results/bench_rabc_vision.json.

``--label NAME --reward-config PATH`` measures another SARM (a new default, say) against the same
policies: its SARM runs (``sarm_<task>+NAME``), progress (``progress/sarm_NAME``) and SARM-weighted
policies get their own folders, plain BC, sim progress and the oracle are shared, and the results
go to benchmarks/results/bench_rabc_NAME.json.
"""
from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CONDITIONS = {
    "plain": {"weights": {"mode": "none"}},
    "rabc_sarm": {"weights": {"mode": "soft", "source": "sarm", "kappa": 0.01}},
    "rabc_sarm_kappa": {"weights": {"mode": "soft", "source": "sarm", "kappa": 0.03}},
    "rabc_sarm_gate": {"weights": {"mode": "soft", "source": "sarm", "kappa": 0.01, "min_final_progress": 0.5}},
    "rabc_gt": {"weights": {"mode": "soft", "source": "gt.progress", "kappa": 0.01}},
    "rabc_gt_kappa": {"weights": {"mode": "soft", "source": "gt.progress", "kappa": 0.03}},
    "expert_only": {"qualities": ["expert"]},
    "no_failures": {"qualities": ["expert", "suboptimal"]},
}
LABELS = {"plain": "plain BC", "rabc_sarm": "RA-BC (SARM)", "rabc_sarm_kappa": "RA-BC (SARM), kappa 0.03",
          "rabc_sarm_gate": "RA-BC (SARM) + episode gate",
          "rabc_gt": "RA-BC (sim progress)", "rabc_gt_kappa": "RA-BC (sim progress), kappa 0.03",
          "expert_only": "expert only (oracle)", "no_failures": "expert + suboptimal"}
GOALS = {"gain_over_plain": 0.25, "gap_to_oracle": 0.10}
MIXES = {"standard": None, "failure_heavy": {"expert": 0.2, "suboptimal": 0.3, "failure": 0.5}}
"""Quality mixes; None = the recipe's own (the standard 50/30/20)."""


POLICIES = {"state": {"config": "configs/bc/bc_state.yaml", "image_size": None,
                      "conditions": list(CONDITIONS)},
            "vision": {"config": "configs/bc/vision_bc.yaml", "image_size": 96,
                       "conditions": ["plain", "rabc_sarm", "rabc_gt", "expert_only"]}}
"""The policy each run trains: its config, the frame size its store is rendered at (None = the
recipe's) and its default conditions."""


REWARD_CONFIG = "configs/reward/sarm.yaml"


def plus(label: str) -> str:
    return f"+{label}" if label else ""


def progress_name(label: str) -> str:
    """The store's progress group a SARM variant's annotation goes to."""
    return f"sarm_{label}" if label else "sarm"


def uses_sarm(condition: str) -> bool:
    return CONDITIONS[condition].get("weights", {}).get("source") == "sarm"


def tag(task: str, mix: str, image_size: int | None = None) -> str:
    base = task if mix == "standard" else f"{task}_{mix}"
    return base if image_size is None else f"{base}_{image_size}px"


def prepare(task: str, mix: str, work: Path, quick: bool, image_size: int | None = None,
            reward_config: str = REWARD_CONFIG, label: str = "") -> tuple[Path, dict]:
    """The task's store, annotated with SARM progress under ``progress/sarm[_<label>]``; SARM's held-out metrics."""
    from roboreward.config import load_config
    from roboreward.data.generate import Recipe, generate_store
    from roboreward.eval.evaluate import evaluate_reward
    from roboreward.rewards.annotate import annotate
    from roboreward.rewards.base import RewardModel
    from roboreward.rewards.train import RewardTrainConfig, train_reward

    recipe = Recipe.from_yaml(ROOT / f"datasets/{task}_rabc.yaml")
    if MIXES[mix] is not None:
        recipe = Recipe(**{**recipe.__dict__, "mix": MIXES[mix]})
    if image_size is not None:
        recipe.image_size = image_size
    if quick:
        recipe.episodes, recipe.image_size = 16, 64
    store = work / f"{tag(task, mix, image_size)}_rabc.zarr"
    generate_store(store, recipe, workers=0)
    config = load_config(RewardTrainConfig, ROOT / reward_config)
    if quick:
        config.train.steps, config.train.val_every, config.data.image_size = 150, 150, 64
    run = work / f"sarm_{tag(task, mix, image_size)}{plus(label)}"
    model_dir = train_reward(config, store, run)
    metrics_path = run / "eval" / "metrics.json"
    if not metrics_path.exists():
        val = json.loads((run / "split.json").read_text())["val"]
        evaluate_reward(RewardModel.from_pretrained(model_dir), store, run / "eval", episodes=val, videos=0, plots=2)
    done = run / "annotated"
    if not done.exists():
        annotate(RewardModel.from_pretrained(model_dir), store, name=progress_name(label),
                 parquet_path=run / "sarm_progress.parquet")
        done.write_text(f"progress/{progress_name(label)}\n")
    m = json.loads(metrics_path.read_text())
    return store, {k: m.get(k) for k in ("voc", "auroc", "auroc_tied", "stage_accuracy", "mae", "n_success",
                                         "n_failure")}


def run_dir(work: Path, policy: str, name: str, condition: str, seed: int) -> Path:
    """The folder of one trained policy (its checkpoints, split.json, eval and result.json)."""
    return work / f"{'bc' if policy == 'state' else policy}_{name}_{condition}_s{seed}"


def run_condition(task: str, mix: str, store: Path, condition: str, seed: int, work: Path, episodes: int,
                  quick: bool, policy: str = "state", recipe: str | None = None, name: str | None = None,
                  label: str = "") -> dict:
    """Train one policy and roll it out in the layout of ``recipe`` (default: the task's RA-BC
    recipe); cached in <run>/result.json (``name``: the run folder's stem). ``label``: the SARM
    variant a SARM-weighted condition reads (its progress ``sarm_<label>``, its run ``..._<condition>+<label>``);
    other conditions ignore it."""
    from roboreward.config import from_dict, load_config
    from roboreward.policies.evaluate import evaluate_policy
    from roboreward.policies.train import BCTrainConfig, WeightConfig, train_bc
    from roboreward.data.generate import Recipe

    label = label if uses_sarm(condition) else ""
    run = run_dir(work, policy, name or tag(task, mix, POLICIES[policy]["image_size"]), condition + plus(label), seed)
    result_path = run / "result.json"
    if result_path.exists():
        return json.loads(result_path.read_text())
    config = load_config(BCTrainConfig, ROOT / POLICIES[policy]["config"])
    spec = CONDITIONS[condition]
    if "weights" in spec:
        weights = {**spec["weights"], **({"source": progress_name(label)} if label else {})}
        config.weights = from_dict(WeightConfig, weights, where=f"{condition}.weights")
    config.qualities = spec.get("qualities")
    config.train.seed = seed
    if quick:
        config.train.steps, config.train.val_every, config.train.ckpt_every = 600, 600, 600
    t0 = time.perf_counter()
    model_dir = train_bc(config, store, run, progress=False)
    train_s = time.perf_counter() - t0
    recipe = Recipe.from_yaml(ROOT / (recipe or f"datasets/{task}_rabc.yaml"))
    report = evaluate_policy(model_dir, task, episodes, run / "eval", n_envs=4, videos=1 if seed == 0 else 0,
                             task_config=recipe.task_config, image_size=POLICIES[policy]["image_size"])
    weights = json.loads((run / "weights.json").read_text())
    result = {"task": task, "mix": mix, "condition": condition, "seed": seed, "successes": report["successes"],
              "episodes": report["episodes"], "success_rate": report["success_rate"], "ci95": report["ci95"],
              "mean_weight": weights.get("mean_weight"), "train_seconds": train_s, "eval_seconds": report["seconds"]}
    result_path.write_text(json.dumps(result, indent=1))
    return result


def summarise(results: list[dict]) -> dict:
    from roboreward.policies.evaluate import wilson_interval

    rates = [r["success_rate"] for r in results]
    k, n = sum(r["successes"] for r in results), sum(r["episodes"] for r in results)
    return {"mean": float(np.mean(rates)), "std": float(np.std(rates)), "per_seed": rates, "successes": k,
            "episodes": n, "ci95_pooled": list(wilson_interval(k, n)), "mean_weight": results[0]["mean_weight"]}


def chart(record: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [(mix, task) for mix, m in record["mixes"].items() for task in m["tasks"]]
    conds = list(record["conditions"])
    fig, ax = plt.subplots(figsize=(max(5.0, 2.2 * len(groups) + 1.5), 3.8), dpi=120)
    width = 0.8 / len(conds)
    colors = ["#9e9e9e", "#1f77b4", "#9467bd", "#17becf", "#2ca02c", "#ff7f0e", "#e7ba52"]
    for j, cond in enumerate(conds):
        xs = np.arange(len(groups)) + (j - (len(conds) - 1) / 2) * width
        s = [record["mixes"][mix]["tasks"][task]["conditions"][cond] for mix, task in groups]
        ax.bar(xs, [100 * v["mean"] for v in s], width * 0.92, yerr=[100 * v["std"] for v in s], capsize=3,
               color=colors[list(CONDITIONS).index(cond)], label=LABELS[cond])
        for x, v in zip(xs, s):
            ax.scatter([x] * len(v["per_seed"]), [100 * r for r in v["per_seed"]], s=8, color="black", zorder=3)
    mixes = {mix: m["mix"] for mix, m in record["mixes"].items()}
    ax.set_xticks(np.arange(len(groups)), [f"{task}\n{mix.replace('_', '-')} "
                                            f"({'/'.join(str(round(100 * v)) for v in mixes[mix].values())})"
                                            for mix, task in groups], fontsize=8)
    ax.set_ylabel("success rate (%)")
    ax.set_ylim(0, 105)
    seeds = len(record["seeds"])
    policy = "image BC (cameras + joints)" if record.get("policy") == "vision" else "BC"
    ax.set_title(f"{policy} on mixed-quality demos\n(expert/suboptimal/failure %): {seeds} training seed"
                 f"{'s' if seeds != 1 else ''} x {record['episodes']} rollouts{' (quick)' if record['quick'] else ''}",
                 fontsize=9)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=4, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main():
    p = common.parser(__doc__)
    p.add_argument("--tasks", default="pick_place,stack")
    p.add_argument("--mixes", default=",".join(MIXES), help=f"quality mixes to run, from {list(MIXES)}")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--episodes", type=int, default=50, help="rollouts per policy")
    p.add_argument("--policy", choices=list(POLICIES), default="state",
                   help="state: BC on joint state + object poses; vision: BC from the cameras + joint state")
    p.add_argument("--conditions", default=None, help=f"comma list from {list(CONDITIONS)} (default: the policy's)")
    p.add_argument("--extra-seeds", default="", help="more seeds for some conditions, e.g. expert_only=1,2")
    p.add_argument("--reward-config", default=REWARD_CONFIG, help="SARM's training config")
    p.add_argument("--label", default="",
                   help="name of a SARM variant (say one trained with another --reward-config): its SARM runs, "
                        "progress and SARM-weighted policies get their own folders, the other conditions are "
                        "shared, and the results go to bench_rabc_<label>.json")
    args = p.parse_args()
    if args.label and not re.fullmatch(r"[A-Za-z0-9_.-]+", args.label):
        p.error(f"--label {args.label!r}: letters, digits, '_', '.', '-' only")
    if not (ROOT / args.reward_config).is_file():
        p.error(f"--reward-config {args.reward_config}: no such file")
    extra = common.parse_extra_seeds(args.extra_seeds)
    conditions = args.conditions.split(",") if args.conditions else POLICIES[args.policy]["conditions"]
    bad = sorted((set(conditions) | set(extra)) - set(CONDITIONS))
    if bad or not {"plain", "rabc_sarm", "expert_only"} <= set(conditions):
        p.error(f"--conditions must name known conditions ({list(CONDITIONS)}) including plain, rabc_sarm, expert_only")
    tasks, mixes, seeds = args.tasks.split(","), args.mixes.split(","), [int(s) for s in args.seeds.split(",")]
    unknown = sorted(set(mixes) - set(MIXES))
    if unknown:
        p.error(f"unknown mix {unknown[0]!r}; choose from {list(MIXES)}")
    if args.quick:
        tasks, mixes, seeds, args.episodes = tasks[:1], mixes[:1], seeds[:1], 8
    work = Path(args.workdir or ROOT / "outputs" / ("bench_rabc_quick" if args.quick else "bench_rabc"))
    work.mkdir(parents=True, exist_ok=True)
    from roboreward.data.generate import Recipe

    image_size = POLICIES[args.policy]["image_size"]
    record = {"quick": args.quick, "seeds": seeds, "episodes": args.episodes, "goals": GOALS,
              "goals_apply_to": "standard", "policy": args.policy, "policy_config": POLICIES[args.policy]["config"],
              "image_size": image_size, "reward_config": args.reward_config, "label": args.label,
              "extra_seeds": extra,
              "conditions": {c: LABELS[c] for c in conditions}, "mixes": {}}
    rows = []
    t_start = time.perf_counter()
    for mix in mixes:
        entry = record["mixes"][mix] = {"tasks": {}}
        for task in tasks:
            t0 = time.perf_counter()
            entry["mix"] = MIXES[mix] or Recipe.from_yaml(ROOT / f"datasets/{task}_rabc.yaml").mix
            store, sarm = prepare(task, mix, work, args.quick, image_size, args.reward_config, args.label)
            runs = {c: [run_condition(task, mix, store, c, s, work, args.episodes, args.quick, args.policy,
                                      label=args.label)
                        for s in seeds + [x for x in extra.get(c, []) if x not in seeds]] for c in conditions}
            conds = {c: summarise(r) for c, r in runs.items()}
            gain = conds["rabc_sarm"]["mean"] - conds["plain"]["mean"]
            gap = conds["expert_only"]["mean"] - conds["rabc_sarm"]["mean"]
            entry["tasks"][task] = {
                "recipe": f"datasets/{task}_rabc.yaml", "sarm_heldout": sarm, "conditions": conds,
                "gain_over_plain": gain, "gap_to_oracle": gap,
                # the robustness issue's goal: RA-BC (SARM) within 3 points of RA-BC (sim progress), at equal kappa
                **{f"sarm_vs_gt{k}": conds[f"rabc_sarm{k}"]["mean"] - conds[f"rabc_gt{k}"]["mean"]
                   for k in ("", "_kappa") if f"rabc_sarm{k}" in conds and f"rabc_gt{k}" in conds},
                **({"gate_gain_over_plain": conds["rabc_sarm_gate"]["mean"] - conds["plain"]["mean"],
                    "gate_gap_to_oracle": conds["expert_only"]["mean"] - conds["rabc_sarm_gate"]["mean"]}
                   if "rabc_sarm_gate" in conds else {}),
                "goals_met": {"gain_over_plain": gain >= GOALS["gain_over_plain"],
                              "gap_to_oracle": gap <= GOALS["gap_to_oracle"]},
                "runs": [r for rs in runs.values() for r in rs], "wall_seconds": time.perf_counter() - t0,
            }
            for c, v in conds.items():
                rows.append([task, mix, LABELS[c], f"{100 * v['mean']:.0f} +- {100 * v['std']:.0f}",
                             " ".join(f"{100 * r:.0f}" for r in v["per_seed"]),
                             f"{100 * v['ci95_pooled'][0]:.0f}-{100 * v['ci95_pooled'][1]:.0f}",
                             f"{100 * (v['mean'] - conds['plain']['mean']):+.0f}"])
    record["wall_seconds"] = time.perf_counter() - t_start
    print(common.table(rows, ["task", "mix", "condition", "success % (mean +- std)", "per seed", "pooled 95% CI",
                              "vs plain"]))
    for mix, entry in record["mixes"].items():
        for task, t in entry["tasks"].items():
            goals = " (goal >= +25)" if mix == "standard" else ""
            gate = (f"; with the episode gate {100 * t['gate_gain_over_plain']:+.0f} and {100 * t['gate_gap_to_oracle']:.0f}"
                    if "gate_gain_over_plain" in t else "")
            vs_gt = "".join(f"; vs sim progress{' (kappa 0.03)' if k else ''} {100 * t[f'sarm_vs_gt{k}']:+.1f} points"
                            for k in ("", "_kappa") if f"sarm_vs_gt{k}" in t)
            print(f"{task} {mix}: RA-BC (SARM) gain over plain {100 * t['gain_over_plain']:+.0f} points{goals}, "
                  f"gap to oracle {100 * t['gap_to_oracle']:.0f} points{' (goal <= 10)' if goals else ''}{gate}; "
                  f"SARM held-out VOC {t['sarm_heldout']['voc']:.3f}, AUROC {t['sarm_heldout']['auroc']:.3f}{vs_gt}")
    name = "bench_rabc" + ("" if args.policy == "state" else f"_{args.policy}") + (f"_{args.label}" if args.label else "")
    path = common.write(name, record, args.out)
    chart(record, path.with_suffix(".png"))
    print(f"wrote {path.with_suffix('.png')}")


if __name__ == "__main__":
    main()
