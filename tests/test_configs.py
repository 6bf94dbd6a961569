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


def test_a_config_extends_its_base(tmp_path):
    """``base:`` lays a file's values over another config's, mapping by mapping; a missing or circular
    base is one line."""
    from roboreward.config import ConfigError, config_data

    (tmp_path / "parent.yaml").write_text("model: {type: sarm, window: 8, state_key: observation.state}\ntrain: {steps: 10}\n")
    (tmp_path / "child.yaml").write_text("base: parent.yaml\nmodel: {state_key: null, window: 6}\n")
    assert config_data(tmp_path / "child.yaml") == {"model": {"type": "sarm", "window": 6, "state_key": None},
                                                    "train": {"steps": 10}}
    config = load_config(RewardTrainConfig, tmp_path / "child.yaml")
    assert config.model["state_key"] is None and config.train.steps == 10
    # The shipped variants are sarm.yaml but for the one field each names.
    sarm = config_data(CONFIGS / "reward" / "sarm.yaml")
    for name, field, value in (("sarm_nostate", "state_key", None), ("sarm_statenoise", "state_noise", 8.0)):
        variant = config_data(CONFIGS / "reward" / f"{name}.yaml")
        assert variant["model"].pop(field) == value and sarm["model"].get(field) != value
        assert variant == {**sarm, "model": {k: v for k, v in sarm["model"].items() if k != field}}
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="leads back to itself"):
        config_data(tmp_path / "loop.yaml")
    (tmp_path / "orphan.yaml").write_text("base: gone.yaml\n")
    with pytest.raises(ConfigError, match="gone.yaml not found \\(the base of"):
        load_config(RewardTrainConfig, tmp_path / "orphan.yaml")
