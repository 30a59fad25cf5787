"""Our other agents on Ray: a vector env whose children train as Ray tasks, all of a lockstep batch at once.

``nasrl-search --backend ray --agent evolution --num-envs N`` (or ``random``): the agent runs its usual loop
here, exactly as with ``--backend local`` (the same run folder, checkpoint and resume); only the children's
training moves to the cluster (see docs/parallel.md).

How a lockstep step trains its children at once: each sub-env has a *probe*, a copy that gets the same
resets, actions and depth settings but whose evaluator only records what it is asked
(:class:`RecordingEvaluator`). :meth:`RayVectorEnv.step` steps the probes first; the architectures they
ask for go to :meth:`RayChildEvaluator.prefetch`, which trains them as Ray tasks at once, then the real
sub-envs step and their evaluator (the same :class:`RayChildEvaluator`) returns the results. The result
store stays in this process and its rule decides which children train
(:class:`~nas_env.store.BatchEvaluations`), as in :mod:`agents.experiment.distributed.driver`.
"""

from __future__ import annotations

import contextlib
import copy
from collections import defaultdict
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import ray
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import iterate

from agents.experiment.distributed import RayConfig
from agents.experiment.distributed.child import PresetEvaluator, evaluate_arch, local_env, remote_kwargs
from agents.experiment.distributed.driver import (
    check_cluster,
    describe_on_cluster,
    finish_task,
    next_ready,
    ray_session,
)
from nas_env.evaluators import EvalResult
from nas_env.spaces.base import Architecture
from nas_env.store import BatchEvaluations, ResultStore, arch_key
from nas_env.vector import NASSyncVectorEnv

# Env methods that change the episodes to come: a call is made on the probes too (any other call only reads).
MIRRORED_CALLS = ("set_num_layers",)


class RecordingEvaluator(PresetEvaluator):
    """A probe's evaluator: notes each ``(arch, seed)`` it is asked for and returns a placeholder."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[Architecture, int]] = []

    def __call__(self, arch: Architecture, seed: int) -> EvalResult:
        self.calls.append((arch, int(seed)))
        return self.result


class RayChildEvaluator:
    """Trains children as Ray tasks, serving the result store first (the evaluator of :class:`RayVectorEnv`).

    Its ``fingerprint()`` is the one a local run's store uses for the same env settings, so a
    Ray search and a local one can share a store (``store_path`` None: no store, as for a benchmark;
    copies of one architecture in one batch still share a task). Needs a connected Ray.
    """

    def __init__(self, env_id: str, env_kwargs: dict[str, Any], store_path: str | Path | None, *, score_key: str,
                 cpus_per_child: float = 1.0, gpus_per_child: float = 0.0, child_retries: int = 2) -> None:
        self.env_id = env_id
        self.env_kwargs = remote_kwargs(env_kwargs)
        self.score_key = score_key
        config = RayConfig(cpus_per_child=cpus_per_child, gpus_per_child=gpus_per_child, child_retries=child_retries)
        self.options, self.num_threads = config.task_options, config.task_threads
        self._fingerprint = describe_on_cluster(self.options, self.env_id, self.env_kwargs)
        self._task = ray.remote(evaluate_arch)
        self.store = ResultStore(store_path) if store_path is not None else None
        self.children: BatchEvaluations[int] = BatchEvaluations(self.store, self._fingerprint)
        self._ready: dict[tuple[str, int], list[EvalResult]] = defaultdict(list)
        self.trained = 0  # tasks submitted
        self.on_the_spot = 0  # children trained alone, when asked for without a prefetch

    @property
    def duplicates_avoided(self) -> int:
        """Children that shared another one's training (a task of this batch, or another worker's)."""
        return self.children.duplicates_avoided

    def fingerprint(self) -> str:
        return self._fingerprint

    def _submit(self, arch: Architecture, seed: int) -> Any:
        task = self._task.options(name=f"child-{self.trained}", **self.options)  # its worker's title: ray::child-N
        self.trained += 1
        return task.remote(self.env_id, self.env_kwargs, arch, seed, self.num_threads)

    def prefetch(self, requests: list[tuple[Architecture, int]]) -> None:
        """Evaluate ``(arch, seed)`` pairs at once; ``__call__`` then returns each one's result."""
        results: dict[int, EvalResult] = {}  # request index -> result
        tasks: dict[Any, Architecture] = {}
        for i, (arch, seed) in enumerate(requests):
            answer = self.children.ask(arch, seed, i)
            if isinstance(answer, EvalResult):
                results[i] = answer
            elif answer:
                tasks[self._submit(arch, seed)] = arch
        errors: list[BaseException] = []  # the evaluator raised: raised once the batch's other children are stored
        try:
            while tasks or self.children.waiting:  # each result is stored as its task finishes: a crash loses none
                for ref in next_ready(tasks, self.children.waiting):
                    results.update(finish_task(self.children, tasks.pop(ref), ref, self.score_key, errors))
                if self.children.waiting:  # children another worker trains: served, or trained here if it gave up
                    served, to_train = self.children.poll()
                    results.update(served)
                    for _, arch, seed in to_train:
                        tasks[self._submit(arch, seed)] = arch
        except BaseException:
            self.children.release_all()  # an interrupt: the claims of unfinished tasks go
            raise
        if errors:
            raise errors[0]
        for i, (arch, seed) in enumerate(requests):
            self._ready[(arch_key(arch), seed)].append(results[i])

    def __call__(self, arch: Architecture, seed: int) -> EvalResult:
        key = (arch_key(arch), int(seed))
        if not self._ready.get(key):  # not prefetched (a lone env, or a caller stepping the sub-envs itself)
            self.on_the_spot += 1
            self.prefetch([(arch, int(seed))])
        result = self._ready[key].pop(0)
        if not self._ready[key]:
            del self._ready[key]
        return result

    @property
    def pending(self) -> int:
        """Prefetched results not yet handed out (0 after every step of a :class:`RayVectorEnv`)."""
        return sum(map(len, self._ready.values()))

    def close(self) -> None:
        self.children.release_all()
        if self.store is not None:
            self.store.close()


