"""One entry point for every image data source, shared by the CNN environments and ``nasrl-train-final``.

A source is a dataset name (``"cifar10"``, ``"digits"``, torchvision's ``"cifar100"``, ``"mnist"``,
``"fashion_mnist"``, ``"svhn"``), an image folder (``"imagefolder"`` with ``data_root``) or
in-memory arrays (``data=...``, source ``"memory"``). The same keywords (``val_size`` /
``val_fraction``, ``split_seed``, ``train_subset`` / ``val_subset``) mean the same thing for all of
them, so the final training rebuilds exactly the search's split from its ``config.json``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from nas_env.data import cifar10
from nas_env.data.base import ImageData
from nas_env.data.cifar10 import load_cifar10
from nas_env.data.digits import load_digits_data
from nas_env.data.imagefolder import folder_splits, load_image_folder, load_image_folder_test
from nas_env.data.memory import load_memory
from nas_env.data.torchvision_sets import NAMES as TORCHVISION_NAMES
from nas_env.data.torchvision_sets import dataset_folder, load_torchvision_set, load_torchvision_test

MEMORY = "memory"  # the source of data=... (cannot be rebuilt from a config file)
IMAGE_DATASETS = ("cifar10", "digits", *TORCHVISION_NAMES, "imagefolder")
SOURCES = (*IMAGE_DATASETS, MEMORY)


def load_image_source(dataset: str, *, data: Any = None, data_root: str | Path | None = None, download: bool = True,
                      image_size: int | Sequence[int] | None = None, val_size: int | None = None,
                      val_fraction: float | None = None, split_seed: int = 0, train_subset: int | None = None,
                      val_subset: int | None = None) -> ImageData:
    """Load ``dataset``'s train / validation splits (``data`` given: the in-memory source, whatever ``dataset``)."""
    split = {"val_size": val_size, "val_fraction": val_fraction, "split_seed": split_seed,
             "train_subset": train_subset, "val_subset": val_subset}
    if data is not None:
        return load_memory(data, **split)
    if dataset not in IMAGE_DATASETS:
        raise ValueError(f"dataset must be one of {list(IMAGE_DATASETS)} (or pass data=... for images in memory), "
                         f"got {dataset!r}")
    if image_size is not None and dataset != "imagefolder":
        raise ValueError(f"image_size applies to dataset='imagefolder' only, got it with dataset={dataset!r}")
    if dataset == "imagefolder":
        if data_root is None:
            raise ValueError("dataset='imagefolder' needs data_root=DIR (a folder of class subfolders of images)")
        return load_image_folder(data_root, image_size=image_size, **split)
    if dataset == "digits":
        return load_digits_data(**split)
    if dataset == "cifar10":
        return load_cifar10(data_root, download=download, **split)
    return load_torchvision_set(dataset, data_root, download=download, **split)


def official_test_note(dataset: str, data_root: str | Path | None) -> str | None:
    """What the official test set of ``dataset`` is; None without one (digits, an image folder without test/)."""
    if dataset == "cifar10":
        return "cifar10: the official test batch"
    if dataset in TORCHVISION_NAMES:
        return f"{dataset}: the official test split"
    if dataset == "imagefolder" and data_root is not None and "test" in folder_splits(data_root):
        return f"imagefolder: the test/ folder of {Path(data_root).expanduser().resolve()}"
    return None


def check_test_set(dataset: str, data_root: str | Path | None, download: bool) -> None:
    """Fail now, before any training, when the official test set is missing (nothing is read)."""
    if dataset == "cifar10":
        cifar10.cifar10_folder(data_root, download, needed=(cifar10.TEST_BATCH,))
    elif dataset in TORCHVISION_NAMES:
        dataset_folder(dataset, data_root, "test", download)


def load_image_test(dataset: str, data: ImageData, data_root: str | Path | None,
                    download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The official test images of ``dataset`` (shaped and numbered like ``data``), for the final evaluation only."""
    if dataset == "cifar10":
        return cifar10.load_cifar10_test(data_root, download=download)  # module attribute: read once, countable
    if dataset in TORCHVISION_NAMES:
        return load_torchvision_test(dataset, data_root, download=download)
    if dataset == "imagefolder" and data_root is not None:
        test = load_image_folder_test(data_root, data.classes, data.input_shape)
        if test is not None:
            return test
    raise ValueError(f"dataset {dataset!r} has no official test set here")
