"""SARM: targets and priors, causality, exact rewind labels, language negatives, dual heads,
checkpoints, streaming == offline, and a tiny training run that learns progress."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from sarm_toy import CAMS, DIM, FEATURE_KEY, TASKS, build_toy_store, encode, frame_id
from torch.utils.data import default_collate

from roboreward.config import ConfigError
from roboreward.errors import RoborewardError
from roboreward.data import Episode, EpisodeStore, FeatureSpec, StoreError, Subtask
from roboreward.rewards import RewardModel, make_reward_model
from roboreward.rewards.base import CheckpointError
from roboreward.rewards.features import episode_batch, gate_step
from roboreward.rewards.targets import DONE_STAGE, annotation_targets, done_onsets, stage_priors
from roboreward.rewards.sarm import (
    SARM,
    SARMConfig,
    SARMDataset,
    append_rewind,
    filter_stage,
    rewind_index,
    stage_transitions,
)


def small_config(store, episodes=None, **kw) -> SARMConfig:
    base = dict(window=4, frame_gap=2, d_model=32, n_heads=2, n_layers=2, mlp_ratio=2, dropout=0.0, max_rewind=3)
    base.update(kw)
    return SARMConfig.from_store(store, FEATURE_KEY, episodes, **base)


def fit_in_memory(model: SARM, ds: SARMDataset, steps: int, seed: int, batch_size: int = 48) -> list[float]:
    """AdamW on random batches of a tiny dataset held in memory; the loss of every step."""
    data = default_collate([ds[i] for i in range(len(ds))])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(steps):
        idx = torch.randint(0, len(ds), (batch_size,), generator=gen)
        batch = {k: (v[idx] if torch.is_tensor(v) else [v[i] for i in idx]) for k, v in data.items()}
        loss = model.loss(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def annotated_store(path, episodes: list[tuple[int, dict]]) -> EpisodeStore:
    store = EpisodeStore.create(path, {"x": FeatureSpec((1,), "float32", "low_dim")}, fps=10.0)
    for length, ann in episodes:
        store.add_episode(Episode({"x": np.zeros((length, 1), np.float32)}, task="t",
                                  annotations={k: [Subtask(*s) for s in v] for k, v in ann.items()}))
    return store


# ---------------------------------------------------------------------------- targets and priors
def test_priors_and_targets_hand_computed(tmp_path):
    store = annotated_store(tmp_path / "s.zarr", [
        (10, {"sparse": [("a", 0, 4), ("b", 4, 10)]}),
        (20, {"sparse": [("a", 0, 10), ("b", 10, 20)]}),
    ])
    st = stage_priors(store, level="sparse")
    assert st.names == ("a", "b")
    np.testing.assert_allclose(st.priors, [0.45, 0.55])  # a: mean(0.4, 0.5); b: mean(0.6, 0.5)
    tg = annotation_targets(store, mode="sparse")["sparse"]
    # Episode 0, frame 2: stage a, tau = 2 / (4 - 1 - 0); progress = 0.45 * 2/3 = 0.3.
    assert tg.stage[2] == 0 and tg.tau[2] == pytest.approx(2 / 3) and tg.progress[2] == pytest.approx(0.3)
    # Episode 0, frame 6: stage b, tau = (6 - 4) / (10 - 1 - 4) = 0.4; progress = 0.45 + 0.55 * 0.4 = 0.67.
    assert tg.stage[6] == 1 and tg.tau[6] == pytest.approx(0.4) and tg.progress[6] == pytest.approx(0.67)
    # First frame 0, last frame 1; the stage boundary keeps the value P_0 on both sides.
    assert tg.progress[0] == 0.0 and tg.progress[9] == pytest.approx(1.0) and tg.progress[29] == pytest.approx(1.0)
    assert tg.progress[3] == pytest.approx(0.45) and tg.progress[4] == pytest.approx(0.45)
    assert np.all(np.diff(tg.progress[:10]) >= 0)
    # Priors from a subset of episodes (a training split) apply to the others as given.
    only0 = stage_priors(store, [0], "sparse")
    np.testing.assert_allclose(only0.priors, [0.4, 0.6])
    tg1 = annotation_targets(store, [1], "sparse", stages={"sparse": only0})["sparse"]
    assert tg1.stage[0] == -1 and np.isnan(tg1.progress[0])  # episode 0 not requested
    assert tg1.progress[10 + 5] == pytest.approx(0.4 * 5 / 9)


def test_targets_in_gaps_and_single_stage(tmp_path):
    store = annotated_store(tmp_path / "s.zarr", [
        (12, {"sparse": [("a", 2, 5), ("b", 7, 8), ("c", 8, 10)]}),
    ])
    st = stage_priors(store)
    np.testing.assert_allclose(st.priors, np.array([3, 1, 2]) / 6)
    tg = annotation_targets(store)["sparse"]
    np.testing.assert_array_equal(tg.stage, [0, 0, 0, 0, 0, 0, 0, 1, 2, 2, 2, 2])
    np.testing.assert_allclose(tg.tau, [0, 0, 0, 0.5, 1, 1, 1, 1, 0, 1, 1, 1])  # gaps: before 0, between/after 1
    np.testing.assert_allclose(tg.progress[[1, 5, 7, 8, 11]], [0.0, 0.5, 4 / 6, 4 / 6, 1.0], atol=1e-6)
    # No dense annotations anywhere: one stage over the episode, progress linear.
    dense = annotation_targets(store, mode="dense")["dense"]
    assert dense.stages.names == ("task",)
    np.testing.assert_allclose(dense.progress, np.linspace(0, 1, 12), atol=1e-6)


def test_done_stage_targets_hand_computed(tmp_path):
    """The done stage: the final run of the success flag in episodes marked successful, prior 0,
    progress exactly 1; other frames keep their annotation targets; a flag off at the last frame
    or a failed episode has none."""
    store = EpisodeStore.create(tmp_path / "s.zarr", {"x": FeatureSpec((1,), "float32", "low_dim"),
                                                      "ok": FeatureSpec((), "float32", "target")}, fps=10.0)
    flags = {0: [0, 0, 0, 0, 0, 0, 1, 0, 1, 1],   # flickers at 6, done from 8
             1: [0, 0, 0, 0, 0, 0, 0, 0, 1, 1],   # marked a failure: no done stage
             2: [0, 0, 0, 0, 0, 0, 1, 1, 1, 0]}   # flag off at the last frame: no done stage
    for e, success in ((0, True), (1, False), (2, True)):
        store.add_episode(Episode({"x": np.zeros((10, 1), np.float32), "ok": np.array(flags[e], np.float32)}, task="t",
                                  success=success, annotations={"sparse": [Subtask("a", 0, 4), Subtask("b", 4, 10)]}))
    assert done_onsets(store, [0, 1, 2], "ok") == {0: 8}
    st = stage_priors(store, level="sparse", done=True)
    assert st.names == ("a", "b", DONE_STAGE) and st.priors[-1] == 0.0 and st.has_done and st.annotated == ("a", "b")
    np.testing.assert_allclose(st.priors[:2], [0.4, 0.6])
    plain = annotation_targets(store, mode="sparse")["sparse"]
    tg = annotation_targets(store, mode="sparse", done_key="ok")["sparse"]
    np.testing.assert_array_equal(tg.stage[:10], [0, 0, 0, 0, 1, 1, 1, 1, 2, 2])
    np.testing.assert_array_equal(tg.progress[8:10], [1.0, 1.0])
    np.testing.assert_allclose(tg.progress[:8], plain.progress[:8], atol=1e-6)  # prior 0: nothing before changes
    np.testing.assert_allclose(tg.progress[10:], plain.progress[10:], atol=1e-6)  # episodes 1 and 2 unchanged
    assert tg.stage[10:].max() == 1
    # A stage set with done but no key: annotation stages only (a store without the flag).
    no_key = annotation_targets(store, mode="sparse", stages={"sparse": st})["sparse"]
    assert no_key.stage.max() == 1
    with pytest.raises(StoreError, match="no per-frame success flag 'gt.success'"):
        done_onsets(store, [0], "gt.success")
    # LeRobot's per-frame next.success, carried by import-lerobot as a (1,) low-dim feature, works alike.
    lr = EpisodeStore.create(tmp_path / "lr.zarr", {"next.success": FeatureSpec((1,), "float32", "low_dim")}, fps=10.0)
    lr.add_episode(Episode({"next.success": np.array([[0], [0], [0], [1], [1]], np.float32)}, task="t", success=True,
                           annotations={"sparse": [Subtask("a", 0, 5)]}))
    assert done_onsets(lr, [0], "next.success") == {0: 3}
    named = annotated_store(tmp_path / "n.zarr", [(5, {"sparse": [("a", 0, 2), ("done", 2, 5)]})])
    with pytest.raises(StoreError, match="already name a stage 'done'"):
        stage_priors(named, done=True)


def test_done_stage_is_learned_and_read_as_finished(tmp_path):
    """SARM with done_key learns the done stage from the flag and reads progress 1 there; without the
    flag in the store it has no done stage and training says why."""
    success = [True, True, True, False, True, True, True, True]
    store = build_toy_store(tmp_path / "done.zarr", success=success, done_from=0.8)
    train_eps, val_eps = [0, 1, 2, 3, 4, 5], [6, 7]
    cfg = small_config(store, train_eps, done_key="gt.success", rewind_prob=0.3)
    assert cfg.sparse_stages[-1] == DONE_STAGE and cfg.sparse_priors[-1] == 0.0
    torch.manual_seed(0)
    ds = SARMDataset(store, cfg, train_eps)
    assert any((ds[i]["sarm.sparse.stage"] == 2).any() for i in range(len(ds)))  # done frames among the targets
    model = SARM(cfg).train()
    fit_in_memory(model, ds, steps=150, seed=0)
    model.eval()
    batch = episode_batch(store, cfg, val_eps)
    stage = model.stage_probs(batch).argmax(-1)
    pred = model.progress(batch)
    for row, e in enumerate(val_eps):
        length = store.episodes[e].length
        truth = store.read_episode(e, ["gt.progress"]).data["gt.progress"]
        done, early = truth >= 0.9, truth < 0.6  # clear of the onset at 0.8
        assert (stage[row, :length][torch.from_numpy(done)] == 2).float().mean() > 0.8
        assert (stage[row, :length][torch.from_numpy(early)] == 2).float().mean() < 0.1
        assert float(pred[row, length - 1]) > 0.97
    targets = model.stage_targets(store, val_eps, "sparse")
    assert targets.stages.has_done and (targets.stage == 2).any()
    # A store without the flag: no done stage, and a note that says so.
    plain = small_config(build_toy_store(tmp_path / "plain.zarr"), done_key="gt.success")
    assert DONE_STAGE not in plain.sparse_stages
    notes = SARM.training_notes(EpisodeStore(tmp_path / "plain.zarr"), {"done_key": "gt.success"}, train_eps)
    assert any("no per-frame success flag 'gt.success'" in n for n in notes)
    with pytest.raises(ConfigError, match="done_key"):
        small_config(store, done_key="")


def test_partly_annotated_data_is_rejected(tmp_path):
    store = annotated_store(tmp_path / "s.zarr", [(5, {"sparse": [("a", 0, 5)]}), (5, {})])
    with pytest.raises(StoreError, match="episode 1 has no sparse annotations"):
        stage_priors(store)


def test_dual_mode_targets_and_heads(toy_store):
    tg = annotation_targets(toy_store, mode="dual")
    assert set(tg) == {"sparse", "dense"}
    assert tg["sparse"].stages.names == ("reach", "grasp")
    assert tg["dense"].stages.names == ("approach", "close", "lift")
    cfg = small_config(toy_store, annotation_mode="dual")
    assert cfg.levels == ("sparse", "dense") and len(cfg.dense_priors) == 3
    torch.manual_seed(0)
    model = SARM(cfg)
    batch = default_collate([SARMDataset(toy_store, cfg, [0])[i] for i in range(8)])
    assert {"sparse.stage_ce", "dense.stage_ce", "sparse.tau_mse", "dense.tau_mse"} <= set(model.loss(batch))
    eb = episode_batch(toy_store, cfg, [0, 1])
    model.eval()
    sparse, dense = model.progress(eb), model.progress(eb, level="dense")
    assert sparse.shape == dense.shape == (2, 30) and not torch.equal(sparse, dense)
    assert model.stream(1, level="dense").level == "dense"


# ---------------------------------------------------------------------------- causality
def test_temporal_model_is_causal_with_random_inputs(toy_store):
    torch.manual_seed(0)
    model = SARM(small_config(toy_store, state_key="observation.state", max_rewind=3, view_fusion="concat")).eval()
    b, length = 3, 7  # window + max_rewind slots
    feats = torch.randn(b, length, 2, DIM)
    state = torch.randn(b, length, 3)
    task = torch.tensor([0, 1, 0])
    pad = torch.zeros(b, length, dtype=torch.bool)
    pad[2, :2] = True  # padded leading frames must not break anything either
    ref = model.window_outputs(feats, state, task, pad)
    for t in range(length - 1):
        f2, s2 = feats.clone(), state.clone()
        f2[:, t + 1:] = torch.randn_like(f2[:, t + 1:]) * 5
        s2[:, t + 1:] = torch.randn_like(s2[:, t + 1:]) * 5
        out = model.window_outputs(f2, s2, task, pad)
        for level, (logits, tau) in out.items():
            torch.testing.assert_close(logits[:, : t + 1], ref[level][0][:, : t + 1], rtol=0, atol=1e-6)
            torch.testing.assert_close(tau[:, : t + 1], ref[level][1][:, : t + 1], rtol=0, atol=1e-6)
        # ...while the future frames do change the future outputs (the test can fail).
        assert not torch.allclose(out["sparse"][0][:, t + 1:], ref["sparse"][0][:, t + 1:])
    assert all(torch.isfinite(x).all() for pair in ref.values() for x in pair)


def test_offline_progress_is_causal(toy_store):
    torch.manual_seed(0)
    model = SARM(small_config(toy_store)).eval()
    batch = {f"features.{c}": torch.randn(2, 20, DIM) for c in CAMS} | {"task": list(TASKS)}
    ref = model.progress(batch)
    assert ref.shape == (2, 20) and ((ref >= 0) & (ref <= 1)).all()
    t = 9
    changed = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in batch.items()}
    for c in CAMS:
        changed[f"features.{c}"][:, t + 1:] = torch.randn(2, 10, DIM)
    out = model.progress(changed)
    torch.testing.assert_close(out[:, : t + 1], ref[:, : t + 1], rtol=0, atol=1e-6)
    assert not torch.allclose(out[:, t + 1:], ref[:, t + 1:])
    # Per-sample task text: swapping one sample's task changes only that sample.
    swapped = dict(batch, task=[TASKS[0], TASKS[0]])
    out2 = model.progress(swapped)
    torch.testing.assert_close(out2[0], ref[0], rtol=0, atol=1e-6)
    assert not torch.allclose(out2[1], ref[1])


# ---------------------------------------------------------------------------- rewind and negatives
def test_rewind_index_layout():
    index, unused = rewind_index(torch.tensor([0, 1, 3]), window=4, max_steps=3)
    assert index.tolist() == [[0, 1, 2, 3, 3, 3, 3], [0, 1, 2, 3, 2, 3, 3], [0, 1, 2, 3, 2, 1, 0]]
    assert unused.tolist() == [[True, True, True], [False, True, True], [False, False, False]]


def test_rewind_labels_match_the_rewound_frames_exactly(toy_store):
    cfg = small_config(toy_store, annotation_mode="dual", window=5, frame_gap=3, max_rewind=4)
    ds = SARMDataset(toy_store, cfg)
    items = [ds[i] for i in range(0, len(ds), 7)]
    batch = default_collate(items)
    pad = batch["pad_mask"]
    steps = ((~pad).sum(1) - 1).clamp(max=4)  # as many as each clip allows
    assert steps.max() == 4 and steps.min() == 0
    keys = [f"features.{c}" for c in CAMS] + ["frame_index"] + [f"sarm.{lvl}.{w}" for lvl in ("sparse", "dense") for w in ("stage", "tau", "progress")]
    out, new_pad = append_rewind({k: batch[k] for k in keys}, pad, steps, 4)
    targets = annotation_targets(toy_store, mode="dual")
    starts = torch.as_tensor(toy_store.episode_starts)[batch["episode_index"]]
    t_last = batch["frame_index"][:, -1]
    for b in range(len(items)):
        for j in range(steps[b]):
            slot = cfg.window + j
            assert not new_pad[b, slot]
            want = int(t_last[b]) - (j + 1) * cfg.frame_gap  # frames t-gap, t-2gap, ... in that order
            assert out["frame_index"][b, slot] == want
            g = int(starts[b]) + want
            for c in CAMS:  # the features really are that frame's (its id is encoded in the pixels)
                assert frame_id(out[f"features.{c}"][b, slot]) == g
            for lvl in ("sparse", "dense"):
                assert out[f"sarm.{lvl}.stage"][b, slot] == targets[lvl].stage[g]
                assert out[f"sarm.{lvl}.tau"][b, slot] == targets[lvl].tau[g]
                assert out[f"sarm.{lvl}.progress"][b, slot] == targets[lvl].progress[g]
        assert new_pad[b, cfg.window + int(steps[b]):].all()
    # Original clip frames also carry their own targets (dataset side).
    g_all = starts[:, None] + batch["frame_index"]
    np.testing.assert_array_equal(batch["sarm.sparse.progress"], targets["sparse"].progress[g_all.numpy()])
    assert (frame_id(batch[f"features.{CAMS[0]}"]) == g_all).all()


def test_loss_applies_rewind_and_language_negatives(toy_store, monkeypatch):
    torch.manual_seed(0)
    cfg = small_config(toy_store, rewind_prob=1.0, perturb_prob=1.0)
    model = SARM(cfg).train()
    ds = SARMDataset(toy_store, cfg)
    batch = default_collate([ds[i] for i in range(10, 200, 19)])
    seen = {}
    real = model.window_outputs

    def spy(feats, state, task, pad):
        out = real(feats, state, task, pad)
        seen.update(feats=feats, task=task, pad=pad, out=out)
        return out

    monkeypatch.setattr(model, "window_outputs", spy)
    losses = model.loss(batch)
    assert torch.isfinite(losses["loss"])
    own = model.task_indices(batch["task"])
    assert (seen["task"] != own).all()  # every task swapped for another one of the data
    assert seen["feats"].shape[1] == cfg.window + cfg.max_rewind
    assert (~seen["pad"][:, cfg.window:]).any()
    # Negatives: target stage 0 and tau 0 at every real frame.
    logits, tau = seen["out"]["sparse"]
    valid = ~seen["pad"]
    want_ce = torch.nn.functional.cross_entropy(logits[valid], torch.zeros(int(valid.sum()), dtype=torch.long))
    torch.testing.assert_close(losses["sparse.stage_ce"], want_ce)
    torch.testing.assert_close(losses["sparse.tau_mse"], (tau[..., 0][valid] ** 2).mean())
    # Eval mode: no augmentation at all.
    model.eval()
    model.loss(batch)
    assert seen["feats"].shape[1] == cfg.window and (seen["task"] == own).all()


def test_single_task_data_never_perturbs(toy_store):
    cfg = dataclasses.replace(small_config(toy_store, perturb_prob=1.0), tasks=[TASKS[0]])
    model = SARM(cfg)
    _, perturb = model.sample_augmentations(torch.zeros(4, 4, dtype=torch.bool), 4)
    assert not perturb.any()


# ---------------------------------------------------------------------------- checkpoints, stream
def test_save_load_round_trip_identical(toy_store, tmp_path):
    torch.manual_seed(0)
    cfg = small_config(toy_store, state_key="observation.state", annotation_mode="dual")
    model = make_reward_model(cfg).eval()
    batch = episode_batch(toy_store, cfg, [0, 3])
    ref = model.progress(batch)
    path = model.save_pretrained(tmp_path / "ckpt")
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors"]
    loaded = RewardModel.from_pretrained(path)
    assert type(loaded) is SARM and loaded.config == cfg and not loaded.training
    assert torch.equal(loaded.progress(batch), ref)
    assert torch.equal(loaded.progress(batch, level="dense"), model.progress(batch, level="dense"))
    assert type(SARM.from_pretrained(path)) is SARM
    # Readout fields may change on a trained checkpoint; anything the weights fix may not.
    filtered = RewardModel.from_pretrained(path, overrides={"readout_filter": "stage"})
    assert filtered.config.readout_filter == "stage"
    assert not torch.equal(filtered.progress(batch), ref)
    with pytest.raises(CheckpointError, match="'d_model' is fixed by the trained weights.*readout_filter"):
        RewardModel.from_pretrained(path, overrides={"d_model": 64})
    with pytest.raises(CheckpointError, match="readout_filter 'hmm' is not one of"):
        RewardModel.from_pretrained(path, overrides={"readout_filter": "hmm"})


def test_change_gate_keeps_progress_of_still_frames_and_follows_moving_ones(toy_store):
    torch.manual_seed(0)
    cfg = small_config(toy_store)
    model = SARM(cfg).eval()
    gated = SARM(dataclasses.replace(cfg, readout_gate=1e-6))
    gated.load_state_dict(model.state_dict())
    gated.eval()
    batch = episode_batch(toy_store, cfg, [1])
    # Frames 0..9, then frame 9 held 20 more times: the model's own reading moves, the gated one stays.
    index = torch.tensor(list(range(10)) + [9] * 20)
    held = {k: v[:, index] if torch.is_tensor(v) and k != "lengths" else v for k, v in batch.items()}
    raw, kept = model.progress(held)[0], gated.progress(held)[0]
    assert (raw[10:] - raw[9]).abs().max() > 1e-3  # the still window is read differently...
    assert torch.equal(kept[10:], kept[9].expand(20))  # ...but progress does not move
    # Moving frames change far more than the tiny scale, so the gate is fully open there.
    torch.testing.assert_close(kept[:10], raw[:10], rtol=0, atol=1e-6)
    assert gate_step(torch.tensor([0.2]), torch.tensor([0.6]), torch.tensor([0.15]), 0.2, 0.05).item() == pytest.approx(0.4)


def test_stage_filter_moves_on_freely_and_goes_back_only_on_sustained_evidence():
    trans = stage_transitions(4, 1e-3)
    assert torch.allclose(trans.sum(1), torch.ones(4)) and trans[3, 0] < 1e-3 < trans[0, 3]

    def run(sequence):
        belief, out = torch.full((1, 4), 0.25), []
        for t, probs in enumerate(sequence):
            belief = filter_stage(belief, torch.tensor([probs]), trans, 0.5, torch.tensor([t == 0]))
            out.append(int(belief.argmax()))
        return out

    onehot = lambda k, p: [p if j == k else (1 - p) / 3 for j in range(4)]  # noqa: E731
    # Forward: the belief follows the head at once, even skipping a stage.
    assert run([onehot(0, 0.9)] * 3 + [onehot(2, 0.9)] * 3) == [0, 0, 0, 2, 2, 2]
    # A stretch of frames read as "reach" after the last stage does not undo it...
    assert run([onehot(3, 0.9)] * 5 + [onehot(0, 0.9)] * 5)[-1] == 3
    # ...but sustained, confident evidence does (a dropped object): the filter is not a ratchet.
    assert run([onehot(3, 0.9)] * 5 + [onehot(0, 0.999)] * 40)[-1] == 0


def test_min_stay_holds_a_stage_through_a_short_misread_and_follows_a_long_one():
    """filter_min_stay m: a stage entered going forward is held m frames before a later one can
    follow. Done is entered only from the last annotated stage, so a lifted cube read as finished
    (shorter than m) can no longer end in done (progress 1) mid-lift; a real finish still does."""
    from roboreward.rewards.sarm.modeling_sarm import stage_marginal

    assert torch.equal(stage_transitions(5, 1e-3, True, 1), stage_transitions(5, 1e-3, True))
    trans = stage_transitions(5, 1e-3, True, 6)  # reach, grasp, transport, place, done
    assert trans.shape == (30, 30) and torch.allclose(trans.sum(1), torch.ones(30))
    assert trans[6, 7] > 0.99 and trans[6, 18] == 0  # grasp, frame 1 of 6: no move on yet
    assert trans[11, 12] > 0 and trans[11, 18] > 0 and trans[11, 24] == 0  # held 6: on to transport or place, not done

    def run(sequence, transitions):
        k = len(sequence[0])
        belief, out = torch.zeros(1, transitions.shape[0]), []
        for t, probs in enumerate(sequence):
            belief = filter_stage(belief, torch.tensor([probs]), transitions, 0.5, torch.tensor([t == 0]))
            out.append(int(stage_marginal(belief, k).argmax()))
        return out

    onehot = lambda k, p: [p if j == k else (1 - p) / 4 for j in range(5)]  # noqa: E731
    # reach, grasp, then a 4-frame read of "done" at the lift, then transport
    lift = [onehot(0, 0.9)] * 8 + [onehot(1, 0.9)] * 8 + [onehot(4, 0.9)] * 4 + [onehot(2, 0.9)] * 8
    assert max(run(lift, stage_transitions(5, 1e-3, True))) == 4  # without a minimum stay: done mid-lift
    assert max(run(lift, trans)) <= 3
    place = [onehot(0, 0.9)] * 8 + [onehot(1, 0.9)] * 2 + [onehot(2, 0.9)] * 8 + [onehot(3, 0.9)] * 8 + [onehot(4, 0.9)] * 10
    got = run(place, trans)  # a real sequence still gets through, each stage after its wait
    assert got[-1] == 4 and got.index(4) >= got.index(3) + 6  # done only once place has been held 6 frames

    # Per stage: place (3) waits 2 frames, the rest 6. The late finish gets to done 2 frames after
    # place began, and a stage that waits m is still held m: the uniform filter is the special case.
    per_stage = stage_transitions(5, 1e-3, True, [6, 6, 6, 2, 1])
    assert per_stage.shape == (30, 30) and torch.allclose(per_stage.sum(1), torch.ones(30))
    assert per_stage[17, 22] > 0 and per_stage[17, 18] == 0  # transport held: into place at its 2-frame entry
    # A late finish: one frame read as place, then done to the end (the head's read after a quick release).
    late = [onehot(0, 0.9)] * 8 + [onehot(1, 0.9)] * 8 + [onehot(2, 0.9)] * 8 + [onehot(3, 0.9)] + [onehot(4, 0.9)] * 3
    uniform, staged = run(late, trans), run(late, per_stage)
    assert uniform[-1] == 3  # held in place 6 frames: the episode ends before done is reached
    assert staged[-1] == 4 and staged.index(4) <= 24 + 2  # place held its own 2 frames
    # What a short place wait gives up: the 4-frame done read at the lift gets through place's 2 frames.
    assert max(run(lift, per_stage)) == 4
    assert torch.equal(stage_transitions(5, 1e-3, True, [6] * 5), trans)
    with pytest.raises(RoborewardError, match="one count >= 1 per stage"):
        stage_transitions(5, 1e-3, True, [6, 6, 0, 2, 1])


def test_min_stay_per_stage_comes_from_the_training_durations(toy_store):
    """filter_min_stay_frac: each stage is held that fraction of its short training duration (the
    5th percentile of its annotated lengths, recorded at training as <level>_short_frames)."""
    from roboreward.rewards.targets import stage_short_frames

    store = toy_store
    cfg = small_config(store, [0, 1, 2, 3])
    names = cfg.sparse_stages
    want = [int(np.percentile([s.end - s.start for e in range(4) for s in store.episodes[e].annotations["sparse"]
                               if s.name == n], 5)) for n in names]
    assert cfg.sparse_short_frames == stage_short_frames(store, [0, 1, 2, 3], "sparse", names) == want
    assert cfg.min_stays("sparse") == [1] * len(names)  # off by default
    half = dataclasses.replace(cfg, filter_min_stay_frac=0.5, filter_min_stay=2)
    assert half.min_stays("sparse") == [max(2, round(0.5 * f)) for f in want]
    model = SARM(half)
    assert model.transitions_sparse.shape[0] == len(names) * max(half.min_stays("sparse"))
    old = dataclasses.replace(cfg, filter_min_stay_frac=0.5, sparse_short_frames=[])
    with pytest.raises(ConfigError, match="filter_min_stay_frac needs the stage durations"):
        SARM(old)


def test_done_stage_is_entered_only_from_the_last_annotated_stage():
    """An absorbing done stage every stage could jump to collects the belief of a failure whose head
    gives done a few percent for long enough; entered only from the last annotated stage it does not,
    and a real finish still reaches it at once."""
    trans = stage_transitions(4, 1e-3, done=True)  # reach, grasp, place, done
    assert torch.allclose(trans.sum(1), torch.ones(4))
    assert trans[0, 3] == 0 and trans[1, 3] == 0 and trans[2, 3] > 0.4 and trans[0, 2] > 0.2

    def final(sequence, transitions):
        belief = torch.full((1, 4), 0.25)
        for t, probs in enumerate(sequence):
            belief = filter_stage(belief, torch.tensor([probs]), transitions, 0.5, torch.tensor([t == 0]))
        return int(belief.argmax())

    stuck = [[0.88, 0.04, 0.03, 0.05]] * 60  # a stuck reach, done at 5% (measured on a real failure)
    assert final(stuck, stage_transitions(4, 1e-3)) == 3  # what uniform jumps did
    assert final(stuck, trans) == 0
    finish = [[0.9, 0.05, 0.03, 0.02]] * 5 + [[0.05, 0.05, 0.85, 0.05]] * 5 + [[0.02, 0.02, 0.16, 0.8]] * 3
    assert final(finish, trans) == 3


def test_stage_hold_keeps_progress_within_a_stage_and_lets_a_return_through(toy_store):
    from roboreward.rewards.sarm.modeling_sarm import hold_step

    prev, reading = torch.tensor([0.8, 0.8, 0.8]), torch.tensor([0.6, 0.9, 0.3])
    stage, prev_stage = torch.tensor([3, 3, 1]), torch.tensor([3, 2, 3])
    assert hold_step(prev, reading, stage, prev_stage).tolist() == pytest.approx([0.8, 0.9, 0.3])
    # On a model: wherever the readout's stage does not go back, held progress does not fall, and it
    # is never below the plain reading (it holds, it never invents a drop).
    torch.manual_seed(0)
    cfg = small_config(toy_store, readout_filter="stage", filter_back_prob=0.05)
    model = SARM(cfg).eval()
    held = SARM(dataclasses.replace(cfg, readout_hold="stage"))
    held.load_state_dict(model.state_dict())
    held.eval()
    batch = episode_batch(toy_store, cfg, [0, 1, 4])
    index = torch.tensor(list(range(20)) + list(range(19, 5, -1)))  # forward, then the video played back
    batch = {k: v[:, index] if torch.is_tensor(v) and k != "lengths" else v for k, v in batch.items()}
    raw, kept = model.progress(batch), held.progress(batch)
    stage = model.stage_probs(batch).argmax(-1)
    same = stage[:, 1:] >= stage[:, :-1]
    assert torch.all((kept[:, 1:] >= kept[:, :-1] - 1e-6) | ~same)
    assert torch.all(kept >= raw - 1e-6) and not torch.equal(kept, raw)


@pytest.mark.parametrize("fusion,state,filt,gate,hold,stay", [
    ("mean", False, "none", 0.0, "none", 1), ("concat", True, "none", 0.0, "none", 1),
    ("mean", True, "stage", 0.0, "none", 1), ("mean", False, "stage", 0.5, "none", 1),
    ("mean", False, "stage", 0.5, "stage", 1), ("mean", True, "none", 0.0, "stage", 1),
    ("mean", True, "stage", 0.5, "stage", 4), ("mean", False, "none", 0.0, "none", 4)])
def test_stream_equals_offline(toy_store, fusion, state, filt, gate, hold, stay):
    torch.manual_seed(0)
    cfg = small_config(toy_store, view_fusion=fusion, state_key="observation.state" if state else None,
                       readout_filter=filt, filter_back_prob=0.05, readout_gate=gate, readout_hold=hold,
                       filter_min_stay=stay)
    model = SARM(cfg).eval()
    eps = [1, 4]  # lengths 30 and 21: env 1 finishes first and starts episode 2 after a reset
    offline = model.progress(episode_batch(toy_store, cfg, eps + [2]))
    stream = model.stream(2)
    ep_data = {e: episode_batch(toy_store, cfg, [e]) for e in (1, 4, 2)}
    schedule = [(1, t) for t in range(30)], [(4, t) for t in range(21)] + [(2, t) for t in range(9)]
    got = {1: [], 4: [], 2: []}
    for step in range(30):
        obs = {}
        tasks = []
        for env in range(2):
            e, t = schedule[env][step]
            if t == 0 and step > 0:
                stream.reset(env)
            for k, v in ep_data[e].items():
                if torch.is_tensor(v) and k != "lengths":
                    obs.setdefault(k, []).append(v[0, t])
            tasks.append(ep_data[e]["task"][0])
        value = stream.step({k: torch.stack(v) for k, v in obs.items()}, tasks)
        assert value.shape == (2,)
        for env in range(2):
            got[schedule[env][step][0]].append(value[env])
    torch.testing.assert_close(torch.stack(got[1]), offline[0, :30], rtol=0, atol=1e-5)
    torch.testing.assert_close(torch.stack(got[4]), offline[1, :21], rtol=0, atol=1e-5)
    torch.testing.assert_close(torch.stack(got[2]), offline[2, :9], rtol=0, atol=1e-5)


def test_stream_encodes_each_new_frame_once(toy_store):
    torch.manual_seed(0)
    cfg = small_config(toy_store)
    model = SARM(cfg).eval()
    calls = []

    def encoder(frames):  # the cache stores float16, so round the same way
        calls.append(len(frames))
        return encode(frames).half().float()

    ep = 0
    start, end = toy_store.episode_range(ep)
    offline = model.progress(episode_batch(toy_store, cfg, [ep]))[0]
    stream = model.stream(1, encoder=encoder)
    frames = {c: toy_store.array(c)[start:end] for c in CAMS}
    values = [stream.step({c: frames[c][t : t + 1] for c in CAMS}, TASKS[0])[0] for t in range(end - start)]
    torch.testing.assert_close(torch.stack(values), offline, rtol=0, atol=1e-5)
    assert calls == [1] * (2 * (end - start))  # one call per view per new frame, never the window


def test_bad_inputs_give_clear_errors(toy_store):
    model = SARM(small_config(toy_store)).eval()
    batch = {f"features.{c}": torch.randn(1, 5, DIM) for c in CAMS} | {"task": ["fold the shirt"]}
    with pytest.raises(Exception, match="not in the training data"):
        model.progress(batch)
    with pytest.raises(Exception, match="features.observation.images.wrist"):
        model.progress({f"features.{CAMS[0]}": torch.randn(1, 5, DIM), "task": [TASKS[0]]})
    stream = model.stream(2)
    with pytest.raises(Exception, match="no encoder"):
        stream.step({c: np.zeros((2, 8, 8, 3), np.uint8) for c in CAMS}, TASKS[0])
    with pytest.raises(Exception, match="2 envs"):
        stream.step({c: torch.zeros(2, DIM) for c in CAMS}, [TASKS[0]])
    with pytest.raises(ConfigError, match="annotation_mode 'both' is not one of"):
        SARMConfig(annotation_mode="both")
    with pytest.raises(ConfigError, match="max_rewind must be in"):
        SARMConfig(window=3, max_rewind=3)
    with pytest.raises(ConfigError, match="tasks is empty"):
        SARM(SARMConfig())


# ---------------------------------------------------------------------------- learning
@pytest.mark.parametrize("seed", [0])
def test_tiny_training_learns_progress(toy_store, seed):
    torch.manual_seed(seed)
    train_eps, val_eps = [0, 1, 2, 3, 4, 5], [6, 7]
    cfg = small_config(toy_store, train_eps, rewind_prob=0.5, perturb_prob=0.2)
    ds = SARMDataset(toy_store, cfg, train_eps)
    model = SARM(cfg).train()
    losses = fit_in_memory(model, ds, steps=150, seed=seed)
    assert np.mean(losses[-15:]) < 0.5 * np.mean(losses[:15])
    model.eval()
    batch = episode_batch(toy_store, cfg, val_eps)
    pred = model.progress(batch)
    for row, e in enumerate(val_eps):
        length = toy_store.episodes[e].length
        truth = toy_store.read_episode(e, ["gt.progress"]).data["gt.progress"]
        r = np.corrcoef(pred[row, :length].numpy(), truth)[0, 1]
        assert r > 0.9, (e, r)
        assert abs(float(pred[row, length - 1]) - 1.0) < 0.25 and float(pred[row, 0]) < 0.25


def test_task_vocabulary_covers_every_episode_not_only_the_training_split(toy_store):
    """A held-out episode whose task the training split lacks gets an embedding, not a crash at the
    first validation; stage priors still come from the training split."""
    only_first = [e for e in range(toy_store.n_episodes) if toy_store.episodes[e].task == toy_store.episodes[0].task]
    cfg = SARMConfig.from_store(toy_store, FEATURE_KEY, episodes=only_first, window=4, max_rewind=2, d_model=32, n_heads=2,
                                n_layers=1)
    assert cfg.tasks == sorted(TASKS)
    model = SARM(cfg).eval()
    other = next(e for e in range(toy_store.n_episodes) if e not in only_first)
    batch = episode_batch(toy_store, cfg, [other])
    assert torch.isfinite(model.progress(batch)).all()


def test_freeze_augmentation_repeats_the_last_moving_frame_with_its_targets():
    from roboreward.rewards.sarm.modeling_sarm import apply_freeze, freeze_index

    assert freeze_index(torch.tensor([3, 5]), 5).tolist() == [[0, 1, 2, 2, 2], [0, 1, 2, 3, 4]]
    feats = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)
    tau = torch.linspace(0, 1, 5).repeat(2, 1)
    out = apply_freeze({"feats": feats, "sarm.sparse.tau": tau}, torch.tensor([2, 5]))
    assert torch.equal(out["feats"][0, 2:], feats[0, 1:2].expand(3, 3))  # inputs frozen from position 2 ...
    assert torch.equal(out["sarm.sparse.tau"][0, 2:], tau[0, 1].repeat(3))  # ... and the targets with them
    assert torch.equal(out["feats"][1], feats[1]) and torch.equal(out["sarm.sparse.tau"][1], tau[1])
    with pytest.raises(ConfigError, match="freeze_prob"):
        SARMConfig(tasks=["t"], sparse_stages=["a"], sparse_priors=[1.0], freeze_prob=1.5)


def test_state_noise_shifts_each_clip_by_one_offset_in_training_only(toy_store, monkeypatch):
    torch.manual_seed(0)
    cfg = small_config(toy_store, state_key="observation.state", state_noise=5.0, rewind_prob=0.0, perturb_prob=0.0)
    model = SARM(cfg).train()
    ds = SARMDataset(toy_store, cfg)
    batch = default_collate([ds[i] for i in range(5, len(ds), max(1, len(ds) // 40))])
    seen = {}
    real = model.window_outputs

    def spy(feats, state, task, pad):
        seen["state"] = state
        return real(feats, state, task, pad)

    monkeypatch.setattr(model, "window_outputs", spy)
    model.loss(batch)
    clean = model.state_of(batch)
    offset = seen["state"] - clean
    # One offset per clip and value, the same on every frame of the clip ...
    torch.testing.assert_close(offset, offset[:, :1].expand_as(offset))
    first = offset[:, 0]
    assert len(first) >= 30 and 3.5 < float(first.std()) < 6.5  # ... drawn with the configured std ...
    assert len({tuple(row.tolist()) for row in first}) == len(first)  # ... and its own for each clip
    model.eval()
    model.loss(batch)
    torch.testing.assert_close(seen["state"], clean)  # evaluation sees the state as recorded
    with pytest.raises(ConfigError, match="state_noise must be"):
        small_config(toy_store, state_key="observation.state", state_noise=-1.0)
    with pytest.raises(ConfigError, match="state_noise needs state_key"):
        small_config(toy_store, state_noise=2.0)


def test_training_loss_with_freeze_augmentation(toy_store):
    cfg = small_config(toy_store, freeze_prob=1.0)
    model = SARM(cfg).train()
    data = SARMDataset(toy_store, cfg)
    batch = default_collate([data[i] for i in range(0, len(data), max(1, len(data) // 16))])
    terms = model.loss(batch)
    assert torch.isfinite(terms["loss"]) and terms["loss"] > 0
    terms["loss"].backward()
