"""Visuomotor BC: per camera a trainable conv trunk pooled by a spatial softmax into keypoints
(expected image coordinates of K learned features), concatenated over the observation window with
the normalised joint state, then an MLP predicting the next ``horizon`` actions.

Trained with ``roboreward.training.fit`` like the feature-cache BC policy; RA-BC enters only
through the batch's ``weight``. Augmentation (random shift, brightness/contrast) runs in training
mode only, on the batch's device; evaluation and deployment see the frames as they are.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import RoborewardError
from ..base import Policy, register_policy
from ..rabc import weighted_mean
from .configuration_vision import VisionBCConfig


class SpatialSoftmax(nn.Module):
    """(N, C, h, w) feature maps -> (N, 2K): the softmax-weighted mean (x, y) of K 1x1-conv maps."""

    def __init__(self, channels: int, keypoints: int):
        super().__init__()
        self.points = nn.Conv2d(channels, keypoints, 1)
        self.log_temperature = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.points(x)
        n, k, h, w = maps.shape
        attn = torch.softmax(maps.flatten(2) / self.log_temperature.exp(), dim=-1)  # (N, K, h*w)
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, h, device=x.device), torch.linspace(-1, 1, w, device=x.device),
                                indexing="ij")
        grid = torch.stack([xs.flatten(), ys.flatten()], dim=-1).to(attn.dtype)  # (h*w, 2)
        return (attn @ grid).flatten(1)  # (N, 2K)


class ConvKeypoints(nn.Module):
    def __init__(self, channels: list[int], keypoints: int):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for i, c in enumerate(channels):
            layers += [nn.Conv2d(c_in, c, 3, stride=2 if i < len(channels) - 1 else 1, padding=1),
                       nn.GroupNorm(max(1, c // 16), c), nn.ReLU(inplace=True)]
            c_in = c
        self.trunk = nn.Sequential(*layers)
        self.pool = SpatialSoftmax(c_in, keypoints)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.trunk(x))


@register_policy
class VisionBCPolicy(Policy):
    name = "vision_bc"
    config_class = VisionBCConfig

    def __init__(self, config: VisionBCConfig):
        super().__init__(config)
        config.check_ready()
        c = config
        self.register_statistics()
        self.encoders = nn.ModuleDict({str(i): ConvKeypoints(c.channels, c.keypoints) for i in range(len(c.cameras))})
        in_dim = c.window * (c.state_dim + c.env_state_dim + len(c.cameras) * 2 * c.keypoints)
        layers: list[nn.Module] = []
        for i in range(c.n_layers):
            layers += [nn.Linear(in_dim if i == 0 else c.hidden_dim, c.hidden_dim), nn.GELU()]
            if c.dropout:
                layers.append(nn.Dropout(c.dropout))
        layers.append(nn.Linear(c.hidden_dim, c.horizon * c.action_dim))
        self.head = nn.Sequential(*layers)

    @property
    def default_execute(self) -> int:
        """Actions of each chunk the runner executes unless told otherwise (``config.execute``)."""
        return self.config.execute or self.config.horizon

    # ------------------------------------------------------------------ images
    def _frames(self, x: torch.Tensor, cam: str) -> torch.Tensor:
        """(B, W, H, W, 3) uint8 -> (B*W, 3, h, w) float, resized, augmented when training."""
        c = self.config
        if x.dtype != torch.uint8 or x.dim() != 5 or x.shape[-1] != 3:
            raise RoborewardError(f"camera {cam!r}: expected (B, window, H, W, 3) uint8 frames, got {tuple(x.shape)} {x.dtype}")
        if list(x.shape[2:4]) != list(c.image_shape):
            raise RoborewardError(f"camera {cam!r}: frames are {x.shape[2]}x{x.shape[3]} but the policy was trained on "
                                  f"{c.image_shape[0]}x{c.image_shape[1]}; render or record at that size")
        b, w = x.shape[:2]
        x = x.flatten(0, 1).permute(0, 3, 1, 2).float().div_(255.0)
        if c.input_size and c.input_size != x.shape[-1]:
            x = F.interpolate(x, size=(c.input_size, c.input_size), mode="bilinear", align_corners=False, antialias=True)
        if self.training:
            x = self._augment(x.view(b, w, *x.shape[1:])).flatten(0, 1)
        return (x - 0.5) / 0.25

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        """Per sample (the same for its window frames): a random shift and brightness/contrast."""
        c = self.config
        b, w, ch, h, wd = x.shape
        if c.shift:
            s = c.shift
            padded = F.pad(x.flatten(0, 1), (s, s, s, s), mode="replicate").view(b, w, ch, h + 2 * s, wd + 2 * s)
            oy = torch.randint(0, 2 * s + 1, (b,), device=x.device)
            ox = torch.randint(0, 2 * s + 1, (b,), device=x.device)
            rows = (oy[:, None] + torch.arange(h, device=x.device))[:, None, None, :, None]
            cols = (ox[:, None] + torch.arange(wd, device=x.device))[:, None, None, None, :]
            bi = torch.arange(b, device=x.device)[:, None, None, None, None]
            wi = torch.arange(w, device=x.device)[None, :, None, None, None]
            ci = torch.arange(ch, device=x.device)[None, None, :, None, None]
            x = padded[bi, wi, ci, rows, cols]
        if c.colour:
            shape = (b, 1, 1, 1, 1)
            gain = 1 + c.colour * (2 * torch.rand(shape, device=x.device) - 1)
            bias = c.colour * (2 * torch.rand(shape, device=x.device) - 1)
            mean = x.mean(dim=(2, 3, 4), keepdim=True)
            x = ((x - mean) * gain + mean + bias).clamp(0.0, 1.0)
        return x

    # ------------------------------------------------------------------ forward
    def forward(self, images: dict[str, torch.Tensor], state: torch.Tensor, env_state: torch.Tensor | None = None) -> torch.Tensor:
        """Normalised action chunk (B, horizon, A) from {camera: (B, window, H, W, 3) uint8} and
        state (B, window, S)."""
        c = self.config
        b = state.shape[0]
        parts = [(state.float() - self.state_mean) / self.state_std]
        if c.env_state_key:
            if env_state is None:
                raise RoborewardError(f"the policy needs {c.env_state_key} (it was trained with it)")
            parts.append((env_state.float() - self.env_state_mean) / self.env_state_std)
        for i, cam in enumerate(c.cameras):
            if cam not in images:
                raise RoborewardError(f"the policy reads camera {cam!r}; got {sorted(images)}")
            parts.append(self.encoders[str(i)](self._frames(images[cam], cam)).view(b, c.window, -1))
        x = torch.cat(parts, dim=-1)
        if x.shape[1] != c.window:
            raise RoborewardError(f"the policy needs a window of {c.window} frames, got {x.shape[1]}")
        return self.head(x.flatten(1)).view(b, c.horizon, c.action_dim)

    def loss(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        c = self.config
        pred = self({cam: batch[cam] for cam in c.cameras}, batch[c.state_key],
                    batch[c.env_state_key] if c.env_state_key else None)
        target = (batch["action"].float() - self.action_mean) / self.action_std
        err = (pred - target).abs() if c.loss == "l1" else (pred - target) ** 2
        valid = (~batch["action_is_pad"]).to(err.dtype).unsqueeze(-1)
        per_sample = (err * valid).sum((1, 2)) / (valid.sum((1, 2)) * c.action_dim).clamp_min(1.0)
        weight = batch.get("weight")
        out = {"loss": weighted_mean(per_sample, weight), "loss_unweighted": per_sample.mean().detach()}
        if weight is not None:
            out["mean_weight"] = weight.float().mean().detach()
        return out

    @torch.no_grad()
    def select_action(self, images: dict[str, torch.Tensor] | None, state: torch.Tensor,
                      env_state: torch.Tensor | None = None) -> torch.Tensor:
        """Action chunk (B, horizon, A) in dataset units from windows ``images`` {camera: (B, window,
        H, W, 3) uint8} and ``state`` (B, window, S) (the window axis may be left out with window 1)."""
        dev = self.device
        state = torch.as_tensor(state).to(dev)
        images = {k: torch.as_tensor(v).to(dev) for k, v in (images or {}).items()}
        env = torch.as_tensor(env_state).to(dev) if env_state is not None else None
        if state.dim() == 2:
            state = state.unsqueeze(1)
            images = {k: v.unsqueeze(1) for k, v in images.items()}
            env = env.unsqueeze(1) if env is not None else None
        return self(images, state, env) * self.action_std + self.action_mean

    def predict_chunk(self, batch: dict[str, Any]) -> torch.Tensor:
        c = self.config
        return self.select_action({cam: batch[cam] for cam in c.cameras}, batch[c.state_key],
                                  batch[c.env_state_key] if c.env_state_key else None)
