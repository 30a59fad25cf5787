"""Final training of a found architecture: grid search on validation, full training, one test evaluation.

The paper's protocol after a search (Zoph & Le 2017, section 4.1): take the best architecture
(a run's ``best.json``: its incumbent architecture), run a small grid search over the learning rate, the weight
decay, the batch-norm epsilon and the epoch at which the learning rate decays, train the best
setting in full, and report its test error with its depth and parameter count (Table 1).

Here, for one architecture:

1. every grid point trains on the search's training split and is scored by its validation
   accuracy after the last epoch (the final model is also taken after its last epoch);
2. the best point retrains from scratch on all training images (train + validation) for the
   full schedule;
3. the test set is read and evaluated once, at the very end (the official test split of CIFAR-10
   and of torchvision's sets; an image folder's ``test/``; for the digits, and an image folder
   without ``test/``, a fixed held-out part of the search's training split, which no search child
   was ever scored on; for images in memory, the ``test_data`` passed to :class:`FinalConfig`);
4. the result is printed as a row of Table 1 (Model, Depth, Parameters, Error rate (%)) and
   written to ``report.json``, with the weights (``model_state_dict.pt``), a self-contained
   exported model (``model.pt2``, :mod:`torch.export`: ``torch.export.load(path).module()``
   predicts from float images on the 0-255 scale without this project's code), progress
   bars and TensorBoard events.

The learning rate follows a step schedule: ``lr`` until ``lr_decay_epoch``, then
``lr * lr_decay_factor``. When the grid runs use a shorter schedule than the final run
(``grid_epochs < epochs``), each point's decay epoch is scaled to the same fraction of the
shorter schedule.

Every data source of the search is rebuilt from the run's ``config.json`` (its ``env_kwargs``:
``dataset``, ``data_root``, ``image_size``, ``val_size`` / ``val_fraction``, ``split_seed``), so
the grid sees the search's own split. Images passed in memory (``data=...``) are not in a config
file: give them to :class:`FinalConfig` (``data`` and ``test_data``) from Python.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nas_env.cli import parse_dataclass
from nas_env.data.base import ImageData, channel_stats
from nas_env.data.memory import as_images, as_labels
from nas_env.data.sources import (
    IMAGE_DATASETS,
    MEMORY,
    check_test_set,
    load_image_source,
    load_image_test,
    official_test_note,
)
from nas_env.models.cnn import build_model
from nas_env.spaces.cnn import CNNArchitecture
from nas_env.training.device import resolve_device
from nas_env.training.image_trainer import PRECISIONS, DeviceData, TrainConfig, train_child

DATASETS = IMAGE_DATASETS  # from a config file; MEMORY too from Python (FinalConfig.data)
GRID_KEYS = ("lr", "weight_decay", "bn_eps", "lr_decay_epoch")
CIFAR10_OFFICIAL_TEST_IMAGES = 10_000
MONITOR_IMAGES = 1000  # training images re-scored each final epoch, only to watch the fit (no test data)
TEST_READ_MARKER = "TEST_SET_READ"  # written just before the one test evaluation

# Paper-like defaults, one place per dataset. The paper does not list its grid; these are the
# usual neighbours of its child setting (lr 0.1, weight decay 1e-4, PyTorch's BN epsilon 1e-5).
# ``lr_decay_epoch`` None: two grid values, one decay at half or one at three quarters of the final schedule.
PRESETS: dict[str, dict[str, Any]] = {
    "cifar10": {"epochs": 100, "grid_epochs": 25, "batch_size": 128,
                "grid": {"lr": (0.1, 0.05), "weight_decay": (1e-4, 5e-4), "bn_eps": (1e-5, 1e-3),
                         "lr_decay_epoch": None}},
    "digits": {"epochs": 30, "grid_epochs": 10, "batch_size": 64,
               "grid": {"lr": (0.1, 0.05), "weight_decay": (1e-4, 5e-4), "bn_eps": (1e-5, 1e-3),
                        "lr_decay_epoch": None}},
}
for _name in (*DATASETS, MEMORY):  # every other source: CIFAR-10's schedule and grid
    PRESETS.setdefault(_name, PRESETS["cifar10"])
DIGITS_TEST_SIZE = 297  # held out of the search's training split for the final test
HELD_OUT_FRACTION = 0.1  # an image folder without test/: this share of the search's training split is the test set
SPLIT_KEYS = ("image_size", "val_size", "val_fraction", "split_seed")  # env kwargs that decide the search's split


@dataclass(frozen=True)
class HParams:
    """One grid point."""

    lr: float
    weight_decay: float
    bn_eps: float
    lr_decay_epoch: int  # epoch (of the final schedule) from which the lr is multiplied by lr_decay_factor


@dataclass
class FinalConfig:
    """Everything :func:`train_final` needs; None fields take the dataset's :data:`PRESETS` value."""

    source: str  # a run folder, a best.json (or any results record) or an architecture JSON
    dataset: str | None = None  # one of DATASETS; None: from the run folder's config.json ("memory" with data)
    data_root: str | None = None  # the datasets' root or the image folder; None: the run's, else $NASRL_DATA_ROOT
    download: bool = True
    epochs: int | None = None
    grid_epochs: int | None = None
    batch_size: int | None = None
    grid: dict[str, Sequence[float | int]] = field(default_factory=dict)  # overrides per GRID_KEYS key
    lr_decay_factor: float = 0.1
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    train_subset: int | None = None  # keep the first N training images (quick runs)
    val_subset: int | None = None  # keep the first N validation images (quick runs)
    test_size: int | None = None  # digits / image folder without test/: images held out as the test set
    # the search's split; None: the run's env_kwargs, else the source's default
    image_size: int | Sequence[int] | None = None
    val_size: int | None = None
    val_fraction: float | None = None
    split_seed: int | None = None
    data: Any = None  # images in memory, as the env's data=... (train_x, train_y, val_x, val_y), (x, y) or ImageData
    test_data: Any = None  # with data: the test images and labels (x, y)
    name: str | None = None  # the Model column; None: the run folder's (or file's) name
    out: str | None = None  # output folder; None: <run folder>/final (or final_<file stem> next to a JSON)
    progress: bool = True


