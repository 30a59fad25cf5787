"""What a final training runs with: :class:`FinalConfig`, the grid, and the checks that resolve both into a plan."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.experiment.final.source import Source, dataset_of_run, load_source
from nas_env.checks import check_choice, check_int, check_number
from nas_env.data.sources import IMAGE_DATASETS, MEMORY
from nas_env.training.image_trainer import PRECISIONS

DATASETS = IMAGE_DATASETS  # from a config file; MEMORY too from Python (FinalConfig.data)
GRID_KEYS = ("lr", "weight_decay", "bn_eps", "lr_decay_epoch")
TEST_READ_MARKER = "TEST_SET_READ"  # written just before the one test evaluation

# Paper-like defaults, one place per dataset. The paper does not list its grid; these are the
# usual neighbours of its child setting (lr 0.1, weight decay 1e-4, PyTorch's BN epsilon 1e-5).
# ``lr_decay_epoch`` None: two grid values, one decay at half or one at three quarters of the final schedule.
_GRID = {"lr": (0.1, 0.05), "weight_decay": (1e-4, 5e-4), "bn_eps": (1e-5, 1e-3), "lr_decay_epoch": None}
PRESETS: dict[str, dict[str, Any]] = {"cifar10": {"epochs": 100, "grid_epochs": 25, "batch_size": 128, "grid": _GRID},
                                      "digits": {"epochs": 30, "grid_epochs": 10, "batch_size": 64, "grid": _GRID}}
for _name in (*DATASETS, MEMORY):  # every other source: CIFAR-10's schedule and grid
    PRESETS.setdefault(_name, PRESETS["cifar10"])


@dataclass(frozen=True)
class HParams:
    """One grid point."""

    lr: float
    weight_decay: float
    bn_eps: float
    lr_decay_epoch: int  # epoch (of the final schedule) from which the lr is multiplied by lr_decay_factor


@dataclass
class FinalSettings:
    """The settings ``nasrl-train-final``'s flags (:class:`FinalArgs`) and :class:`FinalConfig` share; None fields
    take the run's or the dataset's :data:`PRESETS` value (one docstring per field, shown by ``--help``)."""

    source: str = field(metadata={"positional": True})
    """a run folder, a best.json, or an architecture JSON"""
    dataset: str | None = None
    """one of the datasets (default: the run folder's)"""
    data_root: str | None = None
    """the datasets' root, or the image folder (default: the run's, else $NASRL_DATA_ROOT)"""
    download: bool = True
    """fetch CIFAR-10 / torchvision's sets when absent"""
    val_size: int | None = None
    """the search's validation images (default: the run's)"""
    val_fraction: float | None = None
    """the search's validation share (default: the run's)"""
    test_size: int | None = None
    """without an official test set: held-out test images (default: digits 297, an image folder 10% of its
    training split)"""
    split_seed: int | None = None
    """the search's split seed (default: the run's)"""
    device: str = "auto"
    """auto, cpu, cuda or cuda:N"""
    precision: str = "auto"
    """training precision: auto, fp32 or bf16"""
    batch_size: int | None = None
    """default: cifar10 128, digits 64"""
    seed: int = 0
    """initialisation, data order and augmentation"""
    epochs: int | None = None
    """final training epochs (default: cifar10 100, digits 30)"""
    grid_epochs: int | None = None
    """epochs of each grid run (default: cifar10 25, digits 10)"""
    lr_decay_factor: float = 0.1
    """lr multiplier at the decay epoch"""
    train_subset: int | None = None
    """keep the first N training images (quick runs)"""
    val_subset: int | None = None
    """keep the first N validation images (quick runs)"""
    progress: bool = True
    """show a progress bar"""
    name: str | None = None
    """the Model column (default: the run folder's name)"""
    out: str | None = None
    """output folder (default: <run folder>/final)"""


@dataclass
class FinalConfig(FinalSettings):
    """Everything :func:`train_final` needs: the shared settings, the grid, and images in memory (Python only)."""

    grid: dict[str, Sequence[float | int]] = field(default_factory=dict)  # overrides per GRID_KEYS key
    image_size: int | Sequence[int] | None = None  # the search's; None: the run's env_kwargs, else the source's
    data: Any = None  # images in memory, as the env's data=... (train_x, train_y, val_x, val_y), (x, y) or ImageData
    test_data: Any = None  # with data: the test images and labels (x, y)


def make_grid(dataset: str, epochs: int, overrides: dict[str, Sequence[float | int]] | None = None) -> list[HParams]:
    """The grid points: the dataset's preset with ``overrides`` per key, in ``GRID_KEYS`` product order."""
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(GRID_KEYS))
    if unknown:
        raise ValueError(f"unknown grid key(s) {unknown}; allowed: {list(GRID_KEYS)}")
    grid = {**PRESETS[dataset]["grid"], **{k: v for k, v in overrides.items() if v is not None}}
    if grid["lr_decay_epoch"] is None:  # half and three quarters of the final schedule (distinct, at least 1)
        grid["lr_decay_epoch"] = sorted({max(1, round(epochs * f)) for f in (0.5, 0.75)})
    values = []
    for key in GRID_KEYS:
        raw = grid[key] if isinstance(grid[key], list | tuple) else (grid[key],)
        if not raw:
            raise ValueError(f"grid {key!r} is empty: give at least one value")
        values.append(dict.fromkeys(_grid_value(key, v, epochs) for v in raw))  # no duplicates, order kept
    return [HParams(*point) for point in itertools.product(*values)]


