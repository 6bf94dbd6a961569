"""GRM, after Robo-Dopamine's generative reward model: the hop H in [-1, 1] from a before state to an
after state, conditioned on the task and on reference start and goal frames of the task, over this
project's frozen-encoder features (every camera) and the joint state, with a trainable head.

A state (one frame: each camera's cached feature, layer-normalised and projected by its own map,
averaged over views, plus the projected joint state) becomes one token; [task, start, goal, before,
after] tokens (each with a role embedding) go through a small transformer, and the task token's
output gives logits over ``hop_bins`` bin centres on [-1, 1]; the hop is their expectation. Training:
cross-entropy against the two-hot target of the labelled hop (``data_grm``).

Progress of an episode (offline ``progress`` and ``stream`` alike), per frame t:
- forward-anchored F_t = H(start, s_t); backward-anchored B_t = 1 + H(goal, s_t) (start and goal:
  the reference frames saved with the model for the episode's task);
- incremental I_t = chain(I_{t-g}, H(s_{t-g}, s_t)) with g = ``incremental_gap``; I_t = F_t for t < g
  (Robo-Dopamine starts the chain at the raw score);
- fused: their mean m_t, or the conservative update P_t = P_{t-1} + w_t (m_t - P_{t-1}),
  w_t = exp(-alpha Delta_t^2), Delta_t = |B_t - F_t| / mean(B_t, F_t), P_0 = m_0.
The stream encodes each new frame once and keeps the last g states and readings per env. With
``smooth_frames`` > 1 the fused progress is averaged over time (a causal moving average), and with
``readout_gate`` > 0 the result then goes through the change gate SARM has (still frames keep their
progress).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from einops import rearrange
from torch import nn

from ...errors import RoborewardError
from ..base import RewardModel, RewardStream, register_reward_model
from ..features import ReadoutOverTime, batch_state, batch_views, observation_features, readout_sequence, task_ids
from .configuration_grm import GRMConfig
from ...data.cache import cached_features
from .data_grm import ROLES, GRMPairs, bin_centres, chain, two_hot


@register_reward_model
class GRM(RewardModel):
    name = "grm"
    config_class = GRMConfig
    trains_on_feature_copies = True

    def __init__(self, config: GRMConfig):
        super().__init__(config)
        config.check_ready()
        d, n_views, n_tasks = config.d_model, len(config.cameras), len(config.tasks)
        self.task_index = {t: i for i, t in enumerate(config.tasks)}
        self.feature_norm = nn.LayerNorm(config.feature_dim, elementwise_affine=False)
        self.view_proj = nn.Parameter(torch.randn(n_views, config.feature_dim, d) / config.feature_dim**0.5)
        self.view_bias = nn.Parameter(torch.zeros(n_views, d))
        self.state_proj = nn.Linear(config.state_dim, d) if config.state_key else None
        self.task_embed = nn.Embedding(n_tasks, d)
        self.role_embed = nn.Parameter(torch.randn(len(ROLES), d) * 0.02)
        layer = nn.TransformerEncoderLayer(d, config.n_heads, 4 * d, config.dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, config.n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, config.hop_bins)
        self.register_buffer("centres", torch.tensor(bin_centres(config.hop_bins), dtype=torch.float32), persistent=False)
        # Reference start / goal states of every task, saved with the weights so online use needs
        # nothing but the model folder: (tasks, 2, views, D) features and (tasks, 2, S) state.
        self.register_buffer("ref_features", torch.zeros(n_tasks, 2, n_views, config.feature_dim))
        self.register_buffer("ref_state", torch.zeros(n_tasks, 2, max(config.state_dim, 1)))

    # ------------------------------------------------------------------ references
    def set_references(self, store, episodes: Sequence[int]) -> None:
        """Reference start and goal of each task: the first and last frame of its first successful
        episode among ``episodes`` (its first episode where none succeeded)."""
        cfg = self.config
        feats = cached_features(store, cfg.feature_key)
        state = store.array(cfg.state_key) if cfg.state_key else None
        for task, k in self.task_index.items():
            eps = [e for e in episodes if store.episodes[e].task == task]
            if not eps:
                continue  # a task only the held-out split has: zeros (untrained, as its embedding)
            demo = next((e for e in eps if store.episodes[e].success), eps[0])
            start, end = store.episode_range(demo)
            for slot, frame in enumerate((start, end - 1)):
                self.ref_features[k, slot] = torch.stack(
                    [torch.from_numpy(np.asarray(feats[c][frame], np.float32)) for c in cfg.cameras])
                if state is not None:
                    self.ref_state[k, slot] = torch.from_numpy(np.asarray(state[frame], np.float32).reshape(-1))

    # ------------------------------------------------------------------ the hop model
    def tokens(self, feats: torch.Tensor, state: torch.Tensor | None) -> torch.Tensor:
        """(..., V, D) features [+ (..., S) state] -> (..., d) state tokens."""
        x = torch.einsum("...vd,vde->...ve", self.feature_norm(feats), self.view_proj) + self.view_bias
        x = x.mean(dim=-2)
        if self.state_proj is not None and state is not None:
            x = x + self.state_proj(state)
        return x

    def hop_logits(self, tokens: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """tokens (N, 4, d) for [start, goal, before, after], task ids (N,) -> (N, hop_bins)."""
        x = torch.cat([self.task_embed(task)[:, None], tokens + self.role_embed], dim=1)
        return self.head(self.norm(self.encoder(x)[:, 0]))

    def hop(self, tokens: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        return (self.hop_logits(tokens, task).softmax(-1) * self.centres).sum(-1)

    def task_indices(self, tasks: Sequence[str] | str, n: int) -> torch.Tensor:
        return task_ids(self.config, tasks, n, self.device, hint=" (adapt the model to it: roboreward reward adapt)")

    def _role(self, batch: dict[str, Any], prefix: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Views (..., V, D) and state of one role (``before.`` ...; "" for whole-episode batches)."""
        feats = batch_views(batch, self.config, self.device, prefix, who="GRM")
        state = batch_state(batch, self.config, self.device, key=f"{prefix}state" if prefix else None, lead=feats.ndim - 2)
        return feats, state

    def loss(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        tokens = torch.stack([self.tokens(*self._role(batch, f"{role}.")) for role in ROLES], dim=1)
        task = self.task_indices(batch["task"], tokens.shape[0])
        logits = self.hop_logits(tokens, task)
        target = torch.as_tensor(batch["hop"], device=self.device).float()
        ce = -(two_hot(target, self.config.hop_bins) * logits.log_softmax(-1)).sum(-1).mean()
        pred = (logits.softmax(-1) * self.centres).sum(-1)
        return {"loss": ce, "hop_ce": ce.detach(), "hop_mae": (pred - target).abs().mean().detach()}

    # ------------------------------------------------------------------ reading progress
    def readings(self, tokens: torch.Tensor, task: torch.Tensor, chunk: int = 8192) -> dict[str, torch.Tensor]:
        """Hops for whole sequences of state tokens (B, T, d): ``forward`` F (B, T), ``backward`` B
        (B, T) and the raw incremental hops ``step`` (B, T) between frames t - g and t (0 for t < g)."""
        b, t, d = tokens.shape
        g = self.config.incremental_gap
        refs = self.tokens(self.ref_features[task], self.ref_state[task] if self.config.state_key else None)  # (B, 2, d)
        start, goal = refs[:, 0:1].expand(b, t, d), refs[:, 1:2].expand(b, t, d)
        prev = torch.cat([tokens[:, :1].expand(b, min(g, t), d), tokens[:, : max(t - g, 0)]], dim=1)
        queries = torch.stack([
            torch.stack([start, goal, start, tokens], 2),  # forward-anchored: start -> s_t
            torch.stack([start, goal, goal, tokens], 2),   # backward-anchored: goal -> s_t
            torch.stack([start, goal, prev, tokens], 2),   # incremental: s_{t-g} -> s_t
        ], 0)  # (3, B, T, 4, d)
        flat = rearrange(queries, "m b t r d -> (m b t) r d")
        ids = task[None, :, None].expand(3, b, t).reshape(-1)
        hops = torch.cat([self.hop(flat[s : s + chunk], ids[s : s + chunk]) for s in range(0, len(flat), chunk)])
        hops = hops.reshape(3, b, t)
        step = hops[2].masked_fill(torch.arange(t, device=tokens.device)[None] < g, 0.0)
        return {"forward": hops[0].clamp(0.0, 1.0), "backward": (1 + hops[1]).clamp(0.0, 1.0), "step": step}

    def combine(self, forward: torch.Tensor, backward: torch.Tensor, incremental: torch.Tensor,
                previous: torch.Tensor | None, first: torch.Tensor | None = None) -> torch.Tensor:
        """The configured mode's progress (B,) at one frame from the three readings and the last
        fused value (None at an episode's first frame; ``first`` (B,) marks the envs of a batch
        that are at theirs, for which ``previous`` is ignored)."""
        cfg = self.config
        if cfg.mode == "forward":
            return forward
        if cfg.mode == "backward":
            return backward
        if cfg.mode == "incremental":
            return incremental
        if cfg.fusion == "median":
            return torch.stack([forward, backward, incremental]).median(0).values
        mean = (forward + backward + incremental) / 3
        if cfg.fusion == "mean" or previous is None:
            return mean
        delta = (backward - forward).abs() / ((backward + forward) / 2).clamp_min(1e-3)
        weight = torch.exp(-cfg.consistency_alpha * delta.pow(2))
        value = previous + weight * (mean - previous)
        return value if first is None else torch.where(first, mean, value)

    @torch.no_grad()
    def progress(self, batch: dict[str, Any]) -> torch.Tensor:
        feats, state = self._role(batch, "")
        b, t = feats.shape[:2]
        task = self.task_indices(batch["task"], b)
        r = self.readings(self.tokens(feats, state), task)
        g = self.config.incremental_gap
        inc: list[torch.Tensor] = []
        out: list[torch.Tensor] = []
        for i in range(t):
            inc.append(r["forward"][:, i] if i < g else chain(inc[i - g], r["step"][:, i]))
            out.append(self.combine(r["forward"][:, i], r["backward"][:, i], inc[i], out[-1] if out else None))
        return readout_sequence(torch.stack(out, 1).clamp(0.0, 1.0), feats, self.config)

    def stream(self, n_envs: int, encoder: Any = None) -> "GRMStream":
        return GRMStream(self, n_envs, encoder)

    def adapt(self, store, episode: int, out, steps: int = 150, lr: float = 1e-4, progress: bool = True,
              keep_state: bool = False) -> Path:
        return adapt_grm(self, store, episode, out, steps=steps, lr=lr, progress=progress, keep_state=keep_state)

    # ------------------------------------------------------------------ training
    @classmethod
    def training_samples(cls, store, config: GRMConfig, episodes: list[int]) -> GRMPairs:
        return GRMPairs(store, config, episodes)

    @classmethod
    def fit_store(cls, config: GRMConfig, store, train_episodes: list[int], train, out, *,
                  validate=None, run_config=None, resume_free=(), progress: bool = True) -> Path:
        """Gradient descent as for every model, with the reference frames set from the training
        episodes when the model is built (they are buffers: saved with it, restored on resume)."""
        from ...training import fit
        from ..base import make_reward_model

        def build():
            model = make_reward_model(config)
            model.set_references(store, train_episodes)
            return model

        return fit(build, cls.training_samples(store, config, train_episodes), train, out, validate=validate,
                   run_config=run_config, resume_free=resume_free, progress=progress)


def _adapted_config(config: GRMConfig, task: str, keep_state: bool) -> GRMConfig:
    from dataclasses import replace

    tasks = config.tasks if task in config.tasks else [*config.tasks, task]
    state = {} if keep_state else {"state_key": None, "state_dim": 0}
    return replace(config, tasks=tasks, **state)


def adapt_grm(model: GRM, store, episode: int, out, steps: int = 150, lr: float = 1e-4, batch_size: int = 64,
              progress: bool = True, keep_state: bool = False) -> Path:
    """One-shot adaptation: the model, with the demo's task added to its vocabulary (its embedding
    starts as the mean of the known ones) and its references taken from the demo, fine-tuned on
    balanced pairs of that one episode; written to ``out`` (atomically). Returns ``out``.

    The fine-tuning is gentle (150 steps at 1e-4): 300 steps at 1e-3 fitted the one demo and read
    drawer's failures as high as its successes (AUROC 0.62-0.67, 3 seeds). The adapted model reads
    the cameras only, unless ``keep_state``: from one demonstration the hop head learns the arm's
    joint state as progress, the cue that changes most steadily along the demo, and a failed take
    whose arm ends where the demo's did then reads as done (drawer, 3 seeds: AUROC 0.94 with the
    state, 0.99 without from a pick_place base; 0.84 and 0.97 from pick_place + stack). Without the
    state the objects in the frames must carry the reading. The base's other weights carry over;
    its state projection is left out."""
    from dataclasses import replace

    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from ...training import save_dir_atomic

    store.episode_range(episode)  # one-line error for an episode the store does not have
    task = store.episodes[episode].task
    config = _adapted_config(model.config, task, keep_state)
    adapted = GRM(config).to(model.device)
    own = ("task_embed.weight", "ref_features", "ref_state")
    state = {k: v for k, v in model.state_dict().items() if k not in own and (keep_state or not k.startswith("state_proj."))}
    missing = set(adapted.load_state_dict(state, strict=False).missing_keys) - set(own)
    assert not missing, f"adapted GRM lacks base weights {sorted(missing)}"
    with torch.no_grad():
        n = len(model.config.tasks)
        adapted.task_embed.weight[:n] = model.task_embed.weight
        adapted.ref_features[:n] = model.ref_features
        if keep_state:
            adapted.ref_state[:n] = model.ref_state
        if n < len(config.tasks):
            adapted.task_embed.weight[n:] = model.task_embed.weight.mean(0)
    adapted.set_references(store, [episode])
    # The demo's store need not hold the base training's photometric copies: adapt on its frames as they are.
    pairs = GRMPairs(store, replace(config, feature_copies=[]), [episode])
    loader = DataLoader(pairs, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.AdamW(adapted.parameters(), lr=lr, weight_decay=0.01)
    adapted.train()
    done = 0
    bar = tqdm(total=steps, desc="adapt", disable=not progress)
    while done < steps:
        for batch in loader:
            loss = adapted.loss(batch)["loss"]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            done += 1
            bar.update(1)
            if done >= steps:
                break
    bar.close()
    adapted.eval()
    return save_dir_atomic(Path(out), adapted.save_pretrained)


class GRMStream(RewardStream):
    """Online GRM progress: each step encodes the new frame once per view, reads the forward and
    backward hops against the stored references and the incremental hop from the state
    ``incremental_gap`` frames back (a per-env ring of the last g state tokens and readings)."""

    def __init__(self, model: GRM, n_envs: int, encoder: Any = None):
        super().__init__(n_envs)
        self.model, self.encoder = model, encoder
        g, d, dev = model.config.incremental_gap, model.config.d_model, model.device
        self.tokens = torch.zeros(n_envs, g, d, device=dev)
        self.incremental = torch.zeros(n_envs, g, device=dev)
        self.value = torch.zeros(n_envs, device=dev)  # fused progress (before the readouts over time)
        cfg = model.config
        self.readout = ReadoutOverTime(n_envs, cfg.smooth_frames, cfg.readout_gate, cfg.gate_floor, device=dev)
        self.count = torch.zeros(n_envs, dtype=torch.long, device=dev)

    def reset(self, i: int | Sequence[int] | None = None) -> None:
        self.count[self._env_ids(i)] = 0

    @torch.no_grad()
    def step(self, observation: dict[str, Any], task: str | Sequence[str],
             envs: Sequence[int] | None = None) -> torch.Tensor:
        model, cfg = self.model, self.model.config
        envs = torch.tensor(self._env_ids(envs), dtype=torch.long, device=model.device)
        n = len(envs)
        feats = torch.stack([observation_features(observation, cam, n, cfg.feature_dim, self.encoder)
                             for cam in cfg.cameras], dim=1).to(model.device)
        state = None
        if cfg.state_key:
            if cfg.state_key not in observation:
                raise RoborewardError(f"observation has no {cfg.state_key!r}; the model was trained with state")
            state = torch.as_tensor(observation[cfg.state_key], device=model.device).float().reshape(n, -1)
        ids = model.task_indices(self._tasks(task, n), n)
        token = model.tokens(feats, state)
        g, count = cfg.incremental_gap, self.count[envs]
        slot = count % g
        first = count == 0
        old = torch.where((count >= g)[:, None], self.tokens[envs, slot], token)
        refs = model.tokens(model.ref_features[ids], model.ref_state[ids] if cfg.state_key else None)
        start, goal = refs[:, 0], refs[:, 1]
        queries = torch.cat([torch.stack([start, goal, start, token], 1), torch.stack([start, goal, goal, token], 1),
                             torch.stack([start, goal, old, token], 1)])
        hops = model.hop(queries, ids.repeat(3)).reshape(3, n)
        forward, backward = hops[0].clamp(0.0, 1.0), (1 + hops[1]).clamp(0.0, 1.0)
        incremental = torch.where(count >= g, chain(self.incremental[envs, slot], hops[2]), forward)
        value = model.combine(forward, backward, incremental, self.value[envs], first).clamp(0.0, 1.0)
        self.tokens[envs, slot] = token
        self.incremental[envs, slot] = incremental
        self.value[envs] = value
        self.count[envs] = count + 1
        return self.readout.step(envs, value, first, feats)