# --- input -------------------------------------------------------------------------------------
@dataclass
class Source:
    """The architecture to train and what its origin says about the data."""

    arch: CNNArchitecture
    path: Path
    run_dir: Path | None  # the search's run folder, when known
    run_config: dict[str, Any]  # its config.json ({} without one)
    record: dict[str, Any] | None  # the results record (best.json) it came from, if any


def load_source(source: str | Path) -> Source:
    """Read a run folder (its ``best.json``), a results record (``best.json``) or an architecture JSON."""
    path = Path(source)
    if path.is_dir():
        run_dir: Path | None = path
        path = path / "best.json"
        if not path.is_file():
            raise FileNotFoundError(f"{run_dir} has no best.json: pass a run folder with at least one finished "
                                    "child, a best.json, or an architecture JSON")
    elif path.is_file():
        run_dir = path.parent if (path.parent / "config.json").is_file() and path.name == "best.json" else None
    else:
        raise FileNotFoundError(f"{source!r} is neither a run folder nor a JSON file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e
    record = None
    if isinstance(data, dict) and "arch" in data:  # a results record: its arch is canonical JSON text
        record = data
        arch_data = json.loads(data["arch"]) if isinstance(data["arch"], str) else data["arch"]
    elif isinstance(data, dict) and "layers" in data:
        arch_data = data
    else:
        raise ValueError(f"{path} holds neither a results record (with 'arch') nor a CNN architecture (with 'layers')")
    arch = CNNArchitecture.from_dict(arch_data)
    config: dict[str, Any] = {}
    if run_dir is not None and (run_dir / "config.json").is_file():
        config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    return Source(arch, path, run_dir, config, record)


def dataset_of_run(config: dict[str, Any]) -> str | None:
    """The dataset a search ran on: its env kwargs' ``dataset``, else the registered env's."""
    env_kwargs = config.get("env_kwargs") or {}
    if env_kwargs.get("data") is not None:
        return MEMORY
    if env_kwargs.get("dataset"):
        return str(env_kwargs["dataset"])
    env_id = config.get("env")
    if not env_id:
        return None
    import gymnasium as gym

    import nas_env  # noqa: F401  (registers the ids)

    try:
        return gym.spec(env_id).kwargs.get("dataset")
    except gym.error.Error:
        return None


# --- grid ---------------------------------------------------------------------------------------
def default_decay_epochs(epochs: int) -> tuple[int, ...]:
    """The two grid values of the decay epoch: half and three quarters of the schedule (distinct, at least 1)."""
    return tuple(sorted({max(1, round(epochs * f)) for f in (0.5, 0.75)}))


def make_grid(dataset: str, epochs: int, overrides: dict[str, Sequence[float | int]] | None = None) -> list[HParams]:
    """The grid points: the dataset's preset with ``overrides`` per key, in ``GRID_KEYS`` product order."""
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(GRID_KEYS))
    if unknown:
        raise ValueError(f"unknown grid key(s) {unknown}; allowed: {list(GRID_KEYS)}")
    grid = {**PRESETS[dataset]["grid"], **{k: v for k, v in overrides.items() if v is not None}}
    if grid["lr_decay_epoch"] is None:
        grid["lr_decay_epoch"] = default_decay_epochs(epochs)
    values: dict[str, tuple[Any, ...]] = {}
    for key in GRID_KEYS:
        raw = grid[key]
        vals = tuple(raw) if isinstance(raw, list | tuple) else (raw,)
        if not vals:
            raise ValueError(f"grid {key!r} is empty: give at least one value")
        for v in vals:
            _check_grid_value(key, v, epochs)
        values[key] = tuple(dict.fromkeys(vals))  # drop duplicates, keep order
    return [HParams(lr=float(a), weight_decay=float(b), bn_eps=float(c), lr_decay_epoch=int(d))
            for a, b, c, d in itertools.product(*(values[k] for k in GRID_KEYS))]


