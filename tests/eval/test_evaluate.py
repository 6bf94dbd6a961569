"""evaluate_reward end to end on a labelled synthetic store: metrics, files, videos, the feature
cache built when missing, and a non-SARM model through the episode_progress hook."""
from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
import torch
from evaltoy import CAMS, FEATURE_KEY, HELD_OUT, PLAN, ClockConfig, ClockModel, encode, tiny_config

from roboreward.data import EpisodeStore
from roboreward.data.cache import cached_features
from roboreward.eval import auroc, evaluate_reward, final_progress
from roboreward.rewards.annotate import episode_progress
from roboreward.rewards.sarm import SARM


def test_evaluate_trained_sarm_writes_metrics_plots_videos(eval_store, tiny_sarm, tmp_path):
    out = tmp_path / "eval"
    result = evaluate_reward(tiny_sarm, eval_store.path, out, episodes=HELD_OUT, videos=2, plots=3)
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(result))
    assert result["episodes"] == HELD_OUT and result["primary_level"] == "sparse"
    m = result["levels"]["sparse"]
    assert result["voc"] == m["voc"] and m["voc_scope"] == "successful episodes" and m["voc_episodes"] == 3
    assert m["auroc_episodes"] == {"success": 3, "failure": 3}
    # The tiny model learned the toy signal: rising curves, successes end higher than failures,
    # reversed episodes fall, stages mostly right.
    assert m["voc"] > 0.9
    assert m["auroc"] == 1.0
    assert m["final_progress"]["success"] > m["final_progress"]["failure"] + 0.2
    assert m["reversed_fall_share"] == 1.0 and m["reversed_voc"] < -0.5
    assert m["mae"] < 0.2
    assert m["stage_accuracy"] > 0.7
    assert set(m["per_quality"]) == {"expert", "suboptimal", "failure"}
    assert m["per_quality"]["failure"]["episodes"] == 3
    assert [row["episode"] for row in result["per_episode"]] == HELD_OUT
    assert set(result["per_episode"][0]) >= {"final_progress", "voc", "mae", "stage_accuracy", "quality", "success"}

    files = result["files"]
    assert files["episodes"] == [f"episodes/episode_{e:04d}.png" for e in HELD_OUT[:3]]
    for name in [*files["episodes"], files["summary"]]:
        img = cv2.imread(str(out / name))
        assert img is not None and img.shape[0] > 200 and img.shape[1] > 500 and img.std() > 10
    # Videos: a success and a failure first; one frame per episode frame, views side by side.
    assert files["videos"] == ["videos/episode_0008.mp4", "videos/episode_0005.mp4"]
    for name, e in zip(files["videos"], (8, 5)):
        cap = cv2.VideoCapture(str(out / name))
        frames = []
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(frame)
        cap.release()
        assert len(frames) == PLAN[e][0]
        assert frames[0].shape == (240 + 64, 2 * 240, 3)  # two 8x8 views scaled to 240 px, panel below
        # The bar fills: more of its top row is coloured (not the grey track) at the end than at the start.
        lit = lambda f: (np.ptp(f[240 + 10, 10:-10].astype(int), axis=1) > 40).mean()  # noqa: E731
        assert lit(frames[-1]) > lit(frames[0]) + 0.2  # the failure stalls near 0.4


def test_evaluate_dual_levels_and_a_single_level(eval_store, tmp_path):
    torch.manual_seed(0)
    model = SARM(tiny_config(eval_store, annotation_mode="dual")).eval()  # untrained: only the plumbing
    result = evaluate_reward(model, eval_store.path, tmp_path / "a", episodes=[5, 8], videos=0, plots=1)
    assert set(result["levels"]) == {"sparse", "dense"}
    # No dense annotations in the store: dense is one "task" stage, so its accuracy is exactly 1.
    assert result["levels"]["dense"]["stage_accuracy"] == 1.0
    assert result["files"]["videos"] == [] and len(result["files"]["episodes"]) == 1
    only = evaluate_reward(model, eval_store.path, tmp_path / "b", episodes=[5, 8], level="dense", videos=0, plots=0)
    assert set(only["levels"]) == {"dense"} and only["primary_level"] == "dense"
    assert only["voc"] == pytest.approx(result["levels"]["dense"]["voc"])


def test_missing_feature_cache_is_built_with_the_key_s_encoder(eval_store, tiny_sarm, tmp_path, monkeypatch):
    path = tmp_path / "copy.zarr"
    shutil.copytree(eval_store.path, path)
    shutil.rmtree(path / "features")
    asked = []

    def fake_encoder_for_cache_key(key, weights=None, info=None):
        asked.append(key)
        return encode

    monkeypatch.setattr("roboreward.encoders.image.encoder_for_cache_key", fake_encoder_for_cache_key)
    result = evaluate_reward(tiny_sarm, path, tmp_path / "out", episodes=[5, 8], videos=0, plots=0)
    assert asked == [FEATURE_KEY] and result["built_feature_cache"] is True
    rebuilt = cached_features(EpisodeStore(path), FEATURE_KEY)
    original = cached_features(eval_store, FEATURE_KEY)
    for cam in CAMS:
        np.testing.assert_array_equal(rebuilt[cam][:], original[cam][:])
    again = evaluate_reward(tiny_sarm, path, tmp_path / "out2", episodes=[5, 8], videos=0, plots=0)
    assert again["built_feature_cache"] is False and again["voc"] == result["voc"]


# ---------------------------------------------------------------------------- any model, via the hook
def test_a_model_without_cached_features_plugs_in_through_episode_progress(eval_store, tmp_path):
    model = ClockModel(ClockConfig())
    result = evaluate_reward(model, eval_store.path, tmp_path / "clock", episodes=HELD_OUT, videos=1, plots=1)
    assert result["levels"].keys() == {"progress"}
    assert result["voc"] == pytest.approx(1.0)
    assert result["reversed_fall_share"] == 0.0  # a clock still rises when the episode plays backwards
    # Final progress only depends on the episode length (shorter -> the last 5 frames are later).
    finals = [final_progress(np.linspace(0, 1, PLAN[e][0])) for e in HELD_OUT]
    labels = [PLAN[e][1] for e in HELD_OUT]
    assert result["auroc"] == pytest.approx(auroc(finals, labels))
    assert "stage_accuracy" not in result
    assert result["files"]["videos"] == ["videos/episode_0008.mp4"]


def test_reverse_plays_features_backwards(eval_store, tiny_sarm):
    fwd = episode_progress(tiny_sarm, eval_store, [8, 9])
    back = episode_progress(tiny_sarm, eval_store, [8, 9], reverse=True)
    assert [len(p) for p in back] == [len(p) for p in fwd] == [PLAN[8][0], PLAN[9][0]]
    # The first reversed frame is the last real frame with no history; alone it scores like the
    # episode's last frame would without history: high for the success, low for the failure.
    assert back[0][0] > back[1][0]
    assert back[0][-1] < back[0][0]


def test_bad_episode_gives_a_clear_error(eval_store, tiny_sarm, tmp_path):
    with pytest.raises(Exception, match="episode 99 does not exist"):
        evaluate_reward(tiny_sarm, eval_store.path, tmp_path / "x", episodes=[99])
