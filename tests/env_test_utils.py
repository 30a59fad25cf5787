"""Helpers shared by the env tests."""

from __future__ import annotations

import gymnasium as gym
import numpy as np


def play(env: gym.Env, rng: np.random.Generator, seed: int | None = 0) -> tuple[float, dict, list[int]]:
    """One episode of uniformly random valid actions; returns the final reward, info and the actions."""
    _obs, info = env.reset(seed=seed)
    actions: list[int] = []
    while True:
        a = int(rng.choice(np.flatnonzero(info["action_mask"])))
        actions.append(a)
        _obs, reward, terminated, truncated, info = env.step(a)
        if terminated or truncated:
            return float(reward), info, actions
        assert reward == 0.0  # the reward is sparse: only the last step has one


def episode(env: gym.Env, actions: list[int], seed: int) -> tuple[float, dict]:
    """One episode of the given actions; returns the final reward and info (the episode must end on the last)."""
    env.reset(seed=seed)
    for a in actions:
        _, reward, terminated, truncated, info = env.step(a)
    assert terminated and not truncated
    return float(reward), info
