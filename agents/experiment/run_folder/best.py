"""best.json's record: the incumbent architecture (:mod:`agents.experiment.incumbent`) and its best child."""

from __future__ import annotations

import json
from typing import Any

from agents.experiment.incumbent import Incumbent
from agents.experiment.run_folder.records import can_be_best


class BestRecord:
    """Follows the records of a search; :attr:`record` is the incumbent's highest-reward record.

    Best is by reward (an accuracy's order, a perplexity's reversed through ``c / ppl^2``); an architecture
    trained several times counts by the ``rule`` of :class:`~agents.experiment.incumbent.Incumbent`.
    """

    def __init__(self, rule: str = "mean") -> None:
        self._incumbent = Incumbent(rule)  # validates the rule
        self._top: dict[str, dict[str, Any]] = {}  # architecture key -> its highest-reward record
        self.record: dict[str, Any] | None = None

    @property
    def key(self) -> str | None:
        """The incumbent architecture's key (None before the first trained child)."""
        return self._incumbent.key

    def add(self, record: dict[str, Any]) -> bool:
        """Count one record; True when the incumbent, its score or its number of evaluations changed."""
        if not can_be_best(record):
            return False
        key = record["arch"] if isinstance(record["arch"], str) else json.dumps(record["arch"], sort_keys=True)
        if key not in self._top or record["reward"] > self._top[key]["reward"]:
            self._top[key] = record
        if not self._incumbent.add(key, record["reward"]):
            return False
        best = self._incumbent.key
        self.record = {**self._top[best], "mean_reward": self._incumbent.mean_reward(best),
                       "evaluations": self._incumbent.evaluations(best)}
        return True
