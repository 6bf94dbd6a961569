"""train_reward end to end on a small store with the real (offline) efficientnet_lite0 encoder at
32 px: feature cache, split.json, TensorBoard events, model/ that from_pretrained loads, resume and
its config check, one-line config errors."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from roboreward.config import ConfigError, from_dict, load_config
from roboreward.data import EpisodeStore
from roboreward.data.cache import cache_status
from roboreward.rewards import SARM, RewardModel
from roboreward.rewards.train import RewardTrainConfig, load_split, train_reward
from roboreward.training import TrainError, run_segments

ROOT = Path(__file__).resolve().parents[2]


def tiny_config(**train) -> RewardTrainConfig:
    return from_dict(RewardTrainConfig, {
        "model": {"type": "sarm", "window": 4, "frame_gap": 2, "d_model": 32, "n_heads": 2, "n_layers": 1,
                  "mlp_ratio": 2, "max_rewind": 2, "state_key": "observation.state"},
        "train": {"steps": 12, "batch_size": 8, "lr": 1e-3, "warmup_steps": 2, "val_every": 6, "ckpt_every": 6,
                  "log_every": 3, **train},
        "data": {"image_size": 32, "val_fraction": 0.34, "split_seed": 1, "val_clips": 16},
    })


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    # tests/conftest.py's builder (two 16 px cameras, state, gt.progress, annotations); loaded by path
    # because tests/rewards/conftest.py shadows the module name.
    spec = importlib.util.spec_from_file_location("tests_root_conftest", ROOT / "tests" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    build_store = module.build_store
    path = tmp_path_factory.mktemp("train") / "store.zarr"
    build_store(path, n_episodes=6, lengths=[9, 12, 10, 14, 11, 13])
    return path


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_train_reward_end_to_end_and_resume(small_store, tmp_path, capsys):
    out = tmp_path / "run"
    final = train_reward(tiny_config(), small_store, out, progress=False)
    assert final == out / "model"
    # One printed line per validation (steps 6 and 12), with the figures TensorBoard gets.
    printed = capsys.readouterr().out.splitlines()
    assert not [line for line in printed if line.startswith("note:")]  # annotated: nothing to say
    lines = [line for line in printed if " val " in line]
    assert [line.split("  ")[0] for line in lines] == ["step 6/12", "step 12/12"]
    assert all(" val loss " in line and " sparse.stage_acc " in line and " progress_r " in line for line in lines)
    # The feature cache now exists for the configured encoder.
    store = EpisodeStore(small_store)
    (key, status), = cache_status(store).items()
    assert key.startswith("efficientnet_lite0-") and key.endswith("-32px") and status["done"] == store.n_frames
    # split.json: by episode, disjoint, covering the store; eval reads it back.
    split = json.loads((out / "split.json").read_text())
    train_eps, val_eps = load_split(out)
    assert sorted(train_eps + val_eps) == list(range(6)) and len(val_eps) == 2 and split["feature_key"] == key
    # The final model loads through the generic API and runs on the held-out episodes.
    model = RewardModel.from_pretrained(final)
    assert isinstance(model, SARM) and model.config.feature_key == key
    assert model.config.tasks == sorted({store.episodes[e].task for e in train_eps})
    from roboreward.rewards.features import episode_batch

    pred = model.progress(episode_batch(store, model.config, val_eps))
    assert pred.shape[0] == 2 and torch.isfinite(pred).all()
    # TensorBoard: training scalars and validation metrics (val loss, stage accuracy, progress r).
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/steps_per_s", "val/loss", "val/sparse.stage_acc",
            "val/progress_r", "val/progress_mae"} <= tags, tags

    # Re-running the finished run resumes at its last checkpoint and leaves the weights as they were.
    before = load_file(str(final / "model.safetensors"))
    train_reward(tiny_config(), small_store, out, progress=False)
    after = load_file(str(final / "model.safetensors"))
    assert all(torch.equal(before[k], after[k]) for k in before)
    # A different config is refused in one line, before any work.
    with pytest.raises(TrainError, match=r"different config \(train.lr"):
        train_reward(tiny_config(lr=5e-4), small_store, out, progress=False)


def test_resumed_training_matches_uninterrupted(small_store, tmp_path):
    # Stop a run after 6 of 12 steps (a 6-step run's checkpoint has exactly the state of step 6 except the
    # schedule, so instead interrupt by training 12 steps and deleting everything after step 6).
    a = tmp_path / "a"
    train_reward(tiny_config(), small_store, a, progress=False)
    import shutil

    shutil.rmtree(a / "model")
    shutil.rmtree(a / "checkpoints" / "step_12")
    (a / "checkpoints" / "latest").write_text("step_6\n")
    resumed = train_reward(tiny_config(), small_store, a, progress=False)
    straight = train_reward(tiny_config(), small_store, tmp_path / "b", progress=False)
    wa, wb = load_file(str(resumed / "model.safetensors")), load_file(str(straight / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # It really resumed: the second process ran steps 7..12 only.
    assert run_segments(a) == [[0, 6], [6, 12]] and run_segments(tmp_path / "b") == [[0, 12]]


def test_default_yaml_loads_and_bad_values_are_one_line(tmp_path):
    cfg = load_config(RewardTrainConfig, ROOT / "configs" / "reward" / "sarm.yaml")
    assert cfg.model["type"] == "sarm" and cfg.train.batch_size == 64 and cfg.data.encoder == "efficientnet_lite0"
    for data, pattern in [
        ({"model": {"type": "sarm", "windw": 8}}, "model: unknown key 'windw'; allowed: annotation_mode, cameras, d_model"),
        ({"model": {"type": "sarm", "window": "eight"}}, "model.window: expected int, got 'eight'"),
        ({"model": {"type": "sarm", "window": 7.5}}, "model.window: expected int, got 7.5"),
        ({"model": {"type": "sarm", "cameras": "observation.images.front"}}, "model.cameras: expected a list"),
        ({"model": {"type": "sarm", "dropout": 1.5}}, "dropout must be in"),
        ({"model": {"type": "grm9"}}, "not registered"),
        ({"model": {"type": "sarm", "tasks": ["x"]}}, "model.tasks is read from the dataset"),
        ({"train": {"mixed_precision": "fp8"}}, "mixed_precision 'fp8' is not one of"),
        ({"data": {"val_fraction": 1.5}}, "val_fraction must be in"),
        ({"data": {"augment_copies": -1}}, r"augment_copies must be an int in \[0, 16\]"),
        ({"data": {"augment": {"brightness": [1.4, 0.5]}}}, r"augment.brightness must be \[min, max\] with"),
        ({"data": {"augment": {"brightnes": [0.5, 1.4]}}}, "augment: unknown key 'brightnes'; known: brightness"),
        ({"data": {"augment": {"gamma": 1.2}}}, r"augment.gamma must be \[min, max\], got 1.2"),
        ({"model": {"type": "sarm", "filter_min_stay_frac": 2}}, r"filter_min_stay_frac must be in \[0, 1\]"),
        ({"model": {"type": "sarm", "feature_copies": ["k"]}}, "model.feature_copies is read from the dataset"),
    ]:
        with pytest.raises(ConfigError, match=pattern) as info:
            from_dict(RewardTrainConfig, data)
        assert "\n" not in str(info.value)


def test_store_without_subtask_annotations_gets_one_note(tmp_path, capsys):
    from roboreward.data import Episode

    spec = importlib.util.spec_from_file_location("tests_root_conftest", ROOT / "tests" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    path = tmp_path / "plain.zarr"
    store = EpisodeStore.create(path, module.store_features(16), fps=10.0)
    for i, n in enumerate([8, 9, 10]):
        ep = module.random_episode(i, n)
        store.add_episode(Episode(ep.data, task=ep.task, success=ep.success, quality=ep.quality, annotations={}))
    model = train_reward(tiny_config(steps=2, val_every=0), path, tmp_path / "run", progress=False)
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert len(notes) == 1, notes
    assert "has no sparse subtask annotations, so SARM trains one stage 'task'" in notes[0]
    assert "time fraction of the episode" in notes[0] and "Subtask(name, start, end)" in notes[0]
    assert RewardModel.from_pretrained(model).config.sparse_stages == ["task"]


def test_photometric_copies_are_cached_and_training_draws_clips_from_them(small_store, tmp_path):
    """data.augment_copies caches the store again under per-episode photometric changes (the same
    change for every camera and frame of an episode, a different one per episode and copy), the model
    records the copies it trained on, and its training clips come from the original and the copies."""
    from roboreward.data.cache import cached_features
    from roboreward.encoders.augment import PhotometricAugment
    from roboreward.rewards.sarm import SARMDataset

    config = tiny_config()
    config.data.augment_copies = 2
    final = train_reward(config, small_store, tmp_path / "run", progress=False)
    model = RewardModel.from_pretrained(final)
    store = EpisodeStore(small_store)
    base = model.config.feature_key
    aug = PhotometricAugment()
    assert model.config.feature_copies == [aug.cache_key(base, 1), aug.cache_key(base, 2)]
    status = cache_status(store)
    for copy, key in enumerate(model.config.feature_copies, start=1):
        assert status[key]["done"] == store.n_frames
        attrs = EpisodeStore(small_store).root["features"][key].attrs
        assert attrs["augment"]["copy"] == copy and attrs["augment"]["of"] == base
    # Re-encoding one episode's frames by hand under its drawn change gives the cached copy.
    from roboreward.encoders import encoder_for_cache_key

    encoder = encoder_for_cache_key(base)
    cam = store.cameras[0]
    start, end = store.episode_range(3)
    frames = np.asarray(store.array(cam)[start:end])
    want = encoder(aug.apply(frames, np.repeat(aug.params([3], 2), len(frames), 0))).numpy()
    got = np.asarray(cached_features(store, model.config.feature_copies[1])[cam][start:end], dtype=np.float32)
    np.testing.assert_allclose(got, want, atol=2e-2 * np.abs(want).max())
    original = np.asarray(cached_features(store, base)[cam][start:end], dtype=np.float32)
    assert np.abs(got - original).mean() > 10 * np.abs(got - want).mean()
    # Training clips come from all three caches, with every camera of a clip from the same one.
    data = SARMDataset(store, model.config, [3])
    caches = [cached_features(store, k) for k in [base, *model.config.feature_copies]]
    t = int(np.argmax(data.clips._frames == end - 1))
    seen = set()
    torch.manual_seed(0)
    for _ in range(30):
        item = data[t]
        which = [[i for i, c in enumerate(caches)
                  if np.allclose(item[f"features.{k}"][-1].numpy(), np.asarray(c[k][end - 1], dtype=np.float32))]
                 for k in store.cameras]
        assert len(which[0]) == 1 and all(w == which[0] for w in which)
        seen.add(which[0][0])
    assert seen == {0, 1, 2}


def test_photometric_copies_for_a_model_that_would_ignore_them_are_refused_before_caching(small_store, tmp_path):
    """Perceptual rewards fit on the original cache only: data.augment_copies for them is one line,
    before any encoding (the store gains no cache)."""
    store_copy = tmp_path / "s.zarr"
    import shutil

    shutil.copytree(small_store, store_copy)
    before = set(cache_status(EpisodeStore(store_copy)))
    config = from_dict(RewardTrainConfig, {"model": {"type": "perceptual"}, "data": {"image_size": 32, "augment_copies": 1}})
    with pytest.raises(ConfigError, match="reward model 'perceptual' does not train on photometric feature copies"):
        train_reward(config, store_copy, tmp_path / "run", progress=False)
    assert set(cache_status(EpisodeStore(store_copy))) == before


def test_grm_trains_on_photometric_copies_and_adapts_on_a_store_without_them(small_store, tmp_path):
    """GRM's training pairs read the before/after frames under one cache (the original or a copy)
    and the references under their own draw; adapting the model on a store that has no copies
    reads that store's frames as they are."""
    import shutil

    from roboreward.data.cache import cached_features
    from roboreward.rewards.grm import GRMPairs

    config = from_dict(RewardTrainConfig, {
        "model": {"type": "grm", "d_model": 32, "n_heads": 2, "n_layers": 1, "hop_bins": 11, "pairs_per_episode": 50,
                  "state_key": "observation.state"},
        "train": {"steps": 6, "batch_size": 8, "val_every": 6, "ckpt_every": 6, "log_every": 3},
        "data": {"image_size": 32, "val_fraction": 0.34, "split_seed": 1, "val_clips": 16, "augment_copies": 1},
    })
    model = RewardModel.from_pretrained(train_reward(config, small_store, tmp_path / "run", progress=False))
    store = EpisodeStore(small_store)
    assert len(model.config.feature_copies) == 1
    cam = model.config.cameras[0]
    caches = [np.asarray(cached_features(store, k)[cam][: store.n_frames], np.float32)
              for k in [model.config.feature_key, *model.config.feature_copies]]
    pairs = GRMPairs(store, model.config, [0, 1, 2])
    seen = set()
    for i in range(30):
        item = pairs[i]
        frames = {}
        for role in ("start", "goal", "before", "after"):
            feat = item[f"{role}.features.{cam}"].numpy()
            # the caches holding this feature (as some frame's row)
            frames[role] = {c for c, cache in enumerate(caches) if (cache == feat).all(axis=1).any()}
            assert frames[role], role
        assert frames["before"] & frames["after"]  # the pair shares one cache
        seen |= {min(frames["before"]), min(frames["start"])}
    assert seen == {0, 1}  # both the original and the copy are read
    # Adapt on a copy of the store without the photometric caches.
    bare = tmp_path / "bare.zarr"
    shutil.copytree(small_store, bare)
    shutil.rmtree(bare / "features" / model.config.feature_copies[0])
    adapted = RewardModel.from_pretrained(model.adapt(EpisodeStore(bare), 0, tmp_path / "adapted", steps=3, progress=False))
    assert adapted.config.tasks == model.config.tasks
