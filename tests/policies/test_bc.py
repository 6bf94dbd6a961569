"""BC policy: dataset chunks and padding, weighted loss, config checks, save/load, a tiny
training run through the shared ``roboreward.training.fit`` whose loss falls."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from policy_toy import CAMERA, FEATURE_KEY, build_policy_store
from torch.utils.data import default_collate

from roboreward.config import ConfigError
from roboreward.errors import RoborewardError
from roboreward.policies import BCConfig, BCDataset, BCPolicy, Policy, make_policy
from roboreward.policies.rabc import weighted_mean, weights_for_store
from roboreward.training import TrainConfig, fit

H = 4


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return build_policy_store(tmp_path_factory.mktemp("bc") / "toy.zarr")


@pytest.fixture(scope="module")
def config(store):
    return BCConfig.from_store(store, FEATURE_KEY, horizon=H, window=2, hidden_dim=64, n_layers=2)


def test_config_from_store_and_checks(store, config):
    assert config.cameras == [CAMERA] and config.feature_dim == 3 and config.state_dim == 6
    actions = store.array("action")[:].astype(np.float64)
    np.testing.assert_allclose(config.action_mean, actions.mean(0), atol=1e-6)
    with pytest.raises(ConfigError, match="state_mean is empty; build the config with BCConfig.from_store"):
        BCPolicy(BCConfig())
    with pytest.raises(ConfigError, match="loss 'l3' is not one of"):
        BCConfig(loss="l3")
    with pytest.raises(ConfigError, match="feature_key, cameras and feature_dim go together"):
        BCConfig(feature_key="x")
    # Overrides through from_store: one line naming the key and the allowed ones, not a TypeError.
    with pytest.raises(ConfigError, match=r"policy: unknown key 'hiden_dim'; allowed: action_key, cameras, dropout, "):
        BCConfig.from_store(store, FEATURE_KEY, hiden_dim=8)
    with pytest.raises(ConfigError, match=r"policy.action_mean is read from the dataset; remove it"):
        BCConfig.from_store(store, FEATURE_KEY, action_mean=[0.0] * 6)
    with pytest.raises(ConfigError, match=r"policy.horizon: expected int, got 'ten'"):
        BCConfig.from_store(store, FEATURE_KEY, horizon="ten")


def test_dataset_chunks_pad_at_episode_end(store, config):
    weights = weights_for_store(store, "gt.progress", horizon=H)
    ds = BCDataset(store, config, episodes=[1, 2], weights=weights)
    assert len(ds) == store.episodes[1].length + store.episodes[2].length
    actions = store.array("action")[:]
    start, end = store.episode_range(1)
    item = ds[end - start - 2]  # second-to-last frame of episode 1
    assert item["index"] == end - 2 and item["episode_index"] == 1
    np.testing.assert_array_equal(item["action"].numpy(), actions[[end - 2, end - 1, end - 1, end - 1]])
    assert item["action_is_pad"].tolist() == [False, False, True, True]
    assert item["weight"].item() == pytest.approx(weights[end - 2])
    assert item[f"features.{CAMERA}"].shape == (2, 3) and item["observation.state"].shape == (2, 6)
    first = ds[0]  # window before the episode start repeats the first frame
    np.testing.assert_array_equal(first["observation.state"][0].numpy(), first["observation.state"][1].numpy())
    assert BCDataset(store, config)[0]["weight"].item() == 1.0


def test_loss_uses_weights_and_ignores_padding(store, config):
    torch.manual_seed(0)
    policy = BCPolicy(config)
    batch = default_collate([BCDataset(store, config)[i] for i in (0, 5, 11, 20)])
    batch["weight"] = torch.tensor([1.0, 0.0, 0.5, 0.25])
    out = policy.loss(batch)
    # Per-sample L1 recomputed by hand over the unpadded steps.
    pred = policy({CAMERA: batch[f"features.{CAMERA}"]}, batch["observation.state"])
    target = (batch["action"] - policy.action_mean) / policy.action_std
    valid = ~batch["action_is_pad"]
    per = torch.stack([(pred[b] - target[b]).abs()[valid[b]].mean() for b in range(4)])
    assert out["loss"].item() == pytest.approx(weighted_mean(per, batch["weight"]).item(), rel=1e-5)
    del batch["weight"]
    assert policy.loss(batch)["loss"].item() == pytest.approx(per.mean().item(), rel=1e-5)


def test_fit_loss_falls_and_checkpoint_round_trip(store, config, tmp_path):
    torch.manual_seed(0)
    policy = make_policy(config)
    dataset = BCDataset(store, config, weights=weights_for_store(store, "gt.progress", horizon=H))
    batch = default_collate([dataset[i] for i in range(len(dataset))])

    def full_loss(model) -> float:
        with torch.no_grad():
            return model.loss(batch)["loss"].item()

    before = full_loss(policy.eval())
    train = TrainConfig(steps=40, batch_size=16, lr=3e-3, warmup_steps=2, ckpt_every=40, log_every=10, val_every=0)
    final = fit(policy, dataset, train, tmp_path / "run", progress=False)
    loaded = Policy.from_pretrained(final)
    assert isinstance(loaded, BCPolicy) and loaded.config == config
    after = full_loss(loaded)
    assert after < 0.6 * before, (before, after)

    state = batch["observation.state"][:3]
    feats = {CAMERA: batch[f"features.{CAMERA}"][:3]}
    chunk = loaded.select_action(feats, state)
    assert chunk.shape == (3, H, 6)
    torch.testing.assert_close(chunk, policy.eval().select_action(feats, state))
    with pytest.raises(RoborewardError, match=r"needs inputs \(B, window=2, dim\), got \(1, 1, 9\)"):
        loaded.select_action({CAMERA: feats[CAMERA][0, -1]}, state[0, -1])  # one frame for a 2-frame window


def test_state_only_policy(store):
    config = BCConfig.from_store(store, None, horizon=2, hidden_dim=16, n_layers=1, loss="mse")
    assert config.cameras == [] and config.feature_key is None
    item = BCDataset(store, config)[3]
    assert not any(k.startswith("features.") for k in item)
    policy = BCPolicy(config)
    out = policy.loss(default_collate([item, item]))
    assert torch.isfinite(out["loss"])
    single = policy.eval().select_action(None, item["observation.state"][0])  # window 1, unbatched
    assert single.shape == (2, 6)
    torch.testing.assert_close(single, policy.select_action(None, item["observation.state"][None])[0])


@pytest.mark.parametrize("policy, message", [
    ({"hiden_dim": 32}, "policy: unknown key 'hiden_dim'; allowed: action_key, cameras, dropout, env_state_key, "
                        "frame_gap, hidden_dim, horizon, loss, n_layers, state_key, type, window"),
    ({"hidden_dim": "big"}, "policy.hidden_dim: expected int, got 'big'"),
    ({"horizon": 2.5}, "policy.horizon: expected int, got 2.5"),
    ({"loss": True}, "policy.loss: expected a string, got True"),
    ({"cameras": "observation.images.front"}, "policy.cameras: expected a list, got 'observation.images.front'"),
    ({"dropout": 2.0}, "policy: dropout must be in [0, 1), got 2.0"),
    ({"state_std": [1, 1]}, "policy.state_std is read from the dataset; remove it"),
    ({"type": "sarm"}, "policy type 'sarm' is not registered"),
])
def test_bad_policy_section_is_one_config_error(policy, message):
    from roboreward.config import from_dict
    from roboreward.policies.train import BCTrainConfig

    with pytest.raises(ConfigError) as info:
        from_dict(BCTrainConfig, {"policy": {"type": "bc", **policy}}, "bc.yaml")
    assert message in str(info.value) and "\n" not in str(info.value)


def test_policy_section_values_take_their_declared_types():
    from roboreward.config import from_dict
    from roboreward.policies.train import BCTrainConfig

    # YAML reads 1e-1 as a string and 4.0 as a float: both become what the field declares.
    config = from_dict(BCTrainConfig, {"policy": {"type": "bc", "dropout": "1e-1", "horizon": 4.0, "cameras": []}})
    assert config.policy == {"type": "bc", "dropout": 0.1, "horizon": 4, "cameras": []}
    assert type(config.policy["horizon"]) is int


def _train_tiny(store, out, seed: int):
    from roboreward.config import from_dict
    from roboreward.policies.train import BCTrainConfig, train_bc

    config = from_dict(BCTrainConfig, {
        "policy": {"type": "bc", "cameras": [], "horizon": 2, "hidden_dim": 16, "n_layers": 1},
        "train": {"steps": 3, "batch_size": 8, "warmup_steps": 1, "val_every": 0, "ckpt_every": 3, "seed": seed},
        "data": {"val_fraction": 0.25, "val_clips": 8},
    })
    return train_bc(config, store.path, out, progress=False)


def test_bc_train_is_reproducible_from_train_seed(store, tmp_path, capsys):
    from safetensors.torch import load_file

    torch.rand(3)  # the global RNG's state before a run must not matter
    a = load_file(str(_train_tiny(store, tmp_path / "a", seed=1) / "model.safetensors"))
    torch.rand(5)
    b = load_file(str(_train_tiny(store, tmp_path / "b", seed=1) / "model.safetensors"))
    c = load_file(str(_train_tiny(store, tmp_path / "c", seed=2) / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["net.0.weight"], c["net.0.weight"])
    # The held-out episode's validation is printed once per validation (here only at the end).
    lines = [line for line in capsys.readouterr().out.splitlines() if " val " in line]
    assert len(lines) == 3 and all(line.startswith("step 3/3  val loss ") and " action_mae " in line for line in lines)
