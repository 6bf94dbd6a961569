"""The level figures end to end (post-success stability, final hold, finish vs hover, freeze drift,
calibration, final-progress gap) and the probes they run on: re-indexed frames through the public
``progress`` API. Two models over cached features with known answers (one pays for elapsed
position, one reads only the current frame), the tiny SARM, and a model without cached features."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from evaltoy import CAMS, FEATURE_KEY, HELD_OUT, PLAN, ClockConfig, ClockModel

from roboreward.eval import evaluate_reward
from roboreward.eval.evaluate import summary_text
from roboreward.eval.probes import freeze_frames, probe_progress, probe_support
from roboreward.rewards import RewardModel, RewardModelConfig
from roboreward.rewards.annotate import episode_progress

SUCCESSES = [e for e in HELD_OUT if PLAN[e][1]]  # 8, 10, 11
FAILURES = [e for e in HELD_OUT if not PLAN[e][1]]  # 5, 7, 9
HOLD = 20  # 2 s at the toy store's 10 fps


@dataclass
class FeatureProbeConfig(RewardModelConfig):
    type: str = "test_counter"
    """Not registered: test-only models over the toy store's cached features."""
    feature_key: str = FEATURE_KEY
    cameras: tuple[str, ...] = CAMS
    state_key: str | None = "observation.state"


class CounterModel(RewardModel):
    """Progress = position in the sequence / 100: pays for time, not for the scene."""

    name = "test_counter"
    config_class = FeatureProbeConfig

    def progress(self, batch):
        b, t = batch[f"features.{CAMS[0]}"].shape[:2]
        return (torch.arange(t, dtype=torch.float32) / 100).expand(b, t)


class EchoModel(CounterModel):
    """Progress read from the current frame alone (the toy features carry the true progress)."""

    name = "test_echo"

    def progress(self, batch):
        return (batch[f"features.{CAMS[0]}"][..., 0] * 255 / 200).clamp(0, 1)


def test_probes_reindex_frames_through_the_model_s_own_batches(eval_store, tiny_sarm):
    n8, n9 = PLAN[8][0], PLAN[9][0]
    straight = probe_progress(tiny_sarm, eval_store, [(8, range(n8)), (9, range(n9))])
    np.testing.assert_allclose(straight[0], episode_progress(tiny_sarm, eval_store, [8])[0], atol=1e-6)
    np.testing.assert_allclose(straight[1], episode_progress(tiny_sarm, eval_store, [9])[0], atol=1e-6)
    # A reversed index list is exactly annotate's reverse=True.
    back = probe_progress(tiny_sarm, eval_store, [(8, range(n8 - 1, -1, -1))])[0]
    np.testing.assert_allclose(back, episode_progress(tiny_sarm, eval_store, [8], reverse=True)[0], atol=1e-6)
    # A freeze keeps the curve up to the frozen frame (causal) and is as long as its index list;
    # the same episode twice in one batch is fine.
    frozen, held = probe_progress(tiny_sarm, eval_store, [(8, freeze_frames(10, 5)), (8, list(range(n8)) + [n8 - 1] * 3)])
    assert len(frozen) == 16 and len(held) == n8 + 3
    np.testing.assert_allclose(frozen[:11], straight[0][:11], atol=1e-6)
    np.testing.assert_allclose(held[:n8], straight[0], atol=1e-6)
    with pytest.raises(Exception, match="frame indices"):
        probe_progress(tiny_sarm, eval_store, [(8, [0, n8])])


