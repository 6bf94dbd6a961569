"""Every registered reward model through the one contract consumers rely on: built from a store,
trained by the fit step `reward train` calls (its loss falls), saved and loaded with identical
outputs, offline progress == stream on the same frames (with a reset between episodes), and
evaluated by `reward eval`'s code. A new model passes this by being registered; SMALL only
shrinks it for the test."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sarm_toy import FEATURE_KEY, build_toy_store
from torch.utils.data import default_collate

from roboreward.eval.evaluate import evaluate_reward
from roboreward.rewards import REWARD_MODELS, RewardModel, make_reward_model
from roboreward.training import TrainConfig

SMALL = {
    "sarm": dict(window=4, frame_gap=2, d_model=32, n_heads=2, n_layers=1, mlp_ratio=2, dropout=0.0, max_rewind=2,
                 state_key="observation.state"),
    "time_regression": dict(hidden=32, layers=1, dropout=0.0, state_key="observation.state"),
    "success_classifier": dict(hidden=32, layers=1, dropout=0.0),
    "perceptual": dict(n_steps=3, n_features=8, demos=4, smooth_frames=3.0),  # the stream keeps the smoothing state
    "grm": dict(d_model=32, n_heads=2, n_layers=1, dropout=0.0, hop_bins=11, pairs_per_episode=100, incremental_gap=3,
                state_key="observation.state"),
}
TRAIN, VAL = [0, 1, 2, 3, 4, 5], [6, 7]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return build_toy_store(tmp_path_factory.mktemp("contract") / "toy.zarr", success=[1, 1, 0, 1, 1, 0, 1, 0])


def _gradient(cls) -> bool:
    return cls.trained_by_gradient()


def _quality(model: RewardModel, cls, store, config) -> float:
    """What the fit step must improve: held-out loss for a model trained by gradient descent, else
    the mean |progress - gt.progress| on the held-out episodes."""
    if not _gradient(cls):
        batch = cls.episode_batch(store, config, VAL)
        pred = model.eval().progress(batch)
        truth = [np.asarray(store.array("gt.progress")[slice(*store.episode_range(e))]) for e in VAL]
        return float(np.mean([np.abs(pred[i, : len(t)].numpy() - t).mean() for i, t in enumerate(truth)]))
    return _eval_loss(model, cls, store, config)


def _eval_loss(model: RewardModel, cls, store, config) -> float:
    data = cls.training_samples(store, config, VAL)
    batch = default_collate([data[i] for i in range(0, len(data), max(1, len(data) // 64))])
    model.eval()
    with torch.no_grad():
        return float(model.loss(batch)["loss"])


@pytest.mark.parametrize("name", sorted(REWARD_MODELS))
def test_reward_model_contract(name, store, tmp_path):
    cls = REWARD_MODELS[name]
    config = cls.config_class.from_store(store, FEATURE_KEY, episodes=TRAIN, **SMALL.get(name, {}))
    torch.manual_seed(0)
    before = _quality(make_reward_model(config), cls, store, config)
    train = TrainConfig(steps=150, batch_size=32, lr=3e-3, warmup_steps=5, val_every=1000, ckpt_every=1000, log_every=1000, seed=0)
    folder = cls.fit_store(config, store, TRAIN, train, tmp_path / "run", progress=False)
    model = RewardModel.from_pretrained(folder)
    assert type(model) is cls
    after = _quality(model, cls, store, config)
    assert after < 0.8 * before, f"{name}: held-out {'loss' if _gradient(cls) else 'progress error'} {before:.4f} -> {after:.4f}"

    # Save / load: identical outputs.
    batch = cls.episode_batch(store, model.config, [6, 4])
    ref = model.progress(batch)
    assert ref.shape == (2, int(batch["lengths"].max())) and float(ref.min()) >= 0.0 and float(ref.max()) <= 1.0
    again = RewardModel.from_pretrained(model.save_pretrained(tmp_path / "copy"))
    assert torch.equal(again.progress(batch), ref)

    # Offline == stream over two envs; env 1 resets after its shorter episode and starts episode 7.
    lengths = batch["lengths"].tolist()
    follow = cls.episode_batch(store, model.config, [7])
    stream = model.stream(2)
    got: dict[int, list] = {0: [], 1: [], 2: []}
    for t in range(lengths[0]):
        source = [(0, batch, 0, t), (1, batch, 1, t) if t < lengths[1] else (2, follow, 0, t - lengths[1])]
        if t == lengths[1]:
            stream.reset(1)
        obs = {}
        for _, b, row, frame in source:
            for key, value in b.items():
                if torch.is_tensor(value) and key != "lengths":
                    obs.setdefault(key, []).append(value[row, frame])
        values = stream.step({k: torch.stack(v) for k, v in obs.items()}, [b["task"][row] for _, b, row, _ in source])
        for env, (slot, *_rest) in enumerate(source):
            got[slot].append(values[env])
    torch.testing.assert_close(torch.stack(got[0]), ref[0, : lengths[0]], rtol=0, atol=1e-5)
    torch.testing.assert_close(torch.stack(got[1]), ref[1, : lengths[1]], rtol=0, atol=1e-5)
    n_follow = len(got[2])
    torch.testing.assert_close(torch.stack(got[2]), model.progress(follow)[0, :n_follow], rtol=0, atol=1e-5)

    # A subset of envs steps alone (SB3's auto-reset feeds one env's first frame by itself): env 1
    # advances on every other step only, and each env still reads its own episode's progress.
    stream, seen = model.stream(2), {0: [], 1: []}
    k = 0
    for t in range(lengths[0]):
        ids = [0, 1] if t % 2 == 0 and k < lengths[1] else [0]
        rows = [(0, t)] + ([(1, k)] if len(ids) == 2 else [])
        obs = {key: torch.stack([value[row, frame] for row, frame in rows]) for key, value in batch.items()
               if torch.is_tensor(value) and key != "lengths"}
        values = stream.step(obs, [batch["task"][row] for row, _ in rows], envs=ids)
        assert values.shape == (len(ids),)
        for env, value in zip(ids, values):
            seen[env].append(value)
        k += len(ids) == 2
    torch.testing.assert_close(torch.stack(seen[0]), ref[0, : lengths[0]], rtol=0, atol=1e-5)
    torch.testing.assert_close(torch.stack(seen[1]), ref[1, :k], rtol=0, atol=1e-5)

    # Evaluation: the figures `reward eval` writes.
    metrics = evaluate_reward(model, store.path, tmp_path / "eval", episodes=TRAIN + VAL, videos=0, plots=1)
    assert np.isfinite(metrics["voc"]) and np.isfinite(metrics["auroc"])
    assert metrics["counts"]["auroc"] == {"n_success": 5, "n_failure": 3}
