"""Shared benchmark plumbing: argument parsing, timing, the printed table and the JSON record.

Every benchmark prints a table of ours vs the alternative measured in the same run and writes
benchmarks/results/<name>.json with every figure plus the machine it ran on.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = RESULTS.parent.parent


def portable(value):
    """``value`` (a record: dicts, lists, strings) with every path inside the checkout written
    relative to it, so a committed result names no machine's folders."""
    if isinstance(value, dict):
        return {k: portable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [portable(v) for v in value]
    if isinstance(value, str) and value.startswith(f"{ROOT}/"):
        return value[len(str(ROOT)) + 1:]
    return value


def parser(doc: str, quick_takes: str = "< 1 minute") -> argparse.ArgumentParser:
    """The benchmark's command line, described by its module docstring ``doc``: the first paragraph
    as the description and the rest, as written, under the options (``--help`` shows all of it).
    ``quick_takes``: how long ``--quick`` runs, as its help says it."""
    head, _, rest = doc.strip().partition("\n\n")
    p = argparse.ArgumentParser(description=" ".join(head.split()), epilog=rest or None,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help=f"same figures at small size ({quick_takes})")
    p.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/<name>.json)")
    p.add_argument("--workdir", type=Path, default=None, help="scratch folder for generated data")
    return p


def parse_extra_seeds(text: str) -> dict[str, list[int]]:
    """``"plain=1,2;rabc_sarm=1"`` -> {"plain": [1, 2], "rabc_sarm": [1]} (``--extra-seeds``)."""
    return {k: [int(x) for x in v.split(",")] for k, v in (kv.split("=", 1) for kv in text.split(";") if kv)}


def machine() -> dict:
    import torch

    return {
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "platform": platform.platform(),
    }


def rate(fn, items_per_call: float, min_seconds: float = 2.0, min_calls: int = 3) -> float:
    """Items per second of ``fn()``, run until both bounds are met (after one warm-up call)."""
    fn()
    calls, start = 0, time.perf_counter()
    while calls < min_calls or time.perf_counter() - start < min_seconds:
        fn()
        calls += 1
    return calls * items_per_call / (time.perf_counter() - start)


def table(rows: list[list], header: list[str]) -> str:
    cells = [header] + [[f"{c:.4g}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write(name: str, record: dict, out: Path | None = None) -> Path:
    """Write the record; a ``--quick`` run goes to ``<name>_quick.json`` (not committed) so it never
    replaces the full-size figures the README is built from."""
    path = out or RESULTS / (f"{name}_quick.json" if record.get("quick") else f"{name}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    record = portable({"benchmark": name, "date": time.strftime("%Y-%m-%d"), "machine": machine(), **record})
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(path)
    print(f"wrote {path}")
    return path
