"""Does a cheap training proxy rank NAS-Bench-201's cells as its own 200-epoch training does?

Run: ``python scripts/bench_nb201_proxy.py`` (the CPU proxy: 64 cells, about 15 minutes on one CPU
thread); on a GPU at NAS-Bench-201's own settings: ``--preset nb201 --epochs 12 --device cuda --threads 0``.

It draws ``--cells`` cells, one per accuracy-quantile bin of the CIFAR-10 table (seeded, trained in a
seeded order), trains each in ``NASRL-NB201-CIFAR10-v0`` at ``--preset`` with the overrides given, and
appends each result to ``--out`` as it is made (a rerun at the same settings skips the cells already
there: rows are matched by the evaluator's fingerprint). Then Kendall tau, Spearman rho and the top-10%
recall against the table (docs/nb201-training.md); the last line is one JSON object.
"""

from __future__ import annotations

import json
import math
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from bench_common import NB201_ENV_ID, NB201Args, append_jsonl, cifar10_root, device_name, draw_cells, rank_agreement

import nas_env  # noqa: F401  (registers the ids)
from agents.experiment.run_folder.records import read_results
from nas_env.bench.nb201 import load_table
from nas_env.cli import parse_dataclass
from nas_env.spaces.nb201 import NB201SearchSpace


@dataclass
class Args(NB201Args):
    cells: int = 64
    """cells to train, one per accuracy-quantile bin of the CIFAR-10 table"""
    preset: str = "proxy"
    """the env's fidelity: proxy (CPU-affordable) or nb201 (NAS-Bench-201's own training)"""
    C: int | None = None
    """network width: stem channels, stages at C, 2C, 4C (default: the preset's)"""
    N: int | None = None
    """cells per stage (default: the preset's)"""
    epochs: int | None = None
    """training epochs per cell (default: the preset's)"""
    batch_size: int | None = None
    """training batch size (default: the preset's)"""
    train_subset: int | None = None
    """training images per cell (default: the preset's; nb201: all 45,000)"""
    val_subset: int | None = None
    """validation images per cell (default: the preset's; nb201: all 5,000)"""
    device: str = "cpu"
    """device to train on: cpu, cuda, auto"""
    seed: int = 0
    """seed of the cell draw, the training order and the children's seeds"""
    out: str = "nb201_proxy.jsonl"
    """JSON lines, one per trained cell, appended as they are made"""


def env_kwargs(args: Args) -> dict[str, Any]:
    """The env's keywords: the preset, the overrides given, the device."""
    overrides = {"C": args.C, "N": args.N, "epochs": args.epochs, "batch_size": args.batch_size,
                 "train_subset": args.train_subset, "val_subset": args.val_subset}
    return {"preset": args.preset, "device": args.device, **{k: v for k, v in overrides.items() if v is not None}}


def main(argv: list[str] | None = None) -> None:
    args, _, parser = parse_dataclass(Args, argv, prog="bench_nb201_proxy.py", description=__doc__)
    if args.cells < 2:
        parser.error(f"--cells must be at least 2 (a rank correlation needs pairs), got {args.cells}")
    args.set_threads()
    kwargs = env_kwargs(args)
    table_acc = load_table("cifar10").mean_val()
    cells = draw_cells(table_acc, args.cells, args.seed)

    # all 50,000 training images, whatever the subsets: the train / validation split is drawn from all of them
    with tempfile.TemporaryDirectory() as scratch:
        root = cifar10_root(args.data_root, Path(scratch), train_images=50_000)
        env = gym.make(NB201_ENV_ID, data_root=str(root), download=False, **kwargs)
    unwrapped = env.unwrapped
    fingerprint = unwrapped.evaluator.fingerprint()
    device = device_name(unwrapped.device)
    out = Path(args.out)
    done = {r["table_index"]: r for r in read_results(out) if r.get("fingerprint") == fingerprint}
    print(f"{len(cells)} cells at {kwargs}: C={unwrapped.builder.C}, N={unwrapped.builder.N}, "
          f"{unwrapped.train_config.epochs} epochs, batch {unwrapped.train_config.batch_size}; {device}; "
          f"{len(done)} already in {out}", flush=True)

    rows: list[dict[str, Any]] = []
    for k, arch in enumerate(cells):
        row = arch.index
        if row in done:
            rows.append(done[row])
            continue
        start = time.perf_counter()
        env.reset(seed=args.seed * 100_003 + row)
        for action in NB201SearchSpace().encode(arch):
            _, reward, terminated, _, info = env.step(action)
        assert terminated
        record = {"table_index": row, "key": arch.key, "arch_str": info["arch_str"],
                  "table_val_acc": float(table_acc[row]), "proxy_val_acc": float(reward), "status": info["status"],
                  "train_seconds": info["train_seconds"], "wall_seconds": time.perf_counter() - start,
                  "params": info["params"], "settings": kwargs, "device": device, "fingerprint": fingerprint}
        append_jsonl(out, record)
        rows.append(record)
        print(f"{k + 1:>3}/{len(cells)} {arch.key} table {record['table_val_acc']:.4f} proxy "
              f"{record['proxy_val_acc']:.4f} ({record['status']}, {record['wall_seconds']:.1f} s)", flush=True)

    truth = np.array([r["table_val_acc"] for r in rows])
    proxy = np.array([r["proxy_val_acc"] for r in rows])
    seconds = [r["wall_seconds"] for r in rows]
    result = {
        "cells": len(rows),
        **rank_agreement(truth, proxy, "top10_recall"),
        "seconds_per_child_mean": round(statistics.fmean(seconds), 2),
        "seconds_per_child_median": round(statistics.median(seconds), 2),
        "seconds_per_child_max": round(max(seconds), 2),
        "not_ok": sum(r["status"] != "ok" for r in rows),
        "settings": kwargs, "C": unwrapped.builder.C, "N": unwrapped.builder.N,
        "epochs": unwrapped.train_config.epochs, "device": device, "seed": args.seed,
    }
    print(f"\nKendall tau {result['kendall_tau']:.3f}, Spearman rho {result['spearman_rho']:.3f}, top-10% recall "
          f"{result['top10_recall']:.2f} over {len(rows)} cells; {result['seconds_per_child_mean']:.1f} s a child "
          f"(median {result['seconds_per_child_median']:.1f}, max {result['seconds_per_child_max']:.1f})")
    if not math.isfinite(result["kendall_tau"]):
        print("(a constant accuracy list has no rank correlation)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
