"""Metrics by hand: every expected value below is worked out in the comment beside it."""
from __future__ import annotations

import math

import numpy as np
import pytest

from roboreward.errors import RoborewardError
from roboreward.eval.metrics import (
    auroc,
    falls,
    final_progress,
    final_progress_gap,
    finish_margin,
    first_true,
    freeze_rise,
    hold_change,
    mae,
    post_success_drop,
    reversed_fall_share,
    spearman,
    stage_accuracy,
    stage_errors,
    voc,
)
from roboreward.eval import metrics as M
from roboreward.eval.probes import freeze_frames, hold_frames


def test_voc_is_rank_correlation_with_time():
    assert voc([0.0, 0.1, 0.5, 0.9]) == pytest.approx(1.0)  # any strictly rising curve
    assert voc([0.9, 0.2, 0.1, 0.0]) == pytest.approx(-1.0)
    # ranks of [0.1, 0.3, 0.2] are [1, 3, 2] vs time [1, 2, 3]: d^2 = 0 + 1 + 1 -> 1 - 6*2/(3*8) = 0.5
    assert voc([0.1, 0.3, 0.2]) == pytest.approx(0.5)
    # ties take average ranks: [0, 0, 1] -> ranks [1.5, 1.5, 3]; centred [-.5, -.5, 1] vs [-1, 0, 1]
    # -> 1.5 / sqrt(1.5 * 2) = sqrt(3)/2
    assert voc([0.0, 0.0, 1.0]) == pytest.approx(math.sqrt(3) / 2)
    assert voc([0.4, 0.4, 0.4]) == 0.0 and voc([0.5]) == 0.0  # constant / one frame: no order
    assert spearman([1, 2, 3], [30, 10, 20]) == pytest.approx(-0.5)
    with pytest.raises(RoborewardError, match="1-D"):
        voc(np.zeros((2, 3)))


def test_mae_and_stage_accuracy_skip_missing_truth():
    assert mae([0.0, 0.5, 1.0], [0.1, 0.5, 0.7]) == pytest.approx((0.1 + 0 + 0.3) / 3)
    assert mae([0.0, 0.5], [np.nan, 0.25]) == pytest.approx(0.25)
    assert math.isnan(mae([0.1], [np.nan]))
    assert stage_accuracy([0, 1, 1, 2], [0, 1, 2, 2]) == pytest.approx(0.75)
    assert stage_accuracy([0, 1, 1], [-1, 1, 0]) == pytest.approx(0.5)  # -1 = no target
    with pytest.raises(RoborewardError, match="shape"):
        mae([0.0, 1.0], [0.0])


def test_auroc_by_hand_with_ties():
    assert auroc([0.9, 0.8, 0.1, 0.2], [True, True, False, False]) == 1.0
    assert auroc([0.1, 0.2, 0.9, 0.8], [True, True, False, False]) == 0.0
    # positives {0.5, 0.9}, negatives {0.5, 0.1}: pairs (0.5,0.5)=1/2, (0.5,0.1)=1, (0.9,*)=1+1 -> 3.5/4
    assert auroc([0.5, 0.9, 0.5, 0.1], [1, 1, 0, 0]) == pytest.approx(0.875)
    assert auroc([0.3, 0.3, 0.3], [True, False, False]) == pytest.approx(0.5)
    with pytest.raises(RoborewardError, match="both classes"):
        auroc([0.1, 0.2], [True, True])
    # tie: a failure ending "done" at 0.9999 beside successes at 1.0000 is a tie, not a win.
    finals, labels = [1.0, 0.99998, 0.9999, 0.3], [True, True, False, False]
    assert auroc(finals, labels) == 1.0
    assert auroc(finals, labels, tie=0.01) == pytest.approx(3 / 4)  # (1, .9999) and (.99998, .9999) half each
    assert auroc([0.5, 0.9, 0.5, 0.1], [1, 1, 0, 0], tie=1e-9) == pytest.approx(0.875)  # as exact ranks
    with pytest.raises(RoborewardError, match="both classes"):
        auroc([0.1, 0.2], [True, True], tie=0.01)