def _check_grid_value(key: str, v: Any, epochs: int) -> None:
    if key == "lr_decay_epoch":
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= epochs:
            raise ValueError(f"grid lr_decay_epoch values must be ints in 1..{epochs} (the final schedule's epochs; "
                             f"{epochs} means no decay), got {v!r}")
        return
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise ValueError(f"grid {key} values must be finite numbers, got {v!r}")
    if key in ("lr", "bn_eps") and v <= 0:
        raise ValueError(f"grid {key} values must be > 0, got {v!r}")
    if key == "weight_decay" and v < 0:
        raise ValueError(f"grid weight_decay values must be >= 0, got {v!r}")


def scaled_decay_epoch(decay_epoch: int, epochs: int, grid_epochs: int) -> int:
    """A decay epoch of the final schedule moved to the same fraction of a grid run's schedule."""
    return max(1, min(grid_epochs, round(decay_epoch * grid_epochs / epochs)))


# --- data ---------------------------------------------------------------------------------------
@dataclass
class FinalData:
    """The grid's split, the final run's training data, and the test set (read by ``load_test`` only)."""

    search: ImageData  # train / validation as in the search
    full: ImageData  # train + validation as training; its "validation" is training images (fit monitor)
    load_test: Callable[[], tuple[torch.Tensor, torch.Tensor]]
    test_note: str  # what the test set is


