"""SARM (stage-aware reward model) over cached frozen-encoder features.

Per frame: each camera's cached feature is normalised, projected by its own linear map, tagged with
a learned view embedding and fused (mean or concat) into one frame token; the optional state is
projected and added. A sequence [task token, frame tokens...] goes through a transformer with a
causal mask, so the output at a frame depends only on the task and frames at or before it (the
task token sees only itself). Heads per annotation level: stage logits (K) and a within-stage
progress tau_k per stage; progress = P_{k-1} + prior_k * tau_k with the dataset's stage priors.

A window is ``window`` frames at ``frame_gap`` ending at t (frames before the episode start are
masked out of attention, never zero-filled). ``progress`` runs one window per frame of whole
episodes; ``stream`` keeps a per-env ring buffer of cached features and runs the same window at the
newest frame, so both give the same value on the same frames.

With ``readout_filter: stage`` the per-frame stage probabilities go through a causal left-to-right
filter (``filter_stage``: moving on is free, going back needs sustained evidence) before the
readout, in ``progress``, ``stage_probs`` and streams alike (streams keep each env's belief). With
``readout_hold: stage`` progress does not fall while the most likely stage stays or moves on
(``hold_step``), and with ``readout_gate`` > 0 it then moves only as far as the scene changed
(``features.gate_step``): still frames keep their progress.

Training (``loss``) supervises every real frame of the clip: CE on the stage + MSE on tau at the
true stage (tau rather than the normalised progress, whose error is prior_k * tau error and would
let short stages go unlearned). Augmentations, per clip: rewind (frames t-gap, t-2gap, ... appended
played backwards, their targets gathered with the same index, so labels match the frames exactly)
and language perturbation (another task of the data, target progress 0 / stage 0).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from ...errors import RoborewardError
from ..base import RewardModel, RewardStream, register_reward_model
from .configuration_sarm import SARMConfig
from ..features import batch_state, batch_views, gate_sequence, gate_step, observation_features, scene_change, task_ids
from ..targets import SINGLE_STAGE, StageSet, annotation_targets, has_done_flag
from .data_sarm import SARMDataset, target_key


class CausalBlock(nn.Module):
    """Pre-norm transformer block; attention restricted by a boolean ``allowed`` mask (True = may attend)."""

    def __init__(self, d_model: int, n_heads: int, mlp_ratio: int, dropout: float):
        super().__init__()
        self.n_heads = n_heads
        self.dropout = dropout
        self.norm1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, mlp_ratio * d_model), nn.GELU(), nn.Dropout(dropout), nn.Linear(mlp_ratio * d_model, d_model)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        q, k, v = rearrange(self.qkv(self.norm1(x)), "b l (three h e) -> three b h l e", three=3, h=self.n_heads)
        attn = F.scaled_dot_product_attention(
            q, k, v, attn_mask=allowed, dropout_p=self.dropout if self.training else 0.0
        )
        x = x + self.drop(self.proj(rearrange(attn, "b h l e -> b l (h e)")))
        return x + self.drop(self.mlp(self.norm2(x)))


def window_offsets(window: int, frame_gap: int) -> torch.Tensor:
    """(window,) frame offsets of a causal window ending at t: -(window-1)*gap, ..., -gap, 0."""
    return torch.arange(-(window - 1), 1) * frame_gap


def rewind_index(steps: torch.Tensor, window: int, max_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather index (B, window + max_steps) that appends ``steps[b]`` window frames played backwards
    (positions window-2, window-3, ..., i.e. frames t-gap, t-2gap, ...) after the clip, and the mask
    of appended slots left unused (B, max_steps), which callers mark as padding."""
    b = steps.shape[0]
    j = torch.arange(max_steps, device=steps.device)
    back = (window - 2 - j).clamp(min=0)
    unused = j[None, :] >= steps[:, None]
    appended = torch.where(unused, window - 1, back[None, :].expand(b, -1))
    forward = torch.arange(window, device=steps.device)[None, :].expand(b, -1)
    return torch.cat([forward, appended], 1), unused


