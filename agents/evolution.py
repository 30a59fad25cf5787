"""Regularized (aging) evolution (Real et al. 2019): the strong non-RL baseline of NAS benchmarks (docs/agents.md).

A population of the ``population_size`` (P) most recent children. Each new child copies a parent, the
best by reward of ``sample_size`` (S) members drawn uniformly without replacement (a tournament), and
changes exactly one of its tokens to another valid choice; it joins, and the oldest member leaves. Until the
population is full, children are uniform at random over the valid actions, like random search. A batch of
``children_per_update`` (m) children is proposed at once from the population as it stands and taken in
at the update (m = 1: the paper's sequential algorithm; m must be a multiple of ``num_envs``).

Tokens are emitted under the env's masks: the mutated token takes a uniform choice among the step's valid
actions other than the parent's. The mutation position is uniform among the parent's tokens that had at
least two valid actions when the parent was sampled; should the mask now leave it no alternative, the
mutation moves to the next token that has one (and a parent's token that the mask now forbids is replaced
at random; before the mutation, that change is the mutation). A child deeper than its parent (a depth
curriculum) gets uniform random tokens past the parent's end. Children whose status is not ``ok`` join
the population with the (low) reward the env gave them.

All randomness comes from one seeded numpy generator; the checkpoint holds its state and the population,
so a resumed search (local or on Ray) continues exactly.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from agents.base import AgentOptions, Episode, NumpyGeneratorAgent, UpdateStats
from nas_env.checks import check_int, is_int


@dataclass(frozen=True)
class EvolutionOptions(AgentOptions):
    """Regularized evolution's knobs; the defaults are Real et al. 2019's (population 100, tournament of 25)."""

    children_per_update: int = 1
    """m, children proposed from one population state (1: the paper's sequential algorithm; a multiple of
    ``num_envs``, so raise it to train children at once)."""
    population_size: int = 100
    """P, the members kept (the most recent children); the first children are random until it holds P."""
    sample_size: int = 25
    """S, tournament size, 1 <= S <= P (S = 1: a random parent; S = P: always the best member)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check("population_size", check_int, minimum=1)
        if not is_int(self.sample_size) or not 1 <= self.sample_size <= self.population_size:
            raise ValueError(f"sample_size must be an integer in 1..population_size={self.population_size}, "
                             f"got {self.sample_size!r}")
        object.__setattr__(self, "sample_size", int(self.sample_size))


@dataclass(frozen=True)
class Member:
    """One population member: a finished child."""

    born: int  # its child index (the oldest member has the smallest)
    actions: tuple[int, ...]
    reward: float
    mutable: tuple[bool, ...]  # per token: the mask it was sampled under had at least two valid actions


@dataclass(frozen=True)
class Proposal:
    """How one child of the current batch is made: at random (``parent`` None) or by mutating a parent."""

    parent: Member | None = None
    position: int | None = None  # the token to mutate


class EvolutionAgent(NumpyGeneratorAgent):
    """Regularized (aging) evolution with tournament selection and one-token mutations; its knobs
    (``population_size=50``, or ``options=``) are an :class:`EvolutionOptions`."""

    name: ClassVar[str] = "evolution"
    options_type = EvolutionOptions
    options: EvolutionOptions

    def __init__(self, seed: int = 0, *, options: EvolutionOptions | None = None, **knobs: Any) -> None:
        super().__init__(seed, options=options, **knobs)
        self.population: deque[Member] = deque()
        self.proposals: list[Proposal] = []  # the current batch's, in child order (public for logging and tests)
        self._pending: np.ndarray = np.zeros(0, dtype=bool)  # per row: the mutation is still to be made

    # --- hooks ---------------------------------------------------------------------------
    def _begin_batch(self, batch_size: int) -> None:
        self.proposals = [self._propose() for _ in range(batch_size)]
        self._pending = np.array([p.parent is not None for p in self.proposals], dtype=bool)

    def _propose(self) -> Proposal:
        """A random child while the population is not full; else a tournament winner and a position to mutate."""
        if len(self.population) < self.options.population_size:
            return Proposal()
        sample = self.rng.choice(len(self.population), size=self.options.sample_size, replace=False)
        parent = self.population[int(sample[np.argmax([self.population[int(i)].reward for i in sample])])]
        candidates = np.flatnonzero(parent.mutable)
        if len(candidates) == 0:  # nothing in it can change: a random child instead of a copy
            return Proposal()
        return Proposal(parent, int(candidates[self.rng.integers(len(candidates))]))

    def _act(self, step: int, masks: np.ndarray, live: np.ndarray) -> np.ndarray:
        actions = np.zeros(len(live), dtype=np.int64)
        for i in np.flatnonzero(live):
            valid = np.flatnonzero(masks[i])
            parent = self.proposals[i].parent
            if parent is None or step >= len(parent.actions):  # random child, or deeper than its parent
                actions[i] = self._uniform_choice(valid)
                continue
            inherited = parent.actions[step]
            if self._pending[i] and step >= self.proposals[i].position:
                others = valid[valid != inherited]
                if len(others):  # else: this mask leaves no alternative, so the next token with one mutates
                    actions[i] = self._uniform_choice(others)
                    self._pending[i] = False
                    continue
            if masks[i, inherited]:
                actions[i] = inherited
            else:  # a mask unlike the parent's forbids its token: a forced change, which serves as the mutation
                actions[i] = self._uniform_choice(valid)
                self._pending[i] = False
        return actions

    def _update(self, episodes: list[Episode]) -> UpdateStats:
        for ep in episodes:
            self.population.append(Member(ep.index, tuple(int(a) for a in ep.actions), float(ep.reward),
                                          tuple(bool(c >= 2) for c in ep.masks.sum(axis=1))))
        while len(self.population) > self.options.population_size:
            self.population.popleft()  # aging: the oldest goes, whatever its reward
        return self._reward_stats(episodes)

    # --- state ---------------------------------------------------------------------------
    def _policy_state(self) -> dict[str, Any]:
        pop = self.population  # as plain lists, so the checkpoint loads with torch.load(weights_only=True)
        return {"population": {"born": [m.born for m in pop], "actions": [list(m.actions) for m in pop],
                               "rewards": [m.reward for m in pop], "mutable": [list(m.mutable) for m in pop]}}

    def _load_policy_state(self, state: dict[str, Any]) -> None:
        pop = state.get("population")
        if pop is None:
            raise ValueError("the checkpoint has no `population`: it was not written by an evolution agent")
        if len(pop["born"]) > self.options.population_size:
            raise ValueError(f"the checkpoint's population has {len(pop['born'])} members, more than "
                             f"population_size={self.options.population_size}")
        self.population = deque(
            Member(int(b), tuple(int(a) for a in acts), float(r), tuple(bool(c) for c in mut))
            for b, acts, r, mut in zip(pop["born"], pop["actions"], pop["rewards"], pop["mutable"], strict=True))
