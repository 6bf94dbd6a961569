"""RA-BC (reward-aligned behaviour cloning) sample weights from per-frame progress, as LeRobot
computes them (``lerobot.rewards.sarm.rabc.RABCWeights``, SARM paper Eq. 8-9), so a policy trained
here and one trained by LeRobot from the same ``sarm_progress.parquet`` see the same weights.

For frame t of an episode with frames [start, end) and chunk horizon H:

    r_t   = phi(min(t + H, end - 1)) - phi(t)          # chunk progress delta, never across episodes
    mu    = max(mean(r), 0),  sigma = max(std(r), eps)  # global over every frame given
    soft  = clip((r - (mu - 2 sigma)) / (4 sigma + eps), 0, 1)
    w_t   = 1 if r_t > kappa;  soft_t if 0 <= r_t <= kappa;  0 if r_t < 0       (mode="soft")
    w_t   = 1 if r_t > kappa else 0                                             (mode="hard")

Episode ends: the last H frames of an episode look ahead only to the episode's last frame
(LeRobot's rule), so the final frame has r = 0 and gets the soft weight (or 0 in hard mode); a
short tail of an expert episode that has reached progress 1 is not zeroed, only softened.

The policy loss is ``weighted_mean(l, w) = sum(w l) / (sum(w) + 1e-6)`` (LeRobot's reduction).

Progress sources (``weights_for_store``): a progress annotation in the store (``read_progress``),
the simulator's ground truth ``gt.progress`` (the oracle), or a LeRobot ``sarm_progress.parquet``.
A frame without progress is an error naming its episode and frame; LeRobot's silent fallback
weight of 1.0 is deliberately not reproduced (it would train on exactly the frames we know least about).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..data.store import EpisodeStore
from ..errors import RoborewardError
from ..eval.metrics import FINAL_K
from ..rewards.annotate import PARQUET_NAME, read_progress, write_progress_parquet

KAPPA = 0.01
"""LeRobot's default threshold: a chunk that gains more than 1% of the task counts as fully good."""
EPS = 1e-6
"""LeRobot's epsilon, in the soft weight's denominator, the std floor and the loss reduction."""
MODES = ("soft", "hard")
ORACLE = "gt.progress"
LEVELS = ("sparse", "dense")


class RABCError(RoborewardError):
    """Progress that cannot give RA-BC weights (missing frames, NaN, wrong length); names the frame."""


def _episode_of(n: int, episode_ends: np.ndarray) -> np.ndarray:
    return np.searchsorted(episode_ends, np.arange(n), side="right")


def _check_progress(progress: np.ndarray, episode_ends: np.ndarray) -> None:
    bad = np.flatnonzero(~np.isfinite(progress))
    if bad.size:
        t = int(bad[0])
        ep = int(_episode_of(len(progress), episode_ends)[t])
        start = int(episode_ends[ep - 1]) if ep else 0
        raise RABCError(
            f"progress is missing (NaN/inf) for {bad.size} frame(s), first at episode {ep} frame {t - start} "
            f"(global index {t}); annotate the whole store again"
        )


def chunk_deltas(progress: np.ndarray, episode_ends: np.ndarray, horizon: int) -> np.ndarray:
    """r_t = phi(min(t + horizon, end - 1)) - phi(t) for every frame, (n_frames,) float32.
    ``progress`` (n_frames,) covers every frame; ``episode_ends`` are the store's cumulative ends."""
    if not isinstance(horizon, (int, np.integer)) or horizon < 1:
        raise RABCError(f"horizon must be an int >= 1, got {horizon!r}")
    progress = np.asarray(progress, dtype=np.float64)
    ends = np.asarray(episode_ends, dtype=np.int64)
    if progress.ndim != 1:
        raise RABCError(f"progress must be one value per frame, got shape {progress.shape}")
    n = int(ends[-1]) if len(ends) else 0
    if len(progress) != n:
        raise RABCError(f"progress has {len(progress)} values but the episodes have {n} frames")
    _check_progress(progress, ends)
    t = np.arange(n)
    future = np.minimum(t + int(horizon), ends[_episode_of(n, ends)] - 1)
    return (progress[future] - progress[t]).astype(np.float32)


