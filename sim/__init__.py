"""MuJoCo simulation of the SO-101 follower: model, multi-stage tasks, gymnasium envs and
scripted demonstrators. Importing this package registers the ``roboreward/SO101*-v0`` envs."""
from .env import ENV_IDS, EnvConfig, SO101Env, register_envs

register_envs()

__all__ = ["ENV_IDS", "EnvConfig", "SO101Env", "register_envs"]
