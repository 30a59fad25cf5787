"""How well do weight-sharing rewards rank architectures? Kendall tau and Spearman against stand-alone accuracies.

Run: ``python scripts/shared_ranking.py RESULTS --env NASRL-Digits-v0 --warmup-steps 2000``
(``--warmup-steps 250 1000``: score after 250 steps, train on to 1,000, score again).

``RESULTS``: JSON lines or one JSON list of objects with ``arch`` (its JSON, as text or an object) and an
accuracy (``--acc-key``), e.g. a run's ``results.jsonl`` (only ``status == "ok"`` children count; an
architecture met several times gets its mean accuracy). One :class:`SharedWeightsEvaluator` for the env's
space, data and training settings (``--env-kwargs``) trains on ``--warmup-steps`` random children, then
scores every architecture, frozen (``--shared-steps 0``) or after N minibatches on it, under every
``--bn-eval`` mode from the same weights (docs/weight-sharing.md).

Prints one line per mode and, as the last line, one JSON object (also written to ``--out``).
"""

from __future__ import annotations

import json
import math
import tempfile
import time
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
from bench_common import check_totals, with_cifar10_root  # scripts/ is on sys.path when this file runs
from scipy import stats

import nas_env  # noqa: F401  (registers the ids)
from nas_env.cli import parse_dataclass
from nas_env.evaluators.shared import BN_EVAL, SharedWeightsEvaluator
from nas_env.spaces.cnn import CNNArchitecture

OK_STATUSES = ("ok",)


@dataclass
class Args:
    results: Path = field(metadata={"positional": True})
    """JSON lines / JSON list of {arch, <acc-key>} records"""
    env: str = "NASRL-CIFAR10-v0"
    """a CNN env id: its space, data and batch size"""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """JSON keywords of the env (data subsets, space options)"""
    acc_key: str = "val_acc"
    """the stand-alone accuracy's field"""
    warmup_steps: list[int] = field(default_factory=lambda: [500])
    """random-child steps before scoring; several increasing totals score after each (one supernet trained on)"""
    shared_steps: int = 0
    """steps on each architecture before its score"""
    bn_eval: str = ",".join(BN_EVAL)
    """comma-separated modes of BN_EVAL (batch, recalibrate)"""
    shared_options: dict[str, Any] = field(default_factory=dict)
    """JSON of further SharedConfig fields (val_images, ...)"""
    seed: int = 0
    """seed of the supernet: its initialisation, minibatch order, augmentation and warm-up children"""
    device: str = "auto"
    """device of the supernet: auto, cpu, cuda"""
    data_root: str = ""
    """CIFAR-10 folder (empty: $NASRL_DATA_ROOT, ~/.cache/nasrl/data, or the shared copy, converted)"""
    out: Path | None = None
    """also write the JSON report here"""


def read_results(path: Path, acc_key: str) -> list[tuple[CNNArchitecture, float]]:
    """Unique architectures of ``path`` with their mean stand-alone accuracy, in order of first appearance."""
    text = path.read_text()
    try:
        loaded = json.loads(text)
        records = loaded if isinstance(loaded, list) else [loaded]
    except json.JSONDecodeError:
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
    accs: dict[str, list[float]] = defaultdict(list)  # by the architecture's JSON, in order of first appearance
    for k, r in enumerate(records):
        if not isinstance(r, dict) or "arch" not in r or acc_key not in r:
            raise ValueError(f"{path}: record {k} needs 'arch' and {acc_key!r}, got {str(r)[:120]}")
        if r.get("status", "ok") not in OK_STATUSES or r["arch"] is None:
            continue
        arch = CNNArchitecture.from_dict(json.loads(r["arch"]) if isinstance(r["arch"], str) else r["arch"])
        accs[arch.to_json()].append(float(r[acc_key]))
    return [(CNNArchitecture.from_json(key), sum(v) / len(v)) for key, v in accs.items()]


