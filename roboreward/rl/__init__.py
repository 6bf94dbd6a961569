"""Online RL in the sim tasks with Stable-Baselines3, rewarded through ``roboreward.shaping``:
``envs.py`` (the joint-delta action space, env factory), ``train.py`` (runs, safe checkpoints,
demonstrations, evaluation)."""
from .envs import POLICY_KEYS, JointDeltaAction, make_env
from .train import RLConfig, RLError, load_policy, rollout_success, steps_to, train_rl

__all__ = ["POLICY_KEYS", "JointDeltaAction", "RLConfig", "RLError", "load_policy", "make_env", "rollout_success",
           "steps_to", "train_rl"]
