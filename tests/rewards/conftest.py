"""Fixtures for reward-model tests; the synthetic store itself is built by sarm_toy.py."""
from __future__ import annotations

import pytest
from sarm_toy import build_toy_store

from roboreward.data import EpisodeStore


@pytest.fixture(scope="session")
def toy_store(tmp_path_factory) -> EpisodeStore:
    return build_toy_store(tmp_path_factory.mktemp("toy") / "toy.zarr")
