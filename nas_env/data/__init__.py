"""Image classification datasets for the architecture search: in-memory uint8 train/validation splits."""

from __future__ import annotations

from typing import Any

from nas_env.data.base import ImageData
from nas_env.data.cifar10 import load_cifar10, load_cifar10_test
from nas_env.data.digits import load_digits_data

__all__ = ["DATASETS", "ImageData", "load_cifar10", "load_cifar10_test", "load_dataset", "load_digits_data"]

DATASETS = {"digits": load_digits_data, "cifar10": load_cifar10}


def load_dataset(name: str, **kwargs: Any) -> ImageData:
    """Load the dataset called ``name`` (``"digits"`` or ``"cifar10"``), passing ``kwargs`` to its loader."""
    try:
        loader = DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; allowed: {', '.join(sorted(DATASETS))}") from None
    return loader(**kwargs)
