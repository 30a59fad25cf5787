"""The tpe agent: Optuna's TPE proposing whole cells, driven like every agent, resumed exactly."""

from __future__ import annotations

import builtins
import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

import nas_env  # noqa: F401  (registers the environments)
from agents import ChildRecord, TPEAgent, make_agent
from agents.experiment.runner import SearchArgs, run_search

pytest.importorskip("optuna")


def bench201() -> gym.vector.VectorEnv:
    return gym.make_vec("NASRL-Bench201-CIFAR10-v0", num_envs=1, vectorization_mode="sync")


def search(agent: TPEAgent, children: int, envs: gym.vector.VectorEnv | None = None) -> list[ChildRecord]:
    out: list[ChildRecord] = []
    agent.run(envs or bench201(), children, out.append)
    return out


@pytest.mark.parametrize("multivariate", [False, True])
def test_tpe_beats_its_random_start_and_is_reproducible(multivariate: bool) -> None:
    children = search(TPEAgent(seed=1, multivariate=multivariate), 60)
    regret = np.array([c.info["regret"] for c in children])
    assert len(children) == 60 and all(c.info["status"] == "ok" for c in children)
    assert np.median(regret[30:]) < np.median(regret[:10])  # modelling (after 10 random trials) proposes better cells
    again = search(TPEAgent(seed=1, multivariate=multivariate), 60)
    assert [c.info["arch"] for c in again] == [c.info["arch"] for c in children]
    other = search(TPEAgent(seed=2, multivariate=multivariate), 60)
    assert [c.info["arch"] for c in other] != [c.info["arch"] for c in children]


def test_a_resumed_agent_continues_exactly(tmp_path: Path) -> None:
    full = search(TPEAgent(seed=4, multivariate=True, children_per_update=2), 30)
    first = TPEAgent(seed=4, multivariate=True, children_per_update=2)
    part = search(first, 16)
    first.save(tmp_path / "agent.pt")
    resumed = TPEAgent.load(tmp_path / "agent.pt")
    assert resumed.config() == first.config() and len(resumed.history) == 16
    rest: list[ChildRecord] = []
    resumed.run(bench201(), 30, rest.append)
    assert [c.info["arch"] for c in part + rest] == [c.info["arch"] for c in full]


def test_a_batch_is_proposed_at_once_and_spread_out() -> None:
    agent = TPEAgent(seed=0, children_per_update=5, n_startup_trials=5)
    children = search(agent, 25)
    assert len(agent.history) == 25 and len({c.info["arch"] for c in children}) > 15


def test_bad_kwargs_and_a_missing_optuna_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="multivariate must be"):
        TPEAgent(multivariate="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_startup_trials must be an integer >= 0"):
        TPEAgent(n_startup_trials=-1)
    real_import = builtins.__import__

    def no_optuna(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "optuna" or name.startswith("optuna."):
            raise ImportError("No module named 'optuna'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_optuna)
    agent = make_agent("tpe", seed=0)  # building it needs no Optuna; sampling does
    with pytest.raises(ImportError, match=r"pip install 'nasrl\[tpe\]'"):
        search(agent, 2)


def test_nasrl_search_drives_it_and_resumes(tmp_path: Path) -> None:
    args = SearchArgs(env="NASRL-Bench201-CIFAR100-v0", agent="tpe", episodes=12, children_per_update=1, seed=0,
                      logdir=str(tmp_path), run_name="full", agent_kwargs={"multivariate": True}, progress=False)
    full = [json.loads(line) for line in (run_search(args) / "results.jsonl").read_text().splitlines()]
    part = run_search(SearchArgs(**{**args.__dict__, "run_name": "part", "episodes": 7}))
    run_search(SearchArgs(resume=str(part), episodes=12, progress=False))
    resumed = [json.loads(line) for line in (part / "results.jsonl").read_text().splitlines()]
    assert [r["arch"] for r in resumed] == [r["arch"] for r in full] and len(full) == 12
