"""Benchmark the recurrent-cell language model's training: tokens per second beside ``torch.nn.LSTM`` of the same size.

Run: ``python scripts/bench_ptb.py`` (about a minute on 2 CPU cores; ``--device cuda`` on a
GPU). Trains, with the env's proxy recipe, the LSTM-like tree, a random tree from the paper's
space and ``torch.nn.LSTM`` (2 layers, same embedding and hidden size) on the first
``--tokens`` PTB training tokens, in this same run, and prints a table and, as its last line,
one JSON object. Throughput counts training tokens over the training loop's time
(forward, backward, clipping and the optimiser step; the validation pass is excluded).
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass, replace

import numpy as np
import torch
from bench_common import SHARED_DATA  # scripts/ is on sys.path when this file runs

from nas_env.cli import parse_dataclass
from nas_env.data.ptb import TextData, load_ptb
from nas_env.models.rnn_cell import CellLanguageModel, count_params
from nas_env.spaces.base import random_arch
from nas_env.spaces.rnn_cell import CellArchitecture, RNNCellSearchSpace, lstm_like_cell
from nas_env.training.device import resolve_device
from nas_env.training.lm_trainer import LMTrainConfig, batchify, evaluate_perplexity, train_lm


@dataclass
class Args:
    tokens: int = 20_000
    """training tokens per run"""
    hidden: int | None = None
    """embedding and hidden size (None: the proxy's)"""
    batch_size: int | None = None
    """batch size (None: the proxy's)"""
    repeats: int = 1
    """timed runs per model after one warm-up (median)"""
    device: str = "auto"
    """auto, cpu, cuda"""
    data_root: str = str(SHARED_DATA)
    """folder with the PTB files (or their ptb/ folder)"""
    seed: int = 0
    """seed of the random tree and of the models"""


def tokens_per_second(cell: CellArchitecture | str, data: TextData, config: LMTrainConfig, device: torch.device,
                      repeats: int, seed: int) -> tuple[float, int]:
    """Median training tokens/s over ``repeats`` runs (after one warm-up), and the model's parameters."""
    rates = []
    params = 0
    for r in range(repeats + 1):
        torch.manual_seed(seed)
        model = CellLanguageModel(cell, data.vocab_size, config.embedding_size, config.hidden_size,
                                  config.num_layers, config.dropout, config.tie_weights, config.init_range)
        params = count_params(model)
        outcome = train_lm(model, data, config, device)  # its clock stops after a syncing validation pass
        # train_lm's seconds include its (tiny) validation pass: time that pass alone and take it out
        start = time.perf_counter()
        evaluate_perplexity(model, batchify(data.valid, config.eval_batch_size, device), config.bptt,
                            config.loss_chunk)
        eval_seconds = time.perf_counter() - start
        if r > 0:  # the first run warms up allocators and kernels
            rates.append(outcome.tokens / max(outcome.train_seconds - eval_seconds, 1e-9))
    return statistics.median(rates), params


def main(argv: list[str] | None = None) -> None:
    args, _, parser = parse_dataclass(Args, argv, prog="bench_ptb.py", description=__doc__)
    for flag, value in (("--tokens", args.tokens), ("--repeats", args.repeats), ("--hidden", args.hidden),
                        ("--batch-size", args.batch_size)):
        if value is not None and value < 1:
            parser.error(f"{flag} must be >= 1, got {value}")
    device = resolve_device(args.device)
    overrides = {"hidden_size": args.hidden, "embedding_size": args.hidden, "batch_size": args.batch_size}
    config = replace(LMTrainConfig(), **{k: v for k, v in overrides.items() if v is not None})
    data = load_ptb(args.data_root, download=False, train_subset=args.tokens, val_subset=4 * config.eval_batch_size)
    space = RNNCellSearchSpace()
    random_tree = random_arch(space, np.random.default_rng(args.seed))

    results = {name: tokens_per_second(cell, data, config, device, args.repeats, args.seed) for name, cell in
               (("lstm_like_tree", lstm_like_cell()), ("random_tree", random_tree), ("torch_lstm", "lstm"))}
    lstm_rate = results["torch_lstm"][0]
    print(f"device {device}, threads {torch.get_num_threads()}, {args.tokens} tokens, batch {config.batch_size}, "
          f"bptt {config.bptt}, hidden {config.hidden_size}, 2 layers, vocab {data.vocab_size}")
    print(f"{'model':<16} {'params':>10} {'tokens/s':>10} {'vs torch LSTM':>14}")
    for name, (rate, params) in results.items():
        print(f"{name:<16} {params:>10,} {rate:>10,.0f} {rate / lstm_rate:>13.2f}x")
    print(json.dumps({
        **{f"{name}_tokens_per_s": round(rate, 1) for name, (rate, _) in results.items()},
        "lstm_like_vs_torch_lstm": round(results["lstm_like_tree"][0] / lstm_rate, 3),
        "random_vs_torch_lstm": round(results["random_tree"][0] / lstm_rate, 3),
        "device": str(device), "threads": torch.get_num_threads(), "tokens": args.tokens,
        "batch_size": config.batch_size, "bptt": config.bptt, "hidden_size": config.hidden_size,
        "random_tree": random_tree.to_json(),
    }))


if __name__ == "__main__":
    main()
