"""SARM's training samples: causal clips of cached features with per-frame stage / tau targets from
the subtask annotations (``roboreward.rewards.targets`` holds the target conventions)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

from ...data.sampler import ClipConfig, ClipDataset
from ...data.schema import StoreError
from ...data.store import EpisodeStore
from ..targets import StageSet, annotation_targets
from .configuration_sarm import SARMConfig


def target_key(level: str, what: str) -> str:
    return f"sarm.{level}.{what}"


class SARMDataset(Dataset):
    """Training samples for SARM: every frame of ``episodes`` as a causal clip of cached features
    (``ClipDataset`` with the config's window/gap/cameras/state) plus per-frame targets
    ``sarm.<level>.stage`` / ``sarm.<level>.tau`` / ``sarm.<level>.progress`` (window,) of exactly
    the clip's frames. Targets use the config's stages and priors (the training split's)."""

    def __init__(self, store: EpisodeStore | str, config: SARMConfig, episodes: Sequence[int] | None = None,
                 features_in_memory: bool = True):
        self.store = store if isinstance(store, EpisodeStore) else EpisodeStore(store)
        if config.feature_key is None:
            raise StoreError("config.feature_key is None; build the config with SARMConfig.from_store(store, feature_key)")
        config.check_ready()
        self.config = config
        self.clips = ClipDataset(
            self.store,
            ClipConfig(
                window=config.window,
                frame_gap=config.frame_gap,
                cameras=config.cameras,
                low_dim=(config.state_key,) if config.state_key else (),
                features=config.feature_key,
                feature_copies=config.feature_copies,
                targets=False,
                features_in_memory=features_in_memory,
            ),
            episodes,
        )
        self.targets = annotation_targets(
            self.store, self.clips.episodes, config.annotation_mode,
            {lvl: StageSet.from_config(config, lvl) for lvl in config.levels}, done_key=config.done_key,
        )

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> dict:
        item = self.clips[i]
        frames = (self.store.episode_starts[item["episode_index"]] + item["frame_index"]).numpy()
        for level, tg in self.targets.items():
            item[target_key(level, "stage")] = torch.from_numpy(tg.stage[frames])
            item[target_key(level, "tau")] = torch.from_numpy(tg.tau[frames])
            item[target_key(level, "progress")] = torch.from_numpy(tg.progress[frames])
        return item
