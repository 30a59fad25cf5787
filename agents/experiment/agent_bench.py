"""``nasrl-agent-bench``: compare search agents on a NASRL-Bench table over many seeds, with significance tests.

Each (agent, seed) searches ``--children`` children on ``NASRL-Bench-<table>`` (``--table digits`` or a
.json.gz path), or on NAS-Bench-201 (``--table nb201-cifar10``, ``nb201-cifar100``, ``nb201-imagenet16``).
The *incumbent* after n children (``--incumbent``, :mod:`agents.experiment.incumbent`) is judged by the
table's truth (regret and test accuracy), against children and simulated wall-clock; the outputs in
``--out`` and the built-in labels (:data:`AGENT_SPECS`, or your own through ``--variants``): docs/bench.md.
"""

from __future__ import annotations

import csv
import json
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from agents.experiment.incumbent import INCUMBENT_RULES, Incumbent
from agents.experiment.keywords import check_agent_kwargs, with_variants
from agents.experiment.search import check_counts
from nas_env.cli import cli_entry, parse_dataclass

ROLLOUT = "rollout"  # a PPO batch_size of one minibatch per rollout (m children x the episode's tokens)
# label -> (agent name, its keyword arguments): what every benchmark of this project compares. The PPO agents
# learn from each rollout in one minibatch for 4 epochs, not the agent's default of one minibatch per episode
# for SB3's 10: 4 gradient steps per update instead of 50, which makes a run of 1,000 children 3x faster here
# (15 s against 48 s; SB3's per-step overhead is most of the rest).
AGENT_SPECS: dict[str, tuple[str, dict[str, Any]]] = {
    "reinforce-paper": ("reinforce", {"preset": "paper"}),
    "reinforce": ("reinforce", {}),
    "random": ("random", {}),
    "evolution": ("evolution", {"population_size": 100, "sample_size": 25}),  # Real et al. 2019
    "maskable_ppo": ("maskable_ppo", {"batch_size": ROLLOUT, "n_epochs": 4}),
    "ppo": ("ppo", {"invalid_action": "wrap", "batch_size": ROLLOUT, "n_epochs": 4}),
    # REA as NAS-Bench-201 runs it: population 10, tournament 3, one child at a time, one-edge mutations
    "rea": ("evolution", {"population_size": 10, "sample_size": 3, "children_per_update": 1}),
    # Optuna's TPE, sequential; the independent one (Optuna 4's default sampler) and the multivariate one
    "tpe": ("tpe", {"multivariate": False, "children_per_update": 1}),
    "tpe-multivariate": ("tpe", {"multivariate": True, "children_per_update": 1}),
}
DIGITS_AGENTS = ("reinforce-paper", "reinforce", "random", "evolution", "maskable_ppo", "ppo")
NB201_AGENTS = ("random", "rea", "evolution", "tpe", "tpe-multivariate", "reinforce", "reinforce-paper",
                "maskable_ppo")
CHECKPOINTS = (50, 100, 200, 500, 1000)
NB201_BUDGET = 12_000.0  # NAS-Bench-201's search budget in simulated seconds (its 12-epoch protocol)
NB201_SECONDS = (NB201_BUDGET, 2 * NB201_BUDGET, 4 * NB201_BUDGET)
BASELINE = "random"
STRONG_BASELINE = "evolution"  # the non-RL baseline NAS benchmarks report: a second p-value against it
# every label a p-value is computed against when it ran (rows hold p_vs_<label>, None when it did not)
BASELINES = (BASELINE, STRONG_BASELINE, "rea", "tpe", "tpe-multivariate")
NB201_PREFIX = "nb201-"
NB201_ENVS = {"cifar10": "NASRL-Bench201-CIFAR10-v0", "cifar100": "NASRL-Bench201-CIFAR100-v0",
              "imagenet16": "NASRL-Bench201-ImageNet16-v0"}


