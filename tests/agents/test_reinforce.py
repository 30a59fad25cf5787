"""ReinforceAgent: learning on the synthetic evaluator, valid actions only, batching, exact resume, checkpoints."""

from __future__ import annotations

import copy
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from agent_test_utils import RestrictedMask, actions_of, digits_env, mixed_env, resumed_from, run_agent

from agents import RandomSearchAgent, ReinforceAgent, SearchAgent, child_seed, make_agent

# Learning check: the 12-token digits space (3 layers, 4^9 * 2^3 architectures; random search
# averages 1/3 of the tokens right). Tuned for a fast test: lr 0.003 (5x the paper's, which
# needs about 6,000 children here) with m = 8, 3,200 children, run as 8 sub-envs in lockstep.
# In a sweep over seeds 0-7 every seed ended at >= 0.988 (2,400 children: all >= 0.90).
LEARN_SEEDS = (0, 1, 2)
LEARN_BUDGET = 3200
# Plain REINFORCE (no queue, repeats allowed): the check is that the policy itself converges on the optimum.
LEARN_KWARGS = {"lr": 0.003, "children_per_update": 8, "unique_children": False, "queue_size": 0}


def vec_digits(num_envs: int, **kwargs: object) -> gym.vector.VectorEnv:
    return gym.make_vec("NASRL-Digits-v0", num_envs=num_envs, vectorization_mode="sync", evaluator="synthetic",
                        **{"num_layers": 3, **kwargs})


@pytest.mark.parametrize("seed", LEARN_SEEDS)
def test_learns_the_synthetic_optimum_and_beats_random_search(seed: int) -> None:
    rewards = {}
    for name, agent in (("reinforce", ReinforceAgent(seed=seed, **LEARN_KWARGS)),
                        ("random", RandomSearchAgent(seed=seed, children_per_update=8))):
        children, _ = run_agent(agent, vec_digits(8), LEARN_BUDGET)
        rewards[name] = np.array([c.reward for c in children])
    last = rewards["reinforce"][-80:].mean()  # the last 10 updates
    assert last >= 0.9, f"seed {seed}: mean reward of the last 80 children {last:.3f}"
    assert last > rewards["random"][-80:].mean() + 0.4
    assert rewards["reinforce"].max() == 1.0  # found the target itself


def test_update_stats_and_baseline_follow_the_definition() -> None:
    agent = ReinforceAgent(seed=0, children_per_update=4, baseline_decay=0.5)
    children, updates = run_agent(agent, digits_env(), 12)
    assert [u.update for u in updates] == [0, 1, 2] and [u.children_done for u in updates] == [4, 8, 12]
    r = np.array([c.reward for c in children])
    # first update: b = its own mean; afterwards the EMA over children, updated after the advantages
    b = r[:4].mean()
    for k, u in enumerate(updates):
        batch = r[4 * k: 4 * k + 4]
        assert u.baseline == pytest.approx(b)
        assert u.reward_mean == pytest.approx(batch.mean()) and u.reward_max == pytest.approx(batch.max())
        assert u.advantage_mean == pytest.approx(batch.mean() - b)
        for x in batch:
            b = 0.5 * b + 0.5 * x
    assert agent.baseline == pytest.approx(b)
    u = updates[-1]
    assert set(u.entropy_per_type) == {"filter_height", "filter_width", "num_filters", "skip"}
    assert 0 < u.entropy_per_type["skip"] <= np.log(2) + 1e-6 and u.entropy_per_type["num_filters"] <= np.log(4) + 1e-6
    assert u.grad_norm is not None and u.grad_norm > 0
    scalars = u.scalars()
    assert {"reward_mean", "baseline", "advantage_mean", "policy_loss", "entropy", "entropy/skip"} <= set(scalars)


def test_remainder_update_and_run_in_steps() -> None:
    """10 children with m = 4: updates of 4 and 4, children 8-9 pending; run() continues from children_done and
    completes the pending batch, exactly as one run of 14 children."""
    agent = ReinforceAgent(seed=1, children_per_update=4)
    children, updates = run_agent(agent, digits_env(), 10)
    assert [c.index for c in children] == list(range(10))
    assert [u.num_children for u in updates] == [4, 4] and agent.children_done == 10
    more, more_updates = run_agent(agent, digits_env(), 14)
    assert [c.index for c in more] == list(range(10, 14))
    assert [(u.num_children, u.children_done) for u in more_updates] == [(4, 12)]  # children 8-11
    straight, _ = run_agent(ReinforceAgent(seed=1, children_per_update=4), digits_env(), 14)
    assert archs(children + more) == archs(straight)
    with pytest.raises(ValueError, match="already done"):
        agent.run(digits_env(), 5, lambda c: None)


