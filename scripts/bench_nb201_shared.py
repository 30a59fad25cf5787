"""Does a weight-sharing supernet rank NAS-Bench-201's cells as their own training does, and what do searches find?

Run: ``python scripts/bench_nb201_shared.py`` (the CPU setting: C=8, N=1, 10,000 CIFAR-10 training
images, 1,000 cells, 3 searches of 200 children; about 15 minutes on one CPU thread). docs/weight-sharing.md
gives the command for NAS-Bench-201's own network on a GPU (C=16, N=5, every training image, all 15,625 cells).

1. **The supernet** (``evaluator="shared"``) trains on random paths up to each total of ``--warmup-steps``,
   then scores ``--cells`` cells (one per accuracy-quantile bin of the table) on one fixed validation
   batch; at the last total the first ``--recalibrate-cells`` also with recalibrated batch norm.
2. **Ranking** against the table: Kendall tau, Spearman rho, the top-10% recall and the share of
   parameter-free cells in the supernet's top 10 (the collapse reported for weight sharing).
3. **Searches**: ``--search-seeds`` runs of ``nasrl-search``'s loop with ``--search-agent`` on the shared
   env; the cell each reports is looked up in the table.

Every cell, ranking and search is appended to ``--out`` (JSON lines, ``kind`` says which) as it is
made; the last line printed is one JSON summary.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from bench_common import (
    NB201_ENV_ID,
    NB201Args,
    append_jsonl,
    check_totals,
    cifar10_root,
    device_name,
    draw_cells,
    rank_agreement,
)

import nas_env  # noqa: F401  (registers the ids)
from agents.experiment.run_folder.records import RESULTS, read_results
from agents.experiment.search import SearchArgs, run_search
from nas_env.bench.nb201 import load_table
from nas_env.cli import parse_dataclass
from nas_env.data.cifar10 import DEFAULT_VAL_SIZE
from nas_env.evaluators.shared import BN_EVAL, SharedWeightsEvaluator
from nas_env.evaluators.shared_nb201 import is_parameter_free
from nas_env.spaces.nb201 import NB201Architecture

CIFAR10_TRAIN = 50_000  # CIFAR-10's training images, of which 5,000 are the validation split
TOP_K = 10  # the supernet's top cells checked for parameter-free collapse


@dataclass
class Args(NB201Args):
    C: int = 8
    """network width: stem channels, stages at C, 2C, 4C (NAS-Bench-201: 16)"""
    N: int = 1
    """cells per stage (NAS-Bench-201: 5)"""
    train_subset: int = 10_000
    """CIFAR-10 training images the supernets train on (0: all 45,000)"""
    val_subset: int = 1_000
    """CIFAR-10 validation images held (0: all 5,000); the fixed scoring batch is the first --val-images"""
    batch_size: int = 64
    """minibatch of a shared step (lr 0.1 at any batch, constant, Nesterov momentum: the env's TrainConfig)"""
    warmup_steps: list[int] = field(default_factory=lambda: [1000, 3000])
    """increasing totals of random-path steps; the cells are scored after each (one supernet trained on)"""
    val_images: int = 500
    """the fixed validation batch every cell is scored on"""
    cells: int = 1000
    """cells scored, one per accuracy-quantile bin of the table (>= 15,625: all of them)"""
    bn_eval: str = "batch"
    """batch norm when scoring: batch (the validation batch's statistics) or recalibrate (per cell)"""
    recalibrate_cells: int = 200
    """at the last total, the first this-many scored cells also with recalibrated batch norm (0: none)"""
    recalibrate_images: int = 500
    """training images a cell's batch-norm statistics are recalibrated on"""
    search_seeds: int = 3
    """searches run (seeds 0, 1, ...; 0: none)"""
    search_agent: str = "reinforce"
    """the searches' agent (agents.make_agent's names)"""
    search_episodes: int = 200
    """children per search"""
    search_shared_steps: int = 2
    """shared minibatches on each child of a search before its reward"""
    search_warmup_steps: int = 400
    """random-path steps before a search's first reward"""
    device: str = "cpu"
    """device: cpu, cuda, auto"""
    seed: int = 0
    """seed of the cell draw and the ranking supernet"""
    logdir: str = ""
    """parent of the searches' run folders (empty: a temporary folder, deleted at the end)"""
    out: str = "nb201_shared.jsonl"
    """JSON lines, appended as they are made"""


def env_kwargs(args: Args, shared: dict[str, Any]) -> dict[str, Any]:
    """The shared env's keywords (``shared``: its SharedConfig fields)."""
    return {"evaluator": "shared", "C": args.C, "N": args.N, "batch_size": args.batch_size,
            "train_subset": args.train_subset or CIFAR10_TRAIN - DEFAULT_VAL_SIZE,
            "val_subset": args.val_subset or DEFAULT_VAL_SIZE,
            "device": args.device, "shared_config": shared}


def ranking(truth: np.ndarray, shared: np.ndarray, free: np.ndarray) -> dict[str, Any]:
    """Rank agreement of ``shared`` with ``truth``, and the parameter-free share of the shared top ``TOP_K``."""
    top = np.argsort(-shared, kind="stable")[:TOP_K]
    return {"n": len(truth), **rank_agreement(truth, shared, "top10pct_recall"),
            "param_free_in_top10": round(float(free[top].mean()), 2),
            "top10_table_acc_mean": round(float(truth[top].mean()), 4)}


def rank_cells(args: Args, root: Path, table_acc: np.ndarray, out: Path) -> list[dict[str, Any]]:
    """Steps 1-2: one supernet, scored at every warm-up total; the ranking rows."""
    shared = {"val_images": args.val_images, "recalibrate_images": args.recalibrate_images, "seed": args.seed,
              "bn_eval": args.bn_eval}
    env = gym.make(NB201_ENV_ID, data_root=str(root), download=False, **env_kwargs(args, shared))
    ev = env.unwrapped.evaluator
    assert isinstance(ev, SharedWeightsEvaluator)
    cells = draw_cells(table_acc, args.cells, args.seed)
    rows = [c.index for c in cells]
    truth = table_acc[rows]
    free = np.array([is_parameter_free(c) for c in cells])
    params = sum(p.numel() for p in ev.supernet.parameters())
    print(f"supernet C={args.C} N={args.N}: {params:,} parameters; {ev.data.num_train} training images, "
          f"batch {ev._batch}; {len(cells)} cells scored on {min(args.val_images, len(ev.data.val_y))} "
          f"validation images ({device_name(ev.device)})", flush=True)
    results = []
    for k, total in enumerate(args.warmup_steps):
        train_seconds = ev.train_random(total - ev.step)
        modes = [(args.bn_eval, cells)]
        if k == len(args.warmup_steps) - 1 and args.recalibrate_cells and args.bn_eval != "recalibrate":
            modes.append(("recalibrate", cells[: args.recalibrate_cells]))
        scores: dict[str, list[float]] = {}
        for mode, scored in modes:
            start = time.perf_counter()
            accs = []
            for row, cell in zip(rows, scored, strict=False):
                acc = ev.score(ev.supernet.plan(cell), bn_eval=mode)
                accs.append(acc)
                append_jsonl(out, {"kind": "cell", "warmup_steps": total, "bn_eval": mode, "table_index": row,
                                   "key": cell.key, "arch_str": cell.arch_str, "table_val_acc": float(table_acc[row]),
                                   "shared_acc": acc, "parameter_free": bool(is_parameter_free(cell))})
            score_seconds = time.perf_counter() - start
            scores[mode] = accs
            n = len(accs)
            result = {"kind": "ranking", "warmup_steps": total, "bn_eval": mode,
                      **ranking(truth[:n], np.array(accs), free[:n]),
                      "train_seconds": round(train_seconds, 1) if mode == args.bn_eval else 0.0,
                      "score_seconds_per_cell": round(score_seconds / n, 4)}
            if mode != args.bn_eval:  # the same cells with the main mode, for a like-for-like comparison
                main = np.array(scores[args.bn_eval][:n])
                result["same_cells_" + args.bn_eval] = ranking(truth[:n], main, free[:n])
            append_jsonl(out, result)
            results.append(result)
            print(f"{total} steps ({train_seconds:.0f} s), bn {mode}: tau {result['kendall_tau']:.3f}, rho "
                  f"{result['spearman_rho']:.3f}, top-10% recall {result['top10pct_recall']:.2f}, parameter-free in "
                  f"top 10 {result['param_free_in_top10']:.1f} ({n} cells, {score_seconds / n:.3f} s a cell)",
                  flush=True)
    return results


def search(args: Args, root: Path, logdir: Path, seed: int, table_acc: np.ndarray) -> dict[str, Any]:
    """Step 3: one search on the shared env; its best cell's table accuracy."""
    shared = {"shared_steps": args.search_shared_steps, "warmup_steps": args.search_warmup_steps,
              "val_images": args.val_images, "seed": seed}
    kwargs = {**env_kwargs(args, shared), "data_root": str(root), "download": False}
    start = time.perf_counter()
    run = run_search(SearchArgs(env=NB201_ENV_ID, agent=args.search_agent, episodes=args.search_episodes, seed=seed,
                                logdir=str(logdir), run_name=f"{args.search_agent}_shared_seed{seed}",
                                env_kwargs=kwargs, progress=False))
    seconds = time.perf_counter() - start
    records = read_results(run / RESULTS)
    best = max(records, key=lambda r: r["reward"])  # the first of equal rewards, as best.json keeps it
    cell = NB201Architecture.from_json(best["arch"])
    acc = float(table_acc[cell.index])
    child_seconds = [r["train_seconds"] for r in records[1:]]  # the first child carries the warm-up
    return {"kind": "search", "seed": seed, "agent": args.search_agent, "children": len(records),
            "best_key": cell.key, "best_arch_str": cell.arch_str, "best_reward": best["reward"],
            "best_table_val_acc": round(acc, 4),
            "best_table_percentile": round(float((table_acc < acc).mean() * 100), 1),
            "best_parameter_free": is_parameter_free(cell),
            "seconds": round(seconds, 1), "seconds_per_child_median": round(statistics.median(child_seconds), 3),
            "warmup_seconds": round(records[0]["train_seconds"], 1),
            "env_kwargs": {k: v for k, v in kwargs.items() if k != "data_root"}}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args, _, parser = parse_dataclass(Args, argv, prog="bench_nb201_shared.py", description=__doc__)
    check_totals(parser, "--warmup-steps", args.warmup_steps)
    if args.cells < 3:
        parser.error(f"--cells must be at least 3 (a rank correlation needs pairs), got {args.cells}")
    if args.bn_eval not in BN_EVAL:
        parser.error(f"--bn-eval must be one of {BN_EVAL}, got {args.bn_eval!r}")
    if args.recalibrate_cells and not 3 <= args.recalibrate_cells <= args.cells:
        parser.error(f"--recalibrate-cells must be 0 or 3..--cells ({args.cells}), got {args.recalibrate_cells}")
    args.set_threads()
    table_acc = load_table("cifar10").mean_val()
    out = Path(args.out)
    append_jsonl(out, {"kind": "args", **asdict(args)})
    needed = CIFAR10_TRAIN if not args.train_subset else min(CIFAR10_TRAIN, DEFAULT_VAL_SIZE + args.train_subset)
    with tempfile.TemporaryDirectory() as scratch:
        root = cifar10_root(args.data_root, Path(scratch), train_images=-(-needed // 1000) * 1000)
        start = time.perf_counter()
        ranked = rank_cells(args, root, table_acc, out)
        rank_seconds = time.perf_counter() - start
        searches = []
        logdir = Path(args.logdir) if args.logdir else Path(scratch) / "runs"
        for seed in range(args.search_seeds):
            result = search(args, root, logdir, seed, table_acc)
            append_jsonl(out, result)
            searches.append(result)
            print(f"search seed {seed}: best {result['best_arch_str']} (reward {result['best_reward']:.3f}) has "
                  f"table accuracy {result['best_table_val_acc']:.4f} ({result['best_table_percentile']:.1f}th "
                  f"percentile); {result['seconds']:.0f} s, {result['seconds_per_child_median']:.2f} s a child",
                  flush=True)
    summary = {"kind": "summary", "rankings": [{k: r[k] for k in ("warmup_steps", "bn_eval", "n", "kendall_tau",
                                                                   "spearman_rho", "top10pct_recall",
                                                                   "param_free_in_top10")} for r in ranked],
               "ranking_seconds": round(rank_seconds, 1),
               "searches_table_val_acc": [s["best_table_val_acc"] for s in searches],
               "table_best_val_acc": round(float(table_acc.max()), 4), "C": args.C, "N": args.N,
               "device": args.device, "threads": args.threads}
    append_jsonl(out, summary)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
