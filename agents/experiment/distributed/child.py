"""What runs where a child is trained (a Ray task), and the local envs that sample and replay children.

A replica samples with a *local* copy of the env whose evaluator is a :class:`PresetEvaluator` (nothing
trained); :func:`evaluate_child` / :func:`evaluate_arch` (the Ray tasks) build the real env once per worker
process and run only its evaluator; the driver replays the actions in another local env whose preset
evaluator returns the task's result, so every reward and info is what the single-process env gives. The
result store is the driver's; the tasks never touch it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import nas_env  # noqa: F401  (registers the environment ids in the worker)
from nas_env.evaluators import EvalResult, as_result
from nas_env.spaces.base import Architecture
from nas_env.store import store_fingerprint

_ENVS: dict[str, gym.Env] = {}  # per worker process: the data is loaded once, not once per child


# What a sampling env's evaluator returns before anything sets a result: a status other than "ok", so that an env
# with a cost-aware reward does not ask this placeholder for the metrics of a training that never ran.
PLACEHOLDER = EvalResult(0.0, "failed", {"error": "placeholder: children are trained elsewhere"})


class PresetEvaluator:
    """An evaluator that returns ``self.result``: set before an episode's last step, :data:`PLACEHOLDER` before."""

    def __init__(self, result: EvalResult | None = None) -> None:
        self.result = result or PLACEHOLDER

    def __call__(self, arch: Any, seed: int) -> EvalResult:
        return self.result


def remote_kwargs(env_kwargs: dict[str, Any]) -> dict[str, Any]:
    """The env keywords a child task builds its env with: the run's, less the store (the driver keeps it)."""
    return {k: v for k, v in env_kwargs.items() if k != "store"}


def local_env(env_id: str, env_kwargs: dict[str, Any], evaluator: PresetEvaluator) -> gym.Env:
    """The run's env with a preset evaluator and on the CPU: samples or replays children, never trains one."""
    kwargs = {**remote_kwargs(env_kwargs), "evaluator": evaluator}
    if "device" in kwargs:  # the driver's or replica's machine may have no GPU; nothing runs on it here
        kwargs["device"] = "cpu"
    try:
        return gym.make(env_id, **kwargs)
    except TypeError as e:  # an env without the keyword (the NASRL-Bench table)
        if "evaluator" not in str(e):
            raise
        raise ValueError(f"--backend ray needs an env that takes an `evaluator` keyword (the CNN and PTB envs); "
                         f"{env_id} does not: use --backend local") from None


def fingerprint_of(evaluator: Any) -> str:
    """The result-store key of an evaluator's settings: the same one a local run's store uses."""
    if not callable(getattr(evaluator, "fingerprint", None)):
        raise TypeError(f"the Ray backend keeps a result store, which needs an evaluator with a fingerprint(); "
                        f"got {type(evaluator).__name__}")
    return store_fingerprint(evaluator.fingerprint())


def _worker_env(env_id: str, env_kwargs: dict[str, Any]) -> gym.Env:
    key = json.dumps([env_id, env_kwargs], sort_keys=True, default=str)
    if key not in _ENVS:
        _ENVS[key] = gym.make(env_id, **env_kwargs)
    return _ENVS[key]


def describe_env(env_id: str, env_kwargs: dict[str, Any]) -> str:
    """Build the env where children train (checks its keywords there) and return its evaluator's fingerprint.

    A stateful evaluator (a weight-sharing supernet) is refused: each Ray worker would train its own copy.
    """
    evaluator = _worker_env(env_id, env_kwargs).unwrapped.evaluator
    if callable(getattr(evaluator, "state_dict", None)):
        raise ValueError(f"--backend ray trains each child in a Ray task, and {type(evaluator).__name__} keeps one "
                         f"shared state (weight sharing) that the tasks cannot share: use --backend local")
    return fingerprint_of(evaluator)


def evaluate_arch(env_id: str, env_kwargs: dict[str, Any], arch: Architecture, seed: int,
                  num_threads: int = 1) -> tuple[EvalResult, str]:
    """Train one child: the env's evaluator on ``arch`` with evaluation seed ``seed`` (a Ray task).

    ``num_threads`` torch threads: the CPUs the task asked for, so that tasks sharing a node
    do not oversubscribe its cores. Returns the result and the evaluator's fingerprint.
    """
    torch.set_num_threads(max(1, num_threads))
    evaluator = _worker_env(env_id, env_kwargs).unwrapped.evaluator
    return as_result(evaluator(arch, int(seed))), fingerprint_of(evaluator)


def evaluate_child(env_id: str, env_kwargs: dict[str, Any], actions: Sequence[int], seed: int,
                   num_threads: int = 1) -> tuple[EvalResult, str]:
    """:func:`evaluate_arch` of the full-depth architecture ``decode(actions)``."""
    torch.set_num_threads(max(1, num_threads))  # before the env is built: its data loading runs with it too
    arch = _worker_env(env_id, env_kwargs).unwrapped.space.decode([int(a) for a in actions])
    return evaluate_arch(env_id, env_kwargs, arch, seed, num_threads)


def lost_worker_result(score_key: str, error: BaseException) -> EvalResult:
    """The result of a child whose worker died past its retries (killed, OOM-killed, node lost): status "failed".

    A crash says nothing about the architecture, so learners leave it out and the store does not keep it.
    """
    return EvalResult(0.0, "failed", {
        score_key: 0.0 if score_key == "val_acc" else None, f"{score_key}_history": [], "train_seconds": 0.0,
        "error": f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"})


def replay(env: gym.Env, evaluator: PresetEvaluator, actions: Sequence[int], env_seed: int,
           result: EvalResult) -> tuple[float, dict[str, Any]]:
    """The reward and final info the env gives for ``actions`` from ``reset(seed=env_seed)`` when the child's
    evaluation returns ``result``."""
    evaluator.result = result
    env.reset(seed=int(env_seed))
    reward, info, done = 0.0, {}, False
    for a in actions:
        _, reward, done, _, info = env.step(np.int64(a))
    if not done:
        raise RuntimeError("replaying a child's actions did not end its episode")
    return float(reward), dict(info)