def append_rewind(
    per_frame: dict[str, torch.Tensor], pad_mask: torch.Tensor, steps: torch.Tensor, max_steps: int
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Apply ``rewind_index`` to every per-frame tensor (B, window, ...) of a clip: features,
    state, frame indices and targets are all gathered with the one index, so every appended frame
    carries its own targets. Returns the tensors (B, window + max_steps, ...) and the new pad mask."""
    window = pad_mask.shape[1]
    if max_steps == 0:
        return dict(per_frame), pad_mask
    if bool((steps > (~pad_mask).sum(1) - 1).any()):
        raise RoborewardError("rewind steps exceed the clip's real frames minus one")
    index, unused = rewind_index(steps, window, max_steps)
    out = {}
    for key, x in per_frame.items():
        idx = index.reshape(*index.shape, *([1] * (x.ndim - 2))).expand(-1, -1, *x.shape[2:])
        out[key] = torch.gather(x, 1, idx)
    pad = torch.cat([torch.gather(pad_mask, 1, index[:, :window]), unused], 1)
    return out, pad


def freeze_index(cut: torch.Tensor, window: int) -> torch.Tensor:
    """Gather index (B, window) that freezes each clip from position ``cut[b]`` on: positions
    cut..window-1 repeat position cut-1 (``cut[b] == window``: unchanged)."""
    j = torch.arange(window, device=cut.device)[None, :]
    return torch.minimum(j, (cut[:, None] - 1).clamp(min=0)).where(j >= cut[:, None], j)


def apply_freeze(per_frame: dict[str, torch.Tensor], cut: torch.Tensor) -> dict[str, torch.Tensor]:
    """Freeze every per-frame tensor (B, window, ...) of a clip, inputs and targets with the one
    index: the frozen frames are copies of the last moving one and carry its targets, so a scene in
    which nothing happens is taught to earn no progress (a pause, a hold after success)."""
    window = next(iter(per_frame.values())).shape[1]
    index = freeze_index(cut, window)
    out = {}
    for key, x in per_frame.items():
        idx = index.reshape(*index.shape, *([1] * (x.ndim - 2))).expand(-1, -1, *x.shape[2:])
        out[key] = torch.gather(x, 1, idx)
    return out


def hold_step(previous: torch.Tensor, reading: torch.Tensor, stage: torch.Tensor, previous_stage: torch.Tensor) -> torch.Tensor:
    """``readout_hold: stage`` at one frame: progress does not fall below the previous frame's while
    the most likely stage stays or moves on; a return to an earlier stage lets the reading through."""
    return torch.where(stage >= previous_stage, torch.maximum(reading, previous), reading)


def stage_transitions(n_stages: int, back_prob: float, done: bool = False, min_stay: int | Sequence[int] = 1) -> torch.Tensor:
    """Row-stochastic transitions of the stage filter: from stage j every stage k >= j is equally
    likely a priori (staying, moving on, skipping a short stage), an earlier one has weight
    ``back_prob``. With a terminal ``done`` stage (the last one) it is entered only from the last
    annotated stage: done follows the last subtask, and an absorbing stage that every stage could
    jump to would collect the belief of any failure that ends looking a little like it (a stuck
    reach whose head gives done 5-10% for a few dozen frames ended "done" that way).

    ``min_stay`` m > 1 (one count for every stage, or one per stage) makes it an explicit-duration
    filter over K x M states, M the largest m (stage k, frames held; state index k * M + i): a stage
    entered going forward is held for at least its m_k frames (it is entered at state k * M + M - m_k)
    before the belief can move on from it (skipping ahead stays possible once it has been held);
    going back (on sustained evidence, as before) lands in the earlier stage's last state, with no
    new wait. All m = 1 is the (K, K) filter above."""
    a = torch.ones(n_stages, n_stages).triu() + torch.full((n_stages, n_stages), float(back_prob)).tril(-1)
    if done and n_stages > 2:
        a[: n_stages - 2, n_stages - 1] = 0.0
    a = a / a.sum(1, keepdim=True)
    stays = [int(min_stay)] * n_stages if isinstance(min_stay, (int, np.integer)) else [int(v) for v in min_stay]
    if len(stays) != n_stages or min(stays) < 1:
        raise RoborewardError(f"min_stay needs one count >= 1 per stage ({n_stages}), got {list(min_stay)}")
    m = max(stays)
    if m == 1:
        return a
    k = n_stages
    out = torch.zeros(k * m, k * m)
    for j in range(k):
        last = j * m + m - 1
        for i in range(m - 1):
            row = j * m + i
            if i < m - stays[j]:  # never entered (stage j waits fewer frames than m): keep the row stochastic
                out[row, row] = 1.0
                continue
            out[row, row + 1] = a[j, j:].sum()  # still waiting: hold on (or go back on evidence)
            for b in range(j):
                out[row, b * m + m - 1] = a[j, b]
        out[last, last] = a[j, j]
        for b in range(j):
            out[last, b * m + m - 1] = a[j, b]
        for f in range(j + 1, k):
            out[last, f * m + m - stays[f]] = a[j, f]
    return out


def stage_marginal(belief: torch.Tensor, n_stages: int) -> torch.Tensor:
    """(..., K) stage probabilities of a filter belief over K x m duration states (or K states)."""
    return belief if belief.shape[-1] == n_stages else belief.unflatten(-1, (n_stages, -1)).sum(-1)


def filter_stage(belief: torch.Tensor, probs: torch.Tensor, transitions: torch.Tensor, evidence: float,
                 first: torch.Tensor) -> torch.Tensor:
    """One causal step of the stage filter (an HMM forward pass): belief (B, K x m) after the previous
    frame (m = the largest minimum stay), the stage head's probabilities (B, K) at this frame, ``first`` (B,)
    True where this is the episode's first frame (no history: a flat prior). Returns the belief
    (B, K x m) at this frame; ``stage_marginal`` gives its (B, K) stage probabilities."""
    k = probs.shape[-1]
    m = transitions.shape[0] // k
    # The first frame: a flat prior over stages, each already held long enough to move on.
    flat = torch.zeros_like(belief)
    flat[:, m - 1::m] = 1.0
    prior = torch.where(first[:, None], flat, belief @ transitions)
    post = prior * probs.clamp_min(1e-12).repeat_interleave(m, -1) ** evidence
    return post / post.sum(-1, keepdim=True)


@register_reward_model
class SARM(RewardModel):
    name = "sarm"
    config_class = SARMConfig
    trains_on_feature_copies = True

    def __init__(self, config: SARMConfig):
        super().__init__(config)
        config.check_ready()
        d, n_views = config.d_model, len(config.cameras)
        # Per-view projection as one (V, D, d) weight: einsum applies each view's own map at once.
        self.feature_norm = nn.LayerNorm(config.feature_dim, elementwise_affine=False)
        self.view_proj = nn.Parameter(torch.randn(n_views, config.feature_dim, d) / config.feature_dim**0.5)
        self.view_bias = nn.Parameter(torch.zeros(n_views, d))
        self.view_embed = nn.Parameter(torch.randn(n_views, d) * 0.02)
        self.fuse = nn.Linear(n_views * d, d) if config.view_fusion == "concat" else None
        self.state_proj = nn.Linear(config.state_dim, d) if config.state_key else None
        self.task_embed = nn.Embedding(len(config.tasks), d)
        self.pos_embed = nn.Parameter(torch.randn(config.window + config.max_rewind, d) * 0.02)
        self.blocks = nn.ModuleList(
            CausalBlock(d, config.n_heads, config.mlp_ratio, config.dropout) for _ in range(config.n_layers)
        )
        self.norm = nn.LayerNorm(d)
        self.stage_heads = nn.ModuleDict()
        self.tau_heads = nn.ModuleDict()
        for level in config.levels:
            names, priors = config.stages(level)
            self.stage_heads[level] = nn.Linear(d, len(names))
            self.tau_heads[level] = nn.Linear(d, len(names))
            cum = torch.tensor([0.0, *np.cumsum(priors)[:-1]], dtype=torch.float32)
            # Derived from the config, so not saved (persistent=False): the checkpoint stays weights only.
            self.register_buffer(f"start_{level}", cum, persistent=False)
            self.register_buffer(f"prior_{level}", torch.tensor(priors, dtype=torch.float32), persistent=False)
            done = StageSet.from_config(config, level).has_done
            self.register_buffer(f"transitions_{level}", stage_transitions(len(names), config.filter_back_prob, done,
                                                                           config.min_stays(level)), persistent=False)
        self.register_buffer("offsets", window_offsets(config.window, config.frame_gap), persistent=False)

    # ------------------------------------------------------------------ training and evaluation hooks
    @classmethod
    def training_samples(cls, store, config: SARMConfig, episodes: list[int]) -> SARMDataset:
        return SARMDataset(store, config, episodes)

    def stage_targets(self, store, episodes: list[int], level: str | None):
        """Targets in this model's stages and priors; None where the store's annotations cannot give
        them (no annotations at ``level``, or stages the model does not know). A model with a done
        stage gets done targets where the store has its ``done_key``."""
        from ...data.schema import StoreError

        level = self._level(level)
        stages = StageSet.from_config(self.config, level)
        annotated = [bool(store.episodes[e].annotations.get(level)) for e in episodes]
        # Without annotations only a one-stage model (the whole episode) has targets.
        if not all(annotated) and not (stages.annotated == (SINGLE_STAGE,) and not any(annotated)):
            return None
        try:
            return annotation_targets(store, episodes, level, {level: stages}, done_key=self.config.done_key)[level]
        except (StoreError, RoborewardError):
            return None  # annotations name stages the model does not know: no stage accuracy

    @classmethod
    def training_notes(cls, store, overrides: dict[str, Any], episodes: list[int]) -> list[str]:
        """One note per annotation level SARM would train on that no training episode has: SARM then
        trains a single stage and its progress is only the time fraction of the episode."""
        mode = overrides.get("annotation_mode", SARMConfig.annotation_mode)
        notes = []
        done_key = overrides.get("done_key", SARMConfig.done_key)
        if done_key is not None and not has_done_flag(store, done_key):
            notes.append(
                f"note: {store.path} has no per-frame success flag {done_key!r}, so SARM trains without its terminal "
                "'done' stage: a finished task then scores what the end of its last subtask does. Record a 0/1 frame "
                f"feature that holds once the task is done (as {done_key} does in the sim stores), or set done_key: null "
                "to silence this")
        for level in ("sparse", "dense") if mode == "dual" else (mode,):
            if not any(store.episodes[e].annotations.get(level) for e in episodes):
                notes.append(
                    f"note: {store.path} has no {level} subtask annotations, so SARM trains one stage {SINGLE_STAGE!r}: "
                    "its progress target is the time fraction of the episode (frame t of T: t/(T-1)), whatever happened "
                    f"in it. For stages, write episodes with annotations={{'{level}': [Subtask(name, start, end), ...]}} "
                    f"or import a LeRobot dataset with SARM's {level}_subtask_{{names,start_frames,end_frames}} columns "
                    "(roboreward data import-lerobot)"
                )
        return notes

    # ------------------------------------------------------------------ inputs
    def task_indices(self, tasks: Sequence[str] | str, n: int | None = None) -> torch.Tensor:
        """Per-sample task ids (never the first sample's task for the whole batch)."""
        return task_ids(self.config, tasks, n or 1, self.device)

    def stack_views(self, batch: dict[str, Any]) -> torch.Tensor:
        """``features.<camera>`` (B, T, D) for every configured camera -> (B, T, V, D) float."""
        return batch_views(batch, self.config, self.device, who="SARM")

    def state_of(self, batch: dict[str, Any]) -> torch.Tensor | None:
        return batch_state(batch, self.config, self.device)

    # ------------------------------------------------------------------ temporal model
    def frame_tokens(self, feats: torch.Tensor, state: torch.Tensor | None) -> torch.Tensor:
        """(B, L, V, D) features [+ (B, L, S) state] -> (B, L, d) frame tokens (no position yet)."""
        x = torch.einsum("blvd,vde->blve", self.feature_norm(feats), self.view_proj) + self.view_bias + self.view_embed
        x = self.fuse(rearrange(x, "b l v e -> b l (v e)")) if self.fuse is not None else x.mean(dim=2)
        if state is not None:
            x = x + self.state_proj(state)
        return x

    def window_outputs(
        self, feats: torch.Tensor, state: torch.Tensor | None, task: torch.Tensor, pad: torch.Tensor
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """The temporal model on windows: feats (B, L, V, D), state (B, L, S) or None, task ids (B,),
        pad (B, L) True for frames that do not exist (never attended). Returns per level
        (stage logits (B, L, K), tau (B, L, K) in [0, 1]); output l depends on frames <= l only."""
        b, length = pad.shape
        x = self.frame_tokens(feats, state) + self.pos_embed[:length]
        x = torch.cat([self.task_embed(task)[:, None], x], dim=1)
        key_ok = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=pad.device), ~pad], dim=1)
        causal = torch.ones(length + 1, length + 1, dtype=torch.bool, device=pad.device).tril()
        # Every query can see the task token, so no attention row is empty (no NaN).
        allowed = rearrange(causal, "q k -> 1 1 q k") & rearrange(key_ok, "b k -> b 1 1 k")
        for block in self.blocks:
            x = block(x, allowed)
        h = self.norm(x[:, 1:])
        return {lvl: (self.stage_heads[lvl](h), torch.sigmoid(self.tau_heads[lvl](h))) for lvl in self.config.levels}

    def readout(self, probs: torch.Tensor, tau: torch.Tensor, level: str) -> torch.Tensor:
        """Normalised progress in [0, 1] from stage probabilities (the head's softmax, or the stage
        filter's belief) and per-stage tau (..., K) -> (...)."""
        per_stage = getattr(self, f"start_{level}") + getattr(self, f"prior_{level}") * tau
        if self.config.readout == "argmax":
            value = per_stage.gather(-1, probs.argmax(-1, keepdim=True)).squeeze(-1)
        else:
            value = (probs * per_stage).sum(-1)
        return value.clamp(0.0, 1.0)

    def filter_step(self, belief: torch.Tensor, probs: torch.Tensor, first: torch.Tensor, level: str) -> torch.Tensor:
        """The stage probabilities the readout uses at one frame: the head's own with no filter, else
        the stage filter's belief after this frame (``filter_stage``)."""
        if self.config.readout_filter == "none":
            return probs
        return filter_stage(belief, probs, getattr(self, f"transitions_{level}"), self.config.filter_evidence, first)

    def stage_belief(self, logits: torch.Tensor, level: str) -> torch.Tensor:
        """(B, T, K) stage probabilities of whole episodes from their (B, T, K) logits, frame 0 first:
        the softmax with no filter, else the causal filter run over time."""
        probs = logits.softmax(-1)
        if self.config.readout_filter == "none":
            return probs
        k = probs.shape[-1]
        out, belief = [], probs.new_zeros(probs.shape[0], getattr(self, f"transitions_{level}").shape[0])
        first = torch.ones(probs.shape[0], dtype=torch.bool, device=probs.device)
        for t in range(probs.shape[1]):
            belief = self.filter_step(belief, probs[:, t], first if t == 0 else ~first, level)
            out.append(stage_marginal(belief, k))
        return torch.stack(out, 1)

    def _level(self, level: str | None) -> str:
        level = level or self.config.levels[0]
        if level not in self.config.levels:
            raise RoborewardError(f"level {level!r} has no head; this model has {list(self.config.levels)}")
        return level

    def window_heads(
        self, feats: torch.Tensor, state: torch.Tensor | None, task: torch.Tensor, pad: torch.Tensor, level: str
    ) -> torch.Tensor:
        """(B, 2, K): stage logits and tau at the last frame of each window."""
        logits, tau = self.window_outputs(feats, state, task, pad)[level]
        return torch.stack([logits[:, -1], tau[:, -1]], dim=1)

    # ------------------------------------------------------------------ the API
    @torch.no_grad()
    def _over_windows(self, batch: dict[str, Any], read, chunk: int) -> torch.Tensor:
        """Apply ``read(feats, state, task, pad) -> (W, ...)`` to the causal window ending at every
        frame of whole episodes and return (B, T, ...). Windows are gathered in chunks of time steps
        so a long episode does not hold T*N copies at once."""
        feats = self.stack_views(batch)
        state = self.state_of(batch)
        b, t = feats.shape[:2]
        task = self.task_indices(batch["task"], b)
        if task.shape[0] != b:
            raise RoborewardError(f"batch has {b} sequences but {task.shape[0]} tasks")
        raw = torch.arange(t, device=self.device)[:, None] + self.offsets[None, :]  # (T, N)
        idx, pad = raw.clamp(min=0), raw < 0
        out = []
        step = max(1, chunk // max(b, 1))
        for s in range(0, t, step):
            sl = slice(s, min(s + step, t))
            n = sl.stop - sl.start
            w_feats = rearrange(feats[:, idx[sl]], "b t n v d -> (b t) n v d")
            w_state = None if state is None else rearrange(state[:, idx[sl]], "b t n s -> (b t) n s")
            w_pad = repeat(pad[sl], "t n -> (b t) n", b=b)
            w_task = repeat(task, "b -> (b t)", t=n)
            values = read(w_feats, w_state, w_task, w_pad)
            out.append(values.reshape(b, n, *values.shape[1:]))
        return torch.cat(out, dim=1)

    def episode_heads(self, batch: dict[str, Any], level: str, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, tau), each (B, T, K), at every frame of whole episodes (one causal window per frame)."""
        out = self._over_windows(batch, lambda f, s, k, p: self.window_heads(f, s, k, p, level), chunk)
        return out[:, :, 0], out[:, :, 1]

    def progress(self, batch: dict[str, Any], level: str | None = None, chunk: int = 4096) -> torch.Tensor:
        """(B, T) progress at every frame of whole episodes: ``features.<camera>`` (B, T, D),
        the state key if the model uses one, ``task`` [B]. Frame t's value reads the window of frames
        t-(window-1)*gap .. t of the same sequence (T must start at the episode's first frame), and
        with the stage filter the frames before it; padding after an episode's end does not change
        earlier values (causal)."""
        level = self._level(level)
        logits, tau = self.episode_heads(batch, level, chunk)
        belief = self.stage_belief(logits, level)
        reading = self.readout(belief, tau, level)
        cfg = self.config
        if cfg.readout_hold == "none":
            return gate_sequence(reading, self.stack_views(batch), cfg.readout_gate, cfg.gate_floor)
        feats, stage = self.stack_views(batch), belief.argmax(-1)
        out = [reading[:, 0]]
        for t in range(1, reading.shape[1]):
            target = hold_step(out[-1], reading[:, t], stage[:, t], stage[:, t - 1])
            if cfg.readout_gate:
                target = gate_step(out[-1], target, scene_change(feats[:, t - 1], feats[:, t]), cfg.readout_gate, cfg.gate_floor)
            out.append(target)
        return torch.stack(out, 1)

    def stage_probs(self, batch: dict[str, Any], level: str | None = None, chunk: int = 4096) -> torch.Tensor:
        """(B, T, K) stage probabilities at every frame, over the same causal windows as ``progress``
        (the filter's belief when the model reads through the stage filter)."""
        level = self._level(level)
        return self.stage_belief(self.episode_heads(batch, level, chunk)[0], level)

    def stream(self, n_envs: int, encoder: Any = None, level: str | None = None) -> "SARMStream":
        """Online progress for ``n_envs`` envs. ``encoder`` (uint8 (B, H, W, 3) -> (B, D), e.g. the
        ImageEncoder that made ``feature_key``) lets ``step`` take raw frames; without it ``step``
        takes cached features."""
        return SARMStream(self, n_envs, encoder, self._level(level))

    def sample_augmentations(self, pad: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per clip: rewind steps (B,) (0 = none) and whether to perturb the task (B,) bool."""
        cfg = self.config
        real = (~pad).sum(1)
        cap = (real - 1).clamp(max=cfg.max_rewind)
        draw = (torch.rand(n, device=pad.device) * cap).floor().long() + 1
        use = (torch.rand(n, device=pad.device) < cfg.rewind_prob) & (cap >= 1)
        steps = torch.where(use, draw, 0)
        perturb = torch.rand(n, device=pad.device) < cfg.perturb_prob
        if len(cfg.tasks) < 2:
            perturb = torch.zeros_like(perturb)
        return steps, perturb

    def loss(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Batch from ``SARMDataset`` (collated): clips of cached features + per-frame targets."""
        cfg = self.config
        feats = self.stack_views(batch)
        b = feats.shape[0]
        pad = torch.as_tensor(batch["pad_mask"], device=self.device).bool()
        task = self.task_indices(batch["task"], b)
        per_frame = {"feats": feats}
        state = self.state_of(batch)
        if state is not None:
            if self.training and cfg.state_noise > 0:  # one offset per clip and value, on every frame
                state = state + cfg.state_noise * torch.randn(b, 1, state.shape[-1], device=state.device)
            per_frame["state"] = state
        for level in cfg.levels:
            for what in ("stage", "tau"):
                per_frame[target_key(level, what)] = torch.as_tensor(batch[target_key(level, what)], device=self.device)
        if self.training:
            steps, perturb = self.sample_augmentations(pad, b)
        else:
            steps, perturb = torch.zeros(b, dtype=torch.long, device=self.device), torch.zeros(b, dtype=torch.bool, device=self.device)
        if self.training and cfg.freeze_prob > 0:
            # Cut after a real frame: pads lead the clip, so the first real one is at window - real.
            window, real = pad.shape[1], (~pad).sum(1)
            first = window - real + 1
            draw = first + (torch.rand(b, device=self.device) * (window - first)).floor().long()
            use = (torch.rand(b, device=self.device) < cfg.freeze_prob) & (first < window)
            per_frame = apply_freeze(per_frame, torch.where(use, draw, window))
        if cfg.max_rewind and bool(steps.any()):
            per_frame, pad = append_rewind(per_frame, pad, steps, cfg.max_rewind)
        if bool(perturb.any()):
            # A task other than the clip's own: shift by 1..n_tasks-1 modulo n_tasks.
            shift = torch.randint(1, len(cfg.tasks), (b,), device=self.device)
            task = torch.where(perturb, (task + shift) % len(cfg.tasks), task)
        outputs = self.window_outputs(per_frame["feats"], per_frame.get("state"), task, pad)
        valid = ~pad
        out: dict[str, torch.Tensor] = {}
        total = feats.new_zeros(())
        for level, (logits, tau) in outputs.items():
            stage_t = per_frame[target_key(level, "stage")].long()
            tau_t = per_frame[target_key(level, "tau")].float()
            # Language negatives: the wrong task has made no progress.
            stage_t = torch.where(perturb[:, None], 0, stage_t)
            tau_t = torch.where(perturb[:, None], 0.0, tau_t)
            ce = F.cross_entropy(logits[valid], stage_t[valid])
            tau_at = tau.gather(-1, stage_t.clamp(min=0)[..., None]).squeeze(-1)
            mse = F.mse_loss(tau_at[valid], tau_t[valid])
            total = total + ce + mse
            out[f"{level}.stage_ce"] = ce.detach()
            out[f"{level}.tau_mse"] = mse.detach()
            out[f"{level}.stage_acc"] = (logits.argmax(-1)[valid] == stage_t[valid]).float().mean().detach()
        out["loss"] = total
        return out


class SARMStream(RewardStream):
    """Per-env ring buffer of the last (window-1)*gap + 1 frames' cached features (and state); each
    ``step`` writes one frame per env (encoding it once per view if given pixels) and runs the
    temporal model on the window ending at it, exactly the window ``SARM.progress`` uses."""

    def __init__(self, model: SARM, n_envs: int, encoder: Any = None, level: str = "sparse"):
        super().__init__(n_envs)
        cfg = model.config
        self.model, self.encoder, self.level = model, encoder, level
        self.span = (cfg.window - 1) * cfg.frame_gap + 1
        dev = model.device
        self.feats = torch.zeros(n_envs, self.span, len(cfg.cameras), cfg.feature_dim, device=dev)
        self.state = torch.zeros(n_envs, self.span, cfg.state_dim, device=dev) if cfg.state_key else None
        self.count = torch.zeros(n_envs, dtype=torch.long, device=dev)  # frames seen since reset
        states = getattr(model, f"transitions_{level}").shape[0]  # K, or K x the largest minimum stay
        self.belief = torch.full((n_envs, states), 1.0 / states, device=dev)  # stage filter state (unused without it)
        self.value = torch.zeros(n_envs, device=dev)  # change gate state: last progress (unused without it)
        self.stage = torch.zeros(n_envs, dtype=torch.long, device=dev)  # stage hold state: last stage (unused without it)

    def reset(self, i: int | Sequence[int] | None = None) -> None:
        self.count[self._env_ids(i)] = 0

    def _view(self, observation: dict[str, Any], cam: str, n: int) -> torch.Tensor:
        cfg = self.model.config
        return observation_features(observation, cam, n, cfg.feature_dim, self.encoder).to(self.feats.device)

    @torch.no_grad()
    def step(self, observation: dict[str, Any], task: str | Sequence[str],
             envs: Sequence[int] | None = None) -> torch.Tensor:
        cfg = self.model.config
        envs = torch.tensor(self._env_ids(envs), dtype=torch.long, device=self.feats.device)
        n = len(envs)
        tasks = self.model.task_indices(self._tasks(task, n))
        count = self.count[envs]
        slot = count % self.span
        new = torch.stack([self._view(observation, cam, n) for cam in cfg.cameras], dim=1)
        if cfg.readout_gate:  # vs the previous frame, read before the ring slot is overwritten
            change = scene_change(self.feats[envs, (count - 1).clamp(min=0) % self.span], new)
        self.feats[envs, slot] = new
        if self.state is not None:
            if cfg.state_key not in observation:
                raise RoborewardError(f"observation has no {cfg.state_key!r}; the model was trained with state")
            self.state[envs, slot] = torch.as_tensor(observation[cfg.state_key], device=self.state.device).float().reshape(n, -1)
        count = count + 1
        self.count[envs] = count
        # Frame numbers of the window ending at the newest frame; those before the episode start are
        # padding and read frame 0, which the ring still holds (it is < span frames old then).
        frame = (count - 1)[:, None] + self.model.offsets[None, :]
        pad = frame < 0
        ring = frame.clamp(min=0) % self.span
        w_feats = self.feats[envs[:, None], ring]
        w_state = None if self.state is None else self.state[envs[:, None], ring]
        heads = self.model.window_heads(w_feats, w_state, tasks, pad, self.level)
        first = count == 1
        probs = heads[:, 0].softmax(-1)
        state = self.model.filter_step(self.belief[envs], probs, first, self.level)
        if cfg.readout_filter != "none":
            self.belief[envs] = state
        belief = stage_marginal(state, probs.shape[-1])
        reading = self.model.readout(belief, heads[:, 1], self.level)
        stage = belief.argmax(-1)
        if cfg.readout_hold != "none":
            reading = torch.where(first, reading, hold_step(self.value[envs], reading, stage, self.stage[envs]))
        if cfg.readout_gate:
            reading = torch.where(first, reading, gate_step(self.value[envs], reading, change, cfg.readout_gate, cfg.gate_floor))
        self.value[envs] = reading
        self.stage[envs] = stage
        return reading
