"""EvolutionAgent: aging population, tournament parents, one-token mutations, exact resume, the runner."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from agent_test_utils import RestrictedMask, actions_of, digits_env, resumed_from, run_agent

from agents import ChildRecord, RandomSearchAgent, UpdateStats, make_agent
from agents.evolution import EvolutionAgent, Proposal
from agents.experiment.curriculum import set_env_layers
from nas_env.spaces.cnn import CNNArchitecture

SMALL = {"population_size": 10, "sample_size": 3}  # a population that fills within a few updates


def vec_digits(num_envs: int, **kwargs: object) -> gym.vector.VectorEnv:
    return gym.make_vec("NASRL-Digits-v0", num_envs=num_envs, vectorization_mode="sync", evaluator="synthetic",
                        **{"num_layers": 3, **kwargs})


def archs(children: list[ChildRecord]) -> list[str]:
    return [c.info["arch"] for c in children]


def run_with_proposals(agent: EvolutionAgent, env: gym.Env | gym.vector.VectorEnv, num_children: int,
                       ) -> tuple[list[ChildRecord], dict[int, Proposal], list[list[tuple[int, float]]]]:
    """Children, each child's proposal, and the population (born, reward) the child was proposed from.

    Rollouts start at multiples of the batch size here (m a multiple of num_envs), so row = index % rows.
    """
    children: list[ChildRecord] = []
    proposals: dict[int, Proposal] = {}
    populations: list[list[tuple[int, float]]] = []

    def on_child(child: ChildRecord) -> None:
        children.append(child)
        proposals[child.index] = agent.proposals[child.index % len(agent.proposals)]
        populations.append([(m.born, m.reward) for m in agent.population])

    agent.run(env, num_children, on_child)
    return children, proposals, populations


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"population_size": 0}, "population_size must be an integer >= 1, got 0"),
    ({"population_size": -5}, "population_size must be an integer >= 1, got -5"),
    ({"population_size": 2.5}, "population_size must be an integer >= 1, got 2.5"),
    ({"population_size": True}, "population_size must be an integer >= 1, got True"),
    ({"sample_size": 0}, "sample_size must be an integer in 1..population_size=100, got 0"),
    ({"population_size": 10, "sample_size": 11}, "sample_size must be an integer in 1..population_size=10, got 11"),
    ({"children_per_update": 0}, "children_per_update must be an integer >= 1, got 0"),
])
def test_bad_kwargs_are_named(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        EvolutionAgent(**kwargs)


def test_registered_with_the_paper_defaults() -> None:
    agent = make_agent("evolution", seed=2)
    assert isinstance(agent, EvolutionAgent)
    assert (agent.population_size, agent.sample_size, agent.children_per_update) == (100, 25, 1)
    assert agent.config() == {"seed": 2, "children_per_update": 1, "population_size": 100, "sample_size": 25}


def test_deterministic_per_seed() -> None:
    def run(seed: int) -> list[str]:
        children, _ = run_agent(EvolutionAgent(seed=seed, children_per_update=2, **SMALL), digits_env(), 40)
        return archs(children)

    assert run(3) == run(3)
    assert run(3) != run(4)


def test_aging_population_is_the_last_p_children() -> None:
    """After every update the population is the P most recent children (oldest dropped), never more."""
    p, m = 10, 4
    agent = EvolutionAgent(seed=0, children_per_update=m, population_size=p, sample_size=3)
    children: list[ChildRecord] = []

    def on_update(stats: UpdateStats) -> None:
        done = stats.children_done
        assert len(agent.population) == min(done, p)
        assert [mem.born for mem in agent.population] == list(range(max(0, done - p), done))
        assert [mem.reward for mem in agent.population] == [c.reward for c in children[max(0, done - p):done]]
        assert stats.num_children == m and stats.reward_max == max(c.reward for c in children[done - m:done])

    agent.run(digits_env(), 60, children.append, on_update)
    assert len(children) == 60


def test_warm_up_is_random_then_each_child_mutates_one_token_of_a_tournament_winner() -> None:
    """Random until P members; then child = parent with exactly the proposed token changed, to a valid action.

    The parent wins a tournament of S, so it is never among the S - 1 worst members.
    """
    p, s = 10, 4
    env = digits_env(num_filters=(16,))  # a 1-choice token per layer: never a mutation position
    agent = EvolutionAgent(seed=5, children_per_update=2, population_size=p, sample_size=s)
    children, proposals, populations = run_with_proposals(agent, env, 120)
    choices = [spec.num_choices for spec in env.unwrapped.token_specs]
    assert all(proposals[k].parent is None for k in range(p))
    parent_rewards, population_means = [], []
    for child in children[p:]:
        prop, pop = proposals[child.index], populations[child.index]
        assert prop.parent is not None and (prop.parent.born, prop.parent.reward) in pop
        assert choices[prop.position] >= 2
        before, after = np.array(prop.parent.actions), np.array(actions_of(env, child))
        assert np.flatnonzero(before != after).tolist() == [prop.position]
        assert after[prop.position] < choices[prop.position]
        assert sum(r > prop.parent.reward for _, r in pop) <= p - s
        parent_rewards.append(prop.parent.reward)
        population_means.append(np.mean([r for _, r in pop]))
    assert np.mean(parent_rewards) > np.mean(population_means)


def test_mutations_follow_the_env_mask_on_vector_envs() -> None:
    """A mask narrower than the token (4-choice tokens masked to {1, 3}: the wrapper raises on any other action),
    and a 2-env vector env: still one changed token per child, inside the mask."""
    env = RestrictedMask(digits_env())
    agent = EvolutionAgent(seed=1, children_per_update=2, **SMALL)
    children, proposals, _ = run_with_proposals(agent, env, 60)
    for child in children[10:]:
        before, after = np.array(proposals[child.index].parent.actions), np.array(actions_of(env, child))
        assert (before != after).sum() == 1
    specs = env.unwrapped.token_specs
    assert all(a in (1, 3) for c in children for a, spec in zip(actions_of(env, c), specs, strict=True)
               if spec.num_choices == 4)

    venv = vec_digits(2)
    agent = EvolutionAgent(seed=1, children_per_update=4, **SMALL)
    children, proposals, _ = run_with_proposals(agent, venv, 40)
    assert [c.index for c in children] == list(range(40))
    for child in children[12:]:  # the population fills at the update after child 11
        before, after = np.array(proposals[child.index].parent.actions), np.array(actions_of(venv, child))
        assert (before != after).sum() == 1


class NarrowFirstToken(gym.Wrapper):
    """The first token's mask: {0, 2} for the first ``after`` episodes, then {0} only (raises on any other action).

    A parent sampled early may have the first token as its mutation position; later its children's
    mask leaves no alternative there (parent's 0) or forces the change (parent's 2).
    """

    def __init__(self, env: gym.Env, after: int) -> None:
        super().__init__(env)
        self.after, self.episodes, self.step_index = after, 0, 0

    def _mask(self, info: dict[str, Any]) -> dict[str, Any]:
        mask = np.asarray(info["action_mask"]).copy()
        if self.step_index == 0:
            mask[:] = 0
            mask[[0, 2] if self.episodes <= self.after else [0]] = 1
        return {**info, "action_mask": mask}

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        self.episodes, self.step_index = self.episodes + 1, 0
        obs, info = self.env.reset(**kwargs)
        return obs, self._mask(info)

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict[str, Any]]:
        if self.step_index == 0 and int(action) not in ((0, 2) if self.episodes <= self.after else (0,)):
            raise AssertionError(f"action {action} outside the first token's mask")
        self.step_index += 1
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated, self._mask(info)


def test_a_mask_without_alternative_moves_the_mutation_to_the_next_token() -> None:
    """Still one changed token per child: the next token with an alternative, or the forced one (parent's 2)."""
    moved = forced = 0
    for seed in range(3):  # 1-layer children (3 tokens), so that the first token is often the mutation position
        env = NarrowFirstToken(digits_env(num_layers=1), after=40)
        agent = EvolutionAgent(seed=seed, children_per_update=1, population_size=10, sample_size=2)
        children, proposals, _ = run_with_proposals(agent, env, 100)
        for child in children[40:]:
            prop, actions = proposals[child.index], actions_of(env, child)
            changed = np.flatnonzero(np.array(prop.parent.actions) != np.array(actions)).tolist()
            assert actions[0] == 0 and len(changed) == 1
            if prop.parent.actions[0] == 2:
                assert changed == [0]
                forced += 1
            else:
                assert changed[0] >= prop.position
                moved += changed[0] > prop.position
    assert moved >= 1 and forced >= 1, (moved, forced)


def test_a_deeper_child_than_its_parent_gets_random_tokens_past_the_parents_end() -> None:
    """A depth curriculum grows the env from 2 to 3 layers: one changed token within the parent's prefix."""
    env = digits_env(num_layers=3)
    space = env.unwrapped.space
    agent = EvolutionAgent(seed=2, children_per_update=2, **SMALL)
    set_env_layers(env, 2)
    shallow, _, _ = run_with_proposals(agent, env, 20)
    set_env_layers(env, 3)
    deep, proposals, _ = run_with_proposals(agent, env, 40)
    for child in shallow + deep:
        arch = CNNArchitecture.from_json(child.info["arch"])
        assert arch.num_layers == (2 if child.index < 20 else 3) and child.info["status"] == "ok"
    for child in deep:
        parent = proposals[child.index].parent.actions
        actions = space.with_layers(3).encode(CNNArchitecture.from_json(child.info["arch"]))
        assert sum(a != b for a, b in zip(parent, actions[: len(parent)], strict=True)) == 1
    assert {len(proposals[c.index].parent.actions) for c in deep} == {7, 12}  # 2-layer parents, then 3-layer ones


def test_exact_resume_from_a_checkpoint(tmp_path: Path) -> None:
    """Run 30 children, save (from on_update, as the runner does), load into a fresh agent, go on to 50:
    the same children as a straight 50-child run."""
    kwargs = {"seed": 7, "children_per_update": 5, **SMALL}
    full, _ = run_agent(EvolutionAgent(**kwargs), digits_env(), 50)

    resumed = resumed_from(EvolutionAgent(**kwargs), digits_env(), 40, 30, tmp_path / "agent.pt")
    assert resumed.children_done == 30 and len(resumed.population) == 10
    rest, _ = run_agent(resumed, digits_env(), 50)
    assert [c.index for c in rest] == list(range(30, 50))
    assert archs(rest) == archs(full[30:])
    assert [c.reward for c in rest] == [c.reward for c in full[30:]]


def test_state_dict_round_trip_and_bad_checkpoints() -> None:
    agent = EvolutionAgent(seed=9, children_per_update=4, **SMALL)
    run_agent(agent, digits_env(), 16)
    state = agent.state_dict()
    assert state["agent"] == "evolution" and state["rng"]["bit_generator"] == "PCG64"
    assert state["population"]["born"] == list(range(6, 16)) and len(state["population"]["actions"][0]) == 12
    twin = EvolutionAgent(seed=9, children_per_update=4, **SMALL)
    twin.load_state_dict(state)
    a, _ = run_agent(agent, digits_env(), 32)
    b, _ = run_agent(twin, digits_env(), 32)
    assert archs(a) == archs(b)

    with pytest.raises(ValueError, match="more than population_size=5"):
        EvolutionAgent(seed=9, children_per_update=4, population_size=5, sample_size=3).load_state_dict(state)
    with pytest.raises(ValueError, match="not 'evolution'"):
        EvolutionAgent().load_state_dict(RandomSearchAgent().state_dict())


def mean_best(name: str, seeds: range, num_children: int, num_layers: int, **kwargs: object) -> np.ndarray:
    """Per seed, the best synthetic score (share of the target's tokens) among the first ``num_children``."""
    best = []
    for seed in seeds:
        children, _ = run_agent(make_agent(name, seed=seed, children_per_update=5, **kwargs),
                                vec_digits(5, num_layers=num_layers), num_children)
        best.append(max(c.reward for c in children))
    return np.array(best)


def test_beats_random_search_quickly() -> None:
    """12 tokens, P = 20, S = 5, 200 children, 5 seeds: a clear margin on the best score found, on every seed.

    (Measured over 10 seeds: mean best 0.95 vs 0.68, evolution's worst 0.83 vs random's best 0.75.)
    """
    evo = mean_best("evolution", range(5), 200, 3, population_size=20, sample_size=5)
    rand = mean_best("random", range(5), 200, 3)
    assert evo.mean() > rand.mean() + 0.15 and (evo > rand).all(), (evo, rand)


@pytest.mark.slow
def test_beats_random_search_with_the_paper_settings() -> None:
    """The default 18-token digits space, P = 100, S = 25, 600 children, 10 seeds.

    (Measured: evolution 1.000 on every seed vs random's mean 0.683; at 200 children 0.85 vs 0.63.)
    """
    evo = mean_best("evolution", range(10), 600, 4)
    rand = mean_best("random", range(10), 600, 4)
    assert evo.mean() > rand.mean() + 0.15 and (evo > rand).sum() >= 9, (evo, rand)


def test_runs_and_resumes_through_the_runner(tmp_path: Path) -> None:
    from agents.experiment.runner import SearchArgs, run_search

    def args(name: str, episodes: int) -> SearchArgs:
        return SearchArgs(env="NASRL-Digits-v0", agent="evolution", episodes=episodes, children_per_update=5, seed=3,
                          logdir=str(tmp_path), run_name=name, env_kwargs={"evaluator": "synthetic"},
                          agent_kwargs=SMALL, progress=False)

    def results(run_dir: Path) -> list[dict]:
        return [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]

    full = results(run_search(args("full", 50)))
    part = run_search(args("part", 30))
    resumed = results(run_search(dataclasses.replace(args("part", 50), resume=str(part))))  # same settings, more
    assert [r["index"] for r in resumed] == list(range(50))
    assert [r["arch"] for r in resumed] == [r["arch"] for r in full]
    assert len({r["arch"] for r in full[10:]}) > 5  # evolution past the random warm-up, not one repeated child
