"""Shared fixtures: small real data that ships with scikit-learn, and tiny runs."""

from __future__ import annotations

import pytest
import torch

from transferkit.data import TensorData, load_data

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits16() -> TensorData:
    """scikit-learn's digits (train split), upsampled to 16x16."""
    return load_data("digits", "train", image_size=16)


@pytest.fixture(scope="session")
def digits16_test() -> TensorData:
    return load_data("digits", "test", image_size=16)


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path_factory):
    """Tests never download: an empty cache and the offline switch."""
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("TRANSFERKIT_OFFLINE", "1")
    monkeypatch.delenv("TRANSFERKIT_DATA_DIR", raising=False)
