"""``nasrl-tabulate``: train every architecture of a small space with k seeds into a NASRL-Bench table.

The env's own evaluator trains each (architecture, seed), in ``--num-envs`` worker processes or as Ray tasks;
each result is committed to the result store as it finishes, so a killed run resumes where it stopped. When
every result is in, the table is exported (:mod:`nas_env.bench.table`). ``--describe TABLE`` prints its facts.

The command that made the shipped digits table: docs/bench.md.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from functools import partial
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import nas_env  # noqa: F401  (registers the ids)
from agents.base import ChildRecord
from agents.experiment.distributed import BACKENDS, RayConfig
from agents.experiment.final.source import DIGITS_TEST_SIZE  # the digits test tail: the final training's too
from agents.experiment.run_folder import RunFolder
from agents.experiment.search import check_counts, check_one_of
from nas_env.bench.table import BenchTable, actions_of, describe
from nas_env.cli import cli_entry, parse_dataclass
from nas_env.evaluators import EvalResult, TrainingEvaluator
from nas_env.keywords import check_env_kwargs
from nas_env.store import ResultStore


@dataclass
class TabulateArgs:
    """Arguments of ``nasrl-tabulate`` (one docstring per field)."""

    env: str = "NASRL-Digits-v0"
    """Gymnasium id of the (training) env whose space and evaluator are tabulated"""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """keyword arguments of gym.make (JSON): the space's choice lists and the fidelity (epochs, subsets)"""
    name: str = "digits"
    """the table's name"""
    seeds: int = 3
    """k: seeds per architecture (0..k-1)"""
    max_archs: int = 10_000
    """refuse a space with more architectures than this"""
    num_envs: int = 1
    """worker processes training children at once (local backend)"""
    backend: str = "local"
    """local (worker processes) or ray (one task per child)"""
    out: str = ""
    """the table file to export (.json.gz) once every result is in (default: <run folder>/<name>.json.gz)"""
    logdir: str = "runs"
    """parent folder of the run folder (tabulate__<name>): config, results.jsonl, store, TensorBoard"""
    store: str = ""
    """result store (default: <run folder>/store.sqlite)"""
    describe: str = ""
    """only print the facts of this table (a path or a shipped name) and exit"""
    progress: bool = True
    """show a progress bar"""


# --- what runs in a worker -----------------------------------------------------------------------
_WORKER: dict[str, tuple[Any, TrainingEvaluator]] = {}  # per process: (space, evaluator) per env


