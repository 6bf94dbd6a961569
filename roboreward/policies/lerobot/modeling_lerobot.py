"""LeRobot's ACT and Diffusion Policy, the installed classes themselves, trained on the shared
training loop with per-sample RA-BC weights, and saved in LeRobot's own pretrained format.

LeRobot reduces both losses to one number inside ``forward``, which is why its RA-BC works only for
the policies that return per-sample losses (pi0, pi0.5, SmolVLA). Here each sample's loss is kept
apart and reduced with the batch's ``weight`` as LeRobot's RA-BC does, ``sum(w l) / (sum(w) + eps)``:

- ACT: the policy's own network (``ACTPolicy.model``) gives the action chunk and the VAE posterior;
  the per-sample objective is ACT's, the mean L1 over the sample's unpadded steps plus
  ``kl_weight`` times the sample's KL divergence, so a weight-0 sample gets no gradient from either.
- Diffusion: LeRobot's own ``compute_loss`` runs unchanged (its noise, timesteps, scheduler and
  U-Net). The element-wise MSE it computes is scaled per sample, for that one call, by
  ``w_b N / (n_b sum w)`` (``n_b`` the sample's valid elements, ``N`` all of them), so the masked
  mean it then takes is exactly the weighted mean of per-sample losses. If a LeRobot release stops
  computing that MSE through ``F.mse_loss`` the call fails in one line instead of silently ignoring
  the weights.

A folder written by ``save_pretrained`` is LeRobot's: ``config.json`` (LeRobot's, ``type: act``),
``model.safetensors``, ``policy_preprocessor.json`` / ``policy_postprocessor.json`` and their
normaliser stats, so ``ACTPolicy.from_pretrained(folder)`` and LeRobot's scripts load it. This
project's ``Policy.from_pretrained`` reads such a folder too, including one written by
``lerobot-train``, so ``sim eval`` and ``deploy`` run LeRobot policies (the feature names and units
are LeRobot's already).
"""
from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from ...errors import RoborewardError
from ...pretrained import CheckpointError, one_line
from ..base import Policy, register_policy
from ..rabc import EPS, weighted_mean
from .configuration_lerobot import ACTWrapperConfig, DiffusionWrapperConfig, LeRobotPolicyConfig, lerobot_classes

PROCESSOR_FILES = ("policy_preprocessor.json", "policy_postprocessor.json")


def _stats_tensors(stats: dict[str, dict[str, list]]) -> dict[str, dict[str, torch.Tensor]]:
    return {k: {s: torch.tensor(np.asarray(v, np.float32)) for s, v in d.items()} for k, d in stats.items()}


