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


@pytest.mark.parametrize("c", [0.0, 1.0, 0.5])
def test_goal_potential_scales_every_successful_return_alike(c):
    """Phi after a true termination is c: a success at step T returns gamma^(T-1) (r_gold + gamma c) -
    Phi(s_0), i.e. the sparse return times (1 + gamma c) less Phi(s_0), whatever the potential did on
    the way; a truncated episode telescopes to gamma^T Phi(s_T) - Phi(s_0) as before."""
    gamma, rng = 0.97, np.random.default_rng(1)
    cfg = ShapingConfig(scheme="pbrs", gamma=gamma, goal_potential=c)
    for T, succeed in ((7, True), (25, True), (25, False)):
        phi = rng.uniform(0, 1, T + 1)
        success, term = np.zeros(T, bool), np.zeros(T, bool)
        success[-1] = term[-1] = succeed
        out = shape(cfg, phi[:-1], phi[1:], success, term)
        disc = gamma ** np.arange(T)
        sparse_return = float(np.sum(disc * out["r_gold"]))
        shaped = float(np.sum(disc * out["reward"]))
        if succeed:
            assert sparse_return == pytest.approx(gamma ** (T - 1))
            assert shaped + phi[0] == pytest.approx(sparse_return * (1 + gamma * c))
            assert out["reward"][-1] == pytest.approx(1 + gamma * c - phi[-2])  # the step that succeeds
        else:
            assert shaped == pytest.approx(gamma**T * phi[-1] - phi[0])


@pytest.mark.parametrize("kw, word", [({"gamma": 0.0}, "gamma"), ({"gamma": 1.5}, "gamma"), ({"scheme": "dense"}, "scheme"),
                                      ({"gold": "oracle"}, "gold"), ({"scheme": "sparse", "gold": "potential"}, "potential"),
                                      ({"goal_potential": "one"}, "goal_potential"),
                                      ({"goal_potential": float("nan")}, "goal_potential")])
def test_bad_config_is_one_line(kw, word):
    with pytest.raises(ConfigError, match=word) as info:
        ShapingConfig(**kw)
    assert "\n" not in str(info.value)
