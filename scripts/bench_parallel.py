"""Children per second with 1 and 2 parallel workers, for the vector-env and Ray backends, and Ray's per-child overhead.

``python scripts/bench_parallel.py [--children 8] [--epochs 5]``

The same fixed children (drawn once on NASRL-Digits-v0, about a second of real training each, one
torch thread per worker) are trained by: the **vector env** (``make_parallel_envs``, 1 and 2 processes
in lockstep, as ``--num-envs``); **ray** (:func:`evaluate_child` tasks on a local 2-CPU Ray, one and two
at a time); the **ray vector env** (:class:`RayVectorEnv`, ``--backend ray`` for evolution and random
search: 1 and 2 sub-envs, children as 1-CPU tasks; not with ``--one-architecture``: the copies of a step
would share one task). Each backend is warmed up first. Ray's overhead per child is the round trip of a
task with the instant synthetic evaluator minus the same call in this process. Prints a table, then one
JSON line (docs/parallel.md).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import ray

import nas_env  # noqa: F401
from agents.experiment.distributed import RayConfig
from agents.experiment.distributed.child import evaluate_child
from agents.experiment.distributed.driver import ray_session
from agents.experiment.distributed.vector import ray_envs
from nas_env.cli import parse_dataclass
from nas_env.vector import make_parallel_envs

ENV = "NASRL-Digits-v0"
RAY = RayConfig(num_cpus=2)  # a local 2-CPU Ray; each child a 1-CPU task


@dataclass
class Args:
    children: int = 8
    """children per measurement (even: the 2-worker runs take them two at a time)"""
    epochs: int = 5
    """epochs per child (5: about a second on one core)"""
    seed: int = 0
    """seed of the drawn architectures"""
    one_architecture: bool = False
    """train one architecture every time: an evaluator of fixed cost, so the lockstep vector env does not wait on
    its slower child"""


def draw_children(n: int, seed: int, one_architecture: bool = False) -> list[list[int]]:
    """``n`` action lists drawn uniformly over each token's choices (or the first one ``n`` times)."""
    env = gym.make(ENV, evaluator="synthetic")
    specs = env.unwrapped.token_specs
    rng = np.random.default_rng(seed)
    children = [[int(rng.integers(s.num_choices)) for s in specs] for _ in range(n)]
    return [children[0]] * n if one_architecture else children


def vector_rate(children: list[list[int]], workers: int, kwargs: dict[str, Any], on_ray: bool = False
                ) -> tuple[float, float]:
    """(children per second, mean train_seconds) through ``workers`` sub-envs in lockstep: each in its own
    process, or (``on_ray``) in this one with the children trained as Ray tasks."""
    opened = ray_envs(RAY, ENV, kwargs, workers, None) if on_ray else \
        contextlib.closing(make_parallel_envs(ENV, workers, kwargs, num_threads=1))
    with opened as envs:
        def batch(actions: list[list[int]], seed: int) -> list[float]:
            envs.reset(seed=[seed + i for i in range(workers)])
            infos: dict[str, Any] = {}
            for t in range(len(actions[0])):
                _, _, _, _, infos = envs.step(np.array([a[t] for a in actions]))
            return [float(x) for x in infos["train_seconds"]]

        batch(children[:workers], 0)  # warm-up: data loaded in every worker
        start, seconds = time.perf_counter(), []
        for i in range(0, len(children), workers):
            seconds += batch(children[i:i + workers], i)
        return len(children) / (time.perf_counter() - start), float(np.mean(seconds))


def ray_rate(children: list[list[int]], workers: int, kwargs: dict[str, Any]) -> float:
    """Children per second as Ray tasks, ``workers`` at a time on a 2-CPU local Ray."""
    task = ray.remote(evaluate_child).options(num_cpus=2 // workers)
    ray.get([task.remote(ENV, kwargs, children[0], 0, 1) for _ in range(2)])  # warm-up: both workers load the data
    start = time.perf_counter()
    ray.get([task.remote(ENV, kwargs, actions, i, 1) for i, actions in enumerate(children)])
    return len(children) / (time.perf_counter() - start)


def ray_overhead_ms(children: list[list[int]], rounds: int = 40) -> tuple[float, float]:
    """(Ray round trip per child, the same evaluation in-process), in ms, with the instant synthetic evaluator."""
    task = ray.remote(evaluate_child).options(num_cpus=1)

    def mean_ms(evaluate: Callable[..., Any]) -> float:
        evaluate(ENV, {"evaluator": "synthetic"}, children[0], 0, 1)  # warm-up
        start = time.perf_counter()
        for i in range(rounds):
            evaluate(ENV, {"evaluator": "synthetic"}, children[i % len(children)], i, 1)
        return (time.perf_counter() - start) / rounds * 1000

    return mean_ms(lambda *a: ray.get(task.remote(*a))), mean_ms(evaluate_child)


def main(argv: list[str] | None = None) -> None:
    a, _, parser = parse_dataclass(Args, argv, prog="bench_parallel.py", description=__doc__)
    if a.children < 2 or a.children % 2:
        parser.error(f"--children must be an even number >= 2, got {a.children}")
    if a.epochs < 1:
        parser.error(f"--epochs must be >= 1, got {a.epochs}")
    children = draw_children(a.children, a.seed, a.one_architecture)
    kwargs = {"epochs": a.epochs, "device": "cpu"}

    load_before = os.getloadavg()[0]  # other processes on the machine: a 2-worker speedup needs 2 idle cores
    (vec1, train_s), (vec2, _) = (vector_rate(children, workers, kwargs) for workers in (1, 2))
    rows = [("vector env", vec1, vec2)]  # (backend, children/s with 1 worker, with 2)
    with ray_session(RAY):
        rows.append(("ray", ray_rate(children, 1, kwargs), ray_rate(children, 2, kwargs)))
        if not a.one_architecture:
            rows.append(("ray vector env", *(vector_rate(children, w, kwargs, on_ray=True)[0] for w in (1, 2))))
        remote_ms, local_ms = ray_overhead_ms(children)
    load_after = os.getloadavg()[0]
    kind = "copies of one digits child" if a.one_architecture else "different digits children"
    print(f"{a.children} {kind}, {a.epochs} epochs each, one torch thread per worker "
          f"(mean training time of a child alone: {train_s:.2f} s); load average {load_before:.1f} before, "
          f"{load_after:.1f} after, on {os.cpu_count()} cores")
    print(f"{'backend':<16} {'1 worker':>12} {'2 workers':>12} {'speedup':>8}")
    for name, one, two in rows:
        print(f"{name:<16} {one:>10.3f}/s {two:>10.3f}/s {two / one:>7.2f}x")
    print(f"ray overhead per child: {remote_ms - local_ms:.1f} ms (round trip {remote_ms:.1f} ms, in-process "
          f"{local_ms:.2f} ms; instant evaluator)")
    print(json.dumps({
        "children": a.children, "one_architecture": a.one_architecture, "epochs": a.epochs,
        "child_train_seconds": round(train_s, 3),
        **{name.replace(" ", "_"): {"workers_1": round(one, 4), "workers_2": round(two, 4),
                                    "speedup": round(two / one, 3)} for name, one, two in rows},
        "ray_overhead_ms": round(remote_ms - local_ms, 2), "load_average": [load_before, load_after],
    }))


if __name__ == "__main__":
    main()
