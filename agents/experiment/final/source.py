"""What the search left behind, rebuilt: its architecture, its config.json and its data split (from its env_kwargs).

The test set is the official one where the source has one, else a fixed tail of the search's training split
that scored no child, or the ``test_data`` given with images in memory.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import torch

from nas_env.checks import check_int
from nas_env.data.base import ImageData, check_labels, make_image_data
from nas_env.data.memory import as_images, as_labels
from nas_env.data.sources import MEMORY, check_test_set, load_image_source, load_image_test, official_test_note
from nas_env.spaces.cnn import CNNArchitecture

if TYPE_CHECKING:
    from agents.experiment.final.config import FinalConfig

DIGITS_TEST_SIZE = 297  # held out of the search's training split for the final test
HELD_OUT_FRACTION = 0.1  # an image folder without test/: this share of the search's training split is the test set
MONITOR_IMAGES = 1000  # training images re-scored each final epoch, only to watch the fit (no test data)
SPLIT_KEYS = ("image_size", "val_size", "val_fraction", "split_seed")  # env kwargs that decide the search's split
Images = tuple[torch.Tensor, torch.Tensor]


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
    record = data if isinstance(data, dict) and "arch" in data else None  # a results record: arch as JSON text
    if record is not None:
        arch_data = json.loads(data["arch"]) if isinstance(data["arch"], str) else data["arch"]
    elif isinstance(data, dict) and "layers" in data:
        arch_data = data
    else:
        raise ValueError(f"{path} holds neither a results record (with 'arch') nor a CNN architecture (with 'layers')")
    config_path = run_dir / "config.json" if run_dir is not None else None
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path and config_path.is_file() else {}
    return Source(CNNArchitecture.from_dict(arch_data), path, run_dir, config, record)


def dataset_of_run(config: dict[str, Any]) -> str | None:
    """The dataset a search ran on: its env kwargs' ``dataset``, else the registered env's."""
    env_kwargs = config.get("env_kwargs") or {}
    if env_kwargs.get("data") is not None:
        return MEMORY
    if env_kwargs.get("dataset"):
        return str(env_kwargs["dataset"])
    if not config.get("env"):
        return None
    try:  # importing nas_env registered the ids
        return gym.spec(config["env"]).kwargs.get("dataset")
    except gym.error.Error:
        return None


def search_split(config: FinalConfig, run_config: dict[str, Any]) -> dict[str, Any]:
    """The search's split settings: :class:`FinalConfig`'s where given, else the run's env kwargs."""
    env_kwargs = run_config.get("env_kwargs") or {}
    return {k: getattr(config, k) if getattr(config, k) is not None else env_kwargs.get(k) for k in SPLIT_KEYS}


@dataclass
class FinalData:
    """The grid's split, the final run's training data, and the test set (read by ``load_test`` only)."""

    search: ImageData  # train / validation as in the search
    full: ImageData  # train + validation as training; its "validation" is training images (fit monitor)
    load_test: Callable[[], Images]
    test_note: str  # what the test set is


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
        cut = len(d.train_y) - _test_size(config, dataset, len(d.train_y))
        load_test = _given((d.train_x[cut:], d.train_y[cut:]))
        search = make_image_data(d.name, (d.train_x[:cut], d.train_y[:cut]), (d.val_x, d.val_y), d.num_classes,
                                 d.augment, d.classes, **subsets)
        note = (f"{dataset}: no official test set; {len(d.train_y) - cut} images held out of the search's training "
                "split (they trained search children, whose weights are discarded, but never scored one)")
    else:
        if dataset != MEMORY:
            check_test_set(dataset, data_root, config.download)  # fail now, not after training
        search = load_image_source(dataset, data=config.data, data_root=data_root, download=config.download,
                                   **split, **subsets)
        if dataset == MEMORY:
            load_test = _given(_memory_test(config, search))  # checked now, before any training
        else:
            load_test = partial(load_image_test, dataset, search, data_root, config.download)
    # the final run trains on train + validation; a slice of its training images watches the fit
    full = make_image_data(search.name, (torch.cat([search.train_x, search.val_x]),
                                         torch.cat([search.train_y, search.val_y])),
                           (search.val_x[:MONITOR_IMAGES], search.val_y[:MONITOR_IMAGES]), search.num_classes,
                           search.augment, search.classes)
    return FinalData(search, full, load_test, note)


def _given(images: Images) -> Callable[[], Images]:
    """The test loader of images already in hand (held out, or passed in memory)."""
    return lambda: images


def _test_size(config: FinalConfig, dataset: str, n: int) -> int:
    """Images held out of the search's ``n`` training images as the test set (digits, an image folder without test/)."""
    size = config.test_size
    if size is None:
        size = DIGITS_TEST_SIZE if dataset == "digits" else max(1, round(HELD_OUT_FRACTION * n))
    return check_int(f"test_size (images held out of the search's {n} training images)", size, minimum=1,
                     maximum=n - 2)


def _memory_test(config: FinalConfig, like: ImageData) -> Images:
    if config.test_data is None:
        raise ValueError("images in memory (data=...) need their test set too: pass test_data=(test_x, test_y)")
    if not isinstance(config.test_data, list | tuple) or len(config.test_data) != 2:
        raise ValueError(f"test_data must be a pair (test_x, test_y), got {type(config.test_data).__name__}")
    x, y = as_images(config.test_data[0], "test_x"), as_labels(config.test_data[1], "test_y")
    if len(x) != len(y) or x.shape[1:] != like.train_x.shape[1:]:
        raise ValueError(f"test_data: {len(x)} images of shape {tuple(x.shape[1:])} and {len(y)} labels; expected "
                         f"as many labels as images, shaped like the training images {like.input_shape}")
    check_labels(y, like.num_classes, "test_y")
    return x, y
