"""Shaping formulas against hand-computed transitions, and the telescoping property of pbrs."""
from __future__ import annotations

import numpy as np
import pytest

from roboreward.config import ConfigError
from roboreward.shaping import ShapingConfig, shape


def terms(scheme, phi, phi_next, success=False, terminated=False, **kw):
    out = shape(ShapingConfig(scheme=scheme, **kw), np.array([phi]), np.array([phi_next]), np.array([success]),
                np.array([terminated]))
    return {k: float(v[0]) for k, v in out.items()}


def test_hand_computed_transitions():
    # pbrs, gamma 0.9: 0.9 * 0.5 - 0.2 = 0.25 on a normal step
    assert terms("pbrs", 0.2, 0.5, gamma=0.9) == pytest.approx({"r_gold": 0.0, "shaping": 0.25, "reward": 0.25})
    # a true termination zeroes Phi(s'): the shaping term pays back Phi(s); r_gold on success
    assert terms("pbrs", 0.9, 0.97, success=True, terminated=True, gamma=0.9) == pytest.approx(
        {"r_gold": 1.0, "shaping": -0.9, "reward": 0.1})
    # a truncation (terminated False) bootstraps: Phi(s') as read
    assert terms("pbrs", 0.9, 0.97, gamma=0.9)["shaping"] == pytest.approx(0.9 * 0.97 - 0.9)
    # naive: undiscounted and never zeroed
    assert terms("naive", 0.9, 0.97, success=True, terminated=True, gamma=0.9) == pytest.approx(
        {"r_gold": 1.0, "shaping": 0.07, "reward": 1.07})
    assert terms("sparse", 0.2, 0.9, success=True, terminated=True) == {"r_gold": 1.0, "shaping": 0.0, "reward": 1.0}
    assert terms("oracle_pbrs", 0.0, 0.4, gamma=0.5)["reward"] == pytest.approx(0.2)
    # gold from the potential: Phi(s') >= 1 - delta, whatever the task says
    assert terms("pbrs", 0.9, 0.96, gold="potential", delta=0.05, gamma=1.0)["r_gold"] == 1.0
    assert terms("pbrs", 0.9, 0.94, success=True, gold="potential", delta=0.05, gamma=1.0)["r_gold"] == 0.0
    # scale weights the shaping term only
    assert terms("pbrs", 0.2, 0.5, gamma=1.0, scale=2.0, success=True)["reward"] == pytest.approx(1.6)


@pytest.mark.parametrize("terminated", [True, False])
@pytest.mark.parametrize("gamma", [0.9, 0.99, 1.0])
def test_pbrs_telescopes(gamma, terminated):
    rng = np.random.default_rng(0)
    T = 40
    phi = rng.uniform(0, 1, T + 1)  # Phi(s_0) .. Phi(s_T), any potential, not monotone
    term = np.zeros(T, bool)
    term[-1] = terminated
    out = shape(ShapingConfig(scheme="pbrs", gamma=gamma), phi[:-1], phi[1:], np.zeros(T, bool), term)
    discounted = float(np.sum(gamma ** np.arange(T) * out["shaping"]))
    end = 0.0 if terminated else phi[-1]
    assert discounted == pytest.approx(gamma**T * end - phi[0])
    # naive does not telescope under discounting: it pays (1 - gamma) Phi(s_t) along the way
    naive = shape(ShapingConfig(scheme="naive", gamma=gamma), phi[:-1], phi[1:], np.zeros(T, bool), term)
    if gamma < 1:
        assert float(np.sum(gamma ** np.arange(T) * naive["shaping"])) != pytest.approx(gamma**T * end - phi[0])


@pytest.mark.parametrize("kw, word", [({"gamma": 0.0}, "gamma"), ({"gamma": 1.5}, "gamma"), ({"scheme": "dense"}, "scheme"),
                                      ({"gold": "oracle"}, "gold"), ({"scheme": "sparse", "gold": "potential"}, "potential")])
def test_bad_config_is_one_line(kw, word):
    with pytest.raises(ConfigError, match=word) as info:
        ShapingConfig(**kw)
    assert "\n" not in str(info.value)