@dataclass
class AgentBenchArgs:
    """Arguments of ``nasrl-agent-bench`` (one docstring per field)."""

    table: str = "digits"
    """NASRL-Bench table: a shipped name or a .json.gz path, or NAS-Bench-201's nb201-cifar10, nb201-cifar100,
    nb201-imagenet16"""
    agents: list[str] = field(default_factory=list)
    """agent labels: built-in ones and those of --variants (default: the table's set, see DIGITS_AGENTS and
    NB201_AGENTS)"""
    variants: dict[str, Any] = field(default_factory=dict)
    """extra labels (JSON): {"label": {"agent": "reinforce", "kwargs": {...}}}"""
    seeds: int = 20
    """seeds per agent (first_seed .. first_seed + seeds - 1)"""
    first_seed: int = 0
    """the first seed: a study picks settings on some seeds, a confirmation run uses fresh ones"""
    children: int = 1000
    """children per run"""
    children_per_update: int = 5
    """m for the agents that learn (their kwargs may override it)"""
    noise: str = "seed"
    """rewards: "seed" (one trained seed's accuracy, chosen by the episode seed) or "mean" (the seed mean)"""
    epochs: int = 0
    """fidelity: the epoch of the stored histories used as reward (0: the table's last)"""
    seconds: list[float] = field(default_factory=list)
    """checkpoints in simulated training seconds (default: none; NAS-Bench-201: 12000, 24000, 48000)"""
    incumbent: str = "mean"
    """the incumbent rule (agents.experiment.incumbent):
    mean (an architecture's mean reward) or max (best single reward)"""
    workers: int = 2
    """processes running (agent, seed) pairs at once, one torch thread each"""
    out: str = "runs/agent_bench"
    """output folder"""


@dataclass(frozen=True)
class BenchSource:
    """What the bench needs of a table: the env to search, the truth to judge by, its units and defaults."""

    name: str
    env_id: str
    env_kwargs: dict[str, Any]  # besides noise (and epochs for NASRL-Bench tables)
    mean_val: np.ndarray  # per table row, in the unit regrets are reported in
    mean_test: np.ndarray  # NaN where the table has no test accuracy
    unit: str  # what a regret of 1 is
    seconds: tuple[float, ...]  # default checkpoints in simulated seconds
    agents: tuple[str, ...]  # default labels
    has_epochs: bool  # whether --epochs (a fidelity) applies


def open_source(table: str, epochs: int = 0) -> BenchSource:
    """The bench source of ``--table``: a NASRL-Bench table (name or path) or ``nb201-<dataset>``."""
    if table.startswith(NB201_PREFIX):
        from nas_env.bench.nb201 import load_table

        dataset = table[len(NB201_PREFIX):]
        if dataset not in NB201_ENVS:
            raise ValueError(f"--table {table!r}: NAS-Bench-201 tables are "
                             f"{', '.join(NB201_PREFIX + d for d in NB201_ENVS)}")
        if epochs:
            raise ValueError(f"--epochs {epochs}: NAS-Bench-201's data holds only its 200-epoch results (use 0)")
        t = load_table(dataset)
        return BenchSource(t.name, NB201_ENVS[dataset], {"dataset": dataset}, 100.0 * t.mean_val(),
                           np.full(t.num_archs, np.nan), "points of validation accuracy (percent)", NB201_SECONDS,
                           NB201_AGENTS, has_epochs=False)
    from nas_env.bench.table import BenchTable

    t = _TABLES[table] if table in _TABLES else BenchTable.load(table)
    return BenchSource(t.name, "NASRL-Bench-Digits-v0", {"table": t}, t.mean_val(epochs or None), t.mean_test(),
                       "validation accuracy (fraction)", (), DIGITS_AGENTS, has_epochs=True)


def resolve_agents(args: AgentBenchArgs, defaults: tuple[str, ...] = DIGITS_AGENTS
                   ) -> dict[str, tuple[str, dict[str, Any]]]:
    """label -> (agent, kwargs) for the requested labels (none: ``defaults``); a ValueError names an unknown one."""
    specs = with_variants(AGENT_SPECS, args.variants)
    labels = list(args.agents) or list(defaults)
    unknown = [a for a in labels if a not in specs]
    if unknown:
        raise ValueError(f"--agents {unknown} are not known labels: {', '.join(specs)} (or add --variants)")
    chosen = {label: specs[label] for label in labels}
    for label, (agent, kwargs) in chosen.items():  # checked here: in a worker process the error would come late
        kwargs = {k: v for k, v in kwargs.items() if k != "invalid_action"}  # an env setting (see run_one)
        check_agent_kwargs(agent, kwargs, flag=f"--variants {label!r} kwargs", reserved={"seed": "--first-seed"})
    return chosen


