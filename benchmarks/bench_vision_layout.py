"""Image BC on expert demos in the full pick_place layout: does the demonstrator limit it?

The visuomotor policy (configs/bc/vision_bc.yaml: two cameras + joint state, no object poses) is
cloned from the expert episodes of the standard full-layout dataset, once per demonstrator version,
and rolled out in that layout (50 rollouts per training seed, the same initial states for all):

- ``v1`` (datasets/pick_place_mixed.yaml): the original scripted grasp, which turns the open jaw away
  from the bowl, so its wrist roll jumps by 90-180 deg between neighbouring layouts;
- ``v2`` (datasets/pick_place_mixed_v2.yaml): the least-roll grasp (``demonstrator.keep_out: false``),
  the same seeds and layouts;
- ``v2_200`` (datasets/pick_place_expert_v2.yaml): 200 expert episodes of the v2 demonstrator instead of
  50 (160 train the policy instead of 40): whether the number of demos limits it.

Frames are rendered at 96 px as in the RA-BC experiment. Prints success per version (mean and std
over training seeds, pooled 95% Wilson interval) against the goal (>= 50%) and writes
benchmarks/results/bench_vision_layout.json. Every cell resumes: stores, runs and evaluations are reused.

    python benchmarks/bench_vision_layout.py [--quick] [--versions v1,v2,v2_200] [--seeds 0,1,2] [--episodes 50]
                                             [--extra-seeds "v2_200=1,2"]
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from bench_rabc import POLICIES, ROOT, run_condition, run_dir, summarise  # noqa: E402

VERSIONS = {"v1": "datasets/pick_place_mixed.yaml", "v2": "datasets/pick_place_mixed_v2.yaml",
            "v2_200": "datasets/pick_place_expert_v2.yaml"}
GOAL = 0.5


def main():
    p = common.parser(__doc__)
    p.add_argument("--versions", default=",".join(VERSIONS))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--episodes", type=int, default=50, help="rollouts per policy")
    p.add_argument("--extra-seeds", default="", help="more seeds for some versions, e.g. v2_200=1,2")
    args = p.parse_args()
    extra = common.parse_extra_seeds(args.extra_seeds)
    versions, seeds = args.versions.split(","), [int(s) for s in args.seeds.split(",")]
    unknown = sorted((set(versions) | set(extra)) - set(VERSIONS))
    if unknown:
        p.error(f"unknown version {unknown[0]!r}; choose from {list(VERSIONS)}")
    if args.quick:
        versions, seeds, extra, args.episodes = versions[:1], seeds[:1], {}, 8
    from roboreward.data.generate import Recipe, generate_store

    work = Path(args.workdir or ROOT / "outputs" / ("bench_vision_layout_quick" if args.quick else "bench_vision_layout"))
    work.mkdir(parents=True, exist_ok=True)
    size = POLICIES["vision"]["image_size"]
    record = {"quick": args.quick, "seeds": seeds, "extra_seeds": extra, "episodes": args.episodes, "goal": GOAL, "image_size": size,
              "policy_config": POLICIES["vision"]["config"], "versions": {}}
    rows, t_start = [], time.perf_counter()
    for version in versions:
        recipe = Recipe.from_yaml(ROOT / VERSIONS[version])
        recipe.image_size = size
        if args.quick:
            recipe.episodes, recipe.image_size = 16, 64
        store = work / f"{recipe.name}_{recipe.image_size}px.zarr"
        generate_store(store, recipe, workers=0)
        name = f"{recipe.name}_{recipe.image_size}px"
        runs = [run_condition("pick_place", "standard", store, "expert_only", s, work, args.episodes, args.quick,
                              "vision", recipe=VERSIONS[version], name=name)
                for s in seeds + [x for x in extra.get(version, []) if x not in seeds]]
        v = summarise(runs)
        split = json.loads((run_dir(work, "vision", name, "expert_only", seeds[0]) / "split.json").read_text())
        record["versions"][version] = {"recipe": VERSIONS[version], "demonstrator": recipe.demonstrator,
                                       "train_demos": len(split["train"]), **v, "goal_met": v["mean"] >= GOAL, "runs": runs}
        rows.append([version, VERSIONS[version], len(split["train"]), f"{100 * v['mean']:.0f} +- {100 * v['std']:.0f}",
                     " ".join(f"{100 * r:.0f}" for r in v["per_seed"]),
                     f"{100 * v['ci95_pooled'][0]:.0f}-{100 * v['ci95_pooled'][1]:.0f}",
                     "met" if v["mean"] >= GOAL else "not met"])
    record["wall_seconds"] = time.perf_counter() - t_start
    print(common.table(rows, ["demonstrator", "recipe", "train demos", "success % (mean +- std)", "per seed", "pooled 95% CI",
                              f"goal >= {100 * GOAL:.0f}%"]))
    common.write("bench_vision_layout", record, args.out)


if __name__ == "__main__":
    main()
