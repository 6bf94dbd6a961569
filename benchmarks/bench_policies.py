"""Training step time of LeRobot's ACT and Diffusion Policy: trained here (zarr store, per-sample
RA-BC weights) vs LeRobot's own training step (LeRobotDataset with video decoding, its
preprocessor, ``update_policy``), at batch 8 on the same episodes, same machine, same run.

What one step is, on each side:
- LeRobot: next batch from a DataLoader over ``LeRobotDataset`` (the same episodes exported with
  LeRobot's writer; frames decoded from its videos with pyav, ``delta_timestamps`` from the policy
  config as ``lerobot-train`` resolves them) + its preprocessor + ``lerobot_train.update_policy``
  (forward, backward, grad clip, the policy's optimizer preset). It cannot weight ACT or Diffusion
  samples (their losses are reduced inside forward), so it trains unweighted.
- Ours: next batch from a DataLoader over ``PolicyDataset`` (the zarr store) + ``loss`` with RA-BC
  weights from the simulator's progress + backward + grad clip + AdamW.
Both build the policy from the same LeRobot config (LeRobot's default sizes; ``--quick``: small
ones) with ``pretrained_backbone_weights=None`` (no download here), and both DataLoaders use
``num_workers=0`` so the figure is the step's own cost. Rounds alternate; the best round is kept.

    python benchmarks/bench_policies.py [--quick]
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from roboreward.data import EpisodeStore  # noqa: E402
from roboreward.data.generate import Recipe, generate_store  # noqa: E402
from roboreward.data.lerobot_io import export_lerobot  # noqa: E402
from roboreward.policies import PolicyDataset, make_policy  # noqa: E402
from roboreward.policies.base import policy_class  # noqa: E402
from roboreward.policies.rabc import weights_for_store  # noqa: E402

BATCH = 8
SMALL = {
    "act": {"chunk_size": 20, "n_action_steps": 10, "dim_model": 64, "n_heads": 2, "dim_feedforward": 128,
            "n_encoder_layers": 1, "n_vae_encoder_layers": 1},
    "diffusion": {"horizon": 16, "n_action_steps": 8, "down_dims": [32, 64], "diffusion_step_embed_dim": 32},
}


def endless(loader):
    while True:
        yield from loader


def ours_step_fn(kind, store, lerobot_fields):
    cfg = policy_class(kind).config_class.from_store(store, lerobot=lerobot_fields)
    torch.manual_seed(0)
    policy = make_policy(cfg).train()
    weights = weights_for_store(store, "gt.progress", cfg.horizon)
    data = PolicyDataset(store, cfg, weights=weights)
    batches = endless(torch.utils.data.DataLoader(data, batch_size=BATCH, shuffle=True, num_workers=0, drop_last=True))
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-4)

    def step():
        batch = next(batches)
        loss = policy.loss(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 10.0)
        opt.step()
    return step, sum(p.numel() for p in policy.parameters())


def lerobot_step_fn(kind, root, lerobot_fields):
    from accelerate import Accelerator
    from lerobot.configs.types import FeatureType
    from lerobot.datasets import LeRobotDataset
    from lerobot.datasets.factory import resolve_delta_timestamps
    from lerobot.utils.feature_utils import dataset_to_policy_features
    from lerobot.policies.factory import get_policy_class, make_pre_post_processors
    from lerobot.scripts.lerobot_train import update_policy
    from lerobot.utils.logging_utils import AverageMeter, MetricsTracker

    from roboreward.policies.lerobot.configuration_lerobot import lerobot_classes

    cfg_cls, _ = lerobot_classes(kind)
    meta_ds = LeRobotDataset("local/bench", root=root, video_backend="pyav")
    features = dataset_to_policy_features(meta_ds.meta.features)
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in lerobot_fields.items()}
    cfg = cfg_cls(input_features={k: f for k, f in features.items() if f.type is not FeatureType.ACTION},
                  output_features={k: f for k, f in features.items() if f.type is FeatureType.ACTION},
                  device="cpu", pretrained_backbone_weights=None, **fields)
    dataset = LeRobotDataset("local/bench", root=root, video_backend="pyav",
                             delta_timestamps=resolve_delta_timestamps(cfg, meta_ds.meta))
    torch.manual_seed(0)
    policy = get_policy_class(kind)(cfg).train()
    pre, _ = make_pre_post_processors(cfg, dataset_stats=dataset.meta.stats)
    preset = cfg.get_optimizer_preset()
    optimizer = preset.build(policy.get_optim_params())
    accelerator = Accelerator(cpu=True)
    metrics = MetricsTracker(BATCH, dataset.num_frames, dataset.num_episodes,
                             {"loss": AverageMeter("loss"), "grad_norm": AverageMeter("grdn"),
                              "lr": AverageMeter("lr"), "update_s": AverageMeter("updt_s")})
    batches = endless(torch.utils.data.DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=0, drop_last=True))

    def step():
        batch = pre(next(batches))
        update_policy(metrics, policy, batch, optimizer, preset.grad_clip_norm, accelerator)
    return step, sum(p.numel() for p in policy.parameters())


def timed(step, n):
    step()  # warm-up (first batch, lazy init)
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    return (time.perf_counter() - t0) / n


def main():
    p = common.parser(__doc__)
    p.add_argument("--kinds", default="act,diffusion")
    args = p.parse_args()
    quick = args.quick
    episodes, size, steps, rounds = (3, 64, 3, 1) if quick else (10, 96, 10, 2)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_policies_"))
    work.mkdir(parents=True, exist_ok=True)
    store_path, root = work / f"pp_{size}_{episodes}.zarr", work / f"pp_{size}_{episodes}_lerobot"
    if not (store_path / "zarr.json").is_file():
        generate_store(store_path, Recipe(task="pick_place", episodes=episodes, mix={"expert": 0.6, "failure": 0.4},
                                          image_size=size), workers=1, progress=False)
    if not (root / "meta" / "info.json").is_file():
        shutil.rmtree(root, ignore_errors=True)
        export_lerobot(store_path, root, repo_id="local/bench", progress=False)
    store = EpisodeStore(store_path)
    rows, record = [], {"quick": quick, "batch": BATCH, "episodes": episodes, "image_size": size,
                        "frames": store.n_frames, "steps_timed": steps, "policies": {}}
    for kind in args.kinds.split(","):
        fields = SMALL[kind] if quick else {}
        ours, n_ours = ours_step_fn(kind, store, fields)
        theirs, n_theirs = lerobot_step_fn(kind, root, fields)
        best = {"ours": float("inf"), "lerobot": float("inf")}
        for _ in range(rounds):
            best["lerobot"] = min(best["lerobot"], timed(theirs, steps))
            best["ours"] = min(best["ours"], timed(ours, steps))
        record["policies"][kind] = {"ours_s_per_step": best["ours"], "lerobot_s_per_step": best["lerobot"],
                                    "speedup": best["lerobot"] / best["ours"], "parameters": n_ours,
                                    "parameters_lerobot": n_theirs, "lerobot_fields": fields or "LeRobot defaults"}
        rows.append([kind, n_ours, best["lerobot"], best["ours"], best["lerobot"] / best["ours"]])
    print(common.table(rows, ["policy", "params", "LeRobot s/step", "ours s/step (RA-BC)", "ratio"]))
    common.write("bench_policies", record, args.out)
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
