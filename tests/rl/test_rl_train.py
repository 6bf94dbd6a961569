"""rl train in process on the sim with the oracle potential (no reward model to train): PPO, SAC and
CrossQ runs complete, write their curve, and the saved policy acts exactly as the trained one."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from roboreward.config import ConfigError
from roboreward.rl.train import RLConfig, RLError, _algo, build_env, load_policy, rollout_success, train_rl

SMALL = dict(task="pick_place", reward="oracle", shaping="pbrs", n_envs=2, max_episode_steps=20, net_arch=[16, 16],
             eval_every=64, eval_episodes=2, checkpoint_every=64, progress=False)


@pytest.mark.parametrize("algo, extra", [("ppo", {"batch_size": 32, "ppo_rollout": 64}), ("sac", {"learning_starts": 16, "batch_size": 16}),
                                         ("crossq", {"learning_starts": 16, "batch_size": 16})])
def test_short_run_and_saved_policy(algo, extra, tmp_path):
    torch.set_num_threads(1)
    config = RLConfig(**SMALL, algo=algo, steps=128, **extra)
    result = train_rl(config, tmp_path / "run")
    assert [r["step"] for r in result["curve"]] == [0, 64, 128]  # step 0: the policy before any RL step
    row = result["curve"][-1]
    assert 0.0 <= row["eval_success"] <= 1.0 and 0.0 <= row["eval_max_progress"] <= 1.0
    assert row["train_return"] is not None and row["episodes"] == 128 // 20  # 20-step episodes of 2 envs x 64 steps ended and were logged
    # The saved policy holds the final weights (those of the last checkpoint) and acts on an observation.
    policy, cfg = load_policy(tmp_path / "run")
    assert cfg.algo == algo and cfg.task == "pick_place"
    final = load_file(str(tmp_path / "run" / "checkpoints" / "step_128" / "policy.safetensors"))
    for k, v in policy.policy.state_dict().items():
        torch.testing.assert_close(v, final[f"policy.{k}"], rtol=0, atol=0)
    venv = build_env(cfg, None, 1)
    action, _ = policy.predict(venv.reset(), deterministic=True)
    venv.close()
    assert action.shape == (1, 6) and np.all(np.abs(action) <= 1)
    # best/ holds the policy of the best evaluation (success, then furthest progress; the first of
    # equals), and rolling it out again on the evaluation's seeds gives that evaluation's figures.
    top = max(result["curve"], key=lambda r: (r["eval_success"], r["eval_max_progress"]))
    first = next(r for r in result["curve"] if (r["eval_success"], r["eval_max_progress"]) == (top["eval_success"], top["eval_max_progress"]))
    assert result["best"]["step"] == first["step"]
    best, best_cfg = load_policy(tmp_path / "run" / "best")
    again = rollout_success(best, best_cfg, config.eval_episodes)
    assert (again["success_rate"], again["max_progress"]) == (first["eval_success"], first["eval_max_progress"])
    # Resuming a finished run with a longer budget continues from its last checkpoint.
    longer = train_rl(RLConfig(**SMALL, algo=algo, steps=192, **extra), tmp_path / "run")
    assert longer["steps"] == 192 and [r["step"] for r in longer["curve"]] == [0, 64, 128, 192]


def test_actor_warmup_and_zero_residual(tmp_path):
    """zero_residual starts the deterministic policy at an action of 0; during actor_warmup only the critic
    learns (the actor's weights stay as built), and after it, across a resume, the actor learns too."""
    torch.set_num_threads(1)
    config = RLConfig(**SMALL, algo="crossq", steps=64, learning_starts=16, batch_size=16, actor_warmup=80,
                      zero_residual=True, init_std=0.1)
    venv = build_env(config, None, 2)
    start = _algo(config, venv, None)
    obs = venv.reset()
    action, _ = start.predict(obs, deterministic=True)
    assert np.all(action == 0)
    start.policy.set_training_mode(False)
    pre_tanh = torch.atanh(torch.as_tensor(np.clip([start.predict(obs)[0] for _ in range(200)], -0.999, 0.999)))
    assert 0.08 < float(pre_tanh.std()) < 0.12  # init_std: the stochastic policy's spread before the squash
    venv.close()
    train_rl(config, tmp_path / "run")
    warm = load_file(str(tmp_path / "run" / "checkpoints" / "step_64" / "policy.safetensors"))
    params = dict(start.policy.named_parameters())
    assert all(torch.equal(warm[f"policy.{k}"], v) for k, v in params.items() if k.startswith("actor."))
    assert not all(torch.equal(warm[f"policy.{k}"], v) for k, v in params.items() if k.startswith("critic."))
    train_rl(dataclasses.replace(config, steps=128), tmp_path / "run")
    after = load_file(str(tmp_path / "run" / "checkpoints" / "step_128" / "policy.safetensors"))
    assert not torch.equal(after["policy.actor.mu.weight"], params["actor.mu.weight"])
    with pytest.raises(ConfigError, match="actor_warmup, actor_ramp, zero_residual and init_std apply to"):
        RLConfig(**SMALL, algo="ppo", actor_warmup=10)


def test_actor_ramp_raises_the_actor_rate_linearly_after_the_warmup():
    """actor_ramp: the actor's rate is 0 through the warm-up, rises linearly over the ramp, then is the full
    rate; the critic's is the full rate throughout."""
    from stable_baselines3.common.logger import configure

    config = RLConfig(**SMALL, algo="sac", learning_rate=1e-3, actor_warmup=100, actor_ramp=200)
    venv = build_env(config, None, 1)
    algo = _algo(config, venv, None)
    algo.set_logger(configure(None, []))  # SB3 records the rate it sets
    rates = []
    for t in (0, 99, 100, 200, 300, 1000):
        algo.num_timesteps = t
        algo._update_learning_rate([algo.actor.optimizer, algo.critic.optimizer])
        rates.append((algo.actor.optimizer.param_groups[0]["lr"], algo.critic.optimizer.param_groups[0]["lr"]))
    venv.close()
    assert [a for a, _ in rates] == pytest.approx([0.0, 0.0, 0.0, 5e-4, 1e-3, 1e-3])
    assert [c for _, c in rates] == pytest.approx([1e-3] * 6)
    with pytest.raises(ConfigError, match="actor_ramp must be >= 0"):
        RLConfig(**SMALL, actor_ramp=-1)


def test_resume_refuses_another_config(tmp_path):
    train_rl(RLConfig(**SMALL, algo="ppo", steps=64, batch_size=32, ppo_rollout=64), tmp_path / "run")
    with pytest.raises(RLError, match="different config .*gamma"):
        train_rl(RLConfig(**{**SMALL, "eval_every": 32}, algo="ppo", steps=64, batch_size=32, ppo_rollout=64, gamma=0.9),
                 tmp_path / "run")


BASE_YAML = """\
policy: {type: bc, horizon: 4, hidden_dim: 32, n_layers: 2, cameras: [], env_state_key: observation.environment_state}
train: {steps: 30, batch_size: 16, warmup_steps: 2, val_every: 100, ckpt_every: 100}
data: {val_fraction: 0.0}
"""


@pytest.fixture(scope="module")
def base_policy(tmp_path_factory):
    """A state BC policy (joint state + object poses) trained briefly on two scripted demos."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "HF_HUB_OFFLINE": "1"}
    base = tmp_path_factory.mktemp("base")
    (base / "bc.yaml").write_text(BASE_YAML)
    for args in (["data", "generate", "--task", "pick_place", "--episodes", 2, "--mix", "expert=1.0", "--image-size", 16,
                  "--workers", 1, "--out", base / "pp.zarr"],
                 ["bc", "train", "--config", base / "bc.yaml", "--dataset", base / "pp.zarr", "--out", base / "bc"]):
        proc = subprocess.run([sys.executable, "-m", "roboreward.cli", *map(str, args)], capture_output=True, text=True,
                              env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
    return base / "bc" / "model"


def test_residual_action_at_zero_is_the_base_policy(base_policy):
    """A zero residual sends exactly the base policy's targets (PolicyRunner over the same
    observations, chunk and history included); a residual of 1 adds max_step, clipped to the limits."""
    from roboreward.policies import Policy
    from roboreward.policies.runner import PolicyRunner
    from roboreward.rl.envs import load_base_policy, make_env

    step = [3.0] * 5 + [10.0]
    env = make_env("pick_place", (), 16, 30, base_policy=load_base_policy(base_policy), max_step=step)
    inner = env.unwrapped
    sent = []
    real_step = inner.step
    inner.step = lambda target: (sent.append(np.array(target)), real_step(target))[1]
    obs, _ = env.reset(seed=3)
    runner = PolicyRunner(Policy.from_pretrained(base_policy), 1)
    for t in range(12):
        proposal = obs["observation.target"].copy()
        expected = runner.act({k: np.asarray(v)[None] for k, v in obs.items() if k != "observation.target"})[0]
        np.testing.assert_allclose(proposal, np.clip(expected, env.low, env.high), atol=1e-5)
        action = np.zeros(6, np.float32) if t % 2 == 0 else np.ones(6, np.float32)
        obs, *_ = env.step(action)
        np.testing.assert_allclose(sent[-1], np.clip(proposal + action * np.asarray(step, np.float32), env.low, env.high),
                                   atol=1e-5)
    env.close()


def test_residual_sac_run_keeps_its_base_policy(base_policy, tmp_path):
    """A residual SAC run trains, saves the base policy inside its model folder, and that folder
    alone rolls out (the original base folder is gone)."""
    import shutil

    copy = tmp_path / "base"
    shutil.copytree(base_policy, copy)
    config = RLConfig(**SMALL, algo="sac", steps=64, learning_starts=16, batch_size=16, base_policy=str(copy),
                      max_step_deg=2.0)
    result = train_rl(config, tmp_path / "run")
    assert [r["step"] for r in result["curve"]] == [0, 64]
    shutil.rmtree(copy)
    policy, cfg = load_policy(tmp_path / "run")
    assert cfg.base_policy == str(tmp_path / "run" / "model" / "base_policy")
    ev = rollout_success(policy, cfg, 2, n_envs=2, record=tmp_path / "rollouts.zarr", videos=1, out=tmp_path / "ev")
    assert ev["episodes"] == 2 and 0.0 <= ev["max_progress"] <= 1.0
    assert len(list((tmp_path / "ev" / "videos").glob("*.mp4"))) == 1  # the video reuses the recording's frames
    # Recorded (rl eval --record) through the wrapped env: absolute targets, rendered cameras, the sim's truth.
    from roboreward.data.store import EpisodeStore

    store = EpisodeStore(tmp_path / "rollouts.zarr")
    assert [e.info["seed"] for e in store.episodes] == [r["seed"] for r in ev["rollouts"]]
    for e, r in zip(store.episodes, ev["rollouts"]):
        assert e.length == r["steps"] + 1 and e.success == r["success"]
    ep = store.read_episode(0)
    assert ep.data["observation.images.front"].shape[1:] == (96, 96, 3) and ep.data["observation.images.wrist"].std() > 0
    assert np.abs(ep.data["action"]).max() > 5  # the joint targets the arm got (degrees), not the policy's [-1, 1] actions
    assert abs(float(ep.data["gt.progress"][1:].max()) - ev["rollouts"][0]["max_progress"]) < 1e-6  # frame t: truth after step t


def test_base_policy_folder_is_checked(tmp_path):
    from roboreward.errors import RoborewardError
    from roboreward.rl.envs import load_base_policy

    with pytest.raises(RoborewardError, match="not a policy folder"):
        load_base_policy(tmp_path)