@pytest.mark.parametrize("agent_name", ["reinforce", "random"])
def test_never_an_invalid_action(agent_name: str) -> None:
    """Tokens with 2, 3 and 4 choices under invalid_action="penalize": plain, wrapped and vector envs."""
    envs = {
        "plain": mixed_env(invalid_action="penalize"),
        "wrapped": gym.wrappers.RecordEpisodeStatistics(gym.wrappers.TimeLimit(
            mixed_env(invalid_action="penalize"), max_episode_steps=100)),
        "make_vec": vec_digits(2, invalid_action="penalize"),
        "vector_wrapped": gym.wrappers.vector.RecordEpisodeStatistics(vec_digits(2, num_layers=4)),
        "restricted_mask": RestrictedMask(mixed_env(invalid_action="penalize")),
    }
    for label, env in envs.items():
        agent = make_agent(agent_name, seed=0, children_per_update=4)
        children, _ = run_agent(agent, env, 24)
        assert len(children) == 24, label
        assert all(c.info["status"] == "ok" and c.reward >= 0 for c in children), label
        if label == "restricted_mask":  # the mask, not the heads, decided: 4-choice tokens only took 1 or 3
            for c in children:
                acts = actions_of(env, c)
                specs = env.unwrapped.token_specs
                assert all(a in (1, 3) for a, s in zip(acts, specs, strict=True) if s.num_choices == 4), label
        if label == "wrapped":
            assert all("episode" in c.info for c in children)


def test_vector_env_seeds_do_not_depend_on_batching() -> None:
    """Child k's env seed comes from (seed, k): a 2-env vector run and a single-env run give the same env seeds."""
    single, _ = run_agent(ReinforceAgent(seed=4, children_per_update=4), digits_env(), 8)
    vector, _ = run_agent(ReinforceAgent(seed=4, children_per_update=4), vec_digits(2), 8)
    assert [c.info["seed"] for c in single] == [c.info["seed"] for c in vector]
    env = digits_env()
    env.reset(seed=child_seed(4, 5))
    assert env.unwrapped._child_seed == single[5].info["seed"]


def test_async_vector_env_gives_the_same_children() -> None:
    sync, _ = run_agent(ReinforceAgent(seed=0, children_per_update=4), vec_digits(2), 8)
    envs = gym.make_vec("NASRL-Digits-v0", num_envs=2, vectorization_mode="async", evaluator="synthetic", num_layers=3)
    try:
        asynchronous, _ = run_agent(ReinforceAgent(seed=0, children_per_update=4), envs, 8)
    finally:
        envs.close()
    assert archs(asynchronous) == archs(sync)


def test_early_ending_sub_env_is_recorded_and_then_ignored() -> None:
    """Sub-env 0 truncates after 5 steps while sub-env 1 runs its 12: both children recorded, once each."""
    for mode in ("NextStep", "SameStep", "Disabled"):
        envs = gym.vector.SyncVectorEnv([lambda: gym.wrappers.TimeLimit(digits_env(), 5), digits_env],
                                        autoreset_mode=mode)
        children, updates = run_agent(ReinforceAgent(seed=0, children_per_update=4), envs, 8)
        assert [c.index for c in children] == list(range(8)), mode
        short, full = children[0::2], children[1::2]
        assert all("arch" not in c.info and c.reward == 0.0 and c.info["step"] == 5 for c in short), mode
        assert all(c.info["status"] == "ok" and "arch" in c.info for c in full), mode
        assert len(updates) == 2


def test_short_last_batch_discards_the_spare_sub_env_with_a_warning() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        children, updates = run_agent(ReinforceAgent(seed=0, children_per_update=4), vec_digits(2), 7)
    assert [c.index for c in children] == list(range(7)) and [u.num_children for u in updates] == [4]
    assert any("discarded child" in str(w.message) for w in caught)
    with pytest.raises(ValueError, match="multiple of num_envs"):
        ReinforceAgent(children_per_update=3).run(vec_digits(2), 6, lambda c: None)


def archs(children: list) -> list[str]:
    return [c.info["arch"] for c in children]


@pytest.mark.parametrize("agent_cls", [ReinforceAgent, RandomSearchAgent])
def test_exact_resume_from_a_checkpoint(agent_cls: type[SearchAgent], tmp_path: object) -> None:
    """Save after update 3 (from on_update, as the runner does), restore into a fresh agent, continue."""
    kwargs = {"seed": 11, "children_per_update": 4}
    full, full_updates = run_agent(agent_cls(**kwargs), digits_env(), 32)

    resumed = resumed_from(agent_cls(**kwargs), digits_env(), 20, 12, tmp_path / "agent.pt")  # after update 3
    assert resumed.children_done == 12 and resumed.updates_done == 3
    rest, rest_updates = run_agent(resumed, digits_env(), 32)
    assert [c.index for c in rest] == list(range(12, 32))
    assert archs(rest) == archs(full[12:])
    assert [c.reward for c in rest] == [c.reward for c in full[12:]]
    assert [u.policy_loss for u in rest_updates] == [u.policy_loss for u in full_updates[3:]]