class RayVectorEnv(NASSyncVectorEnv):
    """``num_envs`` copies of a NAS env in this process, stepped in lockstep; the children a step ends train as
    Ray tasks at once (see the module docstring). Autoreset: next step, as :class:`~gymnasium.vector.SyncVectorEnv`.
    """

    def __init__(self, env_id: str, env_kwargs: dict[str, Any], num_envs: int, evaluator: RayChildEvaluator) -> None:
        self.child_evaluator = evaluator
        self._recorder = RecordingEvaluator()
        super().__init__([partial(local_env, env_id, env_kwargs, evaluator) for _ in range(num_envs)],
                         autoreset_mode=AutoresetMode.NEXT_STEP)
        self.probes = [local_env(env_id, env_kwargs, self._recorder) for _ in range(num_envs)]
        self._seeded = np.zeros(num_envs, dtype=bool)
        self._entropy = np.random.default_rng()  # seeds for a first reset(seed=None): one per sub-env and its probe

    def reset(self, *, seed: int | list[int | None] | None = None,
              options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        seeds = [None] * self.num_envs if seed is None else (
            [seed + i for i in range(self.num_envs)] if isinstance(seed, int) else list(seed))
        if len(seeds) != self.num_envs:
            raise ValueError(f"reset(seed=...) needs {self.num_envs} seeds (one per sub-env), got {len(seeds)}")
        options = dict(options) if options else None
        mask = np.ones(self.num_envs, dtype=bool) if not options or "reset_mask" not in options else np.array(
            options["reset_mask"], dtype=bool)
        probe_options = {k: v for k, v in options.items() if k != "reset_mask"} if options else None
        for i in np.flatnonzero(mask):
            if seeds[i] is None and not self._seeded[i]:  # the sub-env and its probe must draw the same children
                seeds[i] = int(self._entropy.integers(2**31 - 1))
        out = super().reset(seed=seeds, options=options)  # checks the options first: a bad one changes nothing
        for i in np.flatnonzero(mask):
            self.probes[i].reset(seed=seeds[i], options=probe_options)
        self._seeded |= mask
        return out

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        actions = list(iterate(self.action_space, actions))
        self._recorder.calls.clear()
        for i, (probe, action) in enumerate(zip(self.probes, actions, strict=True)):
            if self._autoreset_envs[i]:
                probe.reset()
            else:
                probe.step(action)
        if self._recorder.calls:
            self.child_evaluator.prefetch(list(self._recorder.calls))
        out = super().step(np.asarray(actions))
        if self.child_evaluator.pending:
            raise RuntimeError(f"{self.child_evaluator.pending} prefetched children were not asked for: a probe and "
                               f"its sub-env diverged (a bug in RayVectorEnv's mirroring)")
        return out

    def call(self, name: str, *call_args: Any, **kwargs: Any) -> tuple[Any, ...]:
        if name in MIRRORED_CALLS:
            for probe in self.probes:
                probe.get_wrapper_attr(name)(*call_args, **kwargs)
        return super().call(name, *call_args, **kwargs)

    def set_attr(self, name: str, values: list[Any] | tuple[Any, ...] | Any) -> None:
        super().set_attr(name, values)
        values = values if isinstance(values, list | tuple) else [values] * self.num_envs
        for probe, value in zip(self.probes, values, strict=True):  # a copy: state shared with the sub-env would
            probe.set_wrapper_attr(name, copy.deepcopy(value))      # advance twice per step

    def close_extras(self, **kwargs: Any) -> None:
        super().close_extras(**kwargs)
        for probe in self.probes:
            probe.close()
        self.child_evaluator.close()


@contextlib.contextmanager
def ray_envs(config: RayConfig, env_id: str, env_kwargs: dict[str, Any], num_envs: int,
             store_path: Path | None) -> Iterator[RayVectorEnv]:
    """A search's :class:`RayVectorEnv` on the cluster ``config`` names (a local Ray if none; shut down after)."""
    with ray_session(config):
        check_cluster(config)
        probe = local_env(env_id, env_kwargs, PresetEvaluator())  # bad env keywords fail here, before Ray work
        score_key = probe.unwrapped.score_key
        probe.close()
        evaluator = RayChildEvaluator(env_id, env_kwargs, store_path, score_key=score_key,
                                      cpus_per_child=config.cpus_per_child, gpus_per_child=config.gpus_per_child,
                                      child_retries=config.child_retries)
        with contextlib.closing(RayVectorEnv(env_id, env_kwargs, num_envs, evaluator)) as envs:
            yield envs