def _keep(x: torch.Tensor, y: torch.Tensor, n: int | None, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    if n is None:
        return x, y
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(y):
        raise ValueError(f"{what} must be an int in 1..{len(y)}, got {n!r}")
    return x[:n], y[:n]


def _image_data(like: ImageData, train: tuple[torch.Tensor, torch.Tensor],
                val: tuple[torch.Tensor, torch.Tensor]) -> ImageData:
    """An :class:`ImageData` like ``like`` with other splits (mean and std recomputed on ``train``)."""
    mean, std = channel_stats(train[0])
    return ImageData(like.name, train[0], train[1], val[0], val[1], like.num_classes, mean, std, like.augment,
                     like.classes)


def _test_size(config: FinalConfig, dataset: str, n: int) -> int:
    """Images held out of the search's ``n`` training images as the test set (digits, an image folder without test/)."""
    size = config.test_size
    if size is None:
        size = DIGITS_TEST_SIZE if dataset == "digits" else max(1, round(HELD_OUT_FRACTION * n))
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= n - 2:
        raise ValueError(f"test_size must be an int in 1..{n - 2} (held out of the search's {n} training "
                         f"images), got {size!r}")
    return size


def _memory_test(config: FinalConfig, like: ImageData) -> tuple[torch.Tensor, torch.Tensor]:
    if config.test_data is None:
        raise ValueError("images in memory (data=...) need their test set too: pass test_data=(test_x, test_y)")
    if not isinstance(config.test_data, list | tuple) or len(config.test_data) != 2:
        raise ValueError(f"test_data must be a pair (test_x, test_y), got {type(config.test_data).__name__}")
    x, y = as_images(config.test_data[0], "test_x"), as_labels(config.test_data[1], "test_y")
    if len(x) != len(y) or x.shape[1:] != like.train_x.shape[1:]:
        raise ValueError(f"test_data: {len(x)} images of shape {tuple(x.shape[1:])} and {len(y)} labels; expected "
                         f"as many labels as images, shaped like the training images {like.input_shape}")
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= like.num_classes):
        raise ValueError(f"test_y: labels out of range: found {int(y.min())}..{int(y.max())}, allowed "
                         f"0..{like.num_classes - 1}")
    return x, y


def prepare_data(config: FinalConfig, dataset: str, data_root: str | None,
                 split: dict[str, Any] | None = None) -> FinalData:
    """Load the splits. Nothing here reads a test image (an official test set is only checked to exist).

    ``split`` holds the search's ``image_size``, ``val_size``, ``val_fraction`` and ``split_seed``.
    """
    split = {k: v for k, v in (split or {}).items() if v is not None}
    subsets = {"train_subset": config.train_subset, "val_subset": config.val_subset}
    note = official_test_note(dataset, data_root) if dataset != MEMORY else "memory: the test_data passed in"
    if note is None:  # no official test set: hold out the tail of the search's training split
        d = load_image_source(dataset, data_root=data_root, download=config.download, **split)
        n = len(d.train_y)
        size = _test_size(config, dataset, n)
        cut = n - size
        test = (d.train_x[cut:], d.train_y[cut:])
        train = _keep(d.train_x[:cut], d.train_y[:cut], config.train_subset, "train_subset")
        val = _keep(d.val_x, d.val_y, config.val_subset, "val_subset")
        note = (f"{dataset}: no official test set; {size} images held out of the search's training split "
                "(they trained search children, whose weights are discarded, but never scored one)")

        def load_test() -> tuple[torch.Tensor, torch.Tensor]:
            return test
    else:
        if dataset != MEMORY:
            check_test_set(dataset, data_root, config.download)  # fail now, not after training
        d = load_image_source(dataset, data=config.data, data_root=data_root, download=config.download,
                              **split, **subsets)
        if dataset == MEMORY:
            memory_test = _memory_test(config, d)  # checked now, before any training
        train, val = (d.train_x, d.train_y), (d.val_x, d.val_y)

        def load_test() -> tuple[torch.Tensor, torch.Tensor]:
            if dataset == MEMORY:
                return memory_test
            return load_image_test(dataset, d, data_root, config.download)

    full_train = (torch.cat([train[0], val[0]]), torch.cat([train[1], val[1]]))
    monitor = (val[0][:MONITOR_IMAGES], val[1][:MONITOR_IMAGES])
    return FinalData(_image_data(d, train, val), _image_data(d, full_train, monitor), load_test, note)


# --- model and export ------------------------------------------------------------------------------
class NormalisedClassifier(nn.Module):
    """The child with its input normalisation: float images ``N x C x H x W`` on the 0-255 scale in, logits out."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 1000) -> torch.Tensor:
    """Class predictions (int64, on the CPU) of a :class:`NormalisedClassifier` for uint8 or float 0-255 images."""
    model.eval()
    preds = [model(images[s : s + batch_size].to(device, torch.float32)).argmax(dim=1).cpu()
             for s in range(0, len(images), batch_size)]
    return torch.cat(preds)


def export_model(model: NormalisedClassifier, input_shape: Sequence[int], path: Path) -> None:
    """Save ``model`` with :func:`torch.export` (any batch size), loadable by ``torch.export.load`` alone."""
    cpu = copy.deepcopy(model).to("cpu", memory_format=torch.contiguous_format).eval()
    example = torch.zeros(2, *input_shape)  # batch 2: a size-1 example would specialise the batch dimension
    program = torch.export.export(cpu, (example,), dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    torch.export.save(program, str(path))


def format_params(n: int) -> str:
    """Parameters as the paper's Table 1 writes them (4.2M), with K below a million."""
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}K" if n >= 1e3 else str(n)


