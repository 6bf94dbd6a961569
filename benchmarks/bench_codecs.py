"""Which codec and time chunking for camera frames in the zarr store?

Renders real sim episodes (both cameras), writes the frames with each candidate codec and chunk
length, and measures size per frame, write rate, sequential decode rate and random causal-clip
reads (the sampler's access pattern). The store's defaults (roboreward/data/store.py) come from
this table.

    python benchmarks/bench_codecs.py [--quick]
"""
from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import BloscCodec, ZstdCodec

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from roboreward.data.sampler import clip_indices  # noqa: E402

CANDIDATES = {
    "raw": lambda: None,
    "blosc-lz4": lambda: BloscCodec(cname="lz4", clevel=5, shuffle="noshuffle"),
    "blosc-lz4-bitshuffle": lambda: BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle"),
    "blosc-zstd1": lambda: BloscCodec(cname="zstd", clevel=1, shuffle="noshuffle"),
    "blosc-zstd3-bitshuffle": lambda: BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle"),
    "blosc-zstd5-bitshuffle": lambda: BloscCodec(cname="zstd", clevel=5, shuffle="bitshuffle"),
    "zstd1": lambda: ZstdCodec(level=1),
    "zstd3": lambda: ZstdCodec(level=3),
    "zstd5": lambda: ZstdCodec(level=5),
}


def frames_from_sim(episodes: int, image_size: int) -> dict[str, np.ndarray]:
    from roboreward.sim.scripted import generate_episode

    eps = [generate_episode("pick_place", "expert", seed, image_size=image_size) for seed in range(episodes)]
    cams = [k for k in eps[0].data if k.startswith("observation.images.")]
    return {c: np.concatenate([e.data[c] for e in eps]) for c in cams}, [e.length for e in eps]


def measure(frames: np.ndarray, lengths, codec_name: str, chunk_t: int, workdir: Path, clips: int) -> dict:
    path = workdir / f"{codec_name}-{chunk_t}.zarr"
    shutil.rmtree(path, ignore_errors=True)
    codec = CANDIDATES[codec_name]()
    arr = zarr.create_array(
        str(path), shape=frames.shape, chunks=(chunk_t, *frames.shape[1:]), dtype="uint8",
        compressors=None if codec is None else codec, fill_value=0,
    )
    t0 = time.perf_counter()
    arr[:] = frames
    write_s = time.perf_counter() - t0
    nbytes = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    t0 = time.perf_counter()
    back = arr[:]
    decode_s = time.perf_counter() - t0
    assert np.array_equal(back, frames)
    rng = np.random.default_rng(0)
    ends = np.cumsum(lengths)
    starts = ends - np.asarray(lengths)
    ts = rng.integers(0, len(frames), clips)
    t0 = time.perf_counter()
    for t in ts:
        start = starts[np.searchsorted(ends, t, side="right")]
        idx, _ = clip_indices(int(t), int(start), 8, 5)
        arr.get_orthogonal_selection((np.unique(idx),))
    clip_s = time.perf_counter() - t0
    return {
        "codec": codec_name,
        "chunk_frames": chunk_t,
        "bytes_per_frame": nbytes / len(frames),
        "ratio": frames.nbytes / nbytes,
        "write_frames_per_s": len(frames) / write_s,
        "decode_frames_per_s": len(frames) / decode_s,
        "clip_frames_per_s": clips * 8 / clip_s,
    }


def main():
    args = common.parser(__doc__).parse_args()
    episodes, size, clips = (2, 96, 100) if args.quick else (6, 128, 400)
    frames_by_cam, lengths = frames_from_sim(episodes, size)
    cam = "observation.images.front"
    frames = frames_by_cam[cam]
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_codecs_"))
    rows = []
    chunkings = (1, 4) if args.quick else (1, 4, 8, 16)
    for name in CANDIDATES:
        for chunk_t in chunkings:
            rows.append(measure(frames, lengths, name, chunk_t, workdir, clips))
    shutil.rmtree(workdir, ignore_errors=True)
    keys = ["codec", "chunk_frames", "bytes_per_frame", "ratio", "write_frames_per_s", "decode_frames_per_s", "clip_frames_per_s"]
    print(f"{len(frames)} frames of {cam} at {size}px from {episodes} sim episodes")
    print(common.table([[r[k] for k in keys] for r in rows], keys))
    common.write("bench_codecs", {"quick": args.quick, "frames": len(frames), "image_size": size, "camera": cam, "rows": rows}, args.out)


if __name__ == "__main__":
    main()
