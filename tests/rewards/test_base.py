"""The RewardModel contract: subclass checks, registry, config dicts, checkpoints and their errors."""
from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from roboreward.config import ConfigError
from roboreward.errors import RoborewardError
from roboreward.rewards import (
    REWARD_MODELS,
    SARM,
    CheckpointError,
    RewardModel,
    RewardModelConfig,
    RewardStream,
    SARMConfig,
    make_reward_model,
    register_reward_model,
    reward_config_from_dict,
)


@dataclass
class ToyConfig(RewardModelConfig):
    type: str = "toy-test"
    """Registered name."""
    width: int = 3
    """Hidden width."""

    def __post_init__(self):
        super().__post_init__()
        if self.width < 1:
            raise ConfigError(f"width must be >= 1, got {self.width}")


class ToyModel(RewardModel):
    """Progress = sigmoid of a linear map of one feature; enough to exercise the base class."""

    name = "toy-test"
    config_class = ToyConfig

    def __init__(self, config: ToyConfig):
        super().__init__(config)
        self.lin = nn.Linear(1, config.width)
        self.out = nn.Linear(config.width, 1)

    def progress(self, batch):
        return torch.sigmoid(self.out(torch.tanh(self.lin(batch["x"][..., None])))).squeeze(-1)


@pytest.fixture
def toy_registered():
    register_reward_model(ToyModel)
    yield ToyModel
    REWARD_MODELS.pop("toy-test", None)


def test_subclass_must_declare_name_and_config_class():
    with pytest.raises(TypeError, match="`name`"):
        class NoName(RewardModel):
            config_class = ToyConfig
    with pytest.raises(TypeError, match="`config_class`"):
        class NoConfig(RewardModel):
            name = "no-config"
    with pytest.raises(TypeError, match="`config_class`"):
        class NotADataclass(RewardModel):
            name = "bad"
            config_class = dict

    class Intermediate(RewardModel, abstract=True):  # shared bases may opt out
        pass


def test_registry_rejects_duplicates_and_mismatched_config_type(toy_registered):
    assert REWARD_MODELS["toy-test"] is ToyModel and REWARD_MODELS["sarm"] is SARM

    class Other(RewardModel):
        name = "toy-test"
        config_class = ToyConfig

    with pytest.raises(TypeError, match="registered twice"):
        register_reward_model(Other)

    class WrongType(RewardModel):
        name = "wrong-type"
        config_class = ToyConfig

    with pytest.raises(TypeError, match="must default its `type` field to 'wrong-type'"):
        register_reward_model(WrongType)


def test_make_reward_model_from_config_or_dict(toy_registered):
    assert isinstance(make_reward_model(ToyConfig(width=2)), ToyModel)
    model = make_reward_model({"type": "toy-test", "width": 5})
    assert model.config == ToyConfig(width=5)
    with pytest.raises(ConfigError, match=r"reward type 'nope' is not registered; use one of \[.*'sarm', .*'toy-test'\]"):
        make_reward_model({"type": "nope"})
    with pytest.raises(ConfigError, match="unknown key 'depth'; allowed: type, width"):
        reward_config_from_dict({"type": "toy-test", "depth": 2})
    with pytest.raises(ConfigError, match="width must be >= 1"):
        reward_config_from_dict({"type": "toy-test", "width": 0})
    with pytest.raises(ConfigError, match="type is 'sarm' but ToyConfig is the config of 'toy-test'"):
        ToyConfig(type="sarm")
    with pytest.raises(RoborewardError, match="needs a ToyConfig"):
        ToyModel(SARMConfig())


def test_sarm_config_from_yaml_like_dict():
    cfg = reward_config_from_dict({"type": "sarm", "window": 3, "max_rewind": 2, "tasks": ["a"], "sparse_stages": ["s"],
                                   "sparse_priors": [1.0], "cameras": ["c0", "c1"], "feature_dim": 4})
    assert isinstance(cfg, SARMConfig) and cfg.window == 3 and cfg.cameras == ["c0", "c1"]
    with pytest.raises(ConfigError, match="view_fusion 'sum' is not one of \\('mean', 'concat'\\)"):
        reward_config_from_dict({"type": "sarm", "view_fusion": "sum"})
    with pytest.raises(ConfigError, match="sparse_priors must be >= 0 and sum to 1"):
        SARMConfig(sparse_stages=["a", "b"], sparse_priors=[0.5, 0.6])


def test_zero_shot_model_has_no_loss_and_stream_is_required(toy_registered):
    model = ToyModel(ToyConfig())
    with pytest.raises(RoborewardError, match="zero-shot"):
        model.loss({})
    with pytest.raises(NotImplementedError):
        model.stream(1)
    with pytest.raises(RoborewardError, match="n_envs must be an int >= 1"):
        RewardStream(0)
    stream = RewardStream(3)
    assert stream._env_ids(None) == [0, 1, 2] and stream._env_ids([2]) == [2]
    with pytest.raises(RoborewardError, match="out of range"):
        stream._env_ids(3)


def test_save_load_round_trip(toy_registered, tmp_path):
    torch.manual_seed(0)
    model = ToyModel(ToyConfig(width=4))
    x = {"x": torch.randn(2, 5)}
    path = model.save_pretrained(tmp_path / "ck")
    assert json.loads((path / "config.json").read_text()) == {"type": "toy-test", "width": 4}
    loaded = RewardModel.from_pretrained(path)
    assert type(loaded) is ToyModel
    assert torch.equal(loaded.progress(x), model.progress(x))
    with pytest.raises(CheckpointError, match="holds a 'toy-test' model, not 'sarm'"):
        SARM.from_pretrained(path)


def test_from_pretrained_errors_are_one_line(toy_registered, tmp_path):
    def check(path, pattern):
        with pytest.raises(CheckpointError, match=pattern) as info:
            RewardModel.from_pretrained(path)
        assert "\n" not in str(info.value)

    check(tmp_path / "missing", "no such folder")
    ck = tmp_path / "ck"
    ck.mkdir()
    check(ck, "missing config.json")
    (ck / "config.json").write_text("{not json")
    check(ck, "config.json: not valid JSON")
    (ck / "config.json").write_text("[1, 2]")
    check(ck, "needs a JSON object with a string `type`")
    (ck / "config.json").write_text(json.dumps({"type": "gvl-9000"}))
    check(ck, r"type 'gvl-9000' is not a registered reward model \(registered: \[.*'sarm', .*'toy-test'\]\)")
    (ck / "config.json").write_text(json.dumps({"type": "toy-test", "width": -1}))
    check(ck, "width must be >= 1")
    (ck / "config.json").write_text(json.dumps({"type": "toy-test", "width": 2}))
    check(ck, "missing model.safetensors")
    (ck / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    check(ck, "cannot be read as safetensors weights")
    ToyModel(ToyConfig(width=3)).save_pretrained(tmp_path / "other")
    (ck / "model.safetensors").write_bytes((tmp_path / "other" / "model.safetensors").read_bytes())
    check(ck, r"tensor lin.weight has shape \[3, 1\] but config.json builds \[2, 1\]")
