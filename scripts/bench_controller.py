"""Benchmark the REINFORCE controller: sampling m children plus one policy update, with and without the env.

On NASRL-CIFAR10-v0's space (the paper's v1: 150 tokens a child) with ``evaluator="synthetic"`` (instant
scores, no data), so what is timed is the agent and, in the "through the env" rows, the env's steps.

Run: ``python scripts/bench_controller.py`` (about a minute on 2 CPU cores). Prints a table and, as its
last line, one JSON object with the medians in milliseconds. Rows: the agent's own sampling of m
children as one batch (lockstep, as with an m-env vector env) or one at a time (sequential), each plus
the update; ``agent.run`` for m children on an m-env ``SyncVectorEnv`` and on a single env; and the env
steps of m children alone.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
from bench_common import print_report  # scripts/ is on sys.path when this file runs

import nas_env  # noqa: F401  (registers the ids)
from agents import Episode, ReinforceAgent
from nas_env.cli import parse_dataclass

ENV_ID = "NASRL-CIFAR10-v0"


@dataclass
class Args:
    children: int = 8
    """m: children per update"""
    repeats: int = 15
    """timed repetitions of each measurement (after one warm-up)"""
    seed: int = 0
    """agent seed"""


def make_env() -> gym.Env:
    return gym.make(ENV_ID, evaluator="synthetic")


def prepared_agent(env: gym.Env, seed: int, m: int) -> tuple[ReinforceAgent, np.ndarray]:
    """A REINFORCE agent prepared for ``env``'s tokens, and the action masks of every step."""
    specs = env.unwrapped.token_specs
    num_actions = int(env.action_space.n)
    agent = ReinforceAgent(seed=seed, children_per_update=m)
    agent.prepare(specs, num_actions)
    return agent, np.arange(num_actions)[None, :] < np.array([s.num_choices for s in specs])[:, None]


def agent_only_ms(agent: ReinforceAgent, masks: np.ndarray, m: int, lockstep: bool) -> tuple[float, float]:
    """Milliseconds of (sampling m children, one update) through the agent's own hooks, no env."""
    start = time.perf_counter()
    groups = [m] if lockstep else [1] * m
    actions: list[np.ndarray] = []
    for size in groups:
        actions.extend(agent.sample_actions(masks, size))
    sampled = time.perf_counter()
    episodes = [Episode(k, a, masks, 0.5 + 0.01 * k, {}) for k, a in enumerate(actions)]
    agent.learn(episodes)
    done = time.perf_counter()
    return (sampled - start) * 1e3, (done - sampled) * 1e3


def through_env_ms(agent: ReinforceAgent, envs: gym.Env | gym.vector.VectorEnv, m: int) -> float:
    start = time.perf_counter()
    agent.run(envs, agent.children_done + m, lambda child: None)
    return (time.perf_counter() - start) * 1e3


def env_only_ms(env: gym.Env, m: int) -> float:
    steps = len(env.unwrapped.token_specs)
    start = time.perf_counter()
    for k in range(m):
        env.reset(seed=k)
        for _ in range(steps):
            env.step(0)
    return (time.perf_counter() - start) * 1e3


def main(argv: list[str] | None = None) -> None:
    args, _, _ = parse_dataclass(Args, argv, prog="bench_controller.py", description=__doc__)
    m = args.children

    env = make_env()
    specs = env.unwrapped.token_specs
    agent, masks = prepared_agent(env, args.seed, m)

    results: dict[str, list[float]] = {k: [] for k in (
        "lockstep_sample", "lockstep_update", "sequential_sample", "sequential_update",
        "env_vec", "env_single", "env_only")}
    vec = gym.vector.SyncVectorEnv([make_env for _ in range(m)])
    single_agent = ReinforceAgent(seed=args.seed, children_per_update=m)
    vec_agent = ReinforceAgent(seed=args.seed, children_per_update=m)
    for rep in range(args.repeats + 1):  # rep 0 warms up (allocator, oneDNN kernels)
        values = (*agent_only_ms(agent, masks, m, lockstep=True), *agent_only_ms(agent, masks, m, lockstep=False),
                  through_env_ms(vec_agent, vec, m), through_env_ms(single_agent, env, m), env_only_ms(env, m))
        if rep:
            for key, value in zip(results, values, strict=True):
                results[key].append(value)
    med = {k: statistics.median(v) for k, v in results.items()}

    rows = [(label, f"{value:8.1f} ms") for label, value in [
        (f"agent only, lockstep ({m} children as one batch): sample", med["lockstep_sample"]),
        ("agent only, lockstep: update", med["lockstep_update"]),
        ("agent only, lockstep: sample + update", med["lockstep_sample"] + med["lockstep_update"]),
        (f"agent only, sequential ({m} x 1 child): sample", med["sequential_sample"]),
        ("agent only, sequential: sample + update", med["sequential_sample"] + med["sequential_update"]),
        (f"through the env, SyncVectorEnv x {m}: run({m} children)", med["env_vec"]),
        (f"through the env, single env: run({m} children)", med["env_single"]),
        (f"env only: {m} children x {len(specs)} steps, fixed actions", med["env_only"]),
    ]]
    print(f"{ENV_ID} (synthetic), {len(specs)} tokens, m = {m}, median of {args.repeats}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} torch threads")
    print_report(rows, {
        "tokens": len(specs),
        "children_per_update": m,
        "agent_lockstep_sample_ms": round(med["lockstep_sample"], 2),
        "agent_lockstep_update_ms": round(med["lockstep_update"], 2),
        "agent_lockstep_total_ms": round(med["lockstep_sample"] + med["lockstep_update"], 2),
        "agent_sequential_total_ms": round(med["sequential_sample"] + med["sequential_update"], 2),
        "through_env_vec_ms": round(med["env_vec"], 2),
        "through_env_single_ms": round(med["env_single"], 2),
        "env_only_ms": round(med["env_only"], 2),
        "target_ms": 50,
    })


if __name__ == "__main__":
    main()
