"""The visuomotor BC policy: learns a task that only the pixels tell (beats a constant policy),
save/load gives identical actions, its inputs are causal, augmentation runs in training only."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from roboreward.data import Episode, EpisodeStore, FeatureSpec
from roboreward.policies import Policy, PolicyDataset, make_policy
from roboreward.policies.base import policy_class
from roboreward.policies.train import BCTrainConfig, train_bc
from roboreward.training import TrainConfig

SIZE = 32
CAMERAS = ("observation.images.front", "observation.images.wrist")


def store_features(size: int) -> dict[str, FeatureSpec]:
    feats = {cam: FeatureSpec((size, size, 3), "uint8", "rgb") for cam in CAMERAS}
    feats["observation.state"] = FeatureSpec((6,), "float32", "low_dim")
    feats["action"] = FeatureSpec((6,), "float32", "low_dim")
    feats["gt.progress"] = FeatureSpec((), "float32", "target")
    return feats

SMALL = {"channels": [16, 32, 32], "keypoints": 8, "hidden_dim": 64, "n_layers": 2, "horizon": 2, "shift": 2}


def square_episode(rng, length: int) -> Episode:
    """A bright square moves across a dark front camera; the action is its position, the state is
    noise: only the pixels tell the action."""
    front = np.zeros((length, SIZE, SIZE, 3), np.uint8)
    wrist = rng.integers(0, 40, (length, SIZE, SIZE, 3), dtype=np.uint8)
    action = np.zeros((length, 6), np.float32)
    for t in range(length):
        y, x = rng.integers(2, SIZE - 8, 2)
        front[t, y:y + 6, x:x + 6] = 255
        action[t, :2] = (x - 13) / 8.0, (y - 13) / 8.0
    data = {CAMERAS[0]: front, CAMERAS[1]: wrist, "action": action,
            "observation.state": rng.standard_normal((length, 6)).astype(np.float32),
            "gt.progress": np.linspace(0, 1, length, dtype=np.float32)}
    return Episode(data=data, task="follow the square", success=True, quality="expert")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    store = EpisodeStore.create(tmp_path_factory.mktemp("vis") / "sq.zarr", store_features(SIZE), fps=10.0)
    rng = np.random.default_rng(0)
    for _ in range(6):
        store.add_episode(square_episode(rng, 40))
    return store


def test_learns_from_pixels_and_beats_a_constant_policy(store, tmp_path):
    cfg = BCTrainConfig(policy={"type": "vision_bc", **SMALL},
                        train=TrainConfig(steps=250, batch_size=32, lr=2e-3, warmup_steps=10, val_every=1000, ckpt_every=1000),
                        frames_in_memory=True)
    cfg.data.val_fraction = 0.34
    policy = Policy.from_pretrained(train_bc(cfg, store.path, tmp_path / "run", progress=False))
    split = __import__("json").loads((tmp_path / "run" / "split.json").read_text())
    batch = default_collate([*PolicyDataset(store, policy.config, split["val"])])
    pred = policy.predict_chunk(batch)[:, 0, :2]
    target = batch["action"][:, 0, :2]
    constant = (target - torch.tensor(policy.config.action_mean[:2])).abs().mean()
    mae = (pred - target).abs().mean()
    assert mae < 0.5 * constant, (float(mae), float(constant))


def test_save_load_identical_actions_and_train_only_augmentation(store, tmp_path):
    cfg = policy_class("vision_bc").config_class.from_store(store, window=2, frame_gap=3, **SMALL)
    torch.manual_seed(0)
    policy = make_policy(cfg).eval()
    batch = default_collate([PolicyDataset(store, cfg)[i] for i in (0, 7, 50)])
    images = {cam: batch[cam] for cam in cfg.cameras}
    assert images[CAMERAS[0]].shape == (3, 2, SIZE, SIZE, 3) and images[CAMERAS[0]].dtype == torch.uint8
    out = policy.select_action(images, batch["observation.state"])
    loaded = Policy.from_pretrained(policy.save_pretrained(tmp_path / "p"))
    assert torch.equal(loaded.select_action(images, batch["observation.state"]), out)
    assert torch.equal(policy.select_action(images, batch["observation.state"]), out)  # eval: no augmentation
    policy.train()
    torch.manual_seed(1)
    assert not torch.allclose(policy(images, batch["observation.state"]), policy.eval()(images, batch["observation.state"]))


def test_inputs_are_causal(store, tmp_path):
    """Two stores equal up to frame t of an episode and different after it give the same sample at t."""
    rng = np.random.default_rng(3)
    ep = square_episode(rng, 30)
    other = {k: v.copy() for k, v in ep.data.items()}
    t = 12
    for key in (*CAMERAS, "observation.state", "action"):
        other[key][t + 1:] = np.random.default_rng(9).permuted(other[key][t + 1:], axis=0)
    stores = []
    for i, data in enumerate((ep.data, other)):
        s = EpisodeStore.create(tmp_path / f"s{i}.zarr", store_features(SIZE), fps=10.0)
        s.add_episode(Episode(data=data, task=ep.task, success=True, quality="expert"))
        stores.append(s)
    cfg = policy_class("vision_bc").config_class.from_store(stores[0], window=3, frame_gap=2, **SMALL)
    a, b = (PolicyDataset(s, cfg)[t] for s in stores)
    for key in (*CAMERAS, "observation.state"):
        assert torch.equal(a[key], b[key]), key
    torch.manual_seed(0)
    policy = make_policy(cfg).eval()
    one = lambda item: policy.select_action({c: item[c][None] for c in CAMERAS}, item["observation.state"][None])  # noqa: E731
    assert torch.equal(one(a), one(b))
    assert not torch.equal(PolicyDataset(stores[0], cfg)[t + 2][CAMERAS[0]], PolicyDataset(stores[1], cfg)[t + 2][CAMERAS[0]])
