"""LeRobot's own ACT and Diffusion Policy trained here with per-sample RA-BC weights: the weights
reach the loss (a weight-0 sample gets no gradient), uniform weights give LeRobot's own loss, the
loss falls, the saved folder is LeRobot's (LeRobot's from_pretrained and its processors act
identically to ours), and sim eval rolls them out."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from roboreward.policies import Policy, PolicyDataset, make_policy
from roboreward.policies.base import policy_class
from roboreward.policies.train import BCTrainConfig, train_bc
from roboreward.training import TrainConfig

SMALL = {
    "act": {"chunk_size": 6, "n_action_steps": 3, "dim_model": 32, "n_heads": 2, "dim_feedforward": 64,
            "n_encoder_layers": 1, "n_vae_encoder_layers": 1, "latent_dim": 8},
    "diffusion": {"n_obs_steps": 2, "horizon": 8, "n_action_steps": 4, "down_dims": [16, 32],
                  "spatial_softmax_num_keypoints": 8, "diffusion_step_embed_dim": 16, "num_inference_steps": 4,
                  "use_group_norm": True, "n_groups": 4, "do_mask_loss_for_padding": True},
}
KINDS = sorted(SMALL)


@pytest.fixture(scope="module")
def store(tmp_path_factory, make_store):
    store, _ = make_store(tmp_path_factory.mktemp("lr") / "s.zarr", n_episodes=3, image_size=64, lengths=[14, 12, 16])
    return store


def build(kind, store, seed=0):
    cfg = policy_class(kind).config_class.from_store(store, lerobot=SMALL[kind])
    torch.manual_seed(seed)
    return make_policy(cfg), cfg


def batch_of(store, cfg, frames, weights=None):
    data = PolicyDataset(store, cfg, weights=weights)
    return default_collate([data[i] for i in frames])


@pytest.mark.parametrize("kind", KINDS)
def test_weight_zero_sample_gets_no_gradient(kind, store):
    policy, cfg = build(kind, store)
    policy.train()
    batch = batch_of(store, cfg, [0, 5, 13, 20])
    normed = policy._normalized(batch)
    leaves = {k: v.clone().requires_grad_(True) for k, v in normed.items() if v.is_floating_point() and k != "action"}
    weight = torch.tensor([1.0, 0.0, 2.0, 1.0])
    torch.manual_seed(1)
    _, loss, _ = policy.weighted_loss({**normed, **leaves}, weight)
    loss.backward()
    for key, leaf in leaves.items():
        grad = leaf.grad.flatten(1).abs().sum(1)
        assert grad[1] == 0.0, (key, grad)
        assert (grad[[0, 2, 3]] > 0).all(), (key, grad)


@pytest.mark.parametrize("kind", KINDS)
def test_uniform_weights_give_lerobots_own_loss(kind, store):
    policy, cfg = build(kind, store)
    policy.train()
    batch = batch_of(store, cfg, [2, 3, 4, 5])  # early frames: no padded actions at the end
    normed = policy._normalized(batch)
    assert not normed["action_is_pad"][:, -1].any()
    torch.manual_seed(3)
    ours = policy.weighted_loss(normed, torch.ones(4))[1]
    torch.manual_seed(3)
    theirs = policy.inner.forward(normed)[0]
    assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-6), (ours, theirs)
    # And the weights change it: doubling one sample's weight moves the loss.
    torch.manual_seed(3)
    other = policy.weighted_loss(normed, torch.tensor([4.0, 1.0, 1.0, 1.0]))[1]
    assert not torch.allclose(other, ours)


@pytest.mark.parametrize("kind", KINDS)
def test_loss_falls(kind, store):
    policy, cfg = build(kind, store)
    policy.train()
    batch = batch_of(store, cfg, list(range(0, 40, 5)))
    # The ResNet-18 image backbone is held fixed: its backward was 3/4 of each step's time on 2
    # cores, and the weighted loss reaching the rest of the model is what this test is about.
    backbone = [p for name, p in policy.named_parameters() if ".backbone." in name]
    assert backbone and len(backbone) < len(list(policy.parameters()))
    for p in backbone:
        p.requires_grad_(False)
    opt = torch.optim.Adam([p for p in policy.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for step in range(60):
        torch.manual_seed(step % 4)
        out = policy.loss(batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(float(out["loss"].detach()))
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses


@pytest.mark.parametrize("kind", KINDS)
def test_saved_folder_is_lerobots(kind, store, tmp_path):
    from lerobot.policies.factory import get_policy_class, make_pre_post_processors

    cfg = BCTrainConfig(policy={"type": kind, "lerobot": SMALL[kind]},
                        train=TrainConfig(steps=4, batch_size=4, warmup_steps=1, val_every=100, ckpt_every=2))
    model_dir = train_bc(cfg, store.path, tmp_path / "run", progress=False)
    ours = Policy.from_pretrained(model_dir)
    theirs = get_policy_class(kind).from_pretrained(str(model_dir)).eval()
    pre, post = make_pre_post_processors(theirs.config, pretrained_path=str(model_dir))
    for a, b in zip(ours.inner.state_dict().values(), theirs.state_dict().values()):
        assert torch.equal(a, b)
    # One observation window through LeRobot's own pipeline and through ours: the same chunk.
    item = batch_of(store, ours.config, [6, 9])
    images = {cam: item[cam] for cam in ours.config.cameras}
    torch.manual_seed(7)
    mine = ours.select_action(images, item["observation.state"])
    obs = ours.lerobot_batch(images, item["observation.state"])
    torch.manual_seed(7)
    chunk = theirs.predict_action_chunk({k: v for k, v in pre(obs).items() if torch.is_tensor(v)})
    assert torch.allclose(mine, post(chunk), atol=1e-5)
    assert mine.shape == (2, ours.execute_horizon, 6)
    # A folder written by LeRobot alone (no roboreward_policy.json) loads here with the same actions.
    bare = tmp_path / "bare"
    shutil.copytree(model_dir, bare)
    (bare / "roboreward_policy.json").unlink()
    again = Policy.from_pretrained(bare)
    assert again.config.cameras == ours.config.cameras and again.config.horizon == ours.config.horizon
    torch.manual_seed(7)
    assert torch.allclose(again.select_action(images, item["observation.state"]), mine, atol=1e-5)


def test_checkpoints_resume_exactly(store, tmp_path):
    """The shared loop's checkpoints hold LeRobot's files, and a run cut back to its step-2
    checkpoint (as a kill after it leaves it) resumes to the same weights as an uninterrupted run."""
    from safetensors.torch import load_file

    from roboreward.training import run_segments

    cfg = BCTrainConfig(policy={"type": "act", "lerobot": SMALL["act"]},
                        train=TrainConfig(steps=4, batch_size=4, warmup_steps=1, val_every=2, ckpt_every=2))
    whole = train_bc(cfg, store.path, tmp_path / "whole", progress=False)
    cut = tmp_path / "cut"
    train_bc(cfg, store.path, cut, progress=False)
    assert (cut / "checkpoints" / "step_4" / "policy_preprocessor.json").is_file()
    shutil.rmtree(cut / "checkpoints" / "step_4")
    shutil.rmtree(cut / "model")
    (cut / "checkpoints" / "latest").write_text("step_2")
    resumed = train_bc(cfg, store.path, cut, progress=False)
    assert run_segments(cut) == [[0, 2], [2, 4]]
    a, b = load_file(str(whole / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_sim_eval_runs_a_lerobot_policy(tmp_path):
    from roboreward.data.generate import Recipe, generate_store
    from roboreward.policies.evaluate import evaluate_policy

    path = tmp_path / "pp.zarr"
    generate_store(path, Recipe(task="pick_place", episodes=2, mix={"expert": 1.0}, image_size=32), workers=1, progress=False)
    cfg = BCTrainConfig(policy={"type": "diffusion", "lerobot": SMALL["diffusion"]},
                        train=TrainConfig(steps=3, batch_size=4, warmup_steps=1, val_every=100, ckpt_every=3))
    model_dir = train_bc(cfg, path, tmp_path / "run", progress=False)
    report = evaluate_policy(model_dir, "pick_place", 2, tmp_path / "eval", n_envs=2, max_steps=12, videos=1)
    assert report["episodes"] == 2 and report["image_size"] == 32 and report["execute"] == 4
    assert all(r["steps"] == 12 for r in report["rollouts"])  # an untrained policy does not succeed
    assert list((tmp_path / "eval" / "videos").glob("*.mp4"))
