"""Each agent's knobs in one frozen options dataclass: keywords, ``options=``, presets, old checkpoints.

The options are the one place a knob lives: keyword arguments and ``options=`` objects build the
same agent, unknown keywords are named with the allowed ones, and checkpoints written before the
options existed (their config spelled out knob by knob) still load and resume exactly.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from agent_test_utils import digits_env, run_agent

from agents import EvolutionAgent, RandomSearchAgent, ReinforceAgent, make_agent
from agents.base import AgentOptions
from agents.evolution import EvolutionOptions
from agents.random_search import RandomSearchOptions
from agents.reinforce import ADDED_KNOBS, PRESETS, ReinforceOptions

# What the agents' checkpoints held before the options dataclasses: the top-level keys, and a config of every
# constructor argument in the order the old ``config()`` wrote them.
OLD_STATE_KEYS = ["format", "agent", "config", "children_done", "updates_done", "rng", "token_specs", "num_actions"]
OLD_REINFORCE_KEYS = [*OLD_STATE_KEYS, "controller", "optimizer", "baseline", "reward_var"]
OLD_REINFORCE_CONFIG = {
    "seed": 7, "children_per_update": 4, "preset": None, "lr": 0.02, "baseline_decay": 0.95, "baseline_init": None,
    "entropy_coef": 0.02, "max_grad_norm": None, "temperature": 1.0, "tanh_constant": None, "op_tanh_reduce": 1.0,
    "skip_penalty": 0.0, "skip_target": 0.4, "normalize_advantage": True, "ppo_epochs": 1, "clip_ratio": None,
    "device": "cpu", "num_threads": 1, "controller_kwargs": {},
}
OLD_PAPER_CONFIG = {**OLD_REINFORCE_CONFIG, "children_per_update": 5, "preset": "paper", "lr": 0.0006,
                    "entropy_coef": 0.0, "normalize_advantage": False}
OLD_EVOLUTION_CONFIG = {"seed": 7, "children_per_update": 2, "population_size": 6, "sample_size": 2}


def params(agent: ReinforceAgent) -> torch.Tensor:
    return torch.nn.utils.parameters_to_vector(agent.controller.parameters()).detach().clone()


def test_keywords_and_options_objects_build_the_same_agent() -> None:
    by_keywords = ReinforceAgent(seed=3, lr=0.003, children_per_update=4, skip_penalty=0.8)
    by_options = ReinforceAgent(seed=3, options=ReinforceOptions(lr=0.003, children_per_update=4, skip_penalty=0.8))
    assert by_keywords.options == by_options.options and by_keywords.config() == by_options.config()
    assert by_keywords.lr == 0.003 and by_keywords.children_per_update == 4  # an option by name reads the options
    on_top = ReinforceAgent(options=ReinforceOptions(lr=0.003), entropy_coef=0.0)  # keywords go on top
    assert (on_top.lr, on_top.entropy_coef) == (0.003, 0.0)
    assert make_agent("evolution", options=EvolutionOptions(population_size=8, sample_size=3)).sample_size == 3
    assert RandomSearchAgent(children_per_update=2).options == RandomSearchOptions(children_per_update=2)
    with pytest.raises(AttributeError, match="no attribute 'lr_typo'"):
        _ = by_keywords.lr_typo


def test_options_are_frozen_checked_and_copied() -> None:
    kwargs: dict[str, Any] = {"hidden_size": 8}
    options = ReinforceOptions(lr=1, controller_kwargs=kwargs)
    kwargs["hidden_size"] = 64
    assert options.controller_kwargs == {"hidden_size": 8} and isinstance(options.lr, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.lr = 0.5  # type: ignore[misc]
    assert isinstance(ReinforceOptions(ppo_epochs=np.int64(2)).ppo_epochs, int)
    with pytest.raises(ValueError, match=r"max_grad_norm must be None \(no clipping\) or a finite number > 0, got 0"):
        ReinforceOptions(max_grad_norm=0)
    with pytest.raises(ValueError, match=r"children_per_update must be an integer >= 1, got 0"):
        RandomSearchOptions(children_per_update=0)
    with pytest.raises(ValueError, match=r"sample_size must be an integer in 1\.\.population_size=4, got 5"):
        EvolutionOptions(population_size=4, sample_size=5)


@pytest.mark.parametrize("agent,options_type,arguments", [
    ("reinforce", ReinforceOptions, "seed, options, preset, device, num_threads"),
    ("evolution", EvolutionOptions, "seed, options"),
    ("random", RandomSearchOptions, "seed, options"),
])
def test_an_unknown_keyword_is_named_with_the_allowed_ones(agent: str, options_type: type[AgentOptions],
                                                           arguments: str) -> None:
    allowed = ", ".join(f.name for f in dataclasses.fields(options_type))
    with pytest.raises(ValueError, match=rf"unknown argument\(s\) lr_typo for agent '{agent}'; "
                                         rf"allowed: {arguments}, {allowed}$"):
        make_agent(agent, lr_typo=0.1)
    with pytest.raises(ValueError, match=rf"options must be a {options_type.__name__}, got AgentOptions"):
        make_agent(agent, options=AgentOptions())


def test_preset_is_the_paper_options_and_fixes_an_options_object_too() -> None:
    paper = ReinforceAgent(preset="paper")
    assert paper.options == PRESETS["paper"] == ReinforceOptions(lr=0.0006, entropy_coef=0.0, unique_children=False,
                                                                 queue_size=0, queue_coef=0.0)
    assert ReinforceAgent(preset="paper", options=PRESETS["paper"]).options == PRESETS["paper"]
    with pytest.raises(ValueError, match=r"preset='paper' fixes lr=0\.0006, got lr=0\.05"):
        ReinforceAgent(preset="paper", options=ReinforceOptions())
    with pytest.raises(ValueError, match=r"unknown argument\(s\) lr_typo"):
        ReinforceAgent(preset="paper", lr_typo=1)


@pytest.mark.parametrize("config", [OLD_REINFORCE_CONFIG, OLD_PAPER_CONFIG], ids=["default", "paper"])
def test_a_checkpoint_in_the_old_format_resumes_exactly(config: dict[str, Any], tmp_path: Path) -> None:
    """A checkpoint whose config spells out every knob in the old order loads and continues like the full run.

    The old code's run had none of the knobs added since (ADDED_KNOBS): the resumed agent runs on without them.
    """
    kwargs = {**config, **ADDED_KNOBS}
    full = ReinforceAgent(**kwargs)
    children, _ = run_agent(full, digits_env(), 40)
    first = ReinforceAgent(**kwargs)
    run_agent(first, digits_env(), 20)
    state = first.state_dict()
    assert list(state)[: len(OLD_REINFORCE_KEYS)] == OLD_REINFORCE_KEYS
    assert set(config) <= set(state["config"])
    # the old code's state and config, key for key and in its order (no knobs or state added since)
    old = {**{k: state[k] for k in OLD_REINFORCE_KEYS}, "config": dict(config)}
    torch.save(old, tmp_path / "agent.pt")
    resumed = ReinforceAgent.load(tmp_path / "agent.pt")
    assert resumed.config() == {**config, **ADDED_KNOBS} and resumed.children_done == 20
    rest, _ = run_agent(resumed, digits_env(), 40)
    assert [c.info["arch"] for c in rest] == [c.info["arch"] for c in children[20:]]
    assert torch.equal(params(resumed), params(full)) and resumed.baseline == full.baseline


def test_an_old_evolution_checkpoint_resumes_exactly(tmp_path: Path) -> None:
    full = EvolutionAgent(**OLD_EVOLUTION_CONFIG)
    children, _ = run_agent(full, digits_env(), 20)
    first = EvolutionAgent(**OLD_EVOLUTION_CONFIG)
    run_agent(first, digits_env(), 10)
    state = first.state_dict()
    assert list(state) == [*OLD_STATE_KEYS, "population"] and state["config"] == OLD_EVOLUTION_CONFIG
    torch.save(state, tmp_path / "agent.pt")
    resumed = EvolutionAgent.load(tmp_path / "agent.pt")
    rest, _ = run_agent(resumed, digits_env(), 20)
    assert [c.info["arch"] for c in rest] == [c.info["arch"] for c in children[10:]]


def test_sampling_state_round_trips_what_a_replica_needs() -> None:
    """The Ray replica's state (generator, counters, baseline) taken from one agent continues in another."""
    env = digits_env()
    specs, num_actions = tuple(env.unwrapped.token_specs), int(env.action_space.n)
    a = ReinforceAgent(seed=5, children_per_update=2)
    run_agent(a, digits_env(), 4)
    b = ReinforceAgent(seed=5, children_per_update=2)
    b.prepare(specs, num_actions)
    torch.nn.utils.vector_to_parameters(params(a), b.controller.parameters())
    b.load_sampling_state(a.sampling_state())
    assert (b.children_done, b.updates_done, b.baseline) == (4, 2, a.baseline)
    assert b.state_dict()["children_done"] == 4  # the checkpoint boundary moved with the counters
    masks = np.stack([np.arange(num_actions) < spec.num_choices for spec in specs])
    np.testing.assert_array_equal(a.sample_actions(masks, 3), b.sample_actions(masks, 3))  # the same next draws
    with pytest.raises(ValueError, match=r"children_done must be an integer >= 0, got -1"):
        b.set_progress(-1, 0)
