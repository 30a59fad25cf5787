"""Image classification datasets for the architecture search: in-memory uint8 train/validation splits.

:func:`load_image_source` (in :mod:`nas_env.data.sources`) loads any source by name; the
per-source loaders are re-exported here.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from nas_env.data.base import ImageData
from nas_env.data.cifar10 import load_cifar10, load_cifar10_test
from nas_env.data.digits import load_digits_data
from nas_env.data.imagefolder import load_image_folder
from nas_env.data.memory import load_memory
from nas_env.data.sources import IMAGE_DATASETS, load_image_source
from nas_env.data.torchvision_sets import NAMES as TORCHVISION_NAMES
from nas_env.data.torchvision_sets import load_torchvision_set, load_torchvision_test

__all__ = ["DATASETS", "IMAGE_DATASETS", "ImageData", "load_cifar10", "load_cifar10_test", "load_dataset",
           "load_digits_data", "load_image_folder", "load_image_source", "load_memory", "load_torchvision_set",
           "load_torchvision_test"]

DATASETS = {"digits": load_digits_data, "cifar10": load_cifar10, "imagefolder": load_image_folder,
            **{name: partial(load_torchvision_set, name) for name in TORCHVISION_NAMES}}


def load_dataset(name: str, **kwargs: Any) -> ImageData:
    """Load the dataset called ``name`` (a key of :data:`DATASETS`), passing ``kwargs`` to its loader."""
    try:
        loader = DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; allowed: {', '.join(sorted(DATASETS))}") from None
    return loader(**kwargs)
