"""Deterministic kill -9 points, for crash tests of the writers.

``ROBOREWARD_KILL_AT=<point>:<n>`` makes the process SIGKILL itself the n-th time (1-based) it
passes ``kill_point(<point>)``: a real kill -9, at an exact moment, however loaded the machine
is (a test that kills after a timer misses short writes on a busy machine). Unset, which is always
the case outside tests, a check costs one environment lookup. Points:

- ``store.arrays_written``: an episode's arrays are written, its commit record not yet;
- ``store.committed``: an episode's commit record was just written;
- ``cache.block_written``: a block of features is written, the cache's ``done`` counter not yet;
- ``rl.checkpoint_files``: an RL checkpoint's files are written in its temporary folder, not yet renamed;
- ``rl.checkpoint_committed``: an RL checkpoint folder was just renamed into place (pointer not yet updated).
"""
from __future__ import annotations

import os
import signal

ENV = "ROBOREWARD_KILL_AT"
_passes: dict[str, int] = {}


def kill_point(name: str) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    point, _, count = spec.rpartition(":")
    if point != name:
        return
    _passes[name] = _passes.get(name, 0) + 1
    if _passes[name] == int(count):
        os.kill(os.getpid(), signal.SIGKILL)
