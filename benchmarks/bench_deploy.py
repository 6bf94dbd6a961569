"""The deploy loop's cost per tick on the sim twin at 30 Hz: an image policy (two cameras through
the frozen encoder) with a reward model reading the same features, the safety layer and recording,
against the 33 ms a tick has; and the same loop with the policy alone (no reward, no recording) as
the alternative measured in the same run.

A tiny store is generated (``--quick``: 32 px) and the image BC policy of configs/bc/bc.yaml and
SARM (configs/reward/sarm.yaml) are trained briefly on it: their speed, not their skill, is measured.
Figures per configuration: tick time (mean, p99, max), lateness of each tick against its schedule
(jitter), missed policy deadlines, and the share of each part (policy, reward, safety + send,
recording).

    python benchmarks/bench_deploy.py [--quick]
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def cli(*args) -> None:
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-m", "roboreward.cli", *map(str, args)], check=True, env=env, cwd=ROOT,
                   stdout=subprocess.DEVNULL)


def main():
    import yaml

    p = common.parser(__doc__)
    args = p.parse_args()
    size = 32 if args.quick else 96
    ticks = 90 if args.quick else 600
    work = Path(args.workdir or ROOT / "outputs" / ("bench_deploy_quick" if args.quick else "bench_deploy"))
    work.mkdir(parents=True, exist_ok=True)
    store = work / "pp.zarr"
    cli("data", "generate", "--task", "pick_place", "--episodes", 4, "--mix", "expert=1.0", "--image-size", size, "--out", store)
    runs = {}
    for name, config, steps in (("bc", "configs/bc/bc.yaml", 30), ("sarm", "configs/reward/sarm.yaml", 30)):
        cfg = yaml.safe_load((ROOT / config).read_text())
        cfg["data"]["image_size"] = size
        cfg["data"]["val_fraction"] = 0.25
        (work / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
        runs[name] = work / name
        if not (runs[name] / "model" / "config.json").is_file():
            group = "bc" if name == "bc" else "reward"
            cli(group, "train", "--config", work / f"{name}.yaml", "--dataset", store, "--out", runs[name], "--steps", steps)

    from roboreward.hardware.deploy import DeployConfig, deploy

    record = {"quick": args.quick, "image_size": size, "ticks": ticks, "fps": 30.0, "results": {}}
    setups = {"policy only": {}, "policy + reward + safety + recording": {"reward": str(runs["sarm"] / "model"), "record": True}}
    for label, extra in setups.items():
        rec = work / f"rec_{len(record['results'])}.zarr"
        if rec.exists():
            import shutil

            shutil.rmtree(rec)
        cfg = DeployConfig(robot={"type": "sim_so101", "image_size": size}, policy=str(runs["bc"] / "model"),
                           reward=extra.get("reward"), max_steps=ticks, realtime=True,
                           record=str(rec) if extra.get("record") else None)
        ep = deploy(cfg, progress=False)["episodes"][0]
        record["results"][label] = {"timing_ms": ep["timing"], "missed_deadlines": ep["missed_deadlines"],
                                    "interventions": ep["interventions"], "steps": ep["steps"]}
    full, alone = record["results"]["policy + reward + safety + recording"], record["results"]["policy only"]
    record["ratio_tick_full_over_policy_only"] = full["timing_ms"]["tick"]["mean"] / alone["timing_ms"]["tick"]["mean"]
    record["budget_ms"] = 1000.0 / 30.0
    rows = []
    for label, r in record["results"].items():
        t = r["timing_ms"]
        rows.append([label, t["tick"]["mean"], t["tick"]["p99"], t["tick"]["max"], t["late"]["mean"], t["late"]["max"],
                     r["missed_deadlines"], t["policy"]["mean"], t["reward"]["mean"], t["send"]["mean"], t["record"]["mean"]])
    print(common.table(rows, ["loop (30 Hz, sim twin)", "tick ms", "p99", "max", "late ms", "late max", "missed",
                              "policy", "reward", "safety+send", "record"]))
    print(f"full loop / policy alone: {record['ratio_tick_full_over_policy_only']:.2f}x of the tick time; "
          f"budget {record['budget_ms']:.1f} ms")
    common.write("bench_deploy", record, args.out)


if __name__ == "__main__":
    main()
