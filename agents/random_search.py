"""Random search: every token uniform among its valid actions. The baseline any learner must beat."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from agents.base import AgentOptions, Episode, EpisodicSearchAgent, UpdateStats, options_from


@dataclass(frozen=True)
class RandomSearchOptions(AgentOptions):
    """Random search's one knob, ``children_per_update`` (how often ``on_update`` reports; it learns nothing)."""


class RandomSearchAgent(EpisodicSearchAgent):
    """Samples each action uniformly among the valid ones (from the env's mask) with its own seeded generator.

    It learns nothing; ``on_update`` still fires every ``children_per_update`` children with
    the reward statistics, so its curves line up with a learner's (policy loss 0, no baseline,
    no entropy).
    """

    name: ClassVar[str] = "random"
    options: RandomSearchOptions

    def __init__(self, seed: int = 0, *, options: RandomSearchOptions | None = None, **knobs: Any) -> None:
        super().__init__(seed, options_from(RandomSearchOptions, self.name, options, knobs, ("seed", "options")))
        self.rng = np.random.default_rng(self._stream_seed(1))

    def _begin_batch(self, batch_size: int) -> None:
        pass

    def _act(self, step: int, masks: np.ndarray, live: np.ndarray) -> np.ndarray:
        actions = np.zeros(len(live), dtype=np.int64)
        for i in np.flatnonzero(live):
            valid = np.flatnonzero(masks[i])
            actions[i] = valid[self.rng.integers(len(valid))]
        return actions

    def _update(self, episodes: list[Episode]) -> UpdateStats:
        r = np.array([ep.reward for ep in episodes], dtype=np.float64)
        return UpdateStats(update=self.updates_done, children_done=self.children_done, num_children=len(episodes),
                           reward_mean=float(r.mean()), reward_max=float(r.max()))

    def _rng_state(self) -> dict[str, Any]:
        return copy.deepcopy(self.rng.bit_generator.state)

    def _set_rng_state(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = copy.deepcopy(state)
