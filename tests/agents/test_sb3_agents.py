"""stable-baselines3 / sb3-contrib agents on the unmodified env, through the same interface as ours."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import pytest
import torch

import nas_env  # noqa: F401
from agents import make_agent
from agents.base import ChildRecord, UpdateStats
from agents.experiment.runner import SearchArgs, run_search
from agents.sb3 import SB3_ALGOS, SB3Agent


def small_env() -> gym.vector.VectorEnv:
    return gym.make_vec("NASRL-Digits-v0", num_envs=1, vectorization_mode="sync", evaluator="synthetic",
                        num_layers=2)


def policy_vector(agent: SB3Agent) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in agent.model.policy.parameters()])


@pytest.mark.parametrize("algo", SB3_ALGOS)
def test_each_algorithm_learns_and_reports_children(algo: str) -> None:
    extra = {"learning_starts": 5, "train_freq": 1} if algo == "dqn" else {}
    agent = make_agent(algo, seed=0, children_per_update=3, **extra)
    assert isinstance(agent, SB3Agent)
    children: list[ChildRecord] = []
    updates: list[UpdateStats] = []
    envs = small_env()
    agent.run(envs, 3, children.append, updates.append)
    before = policy_vector(agent)
    agent.run(envs, 9, children.append, updates.append)
    assert [c.index for c in children] == list(range(9))
    assert all(c.info["status"] == "ok" and c.info["arch"] for c in children)
    assert not torch.equal(before, policy_vector(agent))  # the policy was trained
    assert updates and updates[-1].children_done == 9
    if algo == "maskable_ppo":
        assert agent.invalid_episodes == 0  # masks respected
    assert agent.episodes == 9 + agent.invalid_episodes


def test_checkpoint_round_trip_keeps_counters_and_weights(tmp_path: Path) -> None:
    agent = make_agent("maskable_ppo", seed=1, children_per_update=2)
    envs = small_env()
    agent.run(envs, 4, lambda c: None)
    agent.save(tmp_path / "a.pt")
    state = torch.load(tmp_path / "a.pt", weights_only=True)
    clone = SB3Agent(**state["config"])
    clone.load_state_dict(state)
    assert clone.children_done == 4
    got: list[ChildRecord] = []
    clone.run(envs, 6, got.append)
    assert [c.index for c in got] == [4, 5]
    loaded = SB3Agent(**state["config"])
    loaded.load_state_dict(state)
    no_updates: list[UpdateStats] = []
    loaded.run(envs, 4, lambda c: None, no_updates.append)  # no new children: just rebuilds the model
    assert no_updates == []
    assert torch.equal(policy_vector(loaded), policy_vector(agent))


def test_bad_algorithm_and_env_are_named() -> None:
    with pytest.raises(ValueError, match="allowed: ppo"):
        SB3Agent("trpo")
    agent = SB3Agent("ppo")
    async_like = gym.vector.AsyncVectorEnv.__new__(gym.vector.AsyncVectorEnv)
    with pytest.raises(TypeError, match="SyncVectorEnv"):
        agent._vec_env(async_like)


def test_runner_drives_sb3_agents_into_the_same_run_folder(tmp_path: Path) -> None:
    args = SearchArgs(env="NASRL-Digits-v0", agent="ppo", episodes=5, children_per_update=2, logdir=str(tmp_path),
                      run_name="ppo", env_kwargs={"evaluator": "synthetic", "num_layers": 2},
                      agent_kwargs={"learning_rate": 1e-3}, progress=False)
    run_dir = run_search(args)
    lines = [json.loads(x) for x in (run_dir / "results.jsonl").read_text().splitlines()]
    assert [r["index"] for r in lines] == list(range(5)) and all(r["status"] == "ok" for r in lines)
    resumed = run_search(SearchArgs(resume=str(run_dir), episodes=7, progress=False))
    lines = [json.loads(x) for x in (resumed / "results.jsonl").read_text().splitlines()]
    assert [r["index"] for r in lines] == list(range(7))


def test_an_update_is_reported_after_sb3_trained_on_it() -> None:
    """on_update fires after SB3's train(): the policy it checkpoints is the updated one, not the one before."""
    agent = make_agent("ppo", seed=0, children_per_update=2)
    envs = small_env()
    seen: list[torch.Tensor] = []
    agent.run(envs, 6, lambda child: None, lambda stats: seen.append(policy_vector(agent)))
    first_update_weights = seen[0]
    fresh = make_agent("ppo", seed=0, children_per_update=2)
    fresh.run(small_env(), 1, lambda child: None)  # builds the same initial policy; no train() yet
    assert not torch.equal(first_update_weights, policy_vector(fresh))  # reported after the update changed it
    assert len(seen) >= 2 and not torch.equal(seen[0], seen[1])
