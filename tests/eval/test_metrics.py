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
    mae,
    reversed_fall_share,
    spearman,
    stage_accuracy,
    voc,
)


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
