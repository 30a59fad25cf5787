"""``NB201Evaluator``: a NAS-Bench-201 cell's result looked up in the benchmark's data instead of trained."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from nas_env.bench.nb201 import NB201Table
from nas_env.checks import check_in
from nas_env.evaluators.base import EvalResult
from nas_env.evaluators.table import NOISE_MODES
from nas_env.spaces.nb201 import NB201Architecture


class NB201Evaluator:
    """Look a cell up in ``table``: one trained seed's 200-epoch val accuracy (``noise="seed"``, the seed
    chosen by the episode's seed among the cell's 2 or 3) or the seed mean (``noise="mean"``), as a fraction.

    Metrics: ``val_acc``, ``arch_str`` (NAS-Bench-201's notation), ``regret`` (the dataset's best seed-mean
    val accuracy minus this cell's), ``train_seconds`` (the stored 200-epoch time x 12/200: the 12-epoch run
    NAS-Bench-201's search protocol charges, approximated), ``latency`` (seconds), ``model_size`` (MB of
    parameters, i.e. millions) and ``table_index``. No ``params`` / ``flops``: the data has no FLOPs, and
    the run folder records both or neither.
    """

    def __init__(self, table: NB201Table, noise: str = "seed") -> None:
        check_in("noise", noise, NOISE_MODES)
        self.table, self.noise = table, noise
        mean = table.mean_val()
        self.best_mean = float(mean.max())
        # Python lists: indexing them is several times faster than numpy scalars, and an episode is microseconds
        self._mean = mean.tolist()
        self._val = [[v for v in row if not np.isnan(v)] for row in table.val_acc.tolist()]
        self._seconds = table.search_seconds().tolist()
        self._latency = table.latency.tolist()
        self._size = table.model_size.tolist()

    def fingerprint(self) -> str:
        key = f"nb201/{self.table.dataset}/{self.table.sha256}/{self.noise}"
        return "table/" + hashlib.sha256(key.encode()).hexdigest()[:16]

    def __call__(self, arch: NB201Architecture, seed: int) -> EvalResult:
        if not isinstance(arch, NB201Architecture):
            raise ValueError(f"an NB201 table evaluates NB201 cells, got {type(arch).__name__}")
        i = arch.index
        seeds = self._val[i]
        val_acc = seeds[int(seed) % len(seeds)] if self.noise == "seed" else self._mean[i]
        metrics: dict[str, Any] = {
            "val_acc": val_acc, "val_acc_history": [val_acc], "arch_str": arch.arch_str,
            "regret": self.best_mean - self._mean[i], "train_seconds": self._seconds[i],
            "latency": self._latency[i], "model_size": self._size[i], "table_index": i,
        }
        return EvalResult(val_acc, "ok", metrics)
