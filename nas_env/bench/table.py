"""A NASRL-Bench table: every architecture of a small token space, trained with k seeds, in one checksummed file.

The file is gzipped JSON (``*.json.gz``) holding the space (the env id and keywords that define it,
and its token list), the fingerprint of the evaluator that trained it, and per architecture and
seed: the validation accuracy after every epoch (so the table serves several fidelities), a test
accuracy on a split that never fed the reward, the training seconds (for simulated wall-clock),
and the status; per architecture its parameters and multiply-adds. ``sha256`` covers everything
else, so a damaged or edited table is refused.

Architectures are stored in enumeration order: index = the mixed-radix number of the action list
(first token most significant), so a lookup is arithmetic, not a search.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from nas_env.checks import is_int
from nas_env.spaces.base import canonical_json

FORMAT = "nasrl-bench/1"
SHIPPED = ("digits",)  # tables in nas_env/bench/tables/<name>.json.gz


def radices(token_choices: Sequence[int]) -> np.ndarray:
    """The place values of the mixed-radix index over tokens with these numbers of choices."""
    place = np.ones(len(token_choices), dtype=np.int64)
    for t in range(len(token_choices) - 2, -1, -1):
        place[t] = place[t + 1] * token_choices[t + 1]
    return place


def index_of(actions: Sequence[int], places: np.ndarray) -> int:
    return int(np.dot(np.asarray(actions, dtype=np.int64), places))


def actions_of(index: int, token_choices: Sequence[int]) -> list[int]:
    """The action list of architecture ``index`` (the inverse of :func:`index_of`)."""
    out = []
    for n in reversed(token_choices):
        index, a = divmod(index, n)
        out.append(a)
    return out[::-1]


def _checksum(body: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()


@dataclass(frozen=True)
class BenchTable:
    """One table (see the module docstring). Arrays are indexed ``[architecture, seed(, epoch)]``."""

    name: str
    env_id: str
    env_kwargs: dict[str, Any]
    tokens: list[list[Any]]  # [name, layer, choices] per token, in episode order
    fingerprint: str
    seeds: list[int]
    epochs: int
    val_acc: np.ndarray  # float32 (N, k, epochs); NaN where a child did not reach that epoch
    test_acc: np.ndarray  # float32 (N, k)
    train_seconds: np.ndarray  # float32 (N, k)
    status: np.ndarray  # str (N, k)
    params: np.ndarray  # int64 (N,)
    flops: np.ndarray  # int64 (N,)

    @property
    def num_archs(self) -> int:
        return len(self.params)

    @cached_property
    def token_choices(self) -> list[int]:
        return [len(t[2]) for t in self.tokens]

    @cached_property
    def places(self) -> np.ndarray:
        return radices(self.token_choices)

    def fidelity(self, epochs: int | None) -> int:
        """The 0-based epoch column for ``epochs`` (None: the last); a clear error outside 1..epochs."""
        if epochs is None:
            return self.epochs - 1
        if not is_int(epochs) or not 1 <= epochs <= self.epochs:
            raise ValueError(f"epochs must be an int in 1..{self.epochs} (the table's histories), got {epochs!r}")
        return int(epochs) - 1

    def mean_val(self, epochs: int | None = None) -> np.ndarray:
        """Per architecture, the validation accuracy at ``epochs`` averaged over seeds (failed seeds as 0)."""
        return np.nan_to_num(self.val_acc[:, :, self.fidelity(epochs)], nan=0.0).mean(axis=1)

    def mean_test(self) -> np.ndarray:
        return np.nan_to_num(self.test_acc, nan=0.0).mean(axis=1)

    def index(self, actions: Sequence[int]) -> int:
        """The row of an action list; a ValueError naming it when it is not an architecture of this table."""
        if len(actions) != len(self.tokens) or any(
                not 0 <= int(a) < n for a, n in zip(actions, self.token_choices, strict=True)):
            raise ValueError(f"actions {list(actions)} are not an architecture of table {self.name!r} "
                             f"({len(self.tokens)} tokens with {self.token_choices} choices)")
        return index_of(actions, self.places)

    # --- file ------------------------------------------------------------------------------------
    def body(self) -> dict[str, Any]:
        """Everything the file holds but its checksum (NaN as null, rounded to what the measurements carry)."""

        def listed(a: np.ndarray, decimals: int) -> list[Any]:
            a = np.round(a.astype(np.float64), decimals)
            return np.where(np.isnan(a), None, a).tolist()

        return {"format": FORMAT, "name": self.name, "env_id": self.env_id, "env_kwargs": self.env_kwargs,
                "tokens": self.tokens, "fingerprint": self.fingerprint, "seeds": self.seeds, "epochs": self.epochs,
                "val_acc": listed(self.val_acc, 5), "test_acc": listed(self.test_acc, 5),
                "train_seconds": listed(self.train_seconds, 4), "status": self.status.tolist(),
                "params": self.params.tolist(), "flops": self.flops.tolist()}

    def save(self, path: str | Path) -> str:
        """Write the table (gzipped JSON with its checksum); returns the checksum."""
        body = self.body()
        digest = _checksum(body)
        with gzip.open(path, "wt", encoding="utf-8") as f:
            json.dump({**body, "sha256": digest}, f, separators=(",", ":"))
        return digest

    @classmethod
    def load(cls, source: str | Path) -> BenchTable:
        """A table from a path, or a shipped table by name (:data:`SHIPPED`); checks format and checksum."""
        path = Path(source)
        if str(source) in SHIPPED:
            path = Path(str(resources.files("nas_env.bench") / "tables" / f"{source}.json.gz"))
        if not path.is_file():
            raise ValueError(f"no NASRL-Bench table {source!r}: give a .json.gz path or one of {SHIPPED}")
        try:
            with gzip.open(path, "rt", encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, EOFError, ValueError) as e:  # not gzip, cut short, not JSON: not a table
            raise ValueError(f"{path} is not a NASRL-Bench table (gzipped JSON): {e}") from e
        if not isinstance(data, dict):
            raise ValueError(f"{path} is not a NASRL-Bench table: expected a JSON object, got {type(data).__name__}")
        digest = data.pop("sha256", None)
        if data.get("format") != FORMAT:
            raise ValueError(f"{path} is not a {FORMAT} table (format {data.get('format')!r})")
        if digest != _checksum(data):
            raise ValueError(f"{path}: checksum mismatch, the table is damaged or was edited")

        return cls(data["name"], data["env_id"], data["env_kwargs"], data["tokens"], data["fingerprint"],
                   data["seeds"], int(data["epochs"]), np.array(data["val_acc"], dtype=np.float32),
                   np.array(data["test_acc"], dtype=np.float32), np.array(data["train_seconds"], dtype=np.float32),
                   np.array(data["status"], dtype=str), np.array(data["params"], dtype=np.int64),
                   np.array(data["flops"], dtype=np.int64))


def enumerate_actions(token_choices: Sequence[int]) -> Iterator[list[int]]:
    """Every action list of a space, in index order."""
    total = int(np.prod(token_choices, dtype=np.int64))
    for i in range(total):
        yield actions_of(i, token_choices)


def describe(table: BenchTable, epochs: int | None = None) -> dict[str, Any]:
    """The facts ``nasrl-tabulate --describe`` prints: size, best, percentiles, noise vs. spread, correlations."""
    from scipy.stats import spearmanr

    col = table.fidelity(epochs)
    val = np.nan_to_num(table.val_acc[:, :, col], nan=0.0)
    mean = val.mean(axis=1)
    ok = (table.status == "ok").all(axis=1)
    best = int(np.argmax(mean))
    seed_sd = float(np.sqrt(np.mean(val[ok].var(axis=1, ddof=1)))) if val.shape[1] > 1 else float("nan")
    arch_sd = float(mean[ok].std(ddof=1))
    pct = {p: float(np.percentile(mean, p)) for p in (1, 10, 25, 50, 75, 90, 99)}
    top1 = mean >= np.percentile(mean, 99)
    first = np.nan_to_num(table.val_acc[:, :, 0], nan=0.0).mean(axis=1)
    return {
        "name": table.name, "architectures": table.num_archs, "seeds": len(table.seeds), "epochs": table.epochs,
        "fidelity_epoch": col + 1, "ok_share": float(ok.mean()),
        "best": {"index": best, "actions": actions_of(best, table.token_choices), "mean_val_acc": float(mean[best]),
                 "mean_test_acc": float(table.mean_test()[best])},
        "percentiles": pct,
        "seed_sd": seed_sd, "arch_sd": arch_sd, "seed_to_arch_sd": seed_sd / arch_sd if arch_sd else float("nan"),
        "top1pct_mean": float(mean[top1].mean()), "median": pct[50],
        "top1pct_minus_median_in_seed_sds": float((mean[top1].mean() - pct[50]) / seed_sd) if seed_sd else None,
        "spearman_val_test": float(spearmanr(mean, table.mean_test()).statistic),
        "spearman_epoch1_last": float(spearmanr(first, mean).statistic),
        "mean_train_seconds": float(np.nanmean(table.train_seconds)),
    }