def delta_stats(deltas: np.ndarray, eps: float = EPS) -> tuple[float, float]:
    """LeRobot's global statistics: (mu = max(mean, 0), sigma = max(std, eps)), population std."""
    d = np.asarray(deltas, dtype=np.float64)
    if d.size == 0:
        raise RABCError("no progress deltas to weight")
    return max(float(d.mean()), 0.0), max(float(d.std()), eps)


def rabc_weights(deltas: np.ndarray, kappa: float = KAPPA, mode: str = "soft", eps: float = EPS) -> np.ndarray:
    """RA-BC weight of every delta, (n,) float32 in [0, 1], with global statistics over ``deltas``."""
    if mode not in MODES:
        raise RABCError(f"mode {mode!r} is not one of {MODES}")
    if not (np.isfinite(kappa) and kappa >= 0):
        raise RABCError(f"kappa must be a finite number >= 0, got {kappa!r}")
    d = np.asarray(deltas, dtype=np.float64)
    if not np.isfinite(d).all():
        raise RABCError(f"deltas hold NaN/inf at index {int(np.flatnonzero(~np.isfinite(d))[0])}")
    weights = (d > kappa).astype(np.float64)
    if mode == "soft":
        mu, sigma = delta_stats(d, eps)
        soft = np.clip((d - (mu - 2.0 * sigma)) / (4.0 * sigma + eps), 0.0, 1.0)
        moderate = (d >= 0) & (d <= kappa)
        weights[moderate] = soft[moderate]
    return weights.astype(np.float32)


def weighted_mean(per_sample_loss: torch.Tensor, weight: torch.Tensor | None = None, eps: float = EPS) -> torch.Tensor:
    """sum(w l) / (sum(w) + eps) (LeRobot's RA-BC reduction); ``weight`` None = plain mean."""
    if weight is None:
        return per_sample_loss.mean()
    weight = weight.to(per_sample_loss.dtype)
    if weight.shape != per_sample_loss.shape:
        raise RABCError(f"weight has shape {tuple(weight.shape)} but the per-sample loss {tuple(per_sample_loss.shape)}")
    return (weight * per_sample_loss).sum() / (weight.sum() + eps)


# ---------------------------------------------------------------------------- progress sources
def read_lerobot_progress(parquet: str | os.PathLike, store: EpisodeStore, level: str = "sparse") -> np.ndarray:
    """``progress_<level>`` of a LeRobot ``sarm_progress.parquet`` as (n_frames,) float32 aligned with
    ``store``. Every store frame needs exactly one row whose ``episode_index``/``frame_index`` agree
    with the store; a missing row or NaN progress raises naming the episode and frame."""
    import pyarrow.parquet as pq

    if level not in LEVELS:
        raise RABCError(f"level {level!r} is not one of {LEVELS}")
    path = Path(parquet)
    if not path.is_file():
        raise RABCError(f"{path}: no such progress file; write one with `annotate` or LeRobot's compute_rabc_weights")
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid/OSError for truncated or non-parquet files
        raise RABCError(f"{path}: not a readable parquet file ({str(exc).splitlines()[0][:160]}); "
                        "write it again with `roboreward reward annotate` or LeRobot's compute_rabc_weights") from None
    column = f"progress_{level}"
    missing = [c for c in ("index", "episode_index", "frame_index", column) if c not in table.column_names]
    if missing:
        have = [c for c in table.column_names if c.startswith("progress")]
        raise RABCError(f"{path}: no column {missing[0]!r} (progress columns: {have})")
    index = table["index"].to_numpy().astype(np.int64)
    episode = table["episode_index"].to_numpy().astype(np.int64)
    frame = table["frame_index"].to_numpy().astype(np.int64)
    values = table[column].to_numpy(zero_copy_only=False).astype(np.float64)

    n = store.n_frames
    if len(np.unique(index)) != len(index):
        raise RABCError(f"{path}: repeated global index values; one row per frame expected")
    if index.size and (index.min() < 0 or index.max() >= n):
        bad = int(index[(index < 0) | (index >= n)][0])
        raise RABCError(f"{path}: row for global index {bad}, but {store.path} has {n} frames; wrong store?")
    progress = np.full(n, np.nan)
    progress[index] = values
    store_episode = store.episode_index()
    store_frame = np.arange(n) - store.episode_starts[store_episode]
    wrong = np.flatnonzero((store_episode[index] != episode) | (store_frame[index] != frame))
    if wrong.size:
        i = int(wrong[0])
        raise RABCError(
            f"{path}: global index {index[i]} is episode {episode[i]} frame {frame[i]} there but episode "
            f"{store_episode[index[i]]} frame {store_frame[index[i]]} in {store.path}; wrong store?"
        )
    _check_progress(progress, store.episode_ends)
    return progress.astype(np.float32)


