"""Shared envs and helpers for the agent tests (instant synthetic evaluators only)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

import nas_env  # noqa: F401  (registers the environments)
from agents import ChildRecord, SearchAgent, UpdateStats
from nas_env.spaces.base import TokenSpec
from nas_env.spaces.cnn import CNNArchitecture


def digits_env(num_layers: int = 3, **kwargs: Any) -> gym.Env:
    """The instant digits env: 3 tokens of 4 choices per layer plus 2-choice skip tokens."""
    return gym.make("NASRL-Digits-v0", evaluator="synthetic", num_layers=num_layers, **kwargs)


def mixed_env(**kwargs: Any) -> gym.Env:
    """Tokens with 2, 3 and 4 choices (strides searched, shorter choice lists), A = 4."""
    return digits_env(num_layers=3, filter_heights=(1, 3, 5), num_filters=(8, 16), search_strides=True, **kwargs)


def run_agent(agent: SearchAgent, env: Any, num_children: int) -> tuple[list[ChildRecord], list[UpdateStats]]:
    children: list[ChildRecord] = []
    updates: list[UpdateStats] = []
    agent.run(env, num_children, children.append, updates.append)
    return children, updates


def resumed_from(agent: SearchAgent, env: Any, num_children: int, save_at: int, path: Any) -> SearchAgent:
    """Run ``agent`` to ``num_children``, saving it when ``save_at`` children are done (from ``on_update``, as the
    runner does); returns a fresh agent loaded from that save."""

    def save(stats: UpdateStats) -> None:
        if stats.children_done == save_at:
            agent.save(path)

    agent.run(env, num_children, lambda c: None, save)  # goes on past the save: must not matter
    return type(agent).load(path)


def reference_rows(specs: tuple[TokenSpec, ...]) -> dict[str, int]:
    """The controller's embedding rows, from its documented layout: 0 = start, then one block per token type
    (as many rows as its largest token's choices) in order of first appearance."""
    rows, offset = {}, 1
    for s in specs:
        if s.name not in rows:
            rows[s.name] = offset
            offset += max(x.num_choices for x in specs if x.name == s.name)
    return rows


def reference_lstm_step(p: dict[str, torch.Tensor], x: torch.Tensor, h: list[torch.Tensor],
                        c: list[torch.Tensor]) -> torch.Tensor:
    """One step of the controller's stacked LSTM from the LSTM equations (``h`` and ``c`` updated in place);
    returns the top layer's output."""
    for k in range(len(h)):
        gates = (p[f"lstm.weight_ih_l{k}"] @ x + p[f"lstm.bias_ih_l{k}"]
                 + p[f"lstm.weight_hh_l{k}"] @ h[k] + p[f"lstm.bias_hh_l{k}"])
        i, f, g, o = gates.chunk(4)
        c[k] = torch.sigmoid(f) * c[k] + torch.sigmoid(i) * torch.tanh(g)
        h[k] = torch.sigmoid(o) * torch.tanh(c[k])
        x = h[k]
    return x


def actions_of(env: gym.Env | gym.vector.VectorEnv, child: ChildRecord) -> list[int]:
    """The action list that produced a child (decoded back from its architecture)."""
    space = env.unwrapped.get_attr("space")[0] if isinstance(env.unwrapped, gym.vector.VectorEnv) \
        else env.unwrapped.space
    return space.encode(CNNArchitecture.from_json(child.info["arch"]))


class RestrictedMask(gym.Wrapper):
    """Masks out actions 0 and 2 of every 4-choice token (so the mask, not the heads, decides) and checks them.

    Any action outside the mask raises: an agent must read the mask the env gives.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self._mask: np.ndarray | None = None

    def _restrict(self, info: dict[str, Any]) -> dict[str, Any]:
        mask = np.asarray(info["action_mask"]).copy()
        if mask.sum() == 4:
            mask[[0, 2]] = 0
        self._mask = mask
        return {**info, "action_mask": mask}

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        return obs, self._restrict(info)

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict[str, Any]]:
        if not self._mask[int(action)]:
            raise AssertionError(f"action {action} outside the mask {self._mask}")
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated, self._restrict(info)

    def action_masks(self) -> np.ndarray:
        return self._mask.astype(bool)
