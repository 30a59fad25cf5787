"""A made-up NASRL-Bench table with known values, shared by the table and agent-bench tests."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

import nas_env  # noqa: F401  (registers the environments)
from nas_env.bench.table import BenchTable

TWO_LAYERS = {"num_layers": 2, "filter_heights": [1, 3], "filter_widths": [1, 5], "num_filters": [4, 8]}


def made_up_table(seeds: int = 3, epochs: int = 2) -> BenchTable:
    """A table over the two-layer space (128 architectures) with known, distinct values."""
    space = gym.make("NASRL-Digits-v0", evaluator="synthetic", **TWO_LAYERS).unwrapped.space
    tokens = [[s.name, s.layer, list(s.choices)] for s in space.tokens()]
    n = int(np.prod([len(t[2]) for t in tokens]))
    rng = np.random.default_rng(0)
    val = rng.uniform(0.1, 0.9, (n, seeds, epochs)).astype(np.float32)
    status = np.full((n, seeds), "ok", dtype="<U16")
    status[5, 1] = "diverged"
    val[5, 1] = np.nan
    return BenchTable("made-up", "NASRL-Digits-v0", TWO_LAYERS, tokens, "fp", list(range(seeds)), epochs, val,
                      rng.uniform(0.1, 0.9, (n, seeds)).astype(np.float32),
                      rng.uniform(1, 2, (n, seeds)).astype(np.float32), status,
                      np.arange(n, dtype=np.int64) + 100, np.arange(n, dtype=np.int64) + 1000)
