"""Every YAML config shipped in configs/ loads through the class its command reads it with, so a
renamed field or a LeRobot setting LeRobot refuses fails here, not in a user's first run."""
from __future__ import annotations

from pathlib import Path

import pytest

from roboreward.config import load_config
from roboreward.policies.train import BCTrainConfig
from roboreward.rewards.train import RewardTrainConfig
from roboreward.rl.train import RLConfig

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
KINDS = {"bc": BCTrainConfig, "reward": RewardTrainConfig, "rl": RLConfig}
FILES = sorted((kind, path) for kind in KINDS for path in (CONFIGS / kind).glob("*.yaml"))


def test_every_config_folder_has_configs():
    assert {kind for kind, _ in FILES} == set(KINDS)
    assert {p.stem for kind, p in FILES if kind == "bc"} >= {"bc", "bc_state", "vision_bc", "act", "diffusion"}


@pytest.mark.parametrize("kind,path", FILES, ids=[f"{k}/{p.name}" for k, p in FILES])
def test_config_loads(kind, path):
    config = load_config(KINDS[kind], path)
    if kind == "bc":
        from roboreward.policies.base import policy_class

        assert policy_class(config.policy["type"]).name == config.policy["type"]
