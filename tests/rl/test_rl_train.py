"""rl train in process on the sim with the oracle potential (no reward model to train): PPO and SAC
runs complete, write their curve, and the saved policy acts exactly as the trained one."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from roboreward.rl.train import RLConfig, RLError, build_env, load_policy, train_rl

SMALL = dict(task="pick_place", reward="oracle", shaping="pbrs", n_envs=2, max_episode_steps=20, net_arch=[16, 16],
             eval_every=64, eval_episodes=2, checkpoint_every=64, progress=False)


@pytest.mark.parametrize("algo, extra", [("ppo", {"batch_size": 32, "ppo_rollout": 64}), ("sac", {"learning_starts": 16, "batch_size": 16})])
def test_short_run_and_saved_policy(algo, extra, tmp_path):
    torch.set_num_threads(1)
    config = RLConfig(**SMALL, algo=algo, steps=128, **extra)
    result = train_rl(config, tmp_path / "run")
    assert [r["step"] for r in result["curve"]] == [64, 128]
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
    # Resuming a finished run with a longer budget continues from its last checkpoint.
    longer = train_rl(RLConfig(**SMALL, algo=algo, steps=192, **extra), tmp_path / "run")
    assert longer["steps"] == 192 and [r["step"] for r in longer["curve"]] == [64, 128, 192]


def test_resume_refuses_another_config(tmp_path):
    train_rl(RLConfig(**SMALL, algo="ppo", steps=64, batch_size=32, ppo_rollout=64), tmp_path / "run")
    with pytest.raises(RLError, match="different config .*gamma"):
        train_rl(RLConfig(**{**SMALL, "eval_every": 32}, algo="ppo", steps=64, batch_size=32, ppo_rollout=64, gamma=0.9),
                 tmp_path / "run")