def test_a_model_that_pays_for_time_rises_while_frozen(eval_store, tmp_path):
    model = CounterModel(FeatureProbeConfig())
    assert probe_support(model) is None
    m = evaluate_reward(model, eval_store.path, tmp_path / "counter", episodes=HELD_OUT, videos=0, plots=0)
    freeze, hold = m["freeze_drift"], m["final_hold"]
    # Frozen for 20 frames, the counter climbs 20/100 whatever the scene does: far over the 0.01 goal.
    assert freeze["frames"] == hold["frames"] == HOLD and freeze["seconds"] == 2.0
    assert freeze["rise_mean"] == pytest.approx(0.2, abs=1e-6) and freeze["rise_max"] == pytest.approx(0.2, abs=1e-6)
    assert freeze["rise_max"] > freeze["tolerance"] == 0.01
    assert hold["change_mean"] == pytest.approx(0.2, abs=1e-6) and hold["fall_share"] == 0.0
    assert (freeze["n_success"], freeze["n_failure"], hold["n_success"], hold["n_failure"]) == (3, 0, 3, 0)
    # It never falls, so nothing drops after success (gt.success holds from progress 0.9 on).
    ps = m["post_success"]
    assert ps["drop_mean"] == ps["drop_max"] == ps["drop_share"] == 0.0
    assert ps["onset_source"] == "gt.success" and (ps["n_success"], ps["n_failure"]) == (3, 0)
    # Finish vs hover: final progress (mean of the last 5 of t/100) = (n-3)/100; the frame before
    # the final stage "grasp" (starts at cut = round(0.4 n)) is (cut-1)/100: margin (n-2-cut)/100.
    fh = m["finish_vs_hover"]
    margins = [(PLAN[e][0] - 2 - round(0.4 * PLAN[e][0])) / 100 for e in SUCCESSES]
    assert fh["higher_share"] == 1.0 and fh["stage_source"] == "sparse annotations"
    assert fh["margin_mean"] == pytest.approx(np.mean(margins), abs=1e-6)
    assert fh["margin_min"] == pytest.approx(min(margins), abs=1e-6)
    rows = {row["episode"]: row for row in m["per_episode"]}
    for e, want in zip(SUCCESSES, margins):
        assert rows[e]["finish_margin"]["progress"] == pytest.approx(want, abs=1e-6)
        assert rows[e]["freeze_rise"]["progress"] == pytest.approx(0.2, abs=1e-6)
    for e in FAILURES:
        assert "finish_margin" not in rows[e] and "freeze_rise" not in rows[e] and "post_success_drop" not in rows[e]
    # A counter ranks successes over failures only by length; the gap says how far apart they end.
    finals = {e: (PLAN[e][0] - 3) / 100 for e in HELD_OUT}
    gap = np.mean([finals[e] for e in SUCCESSES]) - np.mean([finals[e] for e in FAILURES])
    assert m["final_progress_gap"]["gap"] == pytest.approx(gap, abs=1e-6)
    assert (m["final_progress_gap"]["n_success"], m["final_progress_gap"]["n_failure"]) == (3, 3)
    text = summary_text(m)
    assert "rise mean 0.200 max 0.200 (goal <= 0.01) [3 succ / 0 fail]" in text and "finish > hover 1.00" in text


def test_a_model_that_reads_the_scene_stays_put_while_frozen(eval_store, tmp_path):
    m = evaluate_reward(EchoModel(FeatureProbeConfig()), eval_store.path, tmp_path / "echo", episodes=HELD_OUT,
                        videos=0, plots=0)
    # Same inputs, same output: exactly no drift over the freeze or the hold.
    assert m["freeze_drift"]["rise_max"] == 0.0 and m["freeze_drift"]["rise_mean"] == 0.0
    assert m["final_hold"]["change_mean"] == 0.0 and m["final_hold"]["change_min"] == 0.0
    # It reads the true progress plus pixel noise: small calibration error in every stage.
    cal = m["calibration"]
    assert set(cal["per_stage"]) == {"reach", "grasp"} and (cal["n_success"], cal["n_failure"]) == (3, 3)
    assert all(0 <= s["mae"] < 0.1 for s in cal["per_stage"].values())
    assert m["final_progress_gap"]["gap"] > 0.4  # successes end near 1, failures near 0.4
    # Its changes follow the truth's, the more so over longer gaps, where the pixel noise averages out
    # (30 frames is longer than these toy episodes but two: n/a there, None in the JSON).
    agree = m["step_agreement"]
    assert set(agree["corr"]) == {"1", "10", "30"} and (agree["n_success"], agree["n_failure"]) == (3, 3)
    assert agree["corr"]["1"] < agree["corr"]["10"] and agree["corr"]["10"] > 0.8 and 0.5 < agree["variation_ratio"] < 2
    assert "progress changes vs gt" in summary_text(m)