def test_split(env: gym.Env, env_kwargs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """Images that never feed the reward: the unused tail of the digits training split, CIFAR-10's test batch."""
    dataset = getattr(env.unwrapped, "dataset", None)
    if dataset == "digits":
        from nas_env.data import load_digits_data

        moved = sorted(k for k in ("val_size", "val_fraction", "split_seed") if env_kwargs.get(k) is not None)
        if moved:  # the test tail below is that of the default split only
            raise ValueError(f"tabulating digits needs the default train/validation split (the test images are its "
                             f"unused training tail); remove {', '.join(moved)} from --env-kwargs")
        full = load_digits_data()
        subset = env_kwargs.get("train_subset") or len(full.train_y)
        if subset > len(full.train_y) - DIGITS_TEST_SIZE:
            raise ValueError(f"train_subset={subset} leaves no test images: at most "
                             f"{len(full.train_y) - DIGITS_TEST_SIZE} (the last {DIGITS_TEST_SIZE} are the test set)")
        return full.train_x[-DIGITS_TEST_SIZE:], full.train_y[-DIGITS_TEST_SIZE:]
    if dataset == "cifar10":
        from nas_env.data.cifar10 import load_cifar10_test

        return load_cifar10_test(env_kwargs.get("data_root"), download=env_kwargs.get("download", True))
    raise ValueError(f"no test split is known for dataset {dataset!r} of {type(env.unwrapped).__name__}; "
                     f"tabulate supports digits and cifar10")


def tabulated_evaluator(env_id: str, env_kwargs: dict[str, Any]) -> tuple[gym.Env, TrainingEvaluator]:
    """The env and its training evaluator, reporting test accuracy on the env's held-out split."""
    env = gym.make(env_id, **env_kwargs)
    evaluator = env.unwrapped.evaluator
    if not isinstance(evaluator, TrainingEvaluator):
        raise ValueError(f"{env_id} with {env_kwargs} does not train its children (evaluator "
                         f"{type(evaluator).__name__}); a table is made with the training evaluator")
    evaluator.test_data = test_split(env, env_kwargs)
    return env, evaluator


def evaluate(env_id: str, env_kwargs: dict[str, Any], actions: list[int], seed: int) -> EvalResult:
    """Train one (architecture, seed) in this process (the data is loaded once per process)."""
    key = json.dumps([env_id, env_kwargs], sort_keys=True)
    if key not in _WORKER:
        env, evaluator = tabulated_evaluator(env_id, env_kwargs)
        _WORKER[key] = (env.unwrapped.space, evaluator)
    space, evaluator = _WORKER[key]
    return evaluator(space.decode(actions), seed)


def evaluate_one_thread(env_id: str, env_kwargs: dict[str, Any], actions: list[int], seed: int) -> EvalResult:
    """:func:`evaluate` in a worker of its own (a Ray task): one torch thread, so workers share cores fairly."""
    torch.set_num_threads(1)
    return evaluate(env_id, env_kwargs, actions, seed)


# --- the tool --------------------------------------------------------------------------------------
def seed_fingerprint(fingerprint: str, seed: int) -> str:
    """The store key of one seed's results: k seeds of one architecture are k rows."""
    return f"{fingerprint}/tabulate/seed={seed}"


def tabulate(args: TabulateArgs) -> Path:
    """Train what the store lacks, record it, and export the table; returns the table path."""
    check_counts(args, ("seeds", "max_archs", "num_envs"))
    check_one_of("backend", args.backend, BACKENDS)
    if args.env not in gym.registry:
        raise ValueError(f"--env {args.env!r} is not a registered environment")
    check_env_kwargs(args.env, args.env_kwargs)
    env, evaluator = tabulated_evaluator(args.env, args.env_kwargs)
    space = env.unwrapped.space
    specs = space.tokens()
    choices = [s.num_choices for s in specs]
    total = math.prod(choices)
    if total > args.max_archs:
        raise ValueError(f"the space of {args.env} with {args.env_kwargs} has {total:,} architectures, more than "
                         f"--max-archs {args.max_archs:,}: shrink the choice lists or the depth")
    fingerprint = evaluator.fingerprint()
    folder = RunFolder(Path(args.logdir) / f"tabulate__{args.name}", pictures=False)
    config = asdict(args)
    if folder.exists():
        saved = folder.read_config()
        if (saved["env"], saved["env_kwargs"], saved["seeds"]) != (args.env, args.env_kwargs, args.seeds):
            raise ValueError(f"{folder.path} tabulates {saved['env']} {saved['env_kwargs']} with {saved['seeds']} "
                             f"seeds; use another --name or --logdir for another space")
    else:
        folder.write_config(config)
    store = ResultStore(args.store or folder.path / "store.sqlite")
    done = {k: {row["arch"] for row in store.rows(seed_fingerprint(fingerprint, k))} for k in range(args.seeds)}
    todo = [(i, k) for i in range(total) for k in range(args.seeds)
            if space.decode(actions_of(i, choices)).to_json() not in done[k]]
    print(f"{args.name}: {total:,} architectures x {args.seeds} seeds; {len(todo):,} children to train "
          f"({total * args.seeds - len(todo):,} already in {store.path})")
    folder.start(config, total * args.seeds, f"tabulate {args.name}", args.progress,
                 resumed_children=total * args.seeds - len(todo), exact_replay=False)
    try:
        for i, k, result in _run(args, todo, choices):
            arch = space.decode(actions_of(i, choices))
            store.put(seed_fingerprint(fingerprint, k), arch, result, seed=k)
            info = {**result.metrics, "status": result.status, "seed": k, "arch": arch.to_json()}
            folder.record_child(ChildRecord(folder.written, result.reward, info))
    finally:
        folder.close()
    out = Path(args.out) if args.out else folder.path / f"{args.name}.json.gz"
    table = export(store, args, space, fingerprint, total, choices)
    print(f"table {out}: sha256 {table.save(out)}")
    print_description(describe(table))
    return out


def _run(args: TabulateArgs, todo: list[tuple[int, int]], choices: list[int]) -> Iterator[tuple[int, int, EvalResult]]:
    """Yield ``(arch index, seed, result)`` as children finish, in worker processes or Ray tasks."""
    if args.backend == "local" and args.num_envs == 1:
        for i, k in todo:
            yield i, k, evaluate(args.env, args.env_kwargs, actions_of(i, choices), k)
        return
    with contextlib.ExitStack() as stack:
        if args.backend == "ray":  # one Ray task per child, 4 queued per cluster CPU
            import ray

            from agents.experiment.distributed.driver import ray_session

            stack.enter_context(ray_session(RayConfig()))
            task = ray.remote(evaluate_one_thread).options(num_cpus=1)
            submit, window = (lambda *a: task.remote(*a).future()), 4 * int(ray.cluster_resources().get("CPU", 1))
        else:  # one torch thread per worker process
            pool = stack.enter_context(ProcessPoolExecutor(args.num_envs, mp_context=get_context("forkserver"),
                                                           initializer=torch.set_num_threads, initargs=(1,)))
            submit, window = partial(pool.submit, evaluate), 4 * args.num_envs
        pending: dict[Future, tuple[int, int]] = {}  # a few tasks queued per worker; results come as they finish
        queue = iter(todo)
        while True:
            for i, k in queue:
                pending[submit(args.env, args.env_kwargs, actions_of(i, choices), k)] = (i, k)
                if len(pending) >= window:
                    break
            if not pending:
                return
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                i, k = pending.pop(future)
                yield i, k, future.result()


def export(store: ResultStore, args: TabulateArgs, space: Any, fingerprint: str, total: int,
           choices: list[int]) -> BenchTable:
    """The table from the store's rows; a ValueError naming how many results are missing."""
    rows = [{row["arch"]: row for row in store.rows(seed_fingerprint(fingerprint, k))} for k in range(args.seeds)]
    archs = [space.decode(actions_of(i, choices)).to_json() for i in range(total)]
    missing = sum(a not in rows[k] for a in archs for k in range(args.seeds))
    if missing:
        raise ValueError(f"{missing} of {total * args.seeds} results are not in the store yet; rerun to train them")
    epochs = max(len(r["metrics"].get("val_acc_history", [])) for k in range(args.seeds) for r in rows[k].values())
    val = np.full((total, args.seeds, epochs), np.nan, dtype=np.float32)
    test, seconds = np.zeros((total, args.seeds), np.float32), np.zeros((total, args.seeds), np.float32)
    status = np.empty((total, args.seeds), dtype=object)
    params, flops = np.zeros(total, np.int64), np.zeros(total, np.int64)
    for i, a in enumerate(archs):
        for k in range(args.seeds):
            r = rows[k][a]
            history = r["metrics"].get("val_acc_history", [])
            val[i, k, : len(history)] = history
            test[i, k] = r["metrics"].get("test_acc", 0.0)
            seconds[i, k] = r["metrics"].get("train_seconds", 0.0)
            status[i, k] = r["status"]
            params[i], flops[i] = r["metrics"]["params"], r["metrics"]["flops"]
    tokens = [[s.name, s.layer, list(s.choices)] for s in space.tokens()]
    return BenchTable(args.name, args.env, args.env_kwargs, tokens, fingerprint, list(range(args.seeds)), epochs,
                      val, test, seconds, status.astype(str), params, flops)


def print_description(facts: dict[str, Any]) -> None:
    """The facts of :func:`~nas_env.bench.table.describe`, readable."""
    b, p = facts["best"], facts["percentiles"]
    print(f"table {facts['name']}: {facts['architectures']:,} architectures x {facts['seeds']} seeds, "
          f"{facts['epochs']} epochs (reward at epoch {facts['fidelity_epoch']}); "
          f"{facts['ok_share']:.1%} trained ok; mean train {facts['mean_train_seconds']:.2f} s a child")
    print(f"best: #{b['index']} actions {b['actions']}: mean val acc {b['mean_val_acc']:.4f}, "
          f"test acc {b['mean_test_acc']:.4f}")
    print("mean val acc percentiles: " + ", ".join(f"p{k} {v:.3f}" for k, v in p.items()))
    print(f"seed-to-seed SD {facts['seed_sd']:.4f} vs SD across architectures {facts['arch_sd']:.4f} "
          f"(ratio {facts['seed_to_arch_sd']:.2f}; want <= 0.33)")
    print(f"top 1% mean {facts['top1pct_mean']:.4f} vs median {facts['median']:.4f} "
          f"({facts['top1pct_minus_median_in_seed_sds']:.1f} seed SDs above)")
    print(f"Spearman val vs test {facts['spearman_val_test']:.3f}; epoch 1 vs last epoch "
          f"{facts['spearman_epoch1_last']:.3f}")


@cli_entry("nasrl-tabulate", interrupted="rerun the same command to continue (finished children are in the store)")
def main(argv: list[str]) -> None:
    """Console entry point ``nasrl-tabulate``."""
    args, _, _ = parse_dataclass(TabulateArgs, argv, prog="nasrl-tabulate", description=__doc__)
    if args.describe:
        print_description(describe(BenchTable.load(args.describe)))
        return
    tabulate(args)

if __name__ == "__main__":
    main()