def write_lerobot_progress(
    store: EpisodeStore, progress: dict[str, np.ndarray] | np.ndarray, path: str | os.PathLike, reward_model_path: str = ""
) -> Path:
    """Write ``{level: (n_frames,)}`` (or one sparse array) as LeRobot's ``sarm_progress.parquet``."""
    values = progress if isinstance(progress, dict) else {"sparse": np.asarray(progress)}
    return write_progress_parquet(store, values, path, reward_model_path=reward_model_path)


def store_progress(store: EpisodeStore, source: str | os.PathLike, level: str = "sparse") -> np.ndarray:
    """(n_frames,) progress from ``source``: ``"gt.progress"`` (the simulator's oracle), a path to a
    ``.parquet`` file, or the name of a progress annotation in the store."""
    if isinstance(source, Path) or str(source).endswith(".parquet"):
        return read_lerobot_progress(source, store, level)
    source = str(source)
    if source in ("gt", ORACLE):
        if ORACLE not in store.features:
            raise RABCError(f"{store.path}: has no {ORACLE} ground truth (not a simulated store); annotate it with a reward model")
        return np.asarray(store.array(ORACLE)[: store.n_frames], dtype=np.float32).reshape(store.n_frames)
    values = read_progress(store, source)
    if level not in values:
        raise RABCError(f"{store.path}: progress/{source} has levels {sorted(values)}, not {level!r}")
    return values[level]


def final_progress(progress: np.ndarray, episode_ends: np.ndarray, final_k: int = FINAL_K) -> np.ndarray:
    """(n_episodes,) mean progress over each episode's last ``final_k`` frames: a reward model's
    success estimate (what the evaluation's AUROC scores)."""
    starts = np.concatenate([[0], episode_ends[:-1]])
    return np.array([float(np.mean(progress[max(s, e - final_k):e])) for s, e in zip(starts, episode_ends)])


def episode_gate(progress: np.ndarray, episode_ends: np.ndarray, min_final: float, final_k: int = FINAL_K) -> np.ndarray:
    """(n_frames,) float32: 1 on the frames of episodes whose final progress reaches ``min_final``, else 0."""
    keep = final_progress(progress, episode_ends, final_k) >= min_final
    lengths = np.diff(np.concatenate([[0], episode_ends]))
    return np.repeat(keep, lengths).astype(np.float32)


def weights_for_store(
    store: EpisodeStore | str | os.PathLike,
    source: str | os.PathLike,
    horizon: int,
    level: str = "sparse",
    kappa: float = KAPPA,
    mode: str = "soft",
    min_final_progress: float | None = None,
) -> np.ndarray:
    """RA-BC weight of every frame of ``store``, (n_frames,) float32, from progress ``source`` (see
    ``store_progress``) with chunk horizon ``horizon`` (the policy's action chunk, LeRobot's chunk_size).
    Statistics are global over the whole store, as LeRobot computes them over the whole parquet.

    ``mode`` ``none`` gives weight 1 everywhere. ``min_final_progress`` (not in LeRobot) also zeroes
    whole episodes whose final progress stays below it: LeRobot's weights judge each chunk alone, so
    the good-looking first half of a failed episode keeps full weight."""
    store = store if isinstance(store, EpisodeStore) else EpisodeStore(store)
    progress = store_progress(store, source, level)
    if mode == "none":
        weights = np.ones(store.n_frames, np.float32)
    else:
        weights = rabc_weights(chunk_deltas(progress, store.episode_ends, horizon), kappa=kappa, mode=mode)
    if min_final_progress is not None:
        weights = weights * episode_gate(progress, store.episode_ends, min_final_progress)
    return weights


__all__ = [
    "EPS", "FINAL_K", "KAPPA", "MODES", "ORACLE", "episode_gate", "final_progress", "PARQUET_NAME", "RABCError", "chunk_deltas", "delta_stats", "rabc_weights",
    "read_lerobot_progress", "store_progress", "weighted_mean", "weights_for_store", "write_lerobot_progress",
]
