"""Compare search agents on one env and one child budget: a CSV, two PNG plots and a summary table.

Each (agent, seed) pair is an ordinary :func:`agents.runner.run_search` run; all of them share
one result store, so an architecture trained once under the same settings is served to every
later run instead of being trained again (its reward is the same either way).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from agents import AGENT_NAMES
from agents.runner import SearchArgs, run_search


@dataclass
class CompareArgs:
    env: str = "NASRL-Digits-v0"
    """Gymnasium id of the NAS environment"""
    agents: list[str] = field(default_factory=lambda: ["reinforce", "random"])
    """agents to compare"""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """seeds per agent"""
    episodes: int = 200
    """children per (agent, seed)"""
    children_per_update: int = 5
    """m for the agents that learn"""
    checkpoint_every: int = 50
    """children between points of the top-k plot (the paper's Figure 6 used 400)"""
    top_k: list[int] = field(default_factory=lambda: [1, 5, 15])
    """k values of the top-k plot"""
    out: str = "runs/compare"
    """output folder: CSV, PNGs, summary.json, and one run folder per (agent, seed)"""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """keyword arguments passed to gym.make"""
    progress: bool = True
    """show progress bars"""


def best_so_far(values: list[float]) -> list[float]:
    return list(np.maximum.accumulate(values)) if values else []


def top_k_mean(values: list[float], k: int, keys: list[str] | None = None) -> float:
    """Mean of the ``k`` best values; with ``keys`` (architectures), each distinct architecture counts once."""
    if keys is not None:
        best: dict[str, float] = {}
        for key, v in zip(keys, values, strict=True):
            best[key] = max(v, best.get(key, v))
        values = list(best.values())
    return float(np.mean(sorted(values, reverse=True)[:k])) if values else 0.0


def compare(args: CompareArgs) -> dict[str, Any]:
    """Run every (agent, seed), then write ``results.csv``, ``best_so_far.png``, ``top_k.png``, ``summary.json``."""
    for name in args.agents:
        if name not in AGENT_NAMES:
            raise ValueError(f"unknown agent {name!r}; allowed: {', '.join(AGENT_NAMES)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    store = out / "store.sqlite"
    overall = tqdm(total=len(args.agents) * len(args.seeds), unit="run", desc="comparison", position=0,
                   disable=not args.progress, dynamic_ncols=True)  # each run shows its own child bar below
    curves: dict[str, dict[int, list[float]]] = {}
    archs: dict[str, dict[int, list[str]]] = {}  # so that top-k counts distinct architectures
    for name in args.agents:
        for seed in args.seeds:
            run_name = f"{name}__{seed}"
            run_dir = out / run_name
            search = SearchArgs(env=args.env, agent=name, episodes=args.episodes, seed=seed,
                                children_per_update=args.children_per_update, logdir=str(out), run_name=run_name,
                                env_kwargs=args.env_kwargs, store=str(store), progress=args.progress)
            if (run_dir / "config.json").exists():  # an earlier, interrupted comparison: continue it
                search = SearchArgs(resume=str(run_dir), episodes=args.episodes, progress=args.progress)
            run_search(search)
            lines = (run_dir / "results.jsonl").read_text().splitlines()
            records = [json.loads(line) for line in lines][: args.episodes]
            curves.setdefault(name, {})[seed] = [r["val_acc"] for r in records]
            archs.setdefault(name, {})[seed] = [r["arch"] or f"invalid-{r['index']}" for r in records]
            overall.update(1)
            overall.set_postfix(agent=name, seed=seed, best=f"{max(curves[name][seed], default=0):.4f}")
    overall.close()

    with (out / "results.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["agent", "seed", "child", "reward", "best_so_far"])
        for name, per_seed in curves.items():
            for seed, vals in per_seed.items():
                for i, (v, b) in enumerate(zip(vals, best_so_far(vals), strict=True)):
                    w.writerow([name, seed, i, f"{v:.6f}", f"{b:.6f}"])

    summary: dict[str, Any] = {"env": args.env, "episodes": args.episodes, "seeds": args.seeds, "agents": {}}
    for name, per_seed in curves.items():
        summary["agents"][name] = {
            "best": {s: max(v) for s, v in per_seed.items()},
            "top5_mean": {s: top_k_mean(v, 5, archs[name][s]) for s, v in per_seed.items()},
            "distinct_architectures": {s: len(set(archs[name][s])) for s, v in per_seed.items()},
            "mean_last_50": {s: float(np.mean(v[-50:])) for s, v in per_seed.items()},
            "mean_all": {s: float(np.mean(v)) for s, v in per_seed.items()},
        }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    _plot(curves, archs, args, out)
    print_summary(summary)
    return summary


def print_summary(summary: dict[str, Any]) -> None:
    print(f"\n{summary['env']}: {summary['episodes']} children per run, seeds {summary['seeds']}")
    print("medians over seeds; top-5 mean over distinct architectures")
    print(f"{'agent':<14} {'best':>7} {'top-5 mean':>10} {'mean, last 50':>14} {'mean, all':>10} {'distinct':>9}")
    keys = ("best", "top5_mean", "mean_last_50", "mean_all", "distinct_architectures")
    for name, s in summary["agents"].items():
        med = {k: statistics.median(s[k].values()) for k in keys}
        print(f"{name:<14} {med['best']:>7.4f} {med['top5_mean']:>10.4f} {med['mean_last_50']:>14.4f} "
              f"{med['mean_all']:>10.4f} {med['distinct_architectures']:>9.0f}")


def _plot(curves: dict[str, dict[int, list[float]]], archs: dict[str, dict[int, list[str]]], args: CompareArgs,
          out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, per_seed in curves.items():
        n = min(len(v) for v in per_seed.values())
        runs = np.array([best_so_far(v[:n]) for v in per_seed.values()])
        x = np.arange(1, n + 1)
        ax.plot(x, np.median(runs, axis=0), label=f"{name} (median of {len(runs)} seeds)")
        ax.fill_between(x, runs.min(axis=0), runs.max(axis=0), alpha=0.2)
    title = f"{args.env} {json.dumps(args.env_kwargs)}" if args.env_kwargs else args.env
    ax.set(xlabel="children evaluated", ylabel="best validation accuracy so far", title=title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "best_so_far.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(9, 4.5))
    styles = ["-", "--", ":", "-."]
    for a, (name, per_seed) in enumerate(curves.items()):  # one colour per agent, one line style per k
        n = min(len(v) for v in per_seed.values())
        points = list(range(args.checkpoint_every, n + 1, args.checkpoint_every)) or [n]
        for j, k in enumerate(args.top_k):
            ys = [np.mean([top_k_mean(v[:p], k, archs[name][s][:p]) for s, v in per_seed.items()]) for p in points]
            ax.plot(points, ys, marker="o", color=f"C{a}", linestyle=styles[j % len(styles)], label=f"{name}, top {k}")
    ax.set(xlabel="children evaluated", ylabel="mean validation accuracy of the top k (mean over seeds)",
           title=f"{title}: the paper's Figure 6 view")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))  # outside: it would hide curves
    fig.tight_layout()
    fig.savefig(out / "top_k.png", dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    d = CompareArgs()
    p = argparse.ArgumentParser(prog="nasrl-compare", description=__doc__)
    p.add_argument("--env", default=d.env)
    p.add_argument("--agents", nargs="+", default=d.agents, choices=AGENT_NAMES)
    p.add_argument("--seeds", nargs="+", type=int, default=d.seeds)
    p.add_argument("--episodes", type=int, default=d.episodes)
    p.add_argument("--children-per-update", type=int, default=d.children_per_update)
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every)
    p.add_argument("--top-k", nargs="+", type=int, default=d.top_k)
    p.add_argument("--out", default=d.out)
    p.add_argument("--env-kwargs", type=json.loads, default={})
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    ns = p.parse_args(argv)
    if ns.episodes < 1 or ns.checkpoint_every < 1 or min(ns.top_k) < 1:
        p.error("--episodes, --checkpoint-every and --top-k must be at least 1")
    compare(CompareArgs(**vars(ns)))


if __name__ == "__main__":
    main()
