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
from agents.evolution import EvolutionAgent
from agents.random_search import RandomSearchAgent
from agents.reinforce import ReinforceAgent, ReinforceLoss, reinforce_loss
from agents.sb3 import SB3_ALGOS, SB3Agent
from agents.tpe import TPEAgent

AGENTS: dict[str, type[SearchAgent]] = {"reinforce": ReinforceAgent, "random": RandomSearchAgent,
                                        "evolution": EvolutionAgent, "tpe": TPEAgent}
AGENT_NAMES: tuple[str, ...] = (*AGENTS, *SB3_ALGOS)


def make_agent(name: str, **kwargs: Any) -> SearchAgent:
    """An agent by name: ours (``AGENTS``) or an SB3 algorithm (``"ppo"``, ...), with ``kwargs``."""
    if name in AGENTS:
        return AGENTS[name](**kwargs)
    if name in SB3_ALGOS:
        return SB3Agent(name, **kwargs)
    raise ValueError(f"unknown agent {name!r}; allowed: {', '.join(AGENT_NAMES)}")


__all__ = [
    "AGENTS", "AGENT_NAMES", "SB3_ALGOS", "ChildRecord", "Controller", "ControllerState", "Episode",
    "EpisodicSearchAgent", "RandomSearchAgent", "ReinforceAgent", "ReinforceLoss", "SB3Agent", "SearchAgent",
    "TPEAgent", "UpdateStats", "child_seed", "make_agent", "reinforce_loss",
]
