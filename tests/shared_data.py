"""The project's real data beside the checkout (``../shared/data``): skipped without it locally, a failure in CI.

CI runs with ``CI=true`` and the shared folder beside the clone, so a missing copy there means a broken
set-up, not a test to skip; a user's run without it skips with the reason.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data").resolve()
CIFAR10_PNG = SHARED_DATA / "cifar10-png"
PTB = SHARED_DATA / "ptb"


def require_shared(path: Path) -> Path:
    """``path`` if it exists; otherwise fail under CI and skip elsewhere, naming the missing path."""
    if path.exists():
        return path
    message = f"shared data not found at {path} (expected ../shared/data beside the checkout)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI needs the shared data: {message}")
    pytest.skip(message)
