"""RandomSearchAgent: uniform over the valid actions, deterministic per seed, the common run interface."""

from __future__ import annotations

import numpy as np
import pytest
from agent_test_utils import RestrictedMask, actions_of, digits_env, mixed_env, run_agent

from agents import RandomSearchAgent, make_agent


def token_counts(env: object, children: list, num_actions: int = 4) -> np.ndarray:
    """T x A counts of the actions the children took."""
    acts = np.array([actions_of(env, c) for c in children])
    return np.stack([np.bincount(acts[:, t], minlength=num_actions) for t in range(acts.shape[1])])


def test_uniform_over_valid_actions() -> None:
    """Tokens with 2, 3 and 4 choices: each valid action about 1/n_t of the time, invalid ones never."""
    env = mixed_env()
    n = 1500
    children, _ = run_agent(RandomSearchAgent(seed=0), env, n)
    counts = token_counts(env, children)
    choices = np.array([s.num_choices for s in env.unwrapped.token_specs])
    for t, n_t in enumerate(choices):
        assert counts[t, n_t:].sum() == 0
        p = 1.0 / n_t
        sd = np.sqrt(n * p * (1 - p))
        assert np.all(np.abs(counts[t, :n_t] - n * p) < 4 * sd), (t, counts[t])
    # and jointly: a chi-square over every token is in the bulk of its distribution
    chi2 = sum(((counts[t, :k] - n / k) ** 2 / (n / k)).sum() for t, k in enumerate(choices))
    dof = int((choices - 1).sum())
    assert abs(chi2 - dof) < 5 * np.sqrt(2 * dof), (chi2, dof)


def test_uniform_over_the_mask_not_the_token_choices() -> None:
    """With the env's mask narrower than the token (4-choice tokens masked to {1, 3}): uniform over {1, 3}."""
    env = RestrictedMask(digits_env())
    children, _ = run_agent(RandomSearchAgent(seed=1), env, 800)
    counts = token_counts(env, children)
    for t, spec in enumerate(env.unwrapped.token_specs):
        if spec.num_choices == 4:
            assert counts[t, 0] == counts[t, 2] == 0
            assert abs(counts[t, 1] - 400) < 4 * np.sqrt(200), counts[t]


def test_deterministic_per_seed() -> None:
    def archs(seed: int) -> list[str]:
        children, _ = run_agent(RandomSearchAgent(seed=seed), digits_env(), 20)
        return [c.info["arch"] for c in children]

    assert archs(3) == archs(3)
    assert archs(3) != archs(4)


def test_updates_report_rewards_only() -> None:
    agent = make_agent("random", seed=0, children_per_update=5)
    children, updates = run_agent(agent, digits_env(), 12)
    assert len(children) == 12  # the short last batch is evaluated but not learned from (a resume completes it)
    assert [u.num_children for u in updates] == [5, 5] and [u.children_done for u in updates] == [5, 10]
    r = np.array([c.reward for c in children])
    assert updates[1].reward_mean == pytest.approx(r[5:10].mean()) and updates[1].reward_max == r[5:10].max()
    assert all(u.policy_loss == 0.0 and u.entropy is None and u.baseline is None for u in updates)
    assert set(updates[0].scalars()) == {"reward_mean", "reward_max", "policy_loss", "children_done"}


def test_state_dict_round_trip() -> None:
    agent = RandomSearchAgent(seed=9, children_per_update=4)
    run_agent(agent, digits_env(), 8)
    state = agent.state_dict()
    assert state["agent"] == "random" and state["children_done"] == 8 and state["updates_done"] == 2
    assert state["rng"]["bit_generator"] == "PCG64"
    twin = RandomSearchAgent(seed=9, children_per_update=4)
    twin.load_state_dict(state)
    a, _ = run_agent(agent, digits_env(), 16)
    b, _ = run_agent(twin, digits_env(), 16)
    assert [c.info["arch"] for c in a] == [c.info["arch"] for c in b]