# --- one run (in a worker process) ----------------------------------------------------------------
_TABLES: dict[str, Any] = {}


def run_one(table: str, label: str, agent_name: str, kwargs: dict[str, Any], seed: int, children: int, m: int,
            noise: str, epochs: int) -> dict[str, Any]:
    """One search on the table env; returns per child its table row, reward and simulated seconds."""
    import gymnasium as gym
    import torch

    import nas_env  # noqa: F401
    from agents import make_agent
    from nas_env.bench.table import BenchTable

    torch.set_num_threads(1)
    torch.distributions.Distribution.set_default_validate_args(False)  # SB3's per-step argument checks: speed only
    if not table.startswith(NB201_PREFIX) and table not in _TABLES:
        _TABLES[table] = BenchTable.load(table)  # once per worker process (NAS-Bench-201's loader caches itself)
    source = open_source(table, epochs)
    kwargs = dict(kwargs)
    env_kwargs = {**source.env_kwargs, "noise": noise, **({"epochs": epochs or None} if source.has_epochs else {})}
    if "invalid_action" in kwargs:  # an env setting a mask-blind agent needs (plain PPO: wrap invalid actions)
        env_kwargs["invalid_action"] = kwargs.pop("invalid_action")
    envs = gym.make_vec(source.env_id, num_envs=1, vectorization_mode="sync", **env_kwargs)
    if kwargs.get("batch_size") == ROLLOUT:
        kwargs["batch_size"] = kwargs.get(
            "n_steps", kwargs.get("children_per_update", m) * len(envs.envs[0].get_wrapper_attr("token_specs")))
    agent = make_agent(agent_name, seed=seed, **{"children_per_update": m, **kwargs})
    rows, rewards, seconds, ok = [], [], [], []

    def on_child(child: Any) -> None:
        info = child.info
        rows.append(int(info.get("table_index", -1)))
        rewards.append(float(child.reward))
        seconds.append(float(info.get("train_seconds") or 0.0))
        ok.append(info.get("status") == "ok")

    start = time.perf_counter()
    agent.run(envs, children, on_child)
    envs.close()
    return {"label": label, "seed": seed, "rows": rows, "rewards": rewards, "seconds": seconds, "ok": ok,
            "wall_seconds": time.perf_counter() - start}


# --- analysis -----------------------------------------------------------------------------------
def incumbent_curves(run: dict[str, Any], mean_val: np.ndarray, mean_test: np.ndarray,
                     best_mean: float, rule: str = "mean") -> tuple[np.ndarray, np.ndarray]:
    """Per child n: the regret and the mean test accuracy of the incumbent of children 1..n under ``rule``."""
    regret = np.full(len(run["rows"]), np.nan)
    test = np.full(len(run["rows"]), np.nan)
    incumbent = Incumbent(rule)
    for n, (r, reward, ok) in enumerate(zip(run["rows"], run["rewards"], run["ok"], strict=True)):
        if ok and r >= 0:
            incumbent.add(r, reward)
        if incumbent.key is not None:
            regret[n], test[n] = best_mean - mean_val[incumbent.key], mean_test[incumbent.key]
    return regret, test


def at_times(regret: np.ndarray, seconds: list[float], grid: np.ndarray) -> np.ndarray:
    """The incumbent's regret at each simulated time of ``grid`` (NaN before the first child finished)."""
    finished = np.cumsum(seconds)
    idx = np.searchsorted(finished, grid, side="right") - 1
    return np.where(idx >= 0, regret[np.clip(idx, 0, None)], np.nan)


