"""Print the README's benchmark tables (markdown) from benchmarks/results/*.json.

    python benchmarks/report.py
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

import bench_rl  # benchmarks/ is this script's folder, so on its path

RESULTS = Path(__file__).resolve().parent / "results"


def load(name):
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def fmt(x, digits=3):
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.{digits}g}"


def data_table(d):
    print(f"**Clip sampling** (`bench_data.py`, {d['date']}, {d['machine']['cpu_count']} CPU cores{', quick' if d['quick'] else ''}): "
          f"{d['episodes']} sim episodes, {d['cameras']} cameras at {d['image_size']} px, causal clips of {d['window']} frames "
          f"at gap {d['frame_gap']} + state, {d['clips']} random clips.\n")
    print("| reader | frames/s | ratio | MB on disk |\n|---|---|---|---|")
    print(f"| roboreward zarr store | {fmt(d['ours_frames_per_s'])} | **{d['ratio']:.1f}x** | {d['ours_mb']:.1f} |")
    if "ours_chunk_cache_frames_per_s" in d:
        print(f"| zarr store + {d['chunk_cache_mb']:.0f} MB decoded-chunk cache, one cold pass "
              f"({100 * d['chunk_cache_hit_rate']:.0f}% chunk hits) | {fmt(d['ours_chunk_cache_frames_per_s'])} | "
              f"**{d['ratio_chunk_cache']:.1f}x** | {d['ours_mb']:.1f} |")
    print(f"| LeRobotDataset v3 (mp4, pyav) | {fmt(d['lerobot_frames_per_s'])} | 1x | {d['lerobot_mb']:.1f} |\n")


def codecs_table(d):
    print(f"**Image codec** (`bench_codecs.py`, {d['date']}): {d['frames']} rendered frames at {d['image_size']} px "
          "(uint8, 49 KB raw each); clip reads = causal clips of 8 frames at gap 5.\n")
    print("| codec | frames/chunk | bytes/frame | ratio | write fr/s | decode fr/s | clip fr/s |\n|---|---|---|---|---|---|---|")
    keep = {("raw", 1), ("raw", 16), ("blosc-lz4", 16), ("blosc-zstd5-bitshuffle", 16), ("zstd3", 1), ("zstd3", 4),
            ("zstd1", 16), ("zstd3", 16), ("zstd5", 16)}
    for r in d["rows"]:
        if (r["codec"], r["chunk_frames"]) in keep:
            mark = "**" if (r["codec"], r["chunk_frames"]) == ("zstd3", 16) else ""
            print(f"| {mark}{r['codec']}{mark} | {r['chunk_frames']} | {fmt(r['bytes_per_frame'])} | {r['ratio']:.1f} | "
                  f"{fmt(r['write_frames_per_s'])} | {fmt(r['decode_frames_per_s'])} | {fmt(r['clip_frames_per_s'])} |")
    print()


def sim_table(d):
    print(f"**Simulation** (`bench_sim.py`, MuJoCo {d['mujoco']}, {d['gl']}, "
          f"{d['task']}, {len(d['cameras'])} cameras at {d['image_size']} px, {d['substeps_per_control_step']} physics substeps per 30 Hz step):\n")
    print("| measure | rate |\n|---|---|")
    print(f"| env step with both cameras | {fmt(d['env_step_with_cameras_per_s'])} steps/s |")
    print(f"| render only, both cameras | {fmt(d['render_only_per_s'])} pairs/s |")
    print(f"| **step with cameras / render only** | **{d['ratio_step_with_cameras_over_render_only']:.2f}** |")
    print(f"| env step, state only | {fmt(d['env_step_state_only_per_s'])} steps/s |")
    print(f"| physics only | {fmt(d['physics_only_control_steps_per_s'])} steps/s ({fmt(d['physics_only_mj_step_per_s'])} mj_step/s) |")
    print(f"| scripted expert demo generation | {fmt(d['expert_frames_per_s'])} frames/s ({d['expert_episode_seconds']:.2f} s per episode) |\n")


def tables() -> str:
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        _print_tables()
    return buf.getvalue().strip()


def sarm_table(d):
    lr, ours = d["lerobot"], d["ours"]
    print(f"**SARM vs LeRobot's SARM** (`bench_sarm.py`, {d['date']}, {d['machine']['cpu_count']} CPU cores, "
          f"{d['machine']['torch_threads']} torch threads{', quick' if d['quick'] else ''}; batch {d['batch']}, "
          f"{d['window_frames']}-frame window). LeRobot {lr['version']}: {lr['cameras']} camera at {lr['image_size']} px through "
          f"CLIP ViT-B/32 (random weights, same compute), {lr['trainable_params'] / 1e6:.0f}M trainable parameters; ours: "
          f"{ours['cameras']} cameras + state from the store's feature cache ({ours['feature_key']}), "
          f"{ours['trainable_params'] / 1e6:.2f}M trainable parameters.\n")
    print("| figure | LeRobot | ours | ratio | goal |\n|---|---|---|---|---|")
    print(f"| training steps/s (ours: batch fetched from the store each step) | {lr['train_steps_per_s']:.3f} | "
          f"{ours['train_steps_per_s']:.1f} | **{d['ratio_train']:.0f}x** | >= {d['goal_train_ratio']}x |")
    print(f"| training steps/s (ours: model update only) | {lr['train_steps_per_s']:.3f} | {ours['train_steps_per_s_precollated']:.1f} | "
          f"{d['ratio_train_precollated']:.0f}x | |")
    print(f"| streaming reward, frames/s from pixels, 1 env | {lr['stream_frames_per_s']:.2f} | {ours['stream_frames_per_s']:.1f} | "
          f"**{d['ratio_stream']:.0f}x** | >= {d['goal_stream_ratio']}x |")
    print(f"| streaming reward, frames/s, 8 envs batched | n/a | {ours['stream_frames_per_s_8_envs']:.0f} | | |\n")


# What each row label of the reward-quality table means (a `+suffix` of the trained-on column, or
# its training set), in the order the table shows them.
QUALITY_LABELS = [
    ("+robust", "the same models read through the stage filter and change gate."),
    ("+hold", "the robust readout plus the stage hold (`readout_hold: stage`: progress does not fall unless the stage "
              "goes back; the default 2026-12-02 to 12-05)."),
    ("+done", "trained with the terminal done stage (`done_key: gt.success`: progress exactly 1 once the task is finished "
              "and the object let go), read with the robust readout and the stage hold (`configs/reward/sarm.yaml`'s "
              "default 2026-12-05 to 12-06, trained and read as configured)."),
    ("+freeze", "trained with freeze augmentation."),
    ("+lite1", "the robust SARM over the second offline encoder, efficientnet_lite1 (`configs/reward/sarm_lite1.yaml`, "
               "trained and read as configured)."),
    ("+nostate", "the `+done` SARM without the joint state, cameras only (`configs/reward/sarm_nostate.yaml`)."),
    ("+statenoise", "the `+done` SARM trained with a per-clip offset of the joint state, std 8 deg "
                    "(`configs/reward/sarm_statenoise.yaml`)."),
    ("+aug", "the `+done` SARM trained on the store and three photometric copies of it (each episode re-encoded under "
             "its own brightness, contrast, colour cast and gamma; `configs/reward/sarm_aug.yaml`, "
             "`roboreward/encoders/augment.py`); evaluated on the frames as they are."),
    ("+aug+stay", "the `+aug` models read with the per-stage minimum stay (`filter_min_stay_frac: 0.5`: each stage is held "
                  "half its short training duration, the 5th percentile of its annotated lengths, before the filter moves "
                  "on; no retraining). `configs/reward/sarm.yaml`'s default since 2026-12-06."),
    ("+done+stay", "the `+done` models read with the same per-stage minimum stay (no photometric copies)."),
    ("+aug2", "the default (`+aug+stay`) with two photometric copies instead of three (`configs/reward/sarm_aug2.yaml`), "
              "trained and read as configured; the copies were already in the store, so its training time leaves out "
              "their encoding."),
    ("+grm", "not SARM: GRM as `configs/reward/grm.yaml` trains and reads it (fused, conservative), on the same store and "
             "held-out sets."),
    ("+grm_aug", "GRM trained on the store and the same three photometric copies (`configs/reward/grm_aug.yaml`)."),
    ("+grm_aug+gate", "the `+grm_aug` model read through the change gate SARM has (`readout_gate: 0.05`: still frames "
                      "keep their progress; no retraining; `configs/reward/grm_aug.yaml` sets it since 2026-12-06)."),
    ("+grm_aug+median", "the `+grm_aug` models read through the median of GRM's three readings instead of the conservative "
                        "update (`fusion: median`; `configs/reward/grm_robust.yaml` until 2026-12-07)."),
    ("+grm_aug+median_smooth8", "the same read through the median and a causal average over 8 frames (`smooth_frames: 8`; "
                                "`configs/reward/grm_robust.yaml` since 2026-12-07)."),
    ("+grm_nostate", "GRM as `configs/reward/grm_robust.yaml` without the joint state, cameras only "
                     "(`configs/reward/grm_nostate.yaml`, trained and read as configured)."),
    ("randomised_failures", "the randomised looks with 40% failed episodes instead of 20% "
                            "(`datasets/<task>_randomised_failures.yaml`)."),
    ("randomised_wide", "the randomised looks over a wider layout that surrounds the held-out layout band and leaves it "
                        "out (cubes at x 0.07-0.25 m except 0.11-0.15, |y| <= 0.17; failed expert and suboptimal takes "
                        "re-recorded, so the mix stays 50/30/20; `datasets/stack_randomised_wide.yaml`); "
                        "`randomised_wide+aug+stay`: the default `configs/reward/sarm.yaml` trained on it, as configured."),
    ("randomised_wide_failures", "the same layout with the failed takes kept (36% failures)."),
    ("randomised_wide_rest", "the wide layout with every demonstration ending in 1 s with the arm at rest "
                             "(`demonstrator: {rest_s: 1.0}`, `datasets/stack_randomised_wide_rest.yaml`)."),
    ("+long", "the `+done` SARM trained twice as long, 6000 steps (`configs/reward/sarm_long.yaml`)."),
    ("+done+minstay", "the `+done` models read with `filter_min_stay: 30` (a stage entered going forward is held 30 "
                      "frames, 1 s, before the filter moves on from it; done follows only the last annotated stage, so a "
                      "short read of done mid-task no longer ends there; no retraining)."),
    ("+done+minstay15", "the same with 15 frames."),
]


ADAPT_LABELS = {"before": "before", "after_state": "after, with state", "after": "after",
                "after_smooth8": "after, 8-frame average"}


def quality_table(d):
    if "summary" not in d:  # the in-domain-only format of 2026-11-26
        print(f"**Reward quality** (`bench_reward_quality.py`, {d['date']}): in domain only; rerun the benchmark.\n")
        return
    g = d["goals"]
    print(f"**Reward quality in domain and on held-out looks** (`bench_reward_quality.py`, {d['date']}"
          f"{', quick' if d['quick'] else ''}): SARM (`configs/reward/sarm.yaml`) trained on a task's standard "
          "mixed-quality data (`<task>_mixed`, 100 episodes, one look) or on domain-randomised data (`<task>_randomised`, the "
          "same episodes in drawn colours, light, camera poses and distractors, excluding every held-out value); evaluated "
          "in domain (its 20 held-out episodes) and on each held-out variant (20 unseen episodes: control = standard look, "
          "then one factor changed; `textures`: a grid-lined table and speckled objects, a pattern no training recipe has; `layout`: other "
          "episodes, objects nearer the base and wider apart than in any training recipe). "
          "Mean over training seeds. Goals: VOC and AUROC >= "
          f"{g['voc']}, every success finishes above its hover (share {g['finish_over_hover']:.0f}) and at >= "
          f"{g['min_final_success']}, no drop after success, freeze rise <= {g['freeze_rise_max']}. `AUROC tied`: "
          "the same with a success's and a failure's final progress within 0.01 of each other counted as a tie (a "
          "failure that ends \"done\" at 0.9999 beside successes at 1.0000 is not told apart; exact ranks say it is); the "
          "AUROC goal is checked on it where the evaluation's files were kept (n/a: they were not). Rows without a "
          "suffix read SARM as published (no stage filter, no change gate); the suffixes and training sets:\n")
    for label, text in QUALITY_LABELS:
        print(f"- `{label}`: {text}")
    print()
    print("| task | trained on | evaluated on | VOC | AUROC | AUROC tied | finish > hover | lowest final (success) | "
          "drop after success | freeze rise (max) | final gap succ - fail | stage acc | succ / fail | seeds | goals met |")
    print("|---" * 15 + "|")

    def cell(agg, key, fmt="{:.2f}"):
        v = agg.get(key)
        return "n/a" if v is None else fmt.format(v["mean"]) + (f" ± {v['std']:.2f}" if v["n"] > 1 else "")

    order = ["in_domain", "control", "colours", "light", "camera", "distractors", "textures", "layout"]

    def place(key):
        task, train, name = key.split("/")
        return (task, train, order.index(name) if name in order else len(order), name)

    for key in sorted(d["summary"], key=place):
        agg = d["summary"][key]
        task, train, name = key.split("/")
        name = "in domain" if name == "in_domain" else name
        print(f"| {task} | {train} | {name} | {cell(agg, 'voc', '{:.3f}')} | {cell(agg, 'auroc')} | {cell(agg, 'auroc_tied')} | "
              f"{cell(agg, 'finish_over_hover')} | {cell(agg, 'min_final_success')} | {cell(agg, 'post_success_drop_share')} | "
              f"{cell(agg, 'freeze_rise_max', '{:.3f}')} | {cell(agg, 'final_gap')} | {cell(agg, 'stage_accuracy')} | "
              f"{agg['n_success']} / {agg['n_failure']} | {agg['seeds']} | {'yes' if agg['goals_met'] else 'no'} |")
    print()


def rewards_table(d):
    speed = d.get("speed") or {}
    print(f"**Every reward model on the same held-out episodes** (`bench_rewards.py`, {d['date']}"
          f"{', quick' if d['quick'] else ''}): trained (or fitted) on each task's standard mixed-quality data "
          "(`<task>_mixed`, 80 training episodes, one look), evaluated in domain (its 20 held-out episodes) and on the "
          "held-out variants (20 unseen episodes each). Mean over training seeds. SARM with the robust readout, the SARM "
          "default of 2026-12-02 (before the photometric copies and the per-stage stay; not retrained, so its rows lack "
          "textures and layout); rows `sarm+aug+stay`: SARM as `configs/reward/sarm.yaml` trains and reads it since "
          "2026-12-06 (done stage, photometric copies, per-stage minimum stay), in runs of its own (2026-12-07, alone on the "
          "machine); GRM fused (conservative), rows `grm+median` the same models read through the median of "
          "the three readings; perceptual fitted from 10 expert demos on `blocks.5` features (drawn by the seed), rows "
          "`+smooth` read through a 10-frame moving average (`+steps8+smooth`: 8 steps and the change gate, "
          "`configs/reward/perceptual_smooth.yaml`); the baselines per frame. Rows `+randomised`: trained on "
          "`<task>_randomised` instead. Figures as in the table above; `train s`: training or fit time on 2 cores, in "
          "the SARM cells of 2026-12-02 and the GRM cells of 2026-12-07 with another benchmark running (1 thread "
          "each), in the perceptual and baseline cells of 2026-12-06 alone for seeds 0-1 and beside an RL benchmark (1 "
          "thread each) for seed 2; a seed that found its store's cache missing includes encoding it (perceptual's "
          "layer cache: seeds 0 and 2, its stores regenerated for seed 2).\n")
    print("| task | model | evaluated on | VOC | AUROC | finish > hover | lowest final (success) | drop after success "
          "| freeze rise (max) | MAE | train s | seeds |")
    print("|---" * 12 + "|")
    order = ["in_domain", "control", "colours", "light", "camera", "distractors", "textures", "layout"]
    models = ["sarm", "grm", "perceptual", "time_regression", "success_classifier"]

    def cell(agg, key, fmt="{:.2f}"):
        v = agg.get(key)
        return "n/a" if v is None else fmt.format(v["mean"]) + (f" ± {v['std']:.2f}" if v["n"] > 1 else "")

    def place(key):
        task, model, name = key.split("/")
        base = model.split("+")[0]
        return (task, order.index(name) if name in order else len(order), models.index(base) if base in models else 9, model)

    for key in sorted(d["summary"], key=place):
        agg = d["summary"][key]
        task, model, name = key.split("/")
        print(f"| {task} | {model} | {name.replace('_', ' ')} | {cell(agg, 'voc', '{:.3f}')} | {cell(agg, 'auroc')} | "
              f"{cell(agg, 'finish_over_hover')} | {cell(agg, 'min_final_success')} | {cell(agg, 'post_success_drop_share')} | "
              f"{cell(agg, 'freeze_rise_max', '{:.3f}')} | {cell(agg, 'mae')} | {cell(agg, 'train_seconds', '{:.0f}')} | "
              f"{agg['seeds']} |")
    if speed:
        lr = speed.get("lerobot_sarm_train_steps_per_s_batch_8")
        print("\n| model | streaming frames/s, 8 envs (cached features) | training steps/s, batch 8 | vs LeRobot's SARM |")
        print("|---|---|---|---|")
        for m in models:
            if m in speed:
                r = speed[m]
                steps = r.get("train_steps_per_s_batch_8")
                print(f"| {m} | {r['stream_frames_per_s_8_envs']:.0f} | {'fit, no steps' if steps is None else f'{steps:.1f}'} | "
                      f"{'' if steps is None else f'{r['vs_lerobot_sarm_train']:.0f}x'} |")
        if lr:
            print(f"\nLeRobot's SARM: {lr:.3f} training steps/s at batch 8 (`bench_sarm.py`, the same machine).")
    adaptations = d.get("adaptations") or ({"": d["adaptation"]} if d.get("adaptation") else {})
    rows = [ad for ad in adaptations.values() if ad.get("seeds")]
    if rows:
        def mean(ad, label, key):
            vals = [row[label][key] for row in ad["seeds"].values() if row[label].get(key) is not None]
            return f"{np.mean(vals):.3f}" if vals else "n/a"
        first = rows[0]
        print(f"\n**One-shot adaptation** (GRM adapted to {first['target']} from its expert episode {first['demo_episode']} "
              f"with `reward adapt`, {first['steps']} steps; evaluated on the store's other episodes). Before: the new "
              "task's references and an embedding at the mean of the known ones, no fine-tuning. After: fine-tuned on "
              "the demo, reading the cameras only (`reward adapt`'s default); with state: the same keeping the joint state "
              "as an input (`--keep-state`); 8-frame average: the after model read with `--readout smooth_frames=8`. A base "
              "of several tasks is trained on their stores joined by `data merge`.\n")
        print("| base trained on | seeds | | VOC | AUROC | finish > hover | lowest final (success) | MAE |\n"
              "|---|---|---|---|---|---|---|---|")
        for ad in rows:
            for label in ADAPT_LABELS:  # table order
                if not all(label in row for row in ad["seeds"].values()):
                    continue  # results measured before that row existed
                print(f"| {ad['base_task'].replace('+', ' + ')} | {len(ad['seeds'])} | {ADAPT_LABELS[label]} | {mean(ad, label, 'voc')} | "
                      f"{mean(ad, label, 'auroc')} | {mean(ad, label, 'finish_over_hover')} | "
                      f"{mean(ad, label, 'min_final_success')} | {mean(ad, label, 'mae')} |")
    print("\n![rewards](benchmarks/results/bench_rewards.png)\n")


def _seed_counts(d) -> str:
    """'3 training seeds' or, where some conditions ran more seeds, 'training seeds: 3 (plain, ...), 1 (...)'."""
    counts = {c: len(set(d["seeds"]) | set((d.get("extra_seeds") or {}).get(c, []))) for c in d["conditions"]}
    if len(set(counts.values())) == 1:
        k = next(iter(counts.values()))
        return f"{k} training seed{'s' if k != 1 else ''}"
    groups = {}
    for c, k in counts.items():
        groups.setdefault(k, []).append(d["conditions"][c])
    return "training seeds: " + ", ".join(f"{k} ({', '.join(v)})" for k, v in sorted(groups.items(), reverse=True))


def _rabc_flags(d: dict, name: str | None = None) -> str:
    """The ``bench_rabc.py`` flags of a rerun from its results: label, conditions, extra seeds, and where
    ``name`` (the results file it was written to with ``--out``) is given, its tasks and that ``--out``."""
    tasks = sorted({t for m in d["mixes"].values() for t in m["tasks"]})
    extra = ";".join(f"{c}={','.join(map(str, s))}" for c, s in (d.get("extra_seeds") or {}).items())
    flags = ([f"--label {d['label']}"] if d.get("label") else []) + ([f"--tasks {','.join(tasks)}"] if name else []) \
        + [f"--conditions {','.join(d['conditions'])}"] + ([f'--extra-seeds "{extra}"'] if extra else []) \
        + ([f"--out benchmarks/results/{name}.json"] if name else [])
    return " ".join(flags)


def rabc_rerun_note(task: str, d: dict) -> str:
    return (f" This rerun (`{_rabc_flags(d, f'bench_rabc_{task}')}`) is {task} only, with "
            "SARM as configs/reward/sarm.yaml now trains and reads it: the terminal done stage and the stage hold; "
            "the first RA-BC table is from the SARM of 2026-12-02 (robust readout, no hold, no done stage).")


def rabc_label_note(d: dict, what: str, name: str | None = None) -> str:
    """The note of a ``bench_rabc.py --label`` rerun; ``what``: how that SARM differs; ``name``: the
    results file when the run named one (``--out``), with the tasks it ran."""
    return (f" This rerun (`{_rabc_flags(d, name)}`, written to "
            f"`{name or 'bench_rabc_' + d['label']}.json`) weights the demos with SARM as `{d['reward_config']}` {what}; "
            + ("every policy, SARM and store was made again in this run from the same recipes, configs and seeds (the "
               "work folder of the tables above was gone)." if name else
               "the plain BC, sim-progress and oracle policies are the same runs as in the tables above."))


def train_time_table(d):
    runs = d["runs"]
    print(f"**SARM training time** (`bench_train_time.py`, {d['date']}, {d['machine']['cpu_count']} CPU cores"
          f"{', quick' if d['quick'] else ''}): `{d['config']}` (default; two_copies: the same with two photometric copies) against the same config with "
          "the robustness work's training additions undone (before: no done stage, no photometric copies), on "
          f"one store ({d['episodes']} episodes, {d['frames']} frames, two cameras; {d['steps']} steps). Cold: a "
          "fresh copy of the store without feature caches (a user's first `reward train` on new data); warm: a "
          "second run with the caches present (another seed or config).\n")
    print("| config | store | photometric copies | encoder passes (s) | training (s) | total (s) |")
    print("|---|---|---|---|---|---|")
    for key, r in runs.items():
        name, phase = key.split("/")
        print(f"| {name} | {phase} | {r['copies']} | {r['encode_s']:.0f} | {r['train_s']:.0f} | {r['total_s']:.0f} |")
    print(f"\nDefault / before: cold {d['ratio']['cold']:.2f}x, warm {d['ratio']['warm']:.2f}x (the training "
          f"alone {d['train_only_ratio']:.2f}x)"
          + (f"; with two copies (`configs/reward/sarm_aug2.yaml`) cold {d['ratio_two_copies']['cold']:.2f}x, warm "
             f"{d['ratio_two_copies']['warm']:.2f}x" if "ratio_two_copies" in d else "")
          + "; the robustness issue's limit is 2x.\n")


def demo_table(d):
    mix = ", ".join(f"{k} {v:.0%}" for k, v in (d.get("train_mix") or {}).items())
    train = f"{d['train_episodes']} episodes, {mix}; " if d.get("train_episodes") else ""
    figs = [("voc", "VOC", "{:.3f}"), ("auroc", "AUROC", "{:.2f}"), ("finish_over_hover", "finish > hover", "{:.2f}"),
            ("min_final_success", "lowest final (success)", "{:.2f}"), ("post_success_drop_share", "drop after success", "{:.2f}"),
            ("freeze_rise_max", "freeze rise (max)", "{:.3f}"), ("final_gap", "final gap succ - fail", "{:.2f}")]
    print(f"**The demo over seeds** (`bench_demo.py`, {d['date']}{', quick' if d['quick'] else ''}): `roboreward demo` "
          f"(`{d['config']}`) once per seed, each with its own training data ({train}dataset seed = seed x "
          f"{d['dataset_seed_stride']}) and training seed, evaluated on the demo's evaluation set "
          f"({d['n_success']} successes / {d['n_failure']} failures).\n")
    print("| seed | " + " | ".join(f[1] for f in figs) + " |")
    print("|---" * (len(figs) + 1) + "|")
    for seed, f in d["per_seed"].items():
        print(f"| {seed} | " + " | ".join("n/a" if f.get(k) is None else fmt.format(f[k]) for k, _, fmt in figs) + " |")
    print("| mean | " + " | ".join("n/a" if d["summary"].get(k) is None else fmt.format(d["summary"][k]["mean"])
                                   for k, _, fmt in figs) + " |\n")


def _gt_reference(variant: str, conds: list) -> str:
    """The sim-progress condition a SARM variant is compared with: the one at its own kappa where measured."""
    return "rabc_gt_kappa" if variant == "rabc_sarm_kappa" and "rabc_gt_kappa" in conds else "rabc_gt"


def rabc_table(d, name="bench_rabc", note=""):
    n = d["episodes"]
    vision = d.get("policy") == "vision"
    what = (f"the visuomotor policy of `{d['policy_config']}` (two cameras + joint state, no object poses; "
            f"frames at {d['image_size']} px)" if vision else f"the BC policy of `{d['policy_config']}`")
    flag = " --policy vision" if vision else ""
    print(f"**RA-BC in simulation{', image policy' if vision else ''}** (`bench_rabc.py{flag}`, {d['date']}, "
          f"{d['machine']['cpu_count']} CPU cores"
          f"{', quick' if d['quick'] else ''}): {what} trained on each task's "
          "RA-BC dataset (`datasets/<task>_rabc.yaml`, 100 episodes, 80 for training) under each condition, "
          + _seed_counts(d)
          + f", {n} rollouts per policy from the same initial states. Success in % "
          "(mean ± std over seeds; pooled 95% Wilson interval). Goals (standard mix, marked against RA-BC with "
          "LeRobot's formula and kappa 0.01): RA-BC (SARM) >= plain + 25 points and within 10 points of the oracle; "
          "RA-BC (SARM) within 3 points of RA-BC (sim progress) in every task and mix." + note + "\n")
    conds = list(d["conditions"])
    variants = [c for c in ("rabc_sarm", "rabc_sarm_kappa", "rabc_sarm_gate") if c in conds]
    names = {"rabc_sarm": "kappa 0.01", "rabc_sarm_kappa": "kappa 0.03", "rabc_sarm_gate": "gate"}
    which = " / ".join(names[c] for c in variants)
    vs_gt = "rabc_gt" in conds
    at_equal = " at equal kappa" if "rabc_gt_kappa" in conds else ""
    print("| task | mix (expert/subopt./failure) | " + " | ".join(d["conditions"][c] for c in conds)
          + f" | RA-BC (SARM) vs plain ({which}) | gap to oracle ({which}) |"
          + (f" RA-BC (SARM) vs sim progress{at_equal} ({which}) |" if vs_gt else ""))
    print("|---" * (len(conds) + 4 + vs_gt) + "|")
    weights = []
    for mix, entry in d["mixes"].items():
        shares = "/".join(f"{100 * v:.0f}" for v in entry["mix"].values())
        for task, t in entry["tasks"].items():
            c_ = t["conditions"]
            cells = [f"{100 * c_[c]['mean']:.0f} ± {100 * c_[c]['std']:.0f} "
                     f"({100 * c_[c]['ci95_pooled'][0]:.0f}-{100 * c_[c]['ci95_pooled'][1]:.0f})" for c in conds]
            gain = " / ".join(f"{100 * (c_[v]['mean'] - c_['plain']['mean']):+.0f}" for v in variants)
            gap = " / ".join(f"{100 * (c_['expert_only']['mean'] - c_[v]['mean']):.0f}" for v in variants)
            if mix == d.get("goals_apply_to", "standard"):
                g = d["goals"]
                gain += " (goal +{:.0f} {})".format(100 * g["gain_over_plain"], "met" if t["goals_met"]["gain_over_plain"] else "not met")
                gap += " (goal {:.0f} {})".format(100 * g["gap_to_oracle"], "met" if t["goals_met"]["gap_to_oracle"] else "not met")
            versus = (" " + " / ".join(f"{100 * (c_[v]['mean'] - c_[_gt_reference(v, conds)]['mean']):+.0f}" for v in variants)
                      + " |" if vs_gt else "")
            print(f"| {task} | {mix.replace('_', '-')} {shares} | " + " | ".join(cells) + f" | {gain} | {gap} |" + versus)
            m = c_["rabc_sarm"]["mean_weight"] or {}
            order = [q for q in ("expert", "suboptimal", "failure") if q in m] + [q for q in m if q not in ("expert", "suboptimal", "failure")]
            weights.append(f"{task} {mix.replace('_', '-')}: " + ", ".join(f"{q} {m[q]:.2f}" for q in order)
                           + f" (SARM held-out VOC {t['sarm_heldout']['voc']:.3f}, AUROC {t['sarm_heldout']['auroc']:.2f})")
    print("\nMean RA-BC weight per demonstration quality with SARM progress: " + "; ".join(weights) + ".\n")
    print(f"![RA-BC success rates](benchmarks/results/{name}.png)\n")


def main():
    import sys

    text = tables()
    if "--readme" in sys.argv:
        readme = Path(__file__).resolve().parent.parent / "README.md"
        s = readme.read_text()
        head, rest = s.split("<!-- bench:start", 1)
        marker, rest = rest.split("-->", 1)
        _, tail = rest.split("<!-- bench:end -->", 1)
        readme.write_text(f"{head}<!-- bench:start{marker}-->\n{text}\n<!-- bench:end -->{tail}")
        print(f"updated {readme}")
    else:
        print(text)


def _layout_shift(cfg: dict) -> str:
    """Where a shift cell's objects stand against the narrow RL recipe the base policy was cloned on
    (its x range read from ``datasets/<task>_rl.yaml``), from the cell's own task config."""
    import yaml

    rl_x = (cfg.get("task_config") or {}).get("x_range")
    recipe = RESULTS.parent.parent / "datasets" / f"{cfg.get('task')}_rl.yaml"
    base_x = (yaml.safe_load(recipe.read_text()).get("task_config") or {}).get("x_range") if recipe.is_file() else None
    if not rl_x or not base_x:
        return "shifted from the one the base policy was cloned on"
    return (f"with the objects at x {rl_x[0]:.3f}-{rl_x[1]:.3f} m, {100 * (rl_x[0] - base_x[1]):.1f} to "
            f"{100 * (rl_x[1] - base_x[1]):.1f} cm beyond the far edge of the {base_x[0]:.2f}-{base_x[1]:.2f} m the base "
            "policy was cloned on")