def test_final_progress_and_reversed_fall_share():
    assert final_progress([0, 0, 0.2, 0.4, 0.6, 0.8, 1.0], k=5) == pytest.approx(0.6)
    assert final_progress([0.3, 0.5], k=5) == pytest.approx(0.4)  # shorter than k: all frames
    assert falls([1.0, 0.6, 0.2]) and falls([0.5, 0.7, 0.4]) and not falls([0.1, 0.5, 0.9])
    # ends above its start but ranks fall: ranks [3,5,2,1,4], sum d^2 = 24 -> voc = 1 - 6*24/120 = -0.2
    assert voc([0.2, 0.9, 0.15, 0.1, 0.3]) == pytest.approx(-0.2) and falls([0.2, 0.9, 0.15, 0.1, 0.3])
    assert not falls([0.5])
    # 2 of 3 reversed episodes fall
    assert reversed_fall_share([[1.0, 0.5, 0.0], [0.0, 0.5, 1.0], [0.9, 0.9, 0.1]]) == pytest.approx(2 / 3)
    assert math.isnan(reversed_fall_share([]))


# ---------------------------------------------------------------------------- levels, not ranks
def test_post_success_drop_sees_a_curve_that_falls_after_success():
    assert first_true([False, False, True, False, True]) == 2 and first_true([0, 0, 0]) is None
    # The colour-shift symptom: peaks 0.97 while placing, success holds from frame 3, ends at 0.3.
    # max up to the onset 0.97, min from it on 0.3 -> 0.67
    assert post_success_drop([0.1, 0.5, 0.97, 0.9, 0.4, 0.3], onset=3) == pytest.approx(0.67)
    assert post_success_drop([0.2, 0.6, 0.9, 1.0, 1.0], onset=3) == 0.0  # keeps what it reached
    assert post_success_drop([0.2, 0.6, 0.9, 0.95, 1.0], onset=2) == 0.0  # rising after success is fine
    assert post_success_drop([0.5, 0.4], onset=0) == pytest.approx(0.1)  # done from the first frame
    # a dip after the onset counts even when the curve recovers: max 0.9, min after 0.8
    assert post_success_drop([0.3, 0.9, 0.8, 1.0], onset=1) == pytest.approx(0.1)
    with pytest.raises(RoborewardError, match="onset 5"):
        post_success_drop([0.1, 0.2], onset=5)


def test_hold_and_freeze_changes_by_hand():
    assert hold_frames(3, 2) == [0, 1, 2, 2, 2] and freeze_frames(1, 3) == [0, 1, 1, 1, 1]
    assert hold_frames(2, 0) == [0, 1]
    # last real frame 2 (0.9), the held curve ends at 0.7: the model takes back 0.2 while nothing changes
    assert hold_change([0.2, 0.8, 0.9, 0.85, 0.7], at=2) == pytest.approx(-0.2)
    assert hold_change([0.2, 0.9, 0.9, 0.9], at=1) == 0.0
    # frozen at frame 2 (0.3): rises to 0.35 then 0.34 -> rise 0.05 (the highest, not the last)
    assert freeze_rise([0.1, 0.3, 0.3, 0.32, 0.35, 0.34], at=2) == pytest.approx(0.05)
    assert freeze_rise([0.1, 0.3, 0.3, 0.3], at=1) == 0.0
    assert freeze_rise([0.1, 0.3, 0.2, 0.25], at=1) == pytest.approx(-0.05)  # only falls
    assert freeze_rise([0.1, 0.3], at=1) == 0.0  # nothing frozen
    with pytest.raises(RoborewardError, match="frame 4"):
        hold_change([0.1, 0.2], at=4)