def bands(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Median and interquartile band over runs (axis 0), ignoring NaN."""
    with warnings.catch_warnings():  # all-NaN columns (no child finished yet at that time) stay NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        return tuple(np.nanpercentile(values, q, axis=0) for q in (50, 25, 75))  # type: ignore[return-value]


def mann_whitney_less(a: np.ndarray, b: np.ndarray) -> float:
    """One-sided Mann-Whitney U p-value of "a tends to be below b"."""
    from scipy.stats import mannwhitneyu

    return float(mannwhitneyu(a, b, alternative="less").pvalue)


def benchmark(args: AgentBenchArgs) -> dict[str, Any]:
    """Run every (agent, seed), write the outputs, return the summary."""
    source = open_source(args.table, args.epochs)
    agents = resolve_agents(args, source.agents)
    check_counts(args, ("seeds", "children", "children_per_update", "workers"))
    if args.incumbent not in INCUMBENT_RULES:
        raise ValueError(f"--incumbent must be one of {', '.join(INCUMBENT_RULES)}, got {args.incumbent!r}")
    if args.noise not in ("seed", "mean"):
        raise ValueError(f"--noise must be seed or mean, got {args.noise!r}")
    seconds = [float(v) for v in args.seconds] if args.seconds else list(source.seconds)
    if any(not v > 0 for v in seconds):
        raise ValueError(f"--seconds must be positive simulated seconds, got {args.seconds}")
    mean_val, mean_test = source.mean_val, source.mean_test
    best_mean = float(mean_val.max())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(args.table, label, name, kw, seed, args.children, args.children_per_update, args.noise, args.epochs)
            for label, (name, kw) in agents.items() for seed in range(args.first_seed, args.first_seed + args.seeds)]
    start = time.perf_counter()
    runs: list[dict[str, Any]] = []
    with ProcessPoolExecutor(args.workers, mp_context=get_context("forkserver")) as pool, \
            (out / "runs.jsonl").open("w") as log:
        for run in pool.map(run_one, *zip(*jobs, strict=True), chunksize=1):
            regret, test = incumbent_curves(run, mean_val, mean_test, best_mean, args.incumbent)
            run["regret"], run["test"] = regret, test
            log.write(json.dumps({"label": run["label"], "seed": run["seed"], "wall_seconds": run["wall_seconds"],
                                  "regret": [None if np.isnan(v) else round(float(v), 5) for v in regret],
                                  "rows": run["rows"], "rewards": [round(v, 5) for v in run["rewards"]],
                                  "ok": run["ok"]}) + "\n")
            log.flush()  # results are written as they are made
            runs.append(run)
    elapsed = time.perf_counter() - start

    by_label = {label: [r for r in runs if r["label"] == label] for label in agents}
    regrets = {label: np.stack([r["regret"] for r in rs]) for label, rs in by_label.items()}
    tests = {label: np.stack([r["test"] for r in rs]) for label, rs in by_label.items()}
    total_time = max(float(np.sum(r["seconds"])) for r in runs)
    first_time = min(float(r["seconds"][0]) for r in runs if r["seconds"])
    grid = np.geomspace(max(first_time, 1e-3), total_time, 200)
    timed = {label: np.stack([at_times(r["regret"], r["seconds"], grid) for r in rs]) for label, rs in by_label.items()}
    _write_curves(out, regrets, tests, timed, grid)
    checkpoints = [c for c in CHECKPOINTS if c <= args.children] or [args.children]
    rows = _table_rows(regrets, tests, checkpoints)
    time_rows = _time_rows(by_label, seconds)
    _write_table(out, rows, checkpoints, args, source.unit, time_rows, seconds)
    _plot(out, regrets, timed, grid, source.name, source.unit, seconds)
    summary = {"args": asdict(args), "table": source.name, "table_best_mean_val": best_mean, "unit": source.unit,
               "seconds": elapsed, "rows": rows, "time_rows": time_rows,
               "agents": {k: [v[0], v[1]] for k, v in agents.items()}}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print((out / "table.md").read_text())
    print(f"{len(runs)} runs of {args.children} children in {elapsed:.1f} s with {args.workers} workers; "
          f"outputs in {out}")
    return summary


def _quartiles(values: np.ndarray) -> dict[str, float]:
    """The median and quartiles of regrets ``values``, ignoring NaN."""
    return {"median_regret": float(np.nanmedian(values)), "q25_regret": float(np.nanpercentile(values, 25)),
            "q75_regret": float(np.nanpercentile(values, 75))}


def _table_rows(regrets: dict[str, np.ndarray], tests: dict[str, np.ndarray],
                checkpoints: list[int]) -> list[dict[str, Any]]:
    rows = []
    for label, reg in regrets.items():
        for c in checkpoints:
            r, t = reg[:, c - 1], tests[label][:, c - 1]
            p = _p_values(label, r, {base: regrets[base][:, c - 1] for base in BASELINES if base in regrets})
            test = float(np.nanmedian(t)) if not np.isnan(t).all() else None  # None: the table has no test split
            rows.append({"agent": label, "children": c, **_quartiles(r), "median_test_acc": test, **p})
    return rows


def _p_values(label: str, values: np.ndarray, baselines: dict[str, np.ndarray]) -> dict[str, float | None]:
    """p_vs_<b> for every b of :data:`BASELINES`: None for b itself, for random, and for a baseline that did not run."""
    out: dict[str, float | None] = {}
    for base in BASELINES:
        ok = base in baselines and label not in (base, BASELINE)
        a, b = (values[~np.isnan(values)], baselines[base][~np.isnan(baselines[base])]) if ok else (values, values)
        out[f"p_vs_{base}"] = mann_whitney_less(a, b) if ok and len(a) and len(b) else None
    return out


def _regret_at(run: dict[str, Any], s: float) -> float:
    """A run's incumbent regret at simulated time ``s`` (NaN when its children did not reach it)."""
    return at_times(run["regret"], run["seconds"], np.array([s]))[0] if np.sum(run["seconds"]) >= s else np.nan


def _time_rows(by_label: dict[str, list[dict[str, Any]]], seconds: list[float]) -> list[dict[str, Any]]:
    """At each simulated time: the incumbent's regret over the runs whose children reached it (``reached``)."""
    values = {label: {s: np.array([_regret_at(r, s) for r in runs]) for s in seconds}
              for label, runs in by_label.items()}
    rows = []
    for label, per_time in values.items():
        for s, v in per_time.items():
            reached = float(np.mean(~np.isnan(v)))
            stats = _quartiles(v) if reached else dict.fromkeys(("median_regret", "q25_regret", "q75_regret"))
            p = _p_values(label, v, {b: values[b][s] for b in BASELINES if b in values})
            rows.append({"agent": label, "seconds": s, "reached": reached, **stats, **p})
    return rows


def _write_table(out: Path, rows: list[dict[str, Any]], checkpoints: list[int], args: AgentBenchArgs, unit: str,
                 time_rows: list[dict[str, Any]], seconds: list[float]) -> None:
    with (out / "table.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["axis", *rows[0], "seconds", "reached"], restval="")
        writer.writeheader()
        writer.writerows({"axis": "children", **r} for r in rows)
        writer.writerows({"axis": "simulated_seconds", **r} for r in time_rows)
    labels = list(dict.fromkeys(r["agent"] for r in rows))
    # the p-values shown: BASELINE and STRONG_BASELINE always (a "-" when absent), the other baselines when they ran
    bases = [b for b in BASELINES if b in (BASELINE, STRONG_BASELINE) or b in labels]
    lines = [f"Median regret (IQR) of the incumbent ({args.incumbent} rule), {args.seeds} seeds, in {unit}; p: "
             f"one-sided Mann-Whitney U, regret lower than {' / '.join(b + chr(39) + 's' for b in bases)}", "",
             *_markdown(rows, labels, "children", checkpoints, [f"{c} children" for c in checkpoints], bases)]
    if seconds:
        lines += ["", "At simulated training seconds (the incumbent among the children finished by then; "
                  "n/a when a run's children did not reach that time):", "",
                  *_markdown(time_rows, labels, "seconds", seconds, [f"{s:,.0f} s" for s in seconds], bases)]
    (out / "table.md").write_text("\n".join(lines) + "\n")


def _markdown(rows: list[dict[str, Any]], labels: list[str], axis: str, points: list[Any], heads: list[str],
              bases: list[str]) -> list[str]:
    """A Markdown table of ``rows``: one line per agent, one :func:`_cell` per point of ``axis``."""
    lines = ["| agent | " + " | ".join(heads) + " |", "|---|" + "---|" * len(points)]
    for label in labels:
        cells = [_cell(next(x for x in rows if x["agent"] == label and x[axis] == p), bases) for p in points]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def _cell(row: dict[str, Any], bases: list[str]) -> str:
    """``median (q25-q75), p=a / b``; ``n/a`` without a value; a share of runs when not all reached it."""
    if row["median_regret"] is None:
        return "n/a"
    ps = [row[f"p_vs_{b}"] for b in bases]
    p = ", p=" + " / ".join("-" if v is None else f"{v:.2g}" for v in ps) if any(v is not None for v in ps) else ""
    reached = row.get("reached", 1.0)
    share = f" [{reached:.0%} of runs]" if reached < 1 else ""
    return f"{row['median_regret']:.4f} ({row['q25_regret']:.4f}-{row['q75_regret']:.4f}){p}{share}"


def _write_curves(out: Path, regrets: dict[str, np.ndarray], tests: dict[str, np.ndarray],
                  timed: dict[str, np.ndarray], grid: np.ndarray) -> None:
    with (out / "curves.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["agent", "axis", "x", "median_regret", "q25_regret", "q75_regret", "median_test_acc",
                    "q25_test_acc", "q75_test_acc"])
        for label, reg in regrets.items():
            med, lo, hi = bands(reg)
            tmed, tlo, thi = bands(tests[label])
            for n in range(reg.shape[1]):
                w.writerow([label, "children", n + 1, med[n], lo[n], hi[n], tmed[n], tlo[n], thi[n]])
            med, lo, hi = bands(timed[label])
            for x, a, b, c in zip(grid, med, lo, hi, strict=True):
                w.writerow([label, "simulated_seconds", float(x), a, b, c, "", "", ""])


def _plot(out: Path, regrets: dict[str, np.ndarray], timed: dict[str, np.ndarray], grid: np.ndarray,
          name: str, unit: str, seconds: list[float]) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.5))
    axes = fig.subplots(1, 2)
    for label, reg in regrets.items():
        med, lo, hi = bands(reg)
        x = np.arange(1, reg.shape[1] + 1)
        (line,) = axes[0].plot(x, med, label=label)
        axes[0].fill_between(x, lo, hi, alpha=0.15, color=line.get_color())
        med, lo, hi = bands(timed[label])
        axes[1].plot(grid, med, label=label, color=line.get_color())
        axes[1].fill_between(grid, lo, hi, alpha=0.15, color=line.get_color())
    for ax, xlabel in zip(axes, ("children", "simulated training seconds"), strict=True):
        ax.set_xscale("log")
        ax.set_yscale("symlog", linthresh=1e-3)  # regret reaches 0 when the optimum is found
        ax.set_ylim(bottom=0)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"regret of the incumbent\n({unit})")
        ax.grid(alpha=0.3)
    for s in seconds:
        axes[1].axvline(s, color="#888888", lw=0.8, ls="--")
    axes[0].legend(fontsize=8)
    title = name if name.startswith(NB201_PREFIX) else f"NASRL-Bench-{name}"
    fig.suptitle(f"{title}: median and interquartile band over seeds")
    fig.tight_layout()
    fig.savefig(out / "regret.png", dpi=110)


@cli_entry("nasrl-agent-bench")
def main(argv: list[str]) -> None:
    """Console entry point ``nasrl-agent-bench``."""
    args, _, _ = parse_dataclass(AgentBenchArgs, argv, prog="nasrl-agent-bench", description=__doc__)
    benchmark(args)

if __name__ == "__main__":
    main()
