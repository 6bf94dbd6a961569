"""A small behaviour-cloning policy with action chunking: an MLP over the causal observation
window (normalised state plus layer-normed cached image features) predicting the next ``horizon``
actions. Trained with ``roboreward.training.fit``; RA-BC enters only through the batch's ``weight``."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...errors import RoborewardError
from ..base import Policy, register_policy
from ..rabc import weighted_mean
from .configuration_bc import BCConfig


@register_policy
class BCPolicy(Policy):
    name = "bc"
    config_class = BCConfig

    def __init__(self, config: BCConfig):
        super().__init__(config)
        config.check_ready()
        c = config
        self.register_statistics()
        # Cached features have no dataset statistics in the config (1280-d per camera); a
        # parameter-free LayerNorm puts them on the state's scale instead.
        self.feature_norm = nn.LayerNorm(c.feature_dim, elementwise_affine=False) if c.cameras else None
        in_dim = c.window * (c.state_dim + c.env_state_dim + len(c.cameras) * c.feature_dim)
        layers: list[nn.Module] = []
        for i in range(c.n_layers):
            layers += [nn.Linear(in_dim if i == 0 else c.hidden_dim, c.hidden_dim), nn.GELU()]
            if c.dropout:
                layers.append(nn.Dropout(c.dropout))
        layers.append(nn.Linear(c.hidden_dim, c.horizon * c.action_dim))
        self.net = nn.Sequential(*layers)

    # ------------------------------------------------------------------ forward
    def _inputs(self, features: dict[str, torch.Tensor], state: torch.Tensor,
                env_state: torch.Tensor | None = None) -> torch.Tensor:
        c = self.config
        parts = [(state.float() - self.state_mean) / self.state_std]
        if c.env_state_key:
            if env_state is None:
                raise RoborewardError(f"BC policy needs {c.env_state_key} (it was trained with it); pass env_state")
            parts.append((env_state.float() - self.env_state_mean) / self.env_state_std)
        for cam in c.cameras:
            if cam not in features:
                raise KeyError(f"BC policy needs features of camera {cam!r}; got {sorted(features)}")
            parts.append(self.feature_norm(features[cam].float()))
        x = torch.cat(parts, dim=-1)  # (B, window, S + n_cams * D)
        if x.dim() != 3 or x.shape[1] != c.window:
            raise RoborewardError(f"BC policy needs inputs (B, window={c.window}, dim), got {tuple(x.shape)}")
        return x.reshape(x.shape[0], -1)

    def forward(self, features: dict[str, torch.Tensor], state: torch.Tensor,
                env_state: torch.Tensor | None = None) -> torch.Tensor:
        """Normalised action chunk (B, horizon, A) from features {cam: (B, window, D)}, state (B, window, S)
        and, for a policy with ``env_state_key``, the environment state (B, window, E)."""
        return self.net(self._inputs(features, state, env_state)).reshape(-1, self.config.horizon, self.config.action_dim)

    def loss(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        c = self.config
        features = {cam: batch[f"features.{cam}"] for cam in c.cameras}
        pred = self(features, batch[c.state_key], batch[c.env_state_key] if c.env_state_key else None)
        target = (batch["action"].float() - self.action_mean) / self.action_std
        err = (pred - target).abs() if c.loss == "l1" else (pred - target) ** 2
        # Padded steps (past the episode end) repeat the last action; they are excluded like
        # LeRobot's action_is_pad so a policy is not taught to freeze before every episode end.
        valid = (~batch["action_is_pad"]).to(err.dtype).unsqueeze(-1)  # (B, H, 1)
        per_sample = (err * valid).sum((1, 2)) / (valid.sum((1, 2)) * c.action_dim).clamp_min(1.0)
        weight = batch.get("weight")
        loss = weighted_mean(per_sample, weight)
        out = {"loss": loss, "loss_unweighted": per_sample.mean().detach()}
        if weight is not None:
            out["mean_weight"] = weight.float().mean().detach()
        return out

    @torch.no_grad()
    def select_action(self, obs_features: dict[str, torch.Tensor] | None, state: torch.Tensor,
                      env_state: torch.Tensor | None = None) -> torch.Tensor:
        """Action chunk (B, horizon, A) in dataset units from ``state`` (B, window, S),
        ``obs_features`` {camera: (B, window, D)} (None for a policy without cameras) and
        ``env_state`` (B, window, E) for a policy with ``env_state_key``. With window 1 the window
        axis may be left out ((B, S), (B, D)), and a single sample may be given unbatched
        ((S,), (D,)), which returns (horizon, A)."""
        state = torch.as_tensor(state, device=self.device)
        unbatched = state.dim() == 1

        def shape(x: torch.Tensor) -> torch.Tensor:
            x = torch.as_tensor(x, device=self.device).float()
            if x.dim() == 1:
                x = x.unsqueeze(0)
            return x.unsqueeze(1) if x.dim() == 2 else x

        features = {cam: shape(v) for cam, v in (obs_features or {}).items()}
        env = shape(env_state) if env_state is not None else None
        actions = self(features, shape(state), env) * self.action_std + self.action_mean
        return actions[0] if unbatched else actions

    def predict_chunk(self, batch: dict[str, Any]) -> torch.Tensor:
        """The chunk (B, horizon, A) in dataset units for a training batch (validation's action error)."""
        c = self.config
        return self.select_action({cam: batch[f"features.{cam}"] for cam in c.cameras}, batch[c.state_key],
                                  batch[c.env_state_key] if c.env_state_key else None)