def _best_check(s: dict) -> str:
    """The runs' best policies (``best/``) on the 100 check seeds: mean (per seed), or - where not measured."""
    if s.get("best_check_mean") is None:
        return "-"
    return f"{s['best_check_mean']:.2f} ({' / '.join(f'{x:.2f}' for x in s['best_check_success'])})"


def rl_table(d):
    cfg = next(iter(d["cells"].values()))["config"] if d.get("cells") else {}
    setting = str(d.get("setting", "narrow"))
    shift, named = setting.startswith("shift"), setting != "narrow"
    if cfg.get("base_policy"):
        start_how = [text for on, text in (
            (cfg.get("zero_residual"), "the policy starts as the base policy exactly"),
            (cfg.get("actor_warmup"), f"only the critic learns for the first {cfg.get('actor_warmup', 0):,} env steps"),
            (cfg.get("actor_ramp"), f"the actor's learning rate then rises linearly to its full rate over "
                                    f"{cfg.get('actor_ramp', 0):,} env steps"),
            (cfg.get("init_std"), f"the policy's initial spread {cfg.get('init_std') or 0:g} before the squash")) if on]
        how = (f"residual actions over a base policy behaviour-cloned on "
               f"{'the narrow-layout store' if shift else 'the store'}'s expert episodes "
               f"(`configs/bc/bc_state.yaml`; corrections up to {cfg.get('max_step_deg')} deg and "
               f"{cfg.get('max_step_gripper')} gripper units per step), `ent_coef` {cfg.get('ent_coef')}, "
               f"lr {cfg.get('learning_rate')}" + "".join(f"; {t}" for t in start_how))
        start = "the same base policy"
    else:
        how = "joint-delta actions"
        start = f"the same behaviour-cloned warm start ({cfg.get('bc_steps', '?')} steps)"
    where = "on each task's narrow-layout RL recipe (`datasets/<task>_rl.yaml`)"
    shaping = (f"shaping term x{cfg.get('shaping_scale')}, Phi = {cfg.get('goal_potential', 0.0):g} after a success, "
               f"{cfg.get('updates_per_step')} gradient updates per env step")
    if named and not shift:
        where += f" ({shaping})"
    if shift:
        layout = _layout_shift(cfg)
        where = (f"in a layout {layout} (`datasets/<task>_shift.yaml`; "
                 "reward models, replayed demos and RL env from that recipe, base policy from `datasets/<task>_rl.yaml`; "
                 f"{shaping})")
    tasks = sorted({c["task"] for c in d["cells"].values()}) or ["?"]
    print(f"**Online RL with learned rewards{', shifted layout' if shift else ''}** (`bench_rl.py{' --setting ' + d['setting'] if named else ''}`, "
          f"{d['date']}, {d['machine']['cpu_count']} CPU cores"
          f"{', quick' if d['quick'] else ''}): {bench_rl.ALGO_NAMES.get(cfg.get('algo', 'sac'), cfg.get('algo'))} (`configs/rl/sac.yaml` + `bench_rl.{f"SETTINGS['{d['setting']}']" if named else 'BENCH_RL'}`, "
          f"{cfg.get('n_envs', '?')} envs, {how}) {where}, {d['steps_per_cell']} env "
          f"steps per cell, horizon {cfg.get('max_episode_steps', '?')}; every scheme gets {start} and the same "
          f"{cfg.get('demo_episodes', '?')} replayed demos in its replay buffer. True success from "
          f"{cfg.get('eval_episodes', '?')} deterministic rollouts (the same initial states each time) every "
          f"{cfg.get('eval_every', '?')} steps, step 0 included; cells done: {d['cells_done']} of the planned {len(tasks)} "
          f"task{'s' if len(tasks) > 1 else ''} ({', '.join(tasks)}) x "
          f"5 schemes x 3 seeds. Goals: pbrs (learned) reaches 80% in <= 1/3 of sparse's steps (or sparse never does) and "
          f"does at least as well as naive.\n")
    # One preparation = the store's base policy and grid models; the `_onpolicy` cells add their own models on top.
    preps = {(c["task"], tuple(sorted((k, v) for k, v in c["fingerprints"].items() if not k.endswith(("_onpolicy", "_nostate")))))
             for c in d["cells"].values() if c.get("fingerprints")}
    older = sum(1 for c in d["cells"].values() if not c.get("fingerprints"))
    later = max(Counter(task for task, _ in preps).values()) if preps else 0  # later preparations of the task with most
    if preps and (older or later > 1):
        print(f"Cells from more than one preparation of each task's store, reward models and base policy (same recipes "
              f"and configs, regenerated): {older} from the first (not fingerprinted), {len(d['cells']) - older} from "
              f"{'a later one' if later == 1 else f'{later} later ones'} (fingerprints in each cell file); "
              "`final - step 0` compares each cell with its own start.\n")
    print("| task | scheme | seeds | success at step 0 | best eval | final true success | final - step 0 | reached 80% "
          "| steps to 80% (median) | furthest gt progress (final eval) | potential at the end of training episodes (last 50) "
          "| best policy on 100 other rollouts |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for task, schemes in d["summary"].items():
        for name in d.get("schemes") or sorted(schemes):  # bench_rl.SCHEMES' order
            s = schemes.get(name)
            if s is None:
                continue
            cells = [c for c in d["cells"].values() if c["task"] == task and c["scheme"] == name]
            started = [c for c in cells if c["curve"] and c["curve"][0]["step"] == 0]  # evaluated at step 0
            start0 = [c["curve"][0]["eval_success"] for c in started]
            best = [max(r["eval_success"] for r in c["curve"]) for c in cells]
            gain = [c["final_success"] - s0 for c, s0 in zip(started, start0)]
            print(f"| {task} | {name} | {len(s['seeds'])} | {f'{np.mean(start0):.2f}' if start0 else '-'} | "
                  f"{np.mean(best):.2f} | {s['final_success_mean']:.2f} | "
                  f"{f'{np.mean(gain):+.2f} ({min(gain):+.2f} to {max(gain):+.2f})' if gain else '-'} | {s['reached_80']} | "
                  f"{fmt(s['steps_to_80_median']) if s['steps_to_80_median'] else 'not reached'} "
                  f"| {s['final_max_progress_mean']:.2f} | "
                  f"{'-' if name == 'sparse' or s.get('final_learned_progress_mean') is None else format(s['final_learned_progress_mean'], '.2f')} | "
                  f"{_best_check(s)} |")
    print()
    if d.get("extra_cells"):
        about = {"_onpolicy": "pbrs with SARM or GRM trained on the RL store joined with 100 of the base policy's own "
                              "rollouts in this layout, `bench_rl.ONPOLICY`",
                 "_nostate": "the same configs without the joint state, cameras only, `bench_rl.NOSTATE`"}
        kinds = [f"`{k}` schemes ({v})" for k, v in about.items() if any(c["scheme"].endswith(k) for c in d["cells"].values())]
        print(f"Beyond the planned grid: {d['extra_cells']} cells of the {' and the '.join(kinds) or 'other schemes'}.\n")
    check = d.get("reward_check") or {}
    if check:
        print("**The reward models read on the base policy's own rollouts** (`bench_rl.py ... --check`: 100 deterministic "
              "rollouts in the RL layout, recorded by `sim eval --record`, never trained on; the learner starts from this "
              "policy). `_onpolicy`: trained with another 100 such rollouts; `_nostate`: the same config without the joint "
              "state (cameras only).\n")
        print("| task | model | successes / failures | AUROC | final progress, successes | final progress, failures "
              "| failures ending above 0.9 | finish > hover | change vs true change, correlation over 1 / 10 / 30 frames "
              "| total variation / the truth's |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for task, models in check.items():
            for name, c in models.items():
                f = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
                print(f"| {task} | {name} | {c['successes']} / {c['failures']} | {f(c['auroc'])} | "
                      f"{f(c['final_success_mean'])} | {f(c['final_failure_mean'])} | {c['failures_ending_above_0.9']} | "
                      f"{f(c['finish_over_hover'])} | "
                      f"{' / '.join(f(c['step_corr'].get(k)) for k in ('1', '10', '30')) if c.get('step_corr') else '-'} | "
                      f"{f(c.get('variation_ratio'))} |")
        print()
    sp = d.get("speed")
    if sp:
        r = sp["env_steps_per_s"]
        ls = sp["sac_env_steps_per_s"]
        print(f"Env loop ({sp['task']}, 4 envs, random actions, env steps/s): state only {fmt(r['state_only'])}, cameras rendered "
              f"{fmt(r['cameras'])}, " + ", ".join(f"cameras + {n} streaming {fmt(r['cameras+' + n])} "
                                                 f"(**{sp['with_model_over_cameras'][n]:.2f}x** of cameras alone, goal >= 0.5)"
                                                 for n in sp["with_model_over_cameras"])
              + ". Learners on Pendulum-v1 (one update per env step, batch 256; env steps/s): "
              + bench_rl.learner_line(ls) + ".\n")
        script = {n: r.get(f"cameras+{n}_torchscript_encoder") for n in sp["with_model_over_cameras"]}
        if all(script.values()):
            print("The encoder runs in ONNX Runtime (`ImageEncoder.runtime`); with its TorchScript graph instead the same loop "
                  "makes " + ", ".join(f"{n} {fmt(v)} steps/s ({v / r['cameras']:.2f}x of cameras alone; ONNX Runtime is "
                                       f"{r['cameras+' + n] / v:.2f}x faster)" for n, v in script.items()) + ".\n")
        if sp.get("env_steps_per_s_8_envs"):
            r8, q8 = sp["env_steps_per_s_8_envs"], sp["with_model_over_cameras_8_envs"]
            print("With 8 envs (the encoder's batch doubles): cameras rendered " + fmt(r8["cameras"]) + ", "
                  + ", ".join(f"cameras + {n} {fmt(r8['cameras+' + n])} (**{q8[n]:.2f}x**)" for n in q8) + ".\n")
        if sp.get("ms_per_vector_step_4_envs"):
            ms = sp["ms_per_vector_step_4_envs"]
            print(f"One vector step of 4 envs: rendering and physics {ms['cameras']:.1f} ms; "
                  + "; ".join(f"{n}: encoder {c['encoder_ms']:.1f} ms ({c['frames_per_step']} frames at {c['image_size']} px, "
                              f"{c['encoder_ms_per_frame']:.2f} ms each), stream {c['stream_ms']:.1f} ms"
                              for n, c in ms.items() if n != "cameras") + ".\n")


def deploy_table(d):
    print(f"**Deploy loop on the sim twin** (`bench_deploy.py`, {d['date']}, {d['machine']['cpu_count']} CPU cores"
          f"{', quick' if d['quick'] else ''}): {d['ticks']} ticks at {d['fps']:.0f} Hz (budget {d['budget_ms']:.1f} ms), "
          f"the image BC policy of `configs/bc/bc.yaml` over two {d['image_size']} px cameras through the frozen encoder, "
          "SARM reading the same features. Tick = read the arm and cameras, encode, act, safety + send, reward, record.\n")
    print("| loop | tick ms (mean / p99 / max) | late vs schedule ms (mean / max) | missed deadlines | policy ms | reward ms | safety + send ms | record ms |")
    print("|---|---|---|---|---|---|---|---|")
    for label, r in d["results"].items():
        t = r["timing_ms"]
        print(f"| {label} | {t['tick']['mean']:.1f} / {t['tick']['p99']:.1f} / {t['tick']['max']:.1f} | "
              f"{t['late']['mean']:.1f} / {t['late']['max']:.1f} | {r['missed_deadlines']} | {t['policy']['mean']:.2f} | "
              f"{t['reward']['mean']:.2f} | {t['send']['mean']:.2f} | {t['record']['mean']:.2f} |")
    print(f"\nFull loop / policy alone: **{d['ratio_tick_full_over_policy_only']:.2f}x** the tick time.\n")


def policies_table(d):
    print(f"**LeRobot's ACT and Diffusion Policy, training step** (`bench_policies.py`, {d['date']}, "
          f"{d['machine']['cpu_count']} CPU cores{', quick' if d['quick'] else ''}): batch {d['batch']}, "
          f"{d['episodes']} pick_place episodes ({d['frames']} frames, two {d['image_size']} px cameras); LeRobot: "
          "LeRobotDataset (pyav video decoding) + its preprocessor + `lerobot_train.update_policy`, unweighted (it cannot "
          "weight these policies); ours: the zarr store + per-sample RA-BC weights + AdamW. Best of "
          "alternating rounds, no DataLoader workers on either side.\n")
    print("| policy | parameters | LeRobot s/step | ours s/step (RA-BC weighted) | LeRobot / ours |")
    print("|---|---|---|---|---|")
    for kind, r in d["policies"].items():
        print(f"| {kind} | {r['parameters'] / 1e6:.1f} M | {r['lerobot_s_per_step']:.3f} | {r['ours_s_per_step']:.3f} "
              f"| **{r['speedup']:.2f}x** |")
    print()


def vision_layout_table(d):
    print(f"**Image BC in the full pick_place layout** (`bench_vision_layout.py`, {d['date']}, "
          f"{d['machine']['cpu_count']} CPU cores{', quick' if d['quick'] else ''}): the policy of "
          f"`{d['policy_config']}` cloned from expert demos only (frames at {d['image_size']} px), rolled out "
          f"{d['episodes']} times per training seed from the same initial states in the full layout "
          "(cube and bowl anywhere in the workspace, cube yaw +-45 deg). v1: the original grasp, which keeps the open "
          "jaw away from the bowl (wrist roll jumps 90-180 deg between neighbouring layouts); v2: the least-roll grasp "
          "(`demonstrator: {keep_out: false}`). Success in % (mean +- std over seeds; pooled 95% Wilson interval).\n")
    print(f"| demonstrator | recipe | training demos | training seeds | success % | per seed | goal >= {100 * d['goal']:.0f}% |")
    print("|---|---|---|---|---|---|---|")
    for version, v in d["versions"].items():
        print(f"| {version} | `{v['recipe']}` | {v['train_demos']} | {len(v['per_seed'])} | {100 * v['mean']:.0f} +- "
              f"{100 * v['std']:.0f} ({100 * v['ci95_pooled'][0]:.0f}-{100 * v['ci95_pooled'][1]:.0f}) | "
              f"{' / '.join(f'{100 * r:.0f}' for r in v['per_seed'])} | {'met' if v['goal_met'] else 'not met'} |")
    print()


RL_SETTINGS = {("bench_rl" if s == "narrow" else f"bench_rl_{s}"): s for s in bench_rl.SETTINGS}
"""bench_rl.py's results files, one per setting (``--setting``), in the settings' order."""
RUN_COMMANDS = {**{name: f"bench_rl.py --setting {s}" for name, s in RL_SETTINGS.items() if s != "narrow"},
                "bench_rabc_aug_stay_stack": "bench_rabc.py --tasks stack --label aug_stay --conditions "
                                             "plain,rabc_sarm,rabc_gt,expert_only --extra-seeds \"rabc_sarm=3,4,5;rabc_gt=3,4,5\" "
                                             "--out benchmarks/results/bench_rabc_aug_stay_stack.json"}
"""Tables whose results come from another script than ``<name>.py``: the command that makes them."""


def _print_tables():
    for name, fn in (*((name, rl_table) for name in RL_SETTINGS), ("bench_deploy", deploy_table),
                     ("bench_rabc_vision", lambda d: rabc_table(d, "bench_rabc_vision")),
                     ("bench_vision_layout", vision_layout_table),
                     ("bench_policies", policies_table), ("bench_rabc", rabc_table),
                     ("bench_rabc_pick_place", lambda d: rabc_table(d, "bench_rabc_pick_place", rabc_rerun_note("pick_place", d))),
                     ("bench_rabc_stack", lambda d: rabc_table(d, "bench_rabc_stack", rabc_rerun_note("stack", d))),
                     ("bench_rabc_aug_stay", lambda d: rabc_table(d, "bench_rabc_aug_stay", rabc_label_note(
                         d, "trains and reads it since 2026-12-06 (terminal done stage, three photometric copies, "
                            "per-stage minimum stay)"))),
                     ("bench_rabc_aug_stay_stack", lambda d: rabc_table(d, "bench_rabc_aug_stay_stack", rabc_label_note(
                         d, "trains and reads it since 2026-12-06, with six training seeds for RA-BC (SARM) and RA-BC (sim "
                            "progress) (the stack rows of the table above, rerun)", "bench_rabc_aug_stay_stack"))),
                     ("bench_reward_quality", quality_table), ("bench_train_time", train_time_table), ("bench_demo", demo_table), ("bench_rewards", rewards_table), ("bench_sarm", sarm_table), ("bench_data", data_table),
                     ("bench_codecs", codecs_table), ("bench_sim", sim_table)):
        d = load(name)
        if d is None:
            run = RUN_COMMANDS.get(name, f"{name}.py")
            print(f"({name}: no results yet; run python benchmarks/{run})\n")
        else:
            fn(d)


if __name__ == "__main__":
    main()