def _grid_value(key: str, value: Any, epochs: int) -> float | int:
    if key == "lr_decay_epoch":
        return check_int(f"each grid lr_decay_epoch value (an epoch of the final schedule; {epochs}: no decay)",
                         value, minimum=1, maximum=epochs)
    return check_number(f"each grid {key} value", value, minimum=0, above=key != "weight_decay")


def scaled_decay_epoch(decay_epoch: int, epochs: int, grid_epochs: int) -> int:
    """A decay epoch of the final schedule moved to the same fraction of a grid run's schedule."""
    return max(1, min(grid_epochs, round(decay_epoch * grid_epochs / epochs)))


@dataclass
class Plan:
    """A :class:`FinalConfig` resolved against its source, every value checked before any data is read."""

    source: Source
    dataset: str
    data_root: str | None
    epochs: int
    grid_epochs: int
    batch_size: int
    grid: list[HParams]
    out: Path
    name: str  # the Model column


def resolve(config: FinalConfig) -> Plan:
    """Read the source and fill every None of ``config`` from the run or the dataset's preset; bad values raise."""
    src = load_source(config.source)
    dataset = _dataset(config, src)
    env_kwargs = src.run_config.get("env_kwargs") or {}
    data_root = config.data_root if config.data_root is not None else env_kwargs.get("data_root")
    if dataset == "imagefolder" and data_root is None:
        raise ValueError("dataset 'imagefolder' needs its folder: pass --data-root DIR (the run's config.json has "
                         "no data_root)")
    keys = ("epochs", "grid_epochs", "batch_size")
    epochs, grid_epochs, batch_size = (check_int(k, PRESETS[dataset][k] if getattr(config, k) is None
                                                 else getattr(config, k), minimum=1) for k in keys)
    if config.grid_epochs is None:  # a short --epochs shortens the preset's grid runs too
        grid_epochs = min(grid_epochs, epochs)
    if grid_epochs > epochs:
        raise ValueError(f"grid_epochs={grid_epochs} exceeds epochs={epochs}: the grid runs are at most the full "
                         "schedule")
    check_choice("precision", config.precision, PRECISIONS)
    check_number("lr_decay_factor", config.lr_decay_factor, minimum=0, maximum=1, above=True)
    grid = make_grid(dataset, epochs, config.grid)
    name = config.name or (src.run_dir.name if src.run_dir is not None else src.path.stem)
    return Plan(src, dataset, data_root, epochs, grid_epochs, batch_size, grid, _out_dir(config, src), name)


def _dataset(config: FinalConfig, src: Source) -> str:
    if config.data is not None:
        return MEMORY
    dataset = config.dataset or dataset_of_run(src.run_config)
    if dataset == MEMORY:
        raise ValueError(f"{config.source!r} searched on images in memory (data=...), which config.json cannot "
                         "hold: use the Python API, train_final(FinalConfig(source=..., data=(train_x, train_y, "
                         "val_x, val_y), test_data=(test_x, test_y)))")
    if dataset is None:
        raise ValueError(f"cannot tell the dataset of {config.source!r}: pass --dataset ({', '.join(DATASETS)})")
    return check_choice("dataset", dataset, DATASETS)


def _out_dir(config: FinalConfig, src: Source) -> Path:
    if config.out:
        out = Path(config.out)
    else:
        out = src.run_dir / "final" if src.run_dir is not None else src.path.parent / f"final_{src.path.stem}"
    if (out / "report.json").exists():
        raise FileExistsError(f"{out} already holds a final report; pass --out to write elsewhere")
    if (out / TEST_READ_MARKER).exists():  # an earlier run read the test set and then failed: never read it twice
        raise FileExistsError(f"{out / TEST_READ_MARKER} says an earlier run already evaluated on the test set; "
                              f"its weights are in {out}; pass --out to start a new final training")
    return out
