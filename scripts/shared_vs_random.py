"""A REINFORCE search with weight sharing against random search with real training, at equal wall-clock.

Run: ``python scripts/shared_vs_random.py --env NASRL-CIFAR10-v0 --episodes 300 --env-kwargs '{...}'``
(docs/weight-sharing.md gives the CIFAR-10 command and what it measured).

1. **shared**: ``nasrl-search --agent reinforce`` with ``evaluator="shared"`` (``--shared-config``) for
   ``--episodes`` children, timed end to end (T: data loading and warm-up included, so random search,
   whose budget counts from its first child, gets slightly more time).
2. **random**: ``nasrl-search --agent random`` with real training (``--random-env-kwargs`` on top of
   ``--env-kwargs``), stopped by ``--time-budget T``.
3. **retrain**: each search's ``best.json`` architecture trained from scratch (``--retrain-env-kwargs``)
   with ``--retrain-seeds`` seeds.

Prints a table and, as its last line, one JSON object (also written to ``<logdir>/<name>/report.json``).
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
from bench_common import with_cifar10_root  # scripts/ is on sys.path when this file runs

import nas_env  # noqa: F401  (registers the ids)
from agents.experiment.run_folder.records import BEST, RESULTS, read_results
from agents.experiment.search import SearchArgs, run_search
from nas_env.cli import parse_dataclass
from nas_env.evaluators import as_result
from nas_env.spaces.cnn import CNNArchitecture


@dataclass
class Args:
    env: str = "NASRL-CIFAR10-v0"
    """a CNN env id"""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """JSON keywords of the env for every step: the space and the data (subsets, batch size)"""
    episodes: int = 300
    """children of the weight-sharing search"""
    shared_config: dict[str, Any] = field(default_factory=lambda: {"shared_steps": 2, "warmup_steps": 100})
    """JSON SharedConfig of the weight-sharing search"""
    agent_kwargs: dict[str, Any] = field(default_factory=dict)
    """JSON keywords of the REINFORCE agent"""
    random_env_kwargs: dict[str, Any] = field(default_factory=lambda: {"epochs": 1})
    """JSON keywords on top of --env-kwargs for random search's from-scratch children"""
    retrain_env_kwargs: dict[str, Any] = field(default_factory=lambda: {"epochs": 3})
    """JSON keywords on top of --env-kwargs for retraining both best architectures"""
    retrain_seeds: int = 2
    """seeds of each retraining"""
    seed: int = 0
    """seed of both searches"""
    data_root: str = ""
    """CIFAR-10 folder (empty: $NASRL_DATA_ROOT, ~/.cache/nasrl/data, or the shared copy, converted)"""
    logdir: str = "runs"
    """parent of the output folder"""
    name: str = "shared_vs_random"
    """output folder: <logdir>/<name>/{shared,random,report.json}"""


def retrain(env_id: str, env_kwargs: dict[str, Any], arch_json: str, seeds: int) -> dict[str, Any]:
    """Train ``arch_json`` from scratch ``seeds`` times with the env's own training evaluator."""
    env = gym.make(env_id, evaluator="train", **env_kwargs).unwrapped
    arch = CNNArchitecture.from_json(arch_json)
    runs = []
    for seed in range(seeds):
        start = time.perf_counter()
        result = as_result(env.evaluator(arch, seed))
        runs.append({"seed": seed, "status": result.status, "val_acc": result.metrics.get("val_acc"),
                     "test_acc": result.metrics.get("test_acc"), "seconds": round(time.perf_counter() - start, 1)})
    env.close()
    ok = [r for r in runs if r["status"] == "ok"]
    mean = {key: statistics.fmean(r[key] for r in ok) if ok and ok[0][key] is not None else None
            for key in ("val_acc", "test_acc")}
    return {"runs": runs, **{f"mean_{k}": v for k, v in mean.items()}}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args, _, parser = parse_dataclass(Args, argv, prog="shared_vs_random.py", description=__doc__)
    if args.episodes < 1 or args.retrain_seeds < 1:
        parser.error(f"--episodes and --retrain-seeds must be at least 1, got {args.episodes}, {args.retrain_seeds}")
    out = Path(args.logdir) / args.name
    if out.exists():
        parser.error(f"{out} exists: pick another --name")
    with tempfile.TemporaryDirectory() as scratch:
        common = with_cifar10_root(args.env, args.env_kwargs, args.data_root, Path(scratch))

        def search(**search_args: Any) -> tuple[Path, float]:  # its run folder and its wall-clock, end to end
            start = time.perf_counter()
            run = run_search(SearchArgs(env=args.env, seed=args.seed, logdir=str(out), progress=False, **search_args))
            return run, time.perf_counter() - start

        shared_dir, budget = search(agent="reinforce", episodes=args.episodes, run_name="shared",
                                    agent_kwargs=args.agent_kwargs,
                                    env_kwargs={**common, "evaluator": "shared", "shared_config": args.shared_config})
        random_dir, random_seconds = search(agent="random", episodes=1_000_000, time_budget=budget, run_name="random",
                                            env_kwargs={**common, **args.random_env_kwargs})

        report: dict[str, Any] = {"env": args.env, "env_kwargs": {k: v for k, v in common.items() if k != "data_root"},
                                  "shared_config": args.shared_config, "random_env_kwargs": args.random_env_kwargs,
                                  "retrain_env_kwargs": args.retrain_env_kwargs, "searches": {}}
        for label, folder, seconds in (("shared", shared_dir, budget), ("random", random_dir, random_seconds)):
            entry: dict[str, Any] = {"children": len(read_results(folder / RESULTS)), "seconds": round(seconds, 1),
                                     "best_arch": None, "best_search_reward": None, "retrained": None}
            if (folder / BEST).is_file():  # no best.json: no child of this search trained successfully
                best = json.loads((folder / BEST).read_text())
                entry |= {"best_arch": best["arch"], "best_search_reward": best["mean_reward"],
                          "retrained": retrain(args.env, {**common, **args.retrain_env_kwargs}, best["arch"],
                                               args.retrain_seeds)}
            report["searches"][label] = entry
    lines = ["| search | children | wall-clock (s) | best's search reward | retrained val acc | retrained test acc |",
             "|---|---|---|---|---|---|"]  # test: only where the env's evaluator holds a test split
    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    for label, s in report["searches"].items():
        r = s["retrained"] or {}
        lines.append(f"| {label} | {s['children']} | {s['seconds']:.0f} | {cell(s['best_search_reward'])} | "
                     f"{cell(r.get('mean_val_acc'))} | {cell(r.get('mean_test_acc'))} |")
    print("\n".join(lines))
    line = json.dumps(report)
    (out / "report.json").write_text(line + "\n")
    print(line)
    return report


if __name__ == "__main__":
    main()
