"""Progress on constructed inputs: an episode's frames re-indexed (held, frozen, cut short).

A probe is ``(episode, frame_indices)``: the model sees frame ``frame_indices[j]`` of the episode at
position j, every input of that frame together (all cameras and the state), so
``[0, 1, ..., 9, 9, 9, 9]`` freezes the scene at frame 9. Batches are built exactly as
``roboreward.rewards.annotate`` builds them for whole episodes (``RewardModel.episode_batch``), then
re-indexed, and go through the public ``RewardModel.progress``; no second inference loop.

Only models over cached features (``config.feature_key``, SARM and its kin) can be probed: a model
that reads the store itself through an ``episode_progress(store, episodes)`` hook has no way yet to
be handed re-indexed frames, so ``probe_support`` says why and the figures that need probes report
``n/a`` for it.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..data.store import EpisodeStore
from ..errors import RoborewardError
from ..rewards.annotate import BATCH_FRAMES, _call_progress, episode_groups

Probe = tuple[int, Sequence[int]]


def probe_support(model) -> str | None:
    """None when ``model`` can be run on re-indexed frames, else the reason it cannot."""
    label = getattr(model, "name", type(model).__name__)
    if callable(getattr(model, "episode_progress", None)):
        return (f"reward model {label!r} reads episodes through its own episode_progress hook, which cannot be "
                "given repeated frames")
    if getattr(getattr(model, "config", None), "feature_key", None) is None:
        return f"reward model {label!r} has no config.feature_key (cached features) to re-index"
    return None


def hold_frames(length: int, extra: int) -> list[int]:
    """The whole episode, then its last frame ``extra`` more times (the final scene held)."""
    return list(range(length)) + [length - 1] * max(0, extra)


def freeze_frames(at: int, extra: int) -> list[int]:
    """Frames 0..at, then frame ``at`` ``extra`` more times (the scene frozen at ``at``)."""
    return list(range(at + 1)) + [at] * max(0, extra)


def _reindexed_batch(model, store: EpisodeStore, probes: list[Probe]) -> dict:
    episodes = list(dict.fromkeys(e for e, _ in probes))
    row = {e: i for i, e in enumerate(episodes)}
    source = model.episode_batch(store, model.config, episodes)
    lengths = source["lengths"].tolist()
    index = [np.asarray(frames, dtype=np.int64) for _, frames in probes]
    for (e, _), idx in zip(probes, index):
        if len(idx) == 0 or idx.min() < 0 or idx.max() >= lengths[row[e]]:
            raise RoborewardError(f"probe of episode {e}: frame indices must lie in [0, {lengths[row[e]]}) and be non-empty")
    t_max = max(len(idx) for idx in index)
    # Pad each sequence with its own last entry, as episode_batch pads episodes (causal: ignored).
    padded = torch.from_numpy(np.stack([np.concatenate([idx, np.repeat(idx[-1:], t_max - len(idx))]) for idx in index]))
    rows = torch.tensor([row[e] for e, _ in probes])
    batch: dict = {}
    for key, value in source.items():
        if key == "lengths":
            continue
        if torch.is_tensor(value) and value.ndim >= 2:  # per frame: (B, T, ...)
            batch[key] = value[rows[:, None], padded]
        elif isinstance(value, list):  # per episode: task
            batch[key] = [value[row[e]] for e, _ in probes]
        else:
            raise RoborewardError(f"episode batch entry {key!r} is neither per frame nor per episode; cannot re-index it")
    batch["lengths"] = torch.tensor([len(idx) for idx in index])
    return batch


def probe_progress(model, store: EpisodeStore, probes: Sequence[Probe], level: str | None = None,
                   batch_frames: int = BATCH_FRAMES) -> list[np.ndarray]:
    """Progress (one float32 array per probe, as long as its index list) of ``model`` on each
    episode's frames in the order ``frame_indices`` gives. Raises for a model ``probe_support``
    refuses."""
    reason = probe_support(model)
    if reason is not None:
        raise RoborewardError(reason)
    probes = [(int(e), list(frames)) for e, frames in probes]
    for e, _ in probes:
        store.episode_range(e)  # one-line error for an episode that does not exist
    lengths = [len(frames) for _, frames in probes]
    out: list[np.ndarray] = [None] * len(probes)  # type: ignore[list-item]
    with torch.no_grad():
        for group in episode_groups(lengths, batch_frames):
            batch = _reindexed_batch(model, store, [probes[i] for i in group])
            values = _call_progress(model, batch, level).float().cpu().numpy()
            for r, i in enumerate(group):
                out[i] = values[r, : lengths[i]].astype(np.float32)
    return out
