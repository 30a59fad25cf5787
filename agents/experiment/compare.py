"""Compare search agents on one env and one child budget: a CSV, two PNG plots and a summary table.

Each (agent, seed) pair is an ordinary :func:`agents.experiment.search.run_search` run; all of them share
one result store, so an architecture met again gets its stored result. Children are ranked by their reward
(as the runner's mean-reward incumbent does); what is plotted and reported is the env's headline metric of
the children so ranked (``score_key``: the validation perplexity of the language-model envs, lower is
better; the validation accuracy of the others).
"""

from __future__ import annotations

import csv
import json
import math
import statistics
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from agents import AGENT_NAMES
from agents.experiment.keywords import with_variants
from agents.experiment.run_folder import can_be_best, score_text
from agents.experiment.run_folder.records import score_lower_is_better, score_of
from agents.experiment.search import SearchArgs, check_counts, run_search
from nas_env.checks import check_int
from nas_env.cli import cli_entry, parse_dataclass
from nas_env.draw import draw_architecture


@dataclass
class CompareArgs:
    """Arguments of ``nasrl-compare`` (one docstring per field)."""

    env: str = "NASRL-Digits-v1"
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
    variants: dict[str, Any] = field(default_factory=dict)
    """extra agent labels for --agents (JSON): {"label": {"agent": "reinforce", "kwargs": {"preset": "paper"}}}"""
    progress: bool = True
    """show progress bars"""


@dataclass(frozen=True)
class Metric:
    """The headline metric reported for each child (ranking is always by reward)."""

    key: str  # key of a results.jsonl record
    name: str  # what it is, for axis labels and the printed table
    lower_is_better: bool

    @classmethod
    def named(cls, key: str, lower_is_better: bool) -> Metric:
        """The metric of record key ``key``, with its name in words where it is known."""
        return cls(key, METRIC_NAMES.get(key, key), lower_is_better)

    @property
    def direction(self) -> str:
        return "lower is better" if self.lower_is_better else "higher is better"


METRIC_NAMES = {"val_acc": "validation accuracy", "val_ppl": "validation perplexity"}
ACCURACY = Metric.named("val_acc", lower_is_better=False)


def metric_for(records: list[dict[str, Any]]) -> Metric:
    """The headline metric the records name (run_folder's :func:`score_of`); accuracy when there are none."""
    if not records:
        return ACCURACY
    return Metric.named(score_of(records[0])[0], score_lower_is_better(records[0]))


def _score(record: dict[str, Any], metric: Metric) -> float:
    value = record.get(metric.key)
    return float(value) if value is not None else math.nan  # NaN: no perplexity (diverged, invalid)


def best_so_far(values: list[float]) -> list[float]:
    return list(np.maximum.accumulate(values)) if values else []


def score_of_best_so_far(rewards: list[float], scores: list[float]) -> list[float]:
    """After each child, the score of the highest-reward child so far (the first of equal rewards)."""
    out, best_reward, best_score = [], -math.inf, math.nan
    for r, s in zip(rewards, scores, strict=True):
        if r > best_reward:
            best_reward, best_score = r, s
        out.append(best_score)
    return out


def top_k_mean(values: list[float], k: int, keys: list[str] | None = None, scores: list[float] | None = None) -> float:
    """Mean of the ``k`` best values; with ``keys`` (architectures), each distinct architecture counts once.

    With ``scores``, the children are still ranked by ``values`` (rewards) but their scores are averaged
    (NaN scores left out; NaN when all are).
    """
    pairs = list(zip(values, values if scores is None else scores, strict=True))
    if keys is not None:
        best: dict[str, tuple[float, float]] = {}
        for key, pair in zip(keys, pairs, strict=True):
            if key not in best or pair[0] > best[key][0]:
                best[key] = pair
        pairs = list(best.values())
    if not pairs:
        return 0.0
    chosen = [s for _, s in sorted(pairs, key=lambda p: p[0], reverse=True)[:k] if not math.isnan(s)]
    return float(np.mean(chosen)) if chosen else math.nan