class LeRobotPolicy(Policy, abstract=True):
    """One of LeRobot's policies behind this project's Policy API (``loss``, ``select_action``,
    ``save_pretrained``). ``self.inner`` is the LeRobot policy object."""

    folder_format: ClassVar[str] = "lerobot"

    def __init__(self, config: LeRobotPolicyConfig):
        super().__init__(config)
        config.check_ready()
        from lerobot.policies.factory import make_pre_post_processors
        from lerobot.processor import NormalizerProcessorStep, PolicyProcessorPipeline, UnnormalizerProcessorStep
        from lerobot.processor.converters import (
            batch_to_transition,
            policy_action_to_transition,
            transition_to_batch,
            transition_to_policy_action,
        )

        self.lr_config = config.lerobot_config()
        _, policy_cls = lerobot_classes(config.type)
        self.inner = policy_cls(self.lr_config)
        # LeRobot's full pipelines (rename, batch, device, normaliser) are what a LeRobot user loads;
        # here only their normaliser steps run, on whatever device the batch is.
        self.preprocessor, self.postprocessor = make_pre_post_processors(self.lr_config, dataset_stats=_stats_tensors(config.stats))
        norm = next(s for s in self.preprocessor.steps if isinstance(s, NormalizerProcessorStep))
        unnorm = next(s for s in self.postprocessor.steps if isinstance(s, UnnormalizerProcessorStep))
        self._normalize = PolicyProcessorPipeline(steps=[norm], to_transition=batch_to_transition, to_output=transition_to_batch)
        self._unnormalize = PolicyProcessorPipeline(steps=[unnorm], to_transition=policy_action_to_transition,
                                                    to_output=transition_to_policy_action)

    # ------------------------------------------------------------------ the loop-side API
    @property
    def execute_horizon(self) -> int:
        """Actions one ``select_action`` call returns (ACT: its chunk; Diffusion: n_action_steps)."""
        raise NotImplementedError

    @property
    def default_execute(self) -> int:
        """Actions executed per chunk unless told otherwise: LeRobot's ``n_action_steps``."""
        return int(self.lr_config.n_action_steps)

    def lerobot_batch(self, images: dict[str, torch.Tensor], state: torch.Tensor,
                      env_state: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """LeRobot's observation batch from this project's windows: ``images`` {camera: (B, window,
        H, W, 3) uint8}, ``state`` (B, window, S). Frames become float CHW in [0, 1], as a
        LeRobotDataset gives them; a policy with one observation step gets no window axis."""
        c = self.config
        squeeze = self.lr_config.observation_delta_indices is None
        out: dict[str, torch.Tensor] = {}
        for cam in c.cameras:
            if cam not in images:
                raise RoborewardError(f"the {c.type} policy reads camera {cam!r}; got {sorted(images)}")
            x = images[cam]
            if x.dtype != torch.uint8 or x.dim() != 5 or x.shape[-1] != 3:
                raise RoborewardError(f"camera {cam!r}: expected (B, window, H, W, 3) uint8 frames, got {tuple(x.shape)} {x.dtype}")
            if list(x.shape[2:4]) != list(c.image_shape):
                raise RoborewardError(f"camera {cam!r}: frames are {x.shape[2]}x{x.shape[3]} but the policy was trained on "
                                      f"{c.image_shape[0]}x{c.image_shape[1]}; render or record at that size")
            x = x.permute(0, 1, 4, 2, 3).float().div_(255.0)
            out[cam] = x[:, -1] if squeeze else x
        out[c.state_key] = state[:, -1].float() if squeeze else state.float()
        if c.env_state_key:
            if env_state is None:
                raise RoborewardError(f"the {c.type} policy needs {c.env_state_key}")
            out[c.env_state_key] = env_state[:, -1].float() if squeeze else env_state.float()
        return out

    def _normalized(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        c = self.config
        obs = self.lerobot_batch({cam: batch[cam] for cam in c.cameras}, batch[c.state_key],
                                 batch.get(c.env_state_key) if c.env_state_key else None)
        obs["action"] = batch["action"].float()
        obs["action_is_pad"] = batch["action_is_pad"]
        normed = self._normalize(obs)
        return {k: v for k, v in normed.items() if torch.is_tensor(v)}

    def loss(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        weight = batch.get("weight")
        per_sample, loss, extras = self.weighted_loss(self._normalized(batch), weight)
        out = {"loss": loss, "loss_unweighted": per_sample.mean().detach(), **extras}
        if weight is not None:
            out["mean_weight"] = weight.float().mean().detach()
        return out

    def weighted_loss(self, batch: dict[str, torch.Tensor], weight: torch.Tensor | None):
        """(per-sample losses (B,), their weighted mean, extra scalars) on a normalised LeRobot batch."""
        raise NotImplementedError

    @torch.no_grad()
    def select_action(self, images: dict[str, torch.Tensor] | None, state: torch.Tensor,
                      env_state: torch.Tensor | None = None) -> torch.Tensor:
        """Action chunk (B, execute_horizon, A) in dataset units from observation windows
        (``images`` {camera: (B, window, H, W, 3) uint8}, ``state`` (B, window, S))."""
        dev = self.device
        images = {k: torch.as_tensor(v).to(dev) for k, v in (images or {}).items()}
        state = torch.as_tensor(state).to(dev)
        env_state = torch.as_tensor(env_state).to(dev) if env_state is not None else None
        if state.dim() == 2:
            state = state.unsqueeze(1)
            env_state = env_state.unsqueeze(1) if env_state is not None else None
            images = {k: v.unsqueeze(1) for k, v in images.items()}
        obs = self._normalize(self.lerobot_batch(images, state, env_state))
        obs = {k: v for k, v in obs.items() if torch.is_tensor(v)}
        self.inner.reset()  # the chunk is asked for explicitly; LeRobot's own queues stay empty
        chunk = self.inner.predict_action_chunk(obs)
        return self._unnormalize(chunk)

    def predict_chunk(self, batch: dict[str, Any]) -> torch.Tensor:
        """The chunk for a training batch, aligned with its ``action`` (validation's action error)."""
        c = self.config
        return self.select_action({cam: batch[cam] for cam in c.cameras}, batch[c.state_key],
                                  batch.get(c.env_state_key) if c.env_state_key else None)

    # ------------------------------------------------------------------ LeRobot's folder format
    def save_pretrained(self, path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.inner.save_pretrained(path)
        self.preprocessor.save_pretrained(path)
        self.postprocessor.save_pretrained(path)
        (path / "roboreward_policy.json").write_text(json.dumps(self.config.to_dict(), indent=2) + "\n")
        return path

    def load_weights(self, file) -> None:
        from safetensors.torch import load_model

        load_model(self.inner, str(file), strict=True)

    @classmethod
    def from_folder(cls, path: Path, data: dict[str, Any], map_location="cpu") -> "LeRobotPolicy":
        """A LeRobot ACT / Diffusion folder: written here (``roboreward_policy.json`` beside it) or by
        LeRobot's own trainer (inputs and stats are then read from its config and normaliser)."""
        from lerobot.configs.types import FeatureType
        from lerobot.processor import NormalizerProcessorStep, PolicyProcessorPipeline
        from safetensors.torch import load_model

        kind = data["type"]
        ours = path / "roboreward_policy.json"
        missing = [f for f in ("model.safetensors", *PROCESSOR_FILES) if not (path / f).is_file()]
        if missing:
            raise CheckpointError(f"LeRobot {kind} policy {path}: missing {missing[0]}; save it with LeRobot's "
                                  "save_pretrained (policy and its pre/post processors)")
        config_cls = ACTWrapperConfig if kind == "act" else DiffusionWrapperConfig
        try:
            if ours.is_file():
                config = config_cls(**json.loads(ours.read_text()))
            else:
                cfg_cls, _ = lerobot_classes(kind)
                lr = cfg_cls.from_pretrained(path)
                pre = PolicyProcessorPipeline.from_pretrained(path, config_filename=PROCESSOR_FILES[0])
                norm = next(s for s in pre.steps if isinstance(s, NormalizerProcessorStep))
                feats = {**lr.input_features}
                state_key = next(k for k, f in feats.items() if f.type is FeatureType.STATE)
                env_key = next((k for k, f in feats.items() if f.type is FeatureType.ENV), None)
                cams = [k for k, f in feats.items() if f.type is FeatureType.VISUAL]
                skip = {"type", "input_features", "output_features", "device", "normalization_mapping",
                        "push_to_hub", "repo_id", "license", "private", "tags", "use_amp", "use_peft"}
                fields = {f.name: getattr(lr, f.name) for f in dataclasses.fields(lr) if f.init and f.name not in skip}
                fields = {k: (list(v) if isinstance(v, tuple) else v) for k, v in fields.items()}
                stats = {k: {s: np.asarray(t.cpu() if torch.is_tensor(t) else t, np.float64).tolist() for s, t in d.items()}
                         for k, d in norm.stats.items()}
                config = config_cls(cameras=cams, state_key=state_key, env_state_key=env_key,
                                    lerobot=json.loads(json.dumps(fields, default=str)),
                                    image_shape=list(feats[cams[0]].shape[1:]) if cams else [],
                                    state_dim=int(feats[state_key].shape[0]),
                                    env_state_dim=int(feats[env_key].shape[0]) if env_key else 0,
                                    action_dim=int(lr.output_features["action"].shape[0]), stats=stats)
        except RoborewardError:
            raise
        except Exception as exc:
            raise CheckpointError(f"LeRobot {kind} policy {path}: cannot be read ({one_line(exc)})") from None
        model = cls.registry.classes[kind](config)
        try:
            load_model(model.inner, str(path / "model.safetensors"), strict=True, device=str(map_location))
        except Exception as exc:
            raise CheckpointError(f"{path / 'model.safetensors'}: cannot be loaded into LeRobot's {kind} ({one_line(exc)})") from None
        return model


@register_policy
class ACTWrapper(LeRobotPolicy):
    name = "act"
    config_class = ACTWrapperConfig

    @property
    def execute_horizon(self) -> int:
        return int(self.lr_config.chunk_size)

    def weighted_loss(self, batch, weight):
        from lerobot.utils.constants import OBS_IMAGES

        cfg = self.lr_config
        if cfg.image_features:
            batch = dict(batch)
            batch[OBS_IMAGES] = [batch[k] for k in cfg.image_features]
        actions_hat, (mu, log_sigma_x2) = self.inner.model(batch)
        err = (actions_hat - batch["action"]).abs()
        valid = (~batch["action_is_pad"]).unsqueeze(-1).to(err.dtype)
        l1 = (err * valid).sum((1, 2)) / (valid.sum((1, 2)) * err.shape[-1]).clamp_min(1.0)
        extras = {"l1_loss": l1.mean().detach()}
        per_sample = l1
        if cfg.use_vae and log_sigma_x2 is not None:
            kld = (-0.5 * (1 + log_sigma_x2 - mu.pow(2) - log_sigma_x2.exp())).sum(-1)
            per_sample = l1 + cfg.kl_weight * kld
            extras["kld_loss"] = kld.mean().detach()
        return per_sample, weighted_mean(per_sample, weight), extras


class _WeightedMSE:
    """Stands in for ``torch.nn.functional`` inside LeRobot's diffusion module for one loss call:
    ``mse_loss`` returns the element-wise loss scaled per sample; everything else is F's."""

    def __init__(self, scale: torch.Tensor):
        self.scale, self.calls, self.per_sample = scale, 0, None

    def __getattr__(self, name):
        return getattr(torch.nn.functional, name)

    def mse_loss(self, input, target, *args, **kwargs):
        self.calls += 1
        loss = torch.nn.functional.mse_loss(input, target, reduction="none")
        self.per_sample = loss.detach()
        return loss * self.scale.view(-1, *([1] * (loss.dim() - 1))).to(loss.dtype)


_PATCH_LOCK = threading.Lock()


@register_policy
class DiffusionWrapper(LeRobotPolicy):
    name = "diffusion"
    config_class = DiffusionWrapperConfig

    @property
    def execute_horizon(self) -> int:
        return int(self.lr_config.n_action_steps)

    def weighted_loss(self, batch, weight):
        from lerobot.policies.diffusion import modeling_diffusion

        cfg = self.lr_config
        pad = batch["action_is_pad"]
        b, h = pad.shape
        a = batch["action"].shape[-1]
        valid = (~pad).sum(1).float() * a if cfg.do_mask_loss_for_padding else torch.full((b,), float(h * a), device=pad.device)
        w = torch.ones(b, device=pad.device) if weight is None else weight.float().to(pad.device)
        scale = w * valid.sum() / (valid.clamp_min(1.0) * (w.sum() + EPS))
        proxy = _WeightedMSE(scale)
        with _PATCH_LOCK:
            original = modeling_diffusion.F
            modeling_diffusion.F = proxy
            try:
                loss, _ = self.inner.forward(batch)
            finally:
                modeling_diffusion.F = original
        if proxy.calls != 1:
            raise RoborewardError(f"LeRobot's DiffusionPolicy computed its loss without exactly one F.mse_loss call "
                                  f"({proxy.calls}); per-sample weights cannot be applied with this lerobot version")
        mask = (~pad).unsqueeze(-1).float() if cfg.do_mask_loss_for_padding else torch.ones_like(proxy.per_sample[..., :1])
        per_sample = (proxy.per_sample * mask).sum((1, 2)) / valid.clamp_min(1.0)
        return per_sample, loss, {}
