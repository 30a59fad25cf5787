"""Search agents for nasrl's environments: the paper's REINFORCE controller and random search.

Every agent implements :class:`SearchAgent` (``run`` / ``state_dict`` / ``load_state_dict`` /
``save`` / ``load``), so a runner drives them, and later stable-baselines3 adapters, alike::

    agent = make_agent("reinforce", seed=0)
    agent.run(envs, num_children=800, on_child=store.add, on_update=log)
"""

from __future__ import annotations

from typing import Any

from agents.base import ChildRecord, Episode, EpisodicSearchAgent, SearchAgent, UpdateStats, child_seed
from agents.controller import Controller, ControllerState
from agents.random_search import RandomSearchAgent
from agents.reinforce import ReinforceAgent, ReinforceLoss, reinforce_loss

AGENTS: dict[str, type[SearchAgent]] = {"reinforce": ReinforceAgent, "random": RandomSearchAgent}


def make_agent(name: str, **kwargs: Any) -> SearchAgent:
    """An agent by name (``"reinforce"`` or ``"random"``), built with ``kwargs``."""
    if name not in AGENTS:
        raise ValueError(f"unknown agent {name!r}; allowed: {sorted(AGENTS)}")
    return AGENTS[name](**kwargs)


__all__ = ["AGENTS", "ChildRecord", "Controller", "ControllerState", "Episode", "EpisodicSearchAgent",
           "RandomSearchAgent", "ReinforceAgent", "ReinforceLoss", "SearchAgent", "UpdateStats", "child_seed",
           "make_agent", "reinforce_loss"]
