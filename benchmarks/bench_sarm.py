"""SARM training and streaming speed: LeRobot 0.6.1's SARM vs ours, side by side in one run.

What is compared (same machine, same process, same batch 8 and 13-frame window):

1. Training steps/s. LeRobot: its own ``SARMConfig`` (single_stage, one camera, 224 px, default
   window 1+8 observed + 4 rewind = 13 frames), ``make_reward_model`` and
   ``make_reward_pre_post_processors`` with the metadata of a real LeRobotDataset (our sim
   episodes exported with lerobot's own writer), fed a collated dict batch exactly as
   ``lerobot_train`` feeds it (images float in [0, 1], (B, T, C, H, W)). One step = preprocessor
   (CLIP ViT-B/32 encodes all 8 x 13 frames + the task text, rewind draws, targets) + forward +
   backward + grad clip + AdamW from its optimizer preset, as ``update_policy`` does. Video decoding
   is left out (it would only add to LeRobot's time). Ours: ``SARM`` (window 9 + max_rewind 4 = 13
   frame tokens) on cached features, two cameras + state; one step = next batch from a DataLoader
   over ``SARMDataset`` (reads the store's feature cache) + loss + backward + grad clip + AdamW.
   Also LeRobot's step with CLIP embeddings precomputed (the preprocessed batch reused): its
   training pipeline cannot do this (the preprocessor always encodes), so it is a lower bound.
2. Streaming reward for one new frame, from pixels. LeRobot: the per-frame path that works
   (``compute_rabc_weights``' loop): preprocessor in eval mode on the 13-frame window, which
   re-encodes every window frame with CLIP, then ``calculate_rewards``. Ours: ``SARM.stream(1,
   encoder=...)``: each step encodes only the new frame of each view (two views) and reuses the
   cached features of the window. Also ours with 8 envs (frames/s over all envs).

Why it is fair: LeRobot's CLIP is built from transformers' default ``CLIPConfig()`` (ViT-B/32,
random weights: no weights can be downloaded here), so the compute is that of the real
checkpoint; its tokenizer is a byte-level stand-in (one text per batch: negligible). faker, which
LeRobot's processor only uses to draw perturbed task strings, is stubbed when not installed. Ours
pays for two cameras where LeRobot sees one. Rounds are interleaved and the best round of each
figure kept, so other load on the machine hits both sides alike.

    python benchmarks/bench_sarm.py [--quick]
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from roboreward.data import EpisodeStore  # noqa: E402
from roboreward.data.cache import cache_embeddings  # noqa: E402
from roboreward.data.generate import Recipe, generate_store  # noqa: E402
from roboreward.data.lerobot_io import export_lerobot  # noqa: E402
from roboreward.encoders.image import make_image_encoder  # noqa: E402
from roboreward.rewards.sarm import SARM, SARMConfig, SARMDataset  # noqa: E402

BATCH = 8
LEROBOT_IMAGE_SIZE = 224  # CLIP ViT-B/32's input; LeRobot's processor resizes to it anyway
OUR_WINDOW, OUR_REWIND = 9, 4  # 13 frame tokens, as LeRobot's 1 + 8 observed + 4 rewind
STATE = "observation.state"


def seconds_per_call(fn, calls: int) -> float:
    """Mean seconds of ``calls`` calls (no warm-up: the slow LeRobot figures warm up once, apart)."""
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def offline_lerobot_sarm() -> bool:
    """Make LeRobot's SARM processor build CLIP offline (random weights, same architecture); returns
    whether faker had to be stubbed."""
    import lerobot.rewards.sarm.processor_sarm as processor_sarm
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    class RandomCLIPModel:
        @staticmethod
        def from_pretrained(name, **kwargs):
            torch.manual_seed(0)
            return CLIPModel(CLIPConfig())  # defaults = ViT-B/32 + 12-layer text transformer, 151M params

    class OfflineCLIPProcessor:
        @staticmethod
        def from_pretrained(name, **kwargs):
            # Byte-level vocabulary, no merges: a longer token sequence than real BPE for the one text
            # encoded per batch; the image processor's defaults are openai/clip-vit-base-patch32's.
            chars = list(bytes_to_unicode().values())
            vocab = {c: i for i, c in enumerate(chars)} | {c + "</w>": i + len(chars) for i, c in enumerate(chars)}
            vocab |= {"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1}
            return CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=CLIPTokenizer(vocab=vocab, merges=[]))

    processor_sarm.CLIPModel, processor_sarm.CLIPProcessor = RandomCLIPModel, OfflineCLIPProcessor
    if processor_sarm.Faker is not None:
        return False

    # faker (lerobot's `sarm` extra) is not installed: stub its random-word source for perturbed tasks.
    class WordsOnly:
        def words(self, nb=3):
            return ["red", "cube", "bowl", "table", "left"][:nb]

    processor_sarm.Faker = WordsOnly
    require = processor_sarm.require_package
    processor_sarm.require_package = lambda name, **kw: None if name == "faker" else require(name, **kw)
    return True


def main():
    args = common.parser(__doc__).parse_args()
    episodes, rounds, lerobot_calls = (1, 1, 1) if args.quick else (4, 3, 2)
    min_seconds = 0.5 if args.quick else 2.0
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_sarm_"))
    store_path, lerobot_path = workdir / "store.zarr", workdir / "lerobot"
    load_before = os.getloadavg()
    phases, clock = {}, time.perf_counter()

    def phase(name: str):
        nonlocal clock
        phases[name] = time.perf_counter() - clock
        clock = time.perf_counter()

    # ---------------------------------------------------------------- data: sim store, feature cache, LeRobot export
    generate_store(store_path, Recipe(task="pick_place", episodes=episodes, image_size=128), progress=False)
    phase("generate_s")
    encoder = make_image_encoder("efficientnet_lite0", image_size=128)
    key = cache_embeddings(store_path, encoder, encoder.cache_key, progress=False)
    phase("cache_s")
    if not (lerobot_path / "meta" / "info.json").exists():
        export_lerobot(store_path, lerobot_path, repo_id="local/bench_sarm", progress=False)
    phase("export_s")
    store = EpisodeStore(store_path)
    cams = store.cameras
    task = store.episodes[0].task

    # ---------------------------------------------------------------- LeRobot's SARM, built as a LeRobot user builds it
    faker_stubbed = offline_lerobot_sarm()
    from lerobot.datasets.lerobot_dataset import LeRobotDatasetMetadata
    from lerobot.rewards import make_reward_model, make_reward_pre_post_processors
    from lerobot.rewards.sarm import SARMConfig as LeRobotSARMConfig

    meta = LeRobotDatasetMetadata("local/bench_sarm", root=lerobot_path)
    lr_cfg = LeRobotSARMConfig(annotation_mode="single_stage", image_key=cams[0], state_key=STATE, device="cpu")
    lr_model = make_reward_model(lr_cfg, dataset_stats=meta.stats, dataset_meta=meta)
    lr_pre, _ = make_reward_pre_post_processors(lr_cfg, dataset_stats=meta.stats, dataset_meta=meta)
    lr_optim_cfg = lr_cfg.get_optimizer_preset()
    lr_optim = lr_optim_cfg.build(lr_model.parameters())
    n_frames_lr = lr_cfg.num_frames
    assert n_frames_lr == OUR_WINDOW + OUR_REWIND, n_frames_lr

    # Pixels for LeRobot: our sim frames upscaled to 224 px, float in [0, 1] (what lerobot_train hands the preprocessor).
    frames = torch.from_numpy(store.array(cams[0])[: min(store.n_frames, 128)]).permute(0, 3, 1, 2).float()
    pool = F.interpolate(frames, size=(LEROBOT_IMAGE_SIZE,) * 2, mode="bilinear", antialias=True) / 255.0
    states = torch.from_numpy(np.asarray(store.array(STATE)[: len(pool)])).float()
    rng = np.random.default_rng(0)

    def lerobot_batch(b: int | None):
        """A collated LeRobot training batch (b samples) or one unbatched sample (b=None)."""
        shape = (b, n_frames_lr) if b else (n_frames_lr,)
        idx = rng.integers(0, store.n_frames, b or 1)
        pick = rng.integers(0, len(pool), shape)
        episode = np.searchsorted(store.episode_ends, idx, side="right")
        batch = {cams[0]: pool[pick], STATE: states[pick], "task": [task] * b if b else task}
        batch["index"] = torch.from_numpy(idx) if b else int(idx[0])
        batch["episode_index"] = torch.from_numpy(episode) if b else int(episode[0])
        return batch

    def lerobot_update(processed):
        loss, _ = lr_model.forward(processed)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(lr_model.parameters(), lr_optim_cfg.grad_clip_norm)
        lr_optim.step()
        lr_optim.zero_grad()

    split = {"preprocess": [], "update": [], "fetch": [], "ours_update": []}
    precomputed = None

    def lerobot_pixel_step():
        nonlocal precomputed
        batch = lerobot_batch(BATCH)
        t0 = time.perf_counter()
        precomputed = lr_pre(batch)
        t1 = time.perf_counter()
        lerobot_update(precomputed)
        split["preprocess"].append(t1 - t0)
        split["update"].append(time.perf_counter() - t1)

    def lerobot_embedding_step():
        lerobot_update(precomputed)  # the last pixel step's CLIP features, reused

    def set_lerobot_mode(train: bool):
        lr_model.train(train)
        for step in lr_pre.steps:
            if hasattr(step, "train"):
                step.train(train)

    def lerobot_stream_frame():
        # compute_rabc_weights' per-frame loop: the window's pixels through the preprocessor, then the model.
        processed = lr_pre(lerobot_batch(None))
        lr_model.calculate_rewards(
            processed["text_features"], processed["video_features"], processed["state_features"], processed["lengths"]
        )

    # ---------------------------------------------------------------- ours: SARM on cached features, two cameras + state
    torch.manual_seed(0)
    cfg = SARMConfig.from_store(store, key, window=OUR_WINDOW, max_rewind=OUR_REWIND, state_key=STATE)
    model = SARM(cfg)
    optim = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=1e-3)
    loader = torch.utils.data.DataLoader(SARMDataset(store, cfg), batch_size=BATCH, shuffle=True, drop_last=True)
    batches = iter(())

    def our_train_step():
        nonlocal batches
        t0 = time.perf_counter()
        batch = next(batches, None)
        if batch is None:  # epoch boundary: a new shuffled pass, as a training loop does
            batches = iter(loader)
            batch = next(batches)
        split["fetch"].append(time.perf_counter() - t0)
        model.train()
        loss = model.loss(batch)["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        optim.zero_grad()
        split["ours_update"].append(time.perf_counter() - t0 - split["fetch"][-1])

    collated = [batch for batch, _ in zip(loader, range(16))]
    n_step = 0

    def our_collated_step():  # like LeRobot's side, which is handed its batch in memory (no video decoding)
        nonlocal n_step
        batch = collated[n_step % len(collated)]
        n_step += 1
        model.train()
        model.loss(batch)["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        optim.zero_grad()

    raw = {cam: np.asarray(store.array(cam)[:64]) for cam in cams}
    raw_state = np.asarray(store.array(STATE)[:64], dtype=np.float32)

    def our_stream(n_envs: int):
        model.eval()
        stream = model.stream(n_envs, encoder=encoder)
        t = 0

        def step():
            nonlocal t
            i = (np.arange(n_envs) + t) % 64
            stream.step({**{cam: raw[cam][i] for cam in cams}, STATE: raw_state[i]}, task)
            t += 1

        return step

    phase("build_s")

    # ---------------------------------------------------------------- timing: warm up once, then interleaved rounds
    # --quick skips the pixel-step warm-up (8 s here): its one timed step also pays AdamW's state allocation.
    set_lerobot_mode(True)
    if not args.quick:
        lerobot_pixel_step()
    set_lerobot_mode(False)
    lerobot_stream_frame()
    for times in split.values():
        times.clear()
    best = {k: 0.0 for k in ("lr_train", "lr_train_emb", "lr_stream", "train", "train_collated", "stream1", "stream8")}
    for _ in range(rounds):
        set_lerobot_mode(True)
        best["lr_train"] = max(best["lr_train"], 1 / seconds_per_call(lerobot_pixel_step, lerobot_calls))
        best["lr_train_emb"] = max(best["lr_train_emb"], 1 / seconds_per_call(lerobot_embedding_step, lerobot_calls))
        set_lerobot_mode(False)
        best["lr_stream"] = max(best["lr_stream"], 1 / seconds_per_call(lerobot_stream_frame, 2 * lerobot_calls))
        best["train"] = max(best["train"], common.rate(our_train_step, 1, min_seconds))
        best["train_collated"] = max(best["train_collated"], common.rate(our_collated_step, 1, min_seconds))
        with torch.inference_mode():
            best["stream1"] = max(best["stream1"], common.rate(our_stream(1), 1, min_seconds))
            best["stream8"] = max(best["stream8"], common.rate(our_stream(8), 8, min_seconds))

    phase("timing_s")

    # ---------------------------------------------------------------- report
    params_lr = sum(p.numel() for p in lr_model.parameters() if p.requires_grad)
    params_ours = sum(p.numel() for p in model.parameters() if p.requires_grad)
    rows = [
        ["train steps/s, batch 8, 13 frames (ours: DataLoader fetch)", best["lr_train"], best["train"], best["train"] / best["lr_train"]],
        ["train steps/s, ours with batches pre-collated (no fetch)", best["lr_train"], best["train_collated"], best["train_collated"] / best["lr_train"]],
        ["train steps/s, LeRobot with CLIP embeddings precomputed*", best["lr_train_emb"], best["train"], best["train"] / best["lr_train_emb"]],
        ["stream frames/s, 1 env, from pixels", best["lr_stream"], best["stream1"], best["stream1"] / best["lr_stream"]],
        ["stream frames/s, 8 envs (ours only)", "-", best["stream8"], "-"],
    ]
    print(
        f"{episodes} episodes, {store.n_frames} frames; LeRobot: 1 camera at {LEROBOT_IMAGE_SIZE} px, CLIP ViT-B/32 every "
        f"step, {params_lr / 1e6:.0f}M trainable; ours: {len(cams)} cameras, cached {key} features + state, "
        f"{params_ours / 1e6:.2f}M trainable; torch threads {torch.get_num_threads()}"
    )
    print(common.table(rows, ["figure", "LeRobot", "ours", "ratio"]))
    print(
        f"LeRobot step split: preprocess (CLIP) {min(split['preprocess']):.2f} s, forward+backward+AdamW "
        f"{min(split['update']):.2f} s; ours: fetch {1e3 * np.median(split['fetch']):.1f} ms, forward+backward+AdamW "
        f"{1e3 * np.median(split['ours_update']):.1f} ms. *not possible in LeRobot's training pipeline (its preprocessor "
        f"always encodes): a lower bound for it. Goals: training >= 100x, streaming >= 25x."
    )
    load_after = os.getloadavg()
    common.write(
        "bench_sarm",
        {
            "quick": args.quick,
            "episodes": episodes,
            "frames": store.n_frames,
            "batch": BATCH,
            "window_frames": n_frames_lr,
            "rounds": rounds,
            "lerobot": {
                "version": __import__("lerobot").__version__,
                "cameras": 1,
                "image_size": LEROBOT_IMAGE_SIZE,
                "annotation_mode": lr_cfg.annotation_mode,
                "trainable_params": params_lr,
                "train_steps_per_s": best["lr_train"],
                "train_s_per_step": 1 / best["lr_train"],
                "train_preprocess_s": min(split["preprocess"]),
                "train_update_s": min(split["update"]),
                "train_steps_per_s_embeddings_precomputed": best["lr_train_emb"],
                "stream_frames_per_s": best["lr_stream"],
                "clip": "transformers CLIPConfig() defaults (ViT-B/32), random weights",
                "faker_stubbed": bool(faker_stubbed),
            },
            "ours": {
                "cameras": len(cams),
                "feature_key": key,
                "window": OUR_WINDOW,
                "max_rewind": OUR_REWIND,
                "state": True,
                "trainable_params": params_ours,
                "train_steps_per_s": best["train"],
                "train_steps_per_s_precollated": best["train_collated"],
                "train_fetch_s_median": float(np.median(split["fetch"])),
                "train_update_s_median": float(np.median(split["ours_update"])),
                "stream_frames_per_s": best["stream1"],
                "stream_frames_per_s_8_envs": best["stream8"],
            },
            "ratio_train": best["train"] / best["lr_train"],
            "ratio_train_precollated": best["train_collated"] / best["lr_train"],
            "ratio_train_vs_precomputed": best["train"] / best["lr_train_emb"],
            "ratio_stream": best["stream1"] / best["lr_stream"],
            "goal_train_ratio": 100,
            "goal_stream_ratio": 25,
            "loadavg_before": load_before,
            "loadavg_after": load_after,
            "phases_s": phases,
        },
        args.out,
    )
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
