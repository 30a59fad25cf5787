"""Helpers shared by the search-space tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from nas_env.spaces.base import SearchSpace


def random_actions(space: SearchSpace, rng: np.random.Generator) -> list[int]:
    """One valid choice index per token, drawn uniformly."""
    return [int(rng.integers(spec.num_choices)) for spec in space.tokens()]


def round_trips(space: SearchSpace, n: int, seed: int) -> Iterator[tuple[list[int], Any]]:
    """``n`` random action lists with their architectures, each checked to encode back to its actions."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        actions = random_actions(space, rng)
        arch = space.decode(actions)
        assert space.encode(arch) == actions
        yield actions, arch