def test_sarm_level_figures_have_their_keys_counts_and_ranges(eval_store, tiny_sarm, tmp_path):
    result = evaluate_reward(tiny_sarm, eval_store.path, tmp_path / "sarm", episodes=HELD_OUT, videos=0, plots=0)
    m = result["levels"]["sparse"]
    for figure in ("post_success", "final_hold", "finish_vs_hover", "freeze_drift", "calibration", "final_progress_gap"):
        assert result[figure] == m[figure]
    ps, hold, fh, fr = m["post_success"], m["final_hold"], m["finish_vs_hover"], m["freeze_drift"]
    for fig in (ps, hold, fh, fr):
        assert (fig["n_success"], fig["n_failure"]) == (3, 0)
    assert 0 <= ps["drop_mean"] <= ps["drop_max"] <= 1 and 0 <= ps["drop_share"] <= 1 and ps["tolerance"] == 0.05
    assert -1 <= hold["change_min"] <= hold["change_mean"] <= 1 and "unsupported" not in hold
    assert 0 <= fh["higher_share"] <= 1 and -1 <= fh["margin_min"] <= fh["margin_mean"] <= 1
    assert fh["higher_share"] == 1.0  # the toy model learned to end its successes at their top
    assert -1 <= fr["rise_mean"] <= fr["rise_max"] <= 1 and fr["frames"] == HOLD
    cal = m["calibration"]["per_stage"]
    # Failures never get past "reach", so the "grasp" figure rests on successes alone.
    assert (cal["reach"]["n_success"], cal["reach"]["n_failure"]) == (3, 3)
    assert (cal["grasp"]["n_success"], cal["grasp"]["n_failure"]) == (3, 0)
    assert cal["reach"]["frames"] + cal["grasp"]["frames"] == sum(PLAN[e][0] for e in HELD_OUT)
    assert all(0 <= s["mae"] <= 1 for s in cal.values())
    assert m["final_progress_gap"]["gap"] == pytest.approx(m["final_progress"]["success"] - m["final_progress"]["failure"])
    assert m["counts"]["voc"] == {"n_success": 3, "n_failure": 0} and m["counts"]["auroc"] == {"n_success": 3, "n_failure": 3}
    assert set(m["counts"]) == {"voc", "mae", "stage_accuracy", "auroc", "reversed_fall_share"}
    rows = {row["episode"]: row for row in result["per_episode"]}
    assert all(set(rows[e]) >= {"post_success_drop", "hold_change", "finish_margin", "freeze_rise"} for e in SUCCESSES)
    assert len(summary_text(result).splitlines()) == 5  # with gt.progress: the step agreement line


def test_a_model_without_cached_features_gets_the_curve_figures_and_says_why_not_the_probes(eval_store, tmp_path):
    m = evaluate_reward(ClockModel(ClockConfig()), eval_store.path, tmp_path / "clock", episodes=HELD_OUT, videos=0, plots=0)
    for figure in ("final_hold", "freeze_drift"):
        assert "episode_progress hook" in m[figure]["unsupported"]
        assert (m[figure]["n_success"], m[figure]["n_failure"]) == (0, 0)
    assert m["final_hold"]["change_mean"] is None and m["freeze_drift"]["rise_max"] is None  # NaN in JSON
    assert m["post_success"]["n_success"] == 3 and m["post_success"]["drop_max"] == 0.0  # a clock never falls
    assert m["finish_vs_hover"]["higher_share"] == 1.0 and m["finish_vs_hover"]["n_success"] == 3
    assert "hold/freeze n/a" in summary_text(m)