def table_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """Rows of Table 1's columns as a Markdown table."""
    lines = ["| Model | Depth | Parameters | Error rate (%) |", "|---|---:|---:|---:|"]
    lines += [f"| {r['Model']} | {r['Depth']} | {format_params(r['Parameters'])} | {r['Error rate (%)']:.2f} |"
              for r in rows]
    return "\n".join(lines)


# --- the procedure ------------------------------------------------------------------------------
def _resolve(config: FinalConfig) -> tuple[Source, str, str | None, int, int, int]:
    src = load_source(config.source)
    env_kwargs = src.run_config.get("env_kwargs") or {}
    if config.data is not None:
        dataset = MEMORY
    else:
        dataset = config.dataset or dataset_of_run(src.run_config)
        if dataset == MEMORY:
            raise ValueError(f"{config.source!r} searched on images in memory (data=...), which config.json cannot "
                             "hold: use the Python API, train_final(FinalConfig(source=..., data=(train_x, train_y, "
                             "val_x, val_y), test_data=(test_x, test_y)))")
    if dataset is None:
        raise ValueError(f"cannot tell the dataset of {config.source!r}: pass --dataset ({', '.join(DATASETS)})")
    if dataset not in (*DATASETS, MEMORY):
        raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
    data_root = config.data_root if config.data_root is not None else env_kwargs.get("data_root")
    if dataset == "imagefolder" and data_root is None:
        raise ValueError("dataset 'imagefolder' needs its folder: pass --data-root DIR (the run's config.json has "
                         "no data_root)")
    preset = PRESETS[dataset]
    epochs = config.epochs if config.epochs is not None else preset["epochs"]
    grid_epochs = config.grid_epochs if config.grid_epochs is not None else min(preset["grid_epochs"], epochs)
    batch_size = config.batch_size if config.batch_size is not None else preset["batch_size"]
    for name, v in (("epochs", epochs), ("grid_epochs", grid_epochs), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if grid_epochs > epochs:
        raise ValueError(f"grid_epochs={grid_epochs} exceeds epochs={epochs}: the grid runs are at most the full "
                         "schedule")
    if config.precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {config.precision!r}")
    if not isinstance(config.lr_decay_factor, int | float) or not 0 < config.lr_decay_factor <= 1:
        raise ValueError(f"lr_decay_factor must be in (0, 1], got {config.lr_decay_factor!r}")
    return src, dataset, data_root, epochs, grid_epochs, batch_size


def search_split(config: FinalConfig, run_config: dict[str, Any]) -> dict[str, Any]:
    """The search's split settings: :class:`FinalConfig`'s where given, else the run's env kwargs."""
    env_kwargs = run_config.get("env_kwargs") or {}
    return {k: getattr(config, k) if getattr(config, k) is not None else env_kwargs.get(k) for k in SPLIT_KEYS}


def _out_dir(config: FinalConfig, src: Source) -> Path:
    if config.out:
        out = Path(config.out)
    elif src.run_dir is not None:
        out = src.run_dir / "final"
    else:
        out = src.path.parent / f"final_{src.path.stem}"
    if (out / "report.json").exists():
        raise FileExistsError(f"{out} already holds a final report; pass --out to write elsewhere")
    if (out / TEST_READ_MARKER).exists():  # an earlier run read the test set and then failed: never read it twice
        raise FileExistsError(f"{out / TEST_READ_MARKER} says an earlier run already evaluated on the test set; "
                              f"its weights are in {out}; pass --out to start a new final training")
    return out


def _train_config(h: HParams, epochs: int, decay_epoch: int, batch_size: int, config: FinalConfig) -> TrainConfig:
    return TrainConfig(epochs=epochs, batch_size=batch_size, lr=h.lr, weight_decay=h.weight_decay,
                       lr_schedule="step", lr_decay_epochs=(decay_epoch,),
                       lr_decay_factor=float(config.lr_decay_factor), precision=config.precision)


def _build(arch: CNNArchitecture, data: ImageData, bn_eps: float, seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's global RNG
        torch.manual_seed(int(seed))
        return build_model(arch, data.input_shape, data.num_classes, bn_eps=bn_eps)


def train_final(config: FinalConfig) -> dict[str, Any]:
    """Grid search, final training and the one test evaluation; returns (and writes) the report."""
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    start = time.perf_counter()
    src, dataset, data_root, epochs, grid_epochs, batch_size = _resolve(config)
    grid = make_grid(dataset, epochs, config.grid)
    device = resolve_device(config.device)
    out = _out_dir(config, src)
    name = config.name or (src.run_dir.name if src.run_dir is not None else src.path.stem)
    data = prepare_data(config, dataset, data_root, search_split(config, src.run_config))
    out.mkdir(parents=True, exist_ok=True)
    writer = SummaryWriter(log_dir=str(out))
    bar = tqdm(total=len(grid) * grid_epochs + epochs, unit="epoch", disable=not config.progress, dynamic_ncols=True,
               desc="grid")

    def on_epoch(tag: str, run: str) -> Callable[[int, float, float], None]:
        def log(epoch: int, acc: float, loss: float) -> None:
            writer.add_scalar(f"{tag}/{run}/{'val_acc' if tag == 'grid' else 'fit_acc'}", acc, epoch + 1)
            writer.add_scalar(f"{tag}/{run}/train_loss", loss, epoch + 1)
            bar.set_postfix(run=run, acc=f"{acc:.4f}", loss=f"{loss:.3f}", refresh=False)  # shown by the update
            bar.update(1)

        return log

    # 1. the grid, on the search's train / validation split
    results: list[dict[str, Any]] = []
    search_data = DeviceData(data.search, device)
    try:
        for i, h in enumerate(grid):
            decay = scaled_decay_epoch(h.lr_decay_epoch, epochs, grid_epochs)
            bar.set_description(f"grid {i + 1}/{len(grid)}")
            model = _build(src.arch, data.search, h.bn_eps, config.seed)
            outcome = train_child(model, search_data, _train_config(h, grid_epochs, decay, batch_size, config),
                                  config.seed, on_epoch("grid", f"{i:02d}"))
            val_acc = outcome.val_acc_history[-1] if outcome.status == "ok" and outcome.val_acc_history else 0.0
            results.append({**asdict(h), "grid_lr_decay_epoch": decay, "val_acc": val_acc, "status": outcome.status,
                            "val_acc_history": outcome.val_acc_history, "train_seconds": outcome.train_seconds})
            writer.add_hparams({**asdict(h), "run": i}, {"hparam/val_acc": val_acc}, run_name=f"hparams/grid_{i:02d}")
            bar.update(grid_epochs - len(outcome.val_acc_history))  # a diverged run stops early
            del model
        best_index = max(range(len(results)), key=lambda k: (results[k]["val_acc"], -k))  # ties: the first
        best = grid[best_index]
    finally:
        del search_data
        if device.type == "cuda":
            torch.cuda.empty_cache()

    # 2. the final run on train + validation, full schedule
    bar.set_description("final")
    full_data = DeviceData(data.full, device)
    model = _build(src.arch, data.full, best.bn_eps, config.seed)
    final = train_child(model, full_data, _train_config(best, epochs, best.lr_decay_epoch, batch_size, config),
                        config.seed, on_epoch("final", "full"))
    bar.update(epochs - len(final.val_acc_history))
    bar.close()
    del full_data
    classifier = NormalisedClassifier(model, data.full.mean, data.full.std).to(device,
                                                                               memory_format=torch.contiguous_format)

    # Everything that could still fail is saved before the test set is touched.
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, out / "model_state_dict.pt")
    (out / "arch.json").write_text(src.arch.to_json() + "\n", encoding="utf-8")
    export_model(classifier, data.full.input_shape, out / "model.pt2")

    # 3. the test set: read and evaluated exactly once, here (the marker keeps a rerun from reading it again)
    (out / TEST_READ_MARKER).write_text(f"test set read at {time.strftime('%Y-%m-%d %H:%M:%S')}\n", encoding="utf-8")
    test_x, test_y = data.load_test()
    preds = predict(classifier, test_x, device)
    test_acc = float((preds == test_y).float().mean())
    n_test = len(test_y)
    error = 100.0 * (1.0 - test_acc)
    stderr = 100.0 * math.sqrt(test_acc * (1.0 - test_acc) / n_test)
    note = data.test_note
    if dataset == "cifar10" and n_test < CIFAR10_OFFICIAL_TEST_IMAGES:
        note = (f"cifar10: only {n_test:,} of the official {CIFAR10_OFFICIAL_TEST_IMAGES:,} test images (the shared "
                f"copy holds the first 1,000 of the official test batch), so the error rate has a standard error of "
                f"about {stderr:.2f} points")

    # 4. table, report
    params = sum(p.numel() for p in model.parameters())
    row = {"Model": name, "Depth": src.arch.num_layers, "Parameters": params, "Error rate (%)": round(error, 4)}
    report = {
        "table": row,
        "model": name,
        "depth": src.arch.num_layers,
        "parameters": params,
        "error_rate": error,
        "error_rate_stderr": stderr,
        "test_accuracy": test_acc,
        "test_images": n_test,
        "test_set": note,
        "dataset": dataset,
        "source": str(src.path),
        "search_val_acc": (src.record or {}).get("val_acc"),
        "arch": src.arch.to_dict(),
        "hparams": asdict(best),
        "lr_decay_factor": float(config.lr_decay_factor),
        "epochs": epochs,
        "grid_epochs": grid_epochs,
        "batch_size": batch_size,
        "seed": config.seed,
        "device": str(device),
        "grid": results,
        "grid_train_images": len(data.search.train_y),
        "grid_val_images": len(data.search.val_y),
        "final_train_images": len(data.full.train_y),
        "final_status": final.status,
        "final_fit_acc_history": final.val_acc_history,
        "final_train_seconds": final.train_seconds,
        "total_seconds": time.perf_counter() - start,
        "files": {"weights": "model_state_dict.pt", "exported": "model.pt2", "arch": "arch.json",
                  "report": "report.json"},
        "input_mean": list(data.full.mean),  # what build_model + model_state_dict.pt need: (x - mean) / std
        "input_std": list(data.full.std),
        "exported_model": {"format": "torch.export (ExportedProgram)", "load": "torch.export.load(path).module()",
                           "input": f"float32 N x {' x '.join(map(str, data.full.input_shape))}, pixels 0-255 "
                                    "(normalisation built in)", "output": f"logits N x {data.full.num_classes}"},
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    table = table_markdown([row])
    writer.add_scalar("final/test_acc", test_acc, epochs)
    writer.add_scalar("final/test_error", error, epochs)
    writer.add_text("final/table", table + f"\n\n{note}", 0)
    writer.flush()
    writer.close()
    print(f"\n{table}\n\n{note}\ntest accuracy {test_acc:.4f} on {n_test} images; best grid point {asdict(best)} "
          f"(val acc {results[best_index]['val_acc']:.4f}); final status {final.status}\nreport: {out / 'report.json'}")
    return report


# --- command line --------------------------------------------------------------------------------
@dataclass
class FinalArgs:
    """Flags of ``nasrl-train-final`` (one docstring per field); :func:`parse_args` turns them into a FinalConfig."""

    source: str = field(metadata={"positional": True})
    """a run folder, a best.json, or an architecture JSON"""
    dataset: str | None = None
    """one of the datasets (default: the run folder's)"""
    data_root: str | None = None
    """the datasets' root, or the image folder (default: the run's, else $NASRL_DATA_ROOT)"""
    download: bool = True
    """fetch CIFAR-10 / torchvision's sets when absent"""
    image_size: list[int] | None = None
    """image folder: H [W] (default: the run's)"""
    val_size: int | None = None
    """the search's validation images (default: the run's)"""
    val_fraction: float | None = None
    """the search's validation share (default: the run's)"""
    split_seed: int | None = None
    """the search's split seed (default: the run's)"""
    epochs: int | None = None
    """final training epochs (default: cifar10 100, digits 30)"""
    grid_epochs: int | None = None
    """epochs of each grid run (default: cifar10 25, digits 10)"""
    batch_size: int | None = None
    """default: cifar10 128, digits 64"""
    grid: str = ""
    """the grid as a JSON object or a JSON file, with keys lr, weight_decay, bn_eps, lr_decay_epoch (lists)"""
    lr: list[float] | None = None
    """grid learning rates (default 0.1 0.05)"""
    weight_decay: list[float] | None = None
    """grid weight decays (default 1e-4 5e-4)"""
    bn_eps: list[float] | None = None
    """grid batch-norm epsilons (default 1e-5 1e-3)"""
    lr_decay_epoch: list[int] | None = None
    """grid epochs (of the final schedule) at which the lr decays (default: 1/2 and 3/4 of it)"""
    lr_decay_factor: float = 0.1
    """lr multiplier at the decay epoch"""
    seed: int = 0
    """initialisation, data order and augmentation"""
    device: str = "auto"
    """auto, cpu, cuda or cuda:N"""
    precision: str = "auto"
    """training precision: auto, fp32 or bf16"""
    train_subset: int | None = None
    """keep the first N training images (quick runs)"""
    val_subset: int | None = None
    """keep the first N validation images (quick runs)"""
    test_size: int | None = None
    """without an official test set: held-out test images (default: digits 297, an image folder 10% of its
    training split)"""
    name: str | None = None
    """the Model column (default: the run folder's name)"""
    out: str | None = None
    """output folder (default: <run folder>/final)"""
    progress: bool = True
    """show a progress bar"""


def _grid_json(text: str) -> dict[str, Any]:
    path = Path(text)
    try:
        value = json.loads(path.read_text(encoding="utf-8") if path.is_file() else text)
    except json.JSONDecodeError as e:
        raise ValueError(f"--grid must be a JSON object or a JSON file, got {text!r}: {e}") from e
    if not isinstance(value, dict):
        raise ValueError(f"--grid must be a JSON object like '{{\"lr\": [0.1, 0.05]}}', got {text!r}")
    return value


def parse_args(argv: list[str] | None = None) -> FinalConfig:
    """Command-line flags of ``nasrl-train-final``; a bad value exits with a message naming it."""
    args, _, parser = parse_dataclass(FinalArgs, argv, prog="nasrl-train-final", description=(
        "Final training of a found architecture (Zoph & Le, section 4.1): grid search on the validation split, "
        "training on all training images, one test evaluation, a Table 1 row."))
    if args.dataset is not None and args.dataset not in DATASETS:
        parser.error(f"--dataset {args.dataset!r} is not one of {', '.join(DATASETS)}")
    if args.precision not in PRECISIONS:
        parser.error(f"--precision {args.precision!r} is not one of {', '.join(PRECISIONS)}")
    if args.image_size is not None and len(args.image_size) > 2:
        parser.error(f"--image-size takes H or H W, got {args.image_size}")
    try:
        grid = _grid_json(args.grid) if args.grid else {}
    except ValueError as e:
        parser.error(str(e))
    for key in ("lr", "weight_decay", "bn_eps", "lr_decay_epoch"):
        if getattr(args, key) is not None:
            grid[key] = getattr(args, key)
    size = args.image_size
    image_size = None if size is None else size[0] if len(size) == 1 else (size[0], size[1])
    kept = {k: v for k, v in asdict(args).items() if k not in ("grid", "lr", "weight_decay", "bn_eps",
                                                               "lr_decay_epoch", "image_size")}
    return FinalConfig(**kept, grid=grid, image_size=image_size)


def main(argv: list[str] | None = None) -> None:
    """Console entry point ``nasrl-train-final``."""
    config = parse_args(argv)
    try:
        train_final(config)
    except KeyboardInterrupt:
        print("\ninterrupted: nothing was written to the test report", file=sys.stderr)
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
