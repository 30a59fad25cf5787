"""Children trained in parallel processes: AsyncVectorEnv and make_vec async, devices and threads, --num-envs."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import nas_env  # noqa: F401  (registers the environments)
from agents.experiment.runner import SearchArgs, run_search
from nas_env.vector import SubEnvFactory, make_parallel_envs, sub_env_devices, threads_per_env


def rollout(envs: gym.vector.VectorEnv, seeds: list[int]) -> list[tuple[float, str, str]]:
    """Lockstep episodes with a fixed action rule; (reward, status, arch) per sub-env."""
    _, infos = envs.reset(seed=seeds)
    n = envs.num_envs
    out: dict[int, tuple[float, str, str]] = {}
    step = 0
    while len(out) < n:
        masks = np.asarray(infos["action_mask"], dtype=bool)
        actions = np.array([np.flatnonzero(masks[i])[(step + i) % masks[i].sum()] for i in range(n)])
        _, rewards, terminated, _, infos = envs.step(actions)
        for i in np.flatnonzero(terminated):
            out.setdefault(int(i), (float(rewards[i]), str(infos["status"][i]), str(infos["arch"][i])))
        step += 1
    return [out[i] for i in range(n)]


def test_make_vec_async_matches_sync() -> None:
    kwargs = {"evaluator": "synthetic", "num_layers": 3}
    sync = gym.make_vec("NASRL-Digits-v0", num_envs=2, vectorization_mode="sync", **kwargs)
    # forkserver: a forked worker can hang in torch's thread pool once the parent has used it (nas_env.vector)
    par = gym.make_vec("NASRL-Digits-v0", num_envs=2, vectorization_mode="async",
                       vector_kwargs={"context": "forkserver"}, **kwargs)
    try:
        assert par.unwrapped.get_attr("token_specs") == sync.unwrapped.get_attr("token_specs")
        expected = rollout(sync, [5, 6])
        assert rollout(par, [5, 6]) == expected
        assert all(status == "ok" for _, status, _ in expected)
    finally:
        sync.close()
        par.close()


def test_devices_and_threads_are_split() -> None:
    assert threads_per_env(2, cores=2) == 1 and threads_per_env(4, cores=16) == 4 and threads_per_env(8, cores=2) == 1
    assert sub_env_devices(3, "auto", gpu_count=2) == ["cuda:0", "cuda:1", "cuda:0"]
    assert sub_env_devices(2, None, gpu_count=1) == [None, None]  # one GPU or none: the env's own device keyword
    assert sub_env_devices(2, "cpu", gpu_count=4) == [None, None]  # a device the caller fixed stands
    previous = torch.get_num_threads()
    try:  # what a worker process runs first: its share of the threads, then its env
        env = SubEnvFactory("NASRL-Digits-v0", {"evaluator": "synthetic"}, num_threads=1)()
        assert torch.get_num_threads() == 1 and env.unwrapped.space.num_layers == 4
    finally:
        torch.set_num_threads(previous)


def test_parallel_envs_train_real_children_with_a_thread_each(tmp_path: Path) -> None:
    kwargs = {"epochs": 1, "train_subset": 200, "device": "cpu", "num_layers": 2, "store": str(tmp_path / "s.sqlite")}
    envs = make_parallel_envs("NASRL-Digits-v0", 2, kwargs)
    try:
        results = rollout(envs, [1, 2])
        assert [status for _, status, _ in results] == ["ok", "ok"]
        assert all(0.0 < reward <= 1.0 for reward, _, _ in results)
        assert [str(d) for d in envs.unwrapped.get_attr("device")] == ["cpu", "cpu"]
    finally:
        envs.close()


def read(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]


def test_runner_num_envs_2_async_is_exact_and_resumes(tmp_path: Path) -> None:
    def args(name: str, episodes: int, vectorization: str) -> SearchArgs:
        return SearchArgs(env="NASRL-Digits-v0", episodes=episodes, children_per_update=4, num_envs=2, seed=1,
                          vectorization=vectorization, logdir=str(tmp_path), run_name=name,
                          env_kwargs={"evaluator": "synthetic", "num_layers": 3}, progress=False)

    sync = read(run_search(args("sync", 12, "sync")))
    full = read(run_search(args("async", 12, "auto")))  # auto: async for 2 sub-envs
    key = [(r["arch"], r["reward"]) for r in sync]
    assert [(r["arch"], r["reward"]) for r in full] == key
    part = run_search(args("part", 6, "async"))  # stops mid-update: the resume replays from the checkpoint
    resumed = read(run_search(SearchArgs(resume=str(part), episodes=12, progress=False)))
    assert [(r["arch"], r["reward"]) for r in resumed] == key
    assert [r["index"] for r in resumed] == list(range(12))


@pytest.mark.parametrize("bad", ["threads", "fork"])
def test_bad_vectorization_is_named(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    from agents.experiment.runner import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--vectorization", bad])
    assert f"--vectorization {bad!r} is not one of auto, sync, async" in capsys.readouterr().err


def test_a_failed_child_beside_an_ok_one_is_recorded_not_a_crash() -> None:
    """Gymnasium batches an info key by the first sub-env's type: a failed child's params=None beside an ok child's
    int used to raise a TypeError and end the search."""
    from agents.random_search import RandomSearchAgent
    from nas_env.evaluators import EvalResult
    from nas_env.vector import make_sync_envs

    def narrow_first_layer_ok(arch, seed: int) -> EvalResult:  # a wide first filter "runs out of memory"
        if arch.layers[0].filter_height == 1:
            return EvalResult(0.5, "ok", {"val_acc": 0.5, "params": 10, "flops": 20, "train_seconds": 1.0})
        return EvalResult(0.0, "oom", {"error": "CUDA out of memory"})

    envs = make_sync_envs("NASRL-Digits-v0", 2, {"evaluator": narrow_first_layer_ok, "num_layers": 2})
    records = []
    RandomSearchAgent(seed=0, children_per_update=2).run(envs, 16, records.append)
    statuses = [r.info["status"] for r in records]
    assert {"ok", "oom"} <= set(statuses) and len(records) == 16
    assert all((r.info["params"] == 10) == (r.info["status"] == "ok") for r in records)
    assert all(r.info["params"] is None and r.reward == 0.0 for r in records if r.info["status"] == "oom")
    # the same env batched by gymnasium's own SyncVectorEnv raises as soon as an oom child follows an ok one
    plain = gym.make_vec("NASRL-Digits-v0", num_envs=2, vectorization_mode="sync",
                         evaluator=narrow_first_layer_ok, num_layers=2)
    with pytest.raises(TypeError):
        RandomSearchAgent(seed=0, children_per_update=2).run(plain, 16, lambda r: None)