def _finite(x: float) -> float | None:
    return None if math.isnan(x) else round(float(x), 4)


def rank_correlation(shared: list[float], standalone: list[float]) -> dict[str, float | None]:
    """Kendall tau (tau-b) and Spearman rho with their p-values; None where undefined (a constant list)."""
    with warnings.catch_warnings():  # a constant list has no ranking: reported as None, no warning needed
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        tau = stats.kendalltau(shared, standalone)
        rho = stats.spearmanr(shared, standalone)
    return {"kendall_tau": _finite(tau.statistic), "kendall_p": _finite(tau.pvalue),
            "spearman": _finite(rho.statistic), "spearman_p": _finite(rho.pvalue)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args, _, p = parse_dataclass(Args, argv, prog="shared_ranking.py", description=__doc__)
    modes = [m.strip() for m in args.bn_eval.split(",") if m.strip()]
    if not modes or any(m not in BN_EVAL for m in modes):
        p.error(f"--bn-eval must list modes of {BN_EVAL}, got {args.bn_eval!r}")
    pairs = read_results(args.results, args.acc_key)
    if len(pairs) < 3:
        p.error(f"{args.results}: {len(pairs)} usable architectures; a rank correlation needs at least 3")

    with tempfile.TemporaryDirectory() as scratch:
        env_kwargs = with_cifar10_root(args.env, args.env_kwargs, args.data_root, Path(scratch))
        env = gym.make(args.env, evaluator="train", device=args.device, **env_kwargs).unwrapped
        data = env.evaluator.data.data  # the env's own data (subsets, split) as loaded for training
    stages = args.warmup_steps
    check_totals(p, "--warmup-steps", stages)
    if args.shared_steps and len(stages) > 1:
        p.error("--shared-steps trains on the scored architectures: give one --warmup-steps with it")
    options = {"warmup_steps": stages[0], "shared_steps": args.shared_steps, "seed": args.seed,
               **args.shared_options}
    evaluator = SharedWeightsEvaluator(data, env.space, options, env.train_config, args.device)
    standalone = [acc for _arch, acc in pairs]
    results = []
    warmup_seconds, done = evaluator.warmup(), stages[0]
    for steps in stages:
        warmup_seconds += evaluator.train_random(steps - done)
        done = steps
        start = time.perf_counter()
        scores: dict[str, list[float]] = {m: [] for m in modes}
        for arch, _acc in pairs:
            plan = evaluator.supernet.plan(arch)
            if args.shared_steps:
                evaluator(arch, args.seed)  # trains on it (and scores it with the config's mode)
            for m in modes:
                scores[m].append(evaluator.score(plan, bn_eval=m))
        results.append({"warmup_steps": steps, "warmup_seconds": round(warmup_seconds, 1),
                        "score_seconds": round(time.perf_counter() - start, 1),
                        "bn_eval": {m: {**rank_correlation(scores[m], standalone), "shared_acc": scores[m]}
                                    for m in modes}})
        for m in modes:
            r = results[-1]["bn_eval"][m]
            print(f"warm-up {steps} steps, bn_eval={m}: Kendall tau {r['kendall_tau']}, Spearman {r['spearman']} "
                  f"over {len(pairs)} architectures (shared accuracies {min(scores[m]):.3f}..{max(scores[m]):.3f})",
                  flush=True)
    last = results[-1]
    report: dict[str, Any] = {
        "n": len(pairs), "env": args.env, "env_kwargs": {k: v for k, v in env_kwargs.items() if k != "data_root"},
        "shared_config": {**json.loads(json.dumps(evaluator.settings()["shared"])), "warmup_steps": stages[-1]},
        "warmup_seconds": last["warmup_seconds"], "score_seconds": last["score_seconds"],
        "standalone_acc": standalone, "bn_eval": last["bn_eval"], "stages": results,
    }
    line = json.dumps(report)
    if args.out is not None:
        args.out.write_text(line + "\n")
    print(line)
    return report


if __name__ == "__main__":
    main()
