"""Random search: every token uniform among its valid actions. The baseline any learner must beat."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from agents.base import AgentOptions, Episode, NumpyGeneratorAgent, UpdateStats


@dataclass(frozen=True)
class RandomSearchOptions(AgentOptions):
    """Random search's one knob, ``children_per_update`` (how often ``on_update`` reports; it learns nothing)."""


class RandomSearchAgent(NumpyGeneratorAgent):
    """Samples each action uniformly among the valid ones (from the env's mask) with its own seeded generator.

    It learns nothing; ``on_update`` still fires every ``children_per_update`` children with
    the reward statistics, so its curves line up with a learner's (policy loss 0, no baseline,
    no entropy).
    """

    name: ClassVar[str] = "random"
    options_type = RandomSearchOptions
    options: RandomSearchOptions

    def _act(self, step: int, masks: np.ndarray, live: np.ndarray) -> np.ndarray:
        actions = np.zeros(len(live), dtype=np.int64)
        for i in np.flatnonzero(live):
            actions[i] = self._uniform_choice(np.flatnonzero(masks[i]))
        return actions

    def _update(self, episodes: list[Episode]) -> UpdateStats:
        return self._reward_stats(episodes)
