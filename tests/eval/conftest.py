"""Fixtures for evaluation tests: a labelled synthetic store and a tiny SARM trained on it."""
from __future__ import annotations

import pytest
from evaltoy import build_eval_store, train_tiny_sarm


@pytest.fixture(scope="session")
def eval_store(tmp_path_factory):
    return build_eval_store(tmp_path_factory.mktemp("evaltoy") / "eval.zarr")


@pytest.fixture(scope="session")
def tiny_sarm(eval_store):
    return train_tiny_sarm(eval_store)