def test_finish_margin_says_whether_finishing_pays_more_than_hovering():
    # final stage starts at frame 4; hovering at frame 3 scores 0.97, the finished episode ends 0.5, 0.3
    hover = [0.2, 0.5, 0.97, 0.97, 0.5, 0.3]
    assert finish_margin(hover, 4, k=2) == pytest.approx((0.5 + 0.3) / 2 - 0.97)
    assert finish_margin(hover, 4, k=1) == pytest.approx(0.3 - 0.97)
    assert finish_margin([0.2, 0.5, 0.7, 0.9, 1.0], 3, k=1) == pytest.approx(1.0 - 0.7)
    # default k = FINAL_K = 5: mean of the last five [0.5, 0.7, 0.9, 1.0, 1.0] = 0.82, hover 0.5 (frame 1)
    assert finish_margin([0.2, 0.5, 0.7, 0.9, 1.0, 1.0], 2) == pytest.approx(0.82 - 0.5)
    with pytest.raises(RoborewardError, match="frame before it"):
        finish_margin([0.2, 0.5], 0)


def test_stage_errors_and_final_progress_gap_by_hand():
    errors = stage_errors([0.1, 0.2, 0.5, 0.9], [0.0, 0.25, 0.5, 1.0], ["a", "a", "b", "b"])
    # a: (0.1 + 0.05) / 2, b: (0 + 0.1) / 2
    assert list(errors) == ["a", "b"]
    assert errors["a"] == (pytest.approx(0.075), 2) and errors["b"] == (pytest.approx(0.05), 2)
    # NaN truth and unlabelled frames (None, -1) are skipped; a stage with no truth left is absent
    errors = stage_errors([0.1, 0.2, 0.9, 0.4, 0.3], [0.0, np.nan, 0.5, 0.0, np.nan], [0, 0, None, -1, 1])
    assert errors == {0: (pytest.approx(0.1), 1)}
    with pytest.raises(RoborewardError, match="stage labels"):
        stage_errors([0.1, 0.2], [0.1, 0.2], ["a"])
    # successes end at 0.9 and 0.7 (mean 0.8), the failure at 0.3: gap 0.5, whatever AUROC says
    assert final_progress_gap([0.9, 0.7], [0.3]) == pytest.approx(0.5)
    assert final_progress_gap([0.2], [0.1, 0.15]) == pytest.approx(0.075)  # ranked right, barely apart
    assert math.isnan(final_progress_gap([0.9], []))


def test_step_agreement_tells_a_potential_that_follows_the_truth_from_one_that_jitters():
    t = np.linspace(0, 1, 120)
    truths = [np.clip(t * 1.3, 0, 1), np.clip(t * 0.8, 0, 1) ** 2]
    same = M.step_agreement(truths, truths)
    assert all(v == pytest.approx(1.0) for v in same["corr"].values()) and same["variation_ratio"] == pytest.approx(1.0)
    # The same curves with +-0.05 added on alternate frames: every 1-frame change is mostly the jitter,
    # while over an even gap it cancels; the model pays back and forth 0.1 a frame.
    jitter = [c + 0.05 * (-1.0) ** np.arange(len(c)) for c in truths]
    j = M.step_agreement(jitter, truths)
    assert j["corr"]["1"] < 0.3 and j["corr"]["10"] == pytest.approx(1.0) and j["corr"]["30"] == pytest.approx(1.0)
    assert j["variation_ratio"] > 5 and j["total_variation_truth"] == pytest.approx(same["total_variation"])
    # A reading 5 frames late agrees better over 30 frames than frame by frame.
    late = [np.concatenate([np.full(5, c[0]), c[:-5]]) for c in truths]
    lagged = M.step_agreement(late, truths)
    assert lagged["corr"]["1"] < lagged["corr"]["10"] < lagged["corr"]["30"] < 1.0
    with pytest.raises(RoborewardError, match="same length"):
        M.step_agreement([truths[0][:-1]], [truths[0]])
