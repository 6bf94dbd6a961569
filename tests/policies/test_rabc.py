"""RA-BC weights: LeRobot's formula on hand-computed values, episode ends, hard mode, missing
progress, the weighted loss, the sarm_progress.parquet round trip, failure vs expert episodes."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from policy_toy import build_policy_store

from roboreward.data import StoreError
from roboreward.policies.rabc import (
    RABCError,
    chunk_deltas,
    episode_gate,
    final_progress,
    rabc_weights,
    read_lerobot_progress,
    weighted_mean,
    weights_for_store,
    write_lerobot_progress,
)

# Two episodes: frames [0, 4) and [4, 7).
PROGRESS = np.array([0.0, 0.1, 0.3, 0.6, 0.0, 0.5, 0.4], np.float32)
ENDS = np.array([4, 7], np.int64)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return build_policy_store(tmp_path_factory.mktemp("rabc") / "toy.zarr")


def test_chunk_deltas_stop_at_episode_end():
    # H=2: t+2 clamped to the episode's last frame; the last frame's delta is 0, and episode 1
    # never looks into episode 0 or past its own end.
    expected = [0.3, 0.5, 0.3, 0.0, 0.4, -0.1, 0.0]
    np.testing.assert_allclose(chunk_deltas(PROGRESS, ENDS, 2), expected, atol=1e-6)
    np.testing.assert_allclose(chunk_deltas(PROGRESS, ENDS, 100), [0.6, 0.5, 0.3, 0.0, 0.4, -0.1, 0.0], atol=1e-6)


def test_soft_weights_match_hand_computation():
    d = chunk_deltas(PROGRESS, ENDS, 2)
    mu = 1.4 / 7  # mean of the deltas, > 0 so not clipped
    sigma = math.sqrt(0.32 / 7)  # population std: squared deviations .01 .09 .01 .04 .04 .09 .04
    soft_zero = (0.0 - (mu - 2 * sigma)) / (4 * sigma + 1e-6)
    assert 0 < soft_zero < 1
    np.testing.assert_allclose(rabc_weights(d), [1, 1, 1, soft_zero, 1, 0, soft_zero], atol=1e-6)
    # A delta in [0, kappa] gets the soft weight; with a bigger kappa 0.3 is soft too.
    w = rabc_weights(d, kappa=0.35)
    soft_03 = min(1.0, (0.3 - (mu - 2 * sigma)) / (4 * sigma + 1e-6))
    np.testing.assert_allclose(w[[0, 2]], [soft_03, soft_03], atol=1e-6)
    assert w[1] == 1 and w[5] == 0


def test_mean_clipped_at_zero_and_hard_mode():
    d = np.array([-0.2, -0.1, 0.0, 0.005, 0.02], np.float32)
    sigma = float(np.std(d.astype(np.float64)))  # mean < 0 -> mu = 0
    soft = np.clip((d - (0 - 2 * sigma)) / (4 * sigma + 1e-6), 0, 1)
    np.testing.assert_allclose(rabc_weights(d), [0, 0, soft[2], soft[3], 1], atol=1e-6)
    np.testing.assert_array_equal(rabc_weights(d, mode="hard"), [0, 0, 0, 0, 1])
    with pytest.raises(RABCError, match="mode 'sof' is not one of"):
        rabc_weights(d, mode="sof")


def test_missing_progress_names_episode_and_frame():
    p = PROGRESS.copy()
    p[5] = np.nan
    with pytest.raises(RABCError, match=r"first at episode 1 frame 1 \(global index 5\)"):
        chunk_deltas(p, ENDS, 2)
    with pytest.raises(RABCError, match="progress has 6 values but the episodes have 7 frames"):
        chunk_deltas(PROGRESS[:6], ENDS, 2)


def test_weighted_mean_is_lerobot_reduction():
    loss = torch.tensor([1.0, 2.0, 3.0, 4.0])
    w = torch.tensor([1.0, 0.5, 0.0, 0.25])
    expected = (1 * 1 + 0.5 * 2 + 0 + 0.25 * 4) / (1.75 + 1e-6)
    assert weighted_mean(loss, w).item() == pytest.approx(expected, rel=1e-6)
    assert weighted_mean(loss, None).item() == pytest.approx(2.5)
    assert weighted_mean(loss, torch.zeros(4)).item() == 0.0


def test_parquet_round_trip_with_lerobot_columns(store, tmp_path):
    sparse = store.array("gt.progress")[:].astype(np.float32)
    dense = (sparse * 0.5).astype(np.float32)
    path = write_lerobot_progress(store, {"sparse": sparse, "dense": dense}, tmp_path / "sarm_progress.parquet")
    table = pq.read_table(path)
    assert table.column_names == ["index", "episode_index", "frame_index", "progress_sparse", "progress_dense"]
    assert str(table.schema.field("index").type) == "int64"
    np.testing.assert_array_equal(read_lerobot_progress(path, store, "sparse"), sparse)
    np.testing.assert_array_equal(read_lerobot_progress(path, store, "dense"), dense)
    # The parquet as a source gives the same weights as the oracle it was written from.
    np.testing.assert_array_equal(weights_for_store(store, path, 4), weights_for_store(store, "gt.progress", 4))


def test_parquet_missing_row_or_nan_raises(store, tmp_path):
    path = write_lerobot_progress(store, store.array("gt.progress")[:], tmp_path / "p.parquet")
    df = pd.read_parquet(path)
    start = int(store.episode_starts[1])
    df.drop(index=start + 3).to_parquet(tmp_path / "gap.parquet")
    with pytest.raises(RABCError, match="first at episode 1 frame 3"):
        read_lerobot_progress(tmp_path / "gap.parquet", store)
    df.loc[2, "progress_sparse"] = np.nan
    df.to_parquet(tmp_path / "nan.parquet")
    with pytest.raises(RABCError, match="first at episode 0 frame 2"):
        read_lerobot_progress(tmp_path / "nan.parquet", store)
    with pytest.raises(RABCError, match=r"no column 'progress_dense' \(progress columns: \['progress_sparse'\]\)"):
        read_lerobot_progress(path, store, "dense")


def test_failures_get_lower_weight_than_experts(store):
    for mode in ("soft", "hard"):
        w = weights_for_store(store, "gt.progress", horizon=3, mode=mode)
        assert w.shape == (store.n_frames,) and w.dtype == np.float32
        ep = store.episode_index()
        expert = [w[ep == e].mean() for e in range(store.n_episodes) if store.episodes[e].quality == "expert"]
        failure = [w[ep == e].mean() for e in range(store.n_episodes) if store.episodes[e].quality == "failure"]
        assert max(failure) < min(expert) - 0.2, (mode, expert, failure)
    with pytest.raises(StoreError, match="no progress annotation 'sarm'"):
        weights_for_store(store, "sarm", horizon=3)


def test_episode_gate_by_hand(store):
    # Final progress = mean of the last k frames of each episode, never crossing into the previous one.
    np.testing.assert_allclose(final_progress(PROGRESS, ENDS, final_k=2), [(0.3 + 0.6) / 2, (0.5 + 0.4) / 2])
    np.testing.assert_allclose(final_progress(PROGRESS, ENDS, final_k=5), [np.mean(PROGRESS[:4]), np.mean(PROGRESS[4:])])
    np.testing.assert_array_equal(episode_gate(PROGRESS, ENDS, 0.3, final_k=1), [1, 1, 1, 1, 1, 1, 1])  # finals 0.6, 0.4
    np.testing.assert_array_equal(episode_gate(PROGRESS, ENDS, 0.5, final_k=1), [1, 1, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(episode_gate(PROGRESS, ENDS, 0.7, final_k=1), [0, 0, 0, 0, 0, 0, 0])
    # On a store: failed episodes (final progress low) are zeroed, experts keep their chunk weights.
    soft = weights_for_store(store, "gt.progress", horizon=3)
    gated = weights_for_store(store, "gt.progress", horizon=3, min_final_progress=0.5)
    only_gate = weights_for_store(store, "gt.progress", horizon=3, mode="none", min_final_progress=0.5)
    ep = store.episode_index()
    for e in range(store.n_episodes):
        failed = store.episodes[e].quality == "failure"
        np.testing.assert_array_equal(gated[ep == e], 0.0 if failed else soft[ep == e])
        np.testing.assert_array_equal(only_gate[ep == e], 0.0 if failed else 1.0)


def test_matches_lerobot_rabc_weights(store, tmp_path):
    rabc = pytest.importorskip("lerobot.rewards.sarm.rabc")
    progress = np.asarray(store.array("gt.progress")[:], np.float32)
    path = write_lerobot_progress(store, progress, tmp_path / "sarm_progress.parquet")
    theirs = rabc.RABCWeights(path, chunk_size=3, device=torch.device("cpu"))
    deltas = np.array([theirs._compute_delta(i) for i in range(store.n_frames)], np.float32)
    np.testing.assert_allclose(chunk_deltas(progress, store.episode_ends, 3), deltas, atol=1e-6)
    np.testing.assert_allclose(weights_for_store(store, path, 3), theirs._compute_weights(deltas), atol=1e-5)