def test_state_dict_holds_everything_for_a_resume(tmp_path: object) -> None:
    agent = ReinforceAgent(seed=2, children_per_update=4, controller_kwargs={"hidden_size": 16})
    run_agent(agent, digits_env(), 8)
    state = agent.state_dict()
    assert state["agent"] == "reinforce" and state["children_done"] == 8 and state["updates_done"] == 2
    assert set(state["controller"]) >= {"embedding.weight", "lstm.weight_ih_l0", "lstm.weight_hh_l1",
                                        "heads.filter_height.weight", "w_prev.weight", "w_curr.weight", "v.weight"}
    assert state["controller"]["lstm.weight_hh_l0"].shape == (64, 16)
    opt = state["optimizer"]["state"]
    assert len(opt) == len(list(agent.controller.parameters())) and float(opt[0]["step"]) == 2
    assert state["baseline"] == agent.baseline and isinstance(state["baseline"], float)
    assert isinstance(state["rng"]["sample"], torch.Tensor)
    assert state["config"]["seed"] == 2 and state["config"]["controller_kwargs"] == {"hidden_size": 16}
    assert len(state["token_specs"]) == 12 and state["num_actions"] == 4
    # a snapshot: later training does not change it; and it loads with weights_only=True
    before = copy.deepcopy(state)
    run_agent(agent, digits_env(), 12)
    assert torch.equal(state["controller"]["v.weight"], before["controller"]["v.weight"])
    agent.save(tmp_path / "a.pt")
    loaded = torch.load(tmp_path / "a.pt", weights_only=True)
    assert loaded["children_done"] == 12
    with pytest.raises(ValueError, match="checkpoint is for agent"):
        RandomSearchAgent().load_state_dict(loaded)


def test_seeded_generators_only() -> None:
    """The same seed gives the same children; the global torch and numpy RNGs are neither read nor advanced."""
    a, _ = run_agent(ReinforceAgent(seed=5, children_per_update=4), digits_env(), 8)
    torch.manual_seed(123)
    np.random.seed(123)
    b, _ = run_agent(ReinforceAgent(seed=5, children_per_update=4), digits_env(), 8)
    c, _ = run_agent(ReinforceAgent(seed=6, children_per_update=4), digits_env(), 8)
    assert archs(a) == archs(b) and archs(a) != archs(c)
    torch.manual_seed(0)
    np.random.seed(0)
    torch_state, np_state = torch.random.get_rng_state(), np.random.get_state()[1].copy()
    run_agent(ReinforceAgent(seed=5, children_per_update=4), digits_env(), 8)
    assert torch.equal(torch.random.get_rng_state(), torch_state) and np.array_equal(np.random.get_state()[1], np_state)


class ThreadProbe(gym.Wrapper):
    """Records torch's thread count at every step (the last step is where the child is evaluated)."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.seen: list[tuple[int, int]] = []

    def step(self, action: object) -> tuple:
        out = self.env.step(action)
        self.seen.append((int(out[4]["step"]), torch.get_num_threads()))
        return out


def test_agent_threads_do_not_leak_into_child_evaluation() -> None:
    """Sampling runs at num_threads=1; every env step (any of them may train a child) and the caller keep theirs."""
    outer = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        env = ThreadProbe(digits_env())
        agent = ReinforceAgent(seed=0, children_per_update=4, num_threads=1)
        act, sampling_threads = agent._act, []

        def probed_act(*args: object) -> np.ndarray:
            sampling_threads.append(torch.get_num_threads())
            return act(*args)

        agent._act = probed_act  # type: ignore[method-assign]
        run_agent(agent, env, 4)
        assert torch.get_num_threads() == 2
        assert set(sampling_threads) == {1} and len(sampling_threads) == 12 * 4
        assert {threads for _step, threads in env.seen} == {2} and len(env.seen) == 12 * 4  # 12 tokens a child
    finally:
        torch.set_num_threads(outer)


def test_make_agent() -> None:
    assert isinstance(make_agent("reinforce", seed=3), ReinforceAgent)
    assert isinstance(make_agent("random", seed=3), RandomSearchAgent)
    with pytest.raises(ValueError, match=r"unknown agent 'ppo2'; allowed: reinforce, random, evolution, tpe, ppo, a2c"):
        make_agent("ppo2")
    with pytest.raises(ValueError):
        ReinforceAgent(baseline_decay=1.0)
    with pytest.raises(ValueError):
        ReinforceAgent(seed=-1)
