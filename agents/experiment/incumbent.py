"""The incumbent: the architecture a search reports as its best so far.

A search that samples an architecture again trains it again (another seed), so it holds several noisy
rewards for it. ``"mean"`` (the default) picks the architecture with the highest mean reward over its
evaluations (one seen once: its one reward); ``"max"`` the one of the single highest reward
(NAS-Bench-101's protocol), which rewards luck: a re-evaluated architecture keeps its best seed forever.

On a tie the incumbent stays; when its own mean falls, the earliest-seen of the leaders takes over.
"""

from __future__ import annotations

import math
from collections.abc import Hashable

INCUMBENT_RULES = ("mean", "max")


class Incumbent:
    """Tracks the best architecture of a stream of (architecture key, reward) evaluations under ``rule``."""

    def __init__(self, rule: str = "mean") -> None:
        if rule not in INCUMBENT_RULES:
            raise ValueError(f"incumbent rule must be one of {INCUMBENT_RULES}, got {rule!r}")
        self.rule = rule
        self._sum: dict[Hashable, float] = {}
        self._count: dict[Hashable, int] = {}
        self._max: dict[Hashable, float] = {}
        self.key: Hashable | None = None
        self.score = -math.inf

    def _score_of(self, key: Hashable) -> float:
        return self._sum[key] / self._count[key] if self.rule == "mean" else self._max[key]

    def evaluations(self, key: Hashable) -> int:
        """How many rewards ``key`` has had."""
        return self._count.get(key, 0)

    def mean_reward(self, key: Hashable) -> float:
        """The mean of ``key``'s rewards (NaN if it has none)."""
        return self._sum[key] / self._count[key] if key in self._count else math.nan

    def add(self, key: Hashable, reward: float) -> bool:
        """Record one evaluation; True when the incumbent, its score or its number of evaluations changed."""
        reward = float(reward)
        self._sum[key] = self._sum.get(key, 0.0) + reward
        self._count[key] = self._count.get(key, 0) + 1
        self._max[key] = max(self._max.get(key, -math.inf), reward)
        before = (self.key, self.score)
        score = self._score_of(key)
        if key == self.key and score < self.score:  # the incumbent's own mean fell: another may lead now
            # the best score now; on a tie the incumbent stays, else the earliest seen of the leaders
            self.key = max(self._count, key=lambda k: (self._score_of(k), k == key))
            self.score = self._score_of(self.key)
        elif score > self.score or key == self.key:
            self.key, self.score = key, score
        return (self.key, self.score) != before or key == self.key
