"""``TableEvaluator``: a child's result looked up in a NASRL-Bench table instead of trained."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from nas_env.bench.table import BenchTable
from nas_env.checks import check_in
from nas_env.evaluators.base import EvalResult
from nas_env.spaces.base import Architecture, SearchSpace

NOISE_MODES = ("seed", "mean")


class TableEvaluator:
    """Look a child up in ``table``: the val accuracy of one trained seed (``noise="seed"``, chosen by the
    episode's seed, so results are as noisy as real training) or the seed mean (``noise="mean"``).

    ``epochs`` picks the fidelity (which entry of the per-epoch history; None: the last). The metrics
    add ``test_acc`` (the same seed's, or the mean), ``train_seconds`` (the seed's, scaled to the
    fidelity: simulated wall-clock) and ``regret`` (the table's best mean val accuracy at this fidelity
    minus this child's mean).
    """

    def __init__(self, table: BenchTable, space: SearchSpace, noise: str = "seed", epochs: int | None = None) -> None:
        check_in("noise", noise, NOISE_MODES)
        specs = [[s.name, s.layer, list(s.choices)] for s in space.tokens()]
        if specs != [[n, layer, list(c)] for n, layer, c in table.tokens]:
            raise ValueError(f"the space's tokens differ from table {table.name!r}'s")
        self.table, self.space, self.noise = table, space, noise
        self.column = table.fidelity(epochs)
        self.epochs = self.column + 1
        self._mean = table.mean_val(self.epochs)
        self._mean_test = table.mean_test()
        self.best_mean = float(self._mean.max())
        self._time_scale = self.epochs / table.epochs  # a child trained fewer epochs costs that share of the time
        self._rows: dict[Architecture, int] = {}  # architectures are immutable and hashable: encode each once

    def fingerprint(self) -> str:
        key = f"{self.table.fingerprint}/{self.table.name}/{self.noise}/{self.epochs}"
        return "table/" + hashlib.sha256(key.encode()).hexdigest()[:16]

    def __call__(self, arch: Architecture, seed: int) -> EvalResult:
        t = self.table
        i = self._rows.get(arch)
        if i is None:
            try:
                i = self._rows[arch] = t.index(self.space.encode(arch))
            except ValueError as e:
                raise ValueError(f"architecture {arch.to_json()} is not in table {t.name!r}: {e}") from None
        c = self.column
        if self.noise == "seed":
            k = int(seed) % len(t.seeds)
            status = str(t.status[i, k])
            history = t.val_acc[i, k, : c + 1]
            test_acc, seconds = float(t.test_acc[i, k]), float(t.train_seconds[i, k])
        else:
            status = "ok" if (t.status[i] == "ok").all() else str(t.status[i][t.status[i] != "ok"][0])
            history = np.nanmean(t.val_acc[i, :, : c + 1], axis=0)
            test_acc, seconds = float(self._mean_test[i]), float(np.nanmean(t.train_seconds[i]))
        val_acc = float(history[-1]) if status == "ok" and not np.isnan(history[-1]) else 0.0
        metrics: dict[str, Any] = {
            "val_acc": val_acc, "val_acc_history": [float(v) for v in history if not np.isnan(v)],
            "test_acc": test_acc, "train_seconds": seconds * self._time_scale,
            "params": int(t.params[i]), "flops": int(t.flops[i]),
            "regret": self.best_mean - float(self._mean[i]), "table_index": i,
        }
        return EvalResult(val_acc, status if status in ("ok", "diverged", "oom") else "failed", metrics)