def _nan_mean(values: list[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return float(np.mean(kept)) if kept else math.nan


def _json_number(value: float) -> float | None:
    return None if math.isnan(value) else value  # JSON has no NaN


def compare(args: CompareArgs) -> dict[str, Any]:
    """Run every (agent, seed), then write ``results.csv``, ``best_so_far.png``, ``top_k.png``, ``summary.json``
    and ``best_<agent>.png`` (a picture of each agent's best architecture)."""
    specs = with_variants({name: (name, {}) for name in AGENT_NAMES}, args.variants)
    for name in args.agents:
        if name not in specs:
            raise ValueError(f"unknown agent {name!r}; allowed: {', '.join(specs)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    store = out / "store.sqlite"
    overall = tqdm(total=len(args.agents) * len(args.seeds), unit="run", desc="comparison", position=0,
                   disable=not args.progress, dynamic_ncols=True)  # each run shows its own child bar below
    records: dict[str, dict[int, list[dict[str, Any]]]] = {}
    for name in args.agents:
        for seed in args.seeds:
            run_name = f"{name}__{seed}"
            run_dir = out / run_name
            search = SearchArgs(env=args.env, agent=specs[name][0], agent_kwargs=specs[name][1],
                                episodes=args.episodes, seed=seed,
                                children_per_update=args.children_per_update, logdir=str(out), run_name=run_name,
                                env_kwargs=args.env_kwargs, store=str(store), progress=args.progress)
            if (run_dir / "config.json").exists():  # an earlier, interrupted comparison: continue it
                search = SearchArgs(resume=str(run_dir), episodes=args.episodes, progress=args.progress)
            run_search(search)
            lines = (run_dir / "results.jsonl").read_text().splitlines()
            run = records.setdefault(name, {})[seed] = [json.loads(line) for line in lines][: args.episodes]
            overall.update(1)
            run_metric = metric_for(run)
            best = score_of_best_so_far([float(r["reward"]) for r in run], [_score(r, run_metric) for r in run])
            overall.set_postfix(agent=name, seed=seed, best=f"{run_metric.key} {best[-1] if best else 0:.4f}")
    overall.close()
    metric = metric_for([r for per_seed in records.values() for run in per_seed.values() for r in run])
    # rewards rank the children; archs let top-k count distinct architectures
    curves = {n: {s: [float(r["reward"]) for r in run] for s, run in ps.items()} for n, ps in records.items()}
    archs = {n: {s: [r["arch"] or f"invalid-{r['index']}" for r in run] for s, run in ps.items()}
             for n, ps in records.items()}
    scores = {n: {s: [_score(r, metric) for r in run] for s, run in ps.items()} for n, ps in records.items()}

    with (out / "results.csv").open("w", newline="") as f:
        w = csv.writer(f)
        # The reward ranks the children. An accuracy env's reward is (by default) the accuracy itself; where the
        # metric differs from the reward (a perplexity, a cubed or cost-aware reward) it gets its own columns:
        # the child's, and that of the best child so far (empty: no value, e.g. a diverged language model).
        own_columns = any(v != s for n, ps in curves.items() for seed, vs in ps.items()
                          for v, s in zip(vs, scores[n][seed], strict=True))
        extra = [metric.key, f"best_{metric.key}_so_far"] if own_columns else []
        w.writerow(["agent", "seed", "child", "reward", "best_so_far", *extra])
        for name, per_seed in curves.items():
            for seed, vals in per_seed.items():
                sc = scores[name][seed]
                rows = zip(vals, best_so_far(vals), sc, score_of_best_so_far(vals, sc), strict=True)
                for i, (v, b, s, bs) in enumerate(rows):
                    more = ["" if math.isnan(x) else f"{x:.6f}" for x in (s, bs)] if own_columns else []
                    w.writerow([name, seed, i, f"{v:.8g}", f"{b:.8g}", *more])  # c / ppl^2 is tiny

    summary: dict[str, Any] = {"env": args.env, "episodes": args.episodes, "seeds": args.seeds,
                               "metric": metric.key, "lower_is_better": metric.lower_is_better, "agents": {}}
    for name, per_seed in curves.items():
        sc, ar = scores[name], archs[name]
        summary["agents"][name] = {  # "best": the metric of the highest-reward child; top-5: ranked by reward
            "best": {s: _json_number(score_of_best_so_far(v, sc[s])[-1]) for s, v in per_seed.items()},
            "best_reward": {s: max(v) for s, v in per_seed.items()},
            "top5_mean": {s: _json_number(top_k_mean(v, 5, ar[s], sc[s])) for s, v in per_seed.items()},
            "distinct_architectures": {s: len(set(ar[s])) for s, v in per_seed.items()},
            "mean_last_50": {s: _json_number(_nan_mean(sc[s][-50:])) for s in per_seed},
            "mean_all": {s: _json_number(_nan_mean(sc[s])) for s in per_seed},
        }
    for name in records:  # a picture of each agent's best architecture (highest reward over its seeds)
        best = max((r for run in records[name].values() for r in run if can_be_best(r)),
                   key=lambda r: r["reward"], default=None)
        if best is not None:
            path = out / f"best_{name}.png"
            draw_architecture(best["arch"], path, caption=f"{name}: child {best['index']}, {score_text(best)}")
            summary["agents"][name]["best_picture"] = path.name
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    _plot(curves, scores, archs, args, out, metric)
    print_summary(summary)
    return summary


def print_summary(summary: dict[str, Any]) -> None:
    metric = Metric.named(summary["metric"], summary["lower_is_better"])
    print(f"\n{summary['env']}: {summary['episodes']} children per run, seeds {summary['seeds']}")
    print(f"{metric.name} ({metric.direction}), medians over seeds; best and top 5 by reward, "
          "top-5 mean over distinct architectures")
    print(f"{'agent':<14} {'best':>7} {'top-5 mean':>10} {'mean, last 50':>14} {'mean, all':>10} {'distinct':>9}")
    keys = ("best", "top5_mean", "mean_last_50", "mean_all", "distinct_architectures")
    for name, s in summary["agents"].items():
        kept = {k: [v for v in s[k].values() if v is not None] for k in keys}
        med = {k: statistics.median(values) if values else math.nan for k, values in kept.items()}
        f = ".2f" if metric.lower_is_better else ".4f"  # perplexities are in the tens to thousands
        print(f"{name:<14} {med['best']:>7{f}} {med['top5_mean']:>10{f}} {med['mean_last_50']:>14{f}} "
              f"{med['mean_all']:>10{f}} {med['distinct_architectures']:>9.0f}")


def _plot(curves: dict[str, dict[int, list[float]]], scores: dict[str, dict[int, list[float]]],
          archs: dict[str, dict[int, list[str]]], args: CompareArgs, out: Path, metric: Metric = ACCURACY) -> None:
    from matplotlib.figure import Figure  # files only, no display

    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for name, per_seed in curves.items():
        n = min(len(v) for v in per_seed.values())
        runs = np.array([score_of_best_so_far(v[:n], scores[name][s][:n]) for s, v in per_seed.items()])
        x = np.arange(1, n + 1)
        with warnings.catch_warnings():  # NaN (no perplexity yet) in every seed: a gap in the curve
            warnings.simplefilter("ignore", RuntimeWarning)
            ax.plot(x, np.nanmedian(runs, axis=0), label=f"{name} (median of {len(runs)} seeds)")
            ax.fill_between(x, np.nanmin(runs, axis=0), np.nanmax(runs, axis=0), alpha=0.2)
    title = f"{args.env} {json.dumps(args.env_kwargs)}" if args.env_kwargs else args.env
    ylabel = "best validation accuracy so far" if metric == ACCURACY else \
        f"{metric.name} of the best child so far ({metric.direction})"
    ax.set(xlabel="children evaluated", ylabel=ylabel, title=title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "best_so_far.png", dpi=120)

    fig = Figure(figsize=(9, 4.5))
    ax = fig.subplots()
    styles = ["-", "--", ":", "-."]
    for a, (name, per_seed) in enumerate(curves.items()):  # one colour per agent, one line style per k
        n = min(len(v) for v in per_seed.values())
        points = list(range(args.checkpoint_every, n + 1, args.checkpoint_every)) or [n]
        for j, k in enumerate(args.top_k):
            ys = [_nan_mean([top_k_mean(v[:p], k, archs[name][s][:p], scores[name][s][:p])
                             for s, v in per_seed.items()]) for p in points]
            ax.plot(points, ys, marker="o", color=f"C{a}", linestyle=styles[j % len(styles)], label=f"{name}, top {k}")
    ylabel = "mean validation accuracy of the top k (mean over seeds)" if metric == ACCURACY else \
        f"mean {metric.name} of the top k by reward\n(mean over seeds; {metric.direction})"
    ax.set(xlabel="children evaluated", ylabel=ylabel, title=f"{title}: the paper's Figure 6 view")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))  # outside: it would hide curves
    fig.tight_layout()
    fig.savefig(out / "top_k.png", dpi=120)


@cli_entry("nasrl-compare")
def main(argv: list[str]) -> None:
    """Console entry point ``nasrl-compare``."""
    args, _, _ = parse_dataclass(CompareArgs, argv, prog="nasrl-compare", description=__doc__)
    check_counts(args, ("episodes", "checkpoint_every"))
    for k in args.top_k:
        check_int("--top-k", k, minimum=1)
    compare(args)

if __name__ == "__main__":
    main()
