"""Shared fixtures: a real CIFAR-10 copy in the official layout, written from ../shared/data."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from shared_data import SHARED_DATA, require_shared


@pytest.fixture(scope="session")
def cifar10_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data_root holding 6,000 real CIFAR-10 training images (enough for the 5,000-image validation split)."""
    script = require_shared(SHARED_DATA / "make_cifar10_batches.py")
    root = tmp_path_factory.mktemp("cifar10")
    subprocess.run([sys.executable, str(script), str(root), "--train", "6000", "--test", "100"], check=True,
                   capture_output=True)
    return root


@pytest.fixture(autouse=True)
def _torch_threads_unchanged(request: pytest.FixtureRequest):
    """Results on the CPU depend on torch's thread count: no test may leave it changed for the next ones."""
    import torch

    before = torch.get_num_threads()
    yield
    after = torch.get_num_threads()
    if after != before:
        torch.set_num_threads(before)
        raise AssertionError(f"{request.node.nodeid} left torch's thread count at {after} (was {before})")
