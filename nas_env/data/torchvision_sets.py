"""torchvision's classification datasets by name, read from their official file layouts as :class:`ImageData`.

``"cifar100"``, ``"mnist"``, ``"fashion_mnist"`` and ``"svhn"`` (CIFAR-10 has its own loader,
:mod:`nas_env.data.cifar10`). Files already in place are read directly, so a copy in the
official layout works offline; missing files are downloaded with torchvision's own dataset
classes (``download=True``: official URLs, md5-checked). Offline, the error names the folder
and the files it expected. The search only ever sees the official training split (divided
into train / validation here); the test split is reachable only through :func:`load_torchvision_test`.

Layouts (relative to ``data_root``), as torchvision writes them:

* CIFAR-100: ``cifar-100-python/train``, ``test`` (pickles with ``data`` N x 3072 and ``fine_labels``)
  and ``meta`` (``fine_label_names``);
* MNIST / Fashion-MNIST: ``MNIST/raw/`` / ``FashionMNIST/raw/`` with ``train-images-idx3-ubyte``,
  ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte`` (each also as ``.gz``);
* SVHN: ``train_32x32.mat`` and ``test_32x32.mat`` (``X`` 32 x 32 x 3 x N, ``y`` N x 1 with 10 for the
  digit 0), in ``data_root`` itself or in ``data_root/svhn`` (where a download goes).
"""

from __future__ import annotations

import gzip
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from nas_env.data.base import ImageData, check_labels, split_image_data
from nas_env.data.cifar10 import read_pickle_batch
from nas_env.data.download import DATA_ROOT_ENV, data_root_path, why_missing

DEFAULT_VAL_SIZE = 5000  # every official set: 5,000 training images held out for the reward
IDX_UBYTE = 0x08  # the idx format's type code for unsigned bytes
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")
DIGIT_CLASSES = tuple(str(d) for d in range(10))

Split = tuple[torch.Tensor, torch.Tensor]  # uint8 N x C x H x W images, int64 labels


@dataclass(frozen=True)
class TorchvisionSet:
    """Where one dataset's files live, how to read them and what torchvision class downloads them."""

    name: str
    folder: str  # relative to data_root ("" = data_root itself)
    files: dict[str, tuple[str, ...]]  # split ("train" / "test") -> file names inside the folder
    num_classes: int
    augment: bool  # pad-4 crop + horizontal flip suit the images (not digits or letters)
    read: Callable[[Path, str], Split]
    download: Callable[[Path, str], None]  # (data_root, split) -> files in place
    classes: Callable[[Path], tuple[str, ...]] = lambda _folder: DIGIT_CLASSES  # (folder) -> names in label order


# --- readers ------------------------------------------------------------------------------------------
def _cifar100_read(folder: Path, split: str) -> Split:
    data, labels = read_pickle_batch(folder / split, b"fine_labels")
    return torch.from_numpy(data.copy()), torch.from_numpy(labels)


def _cifar100_classes(folder: Path) -> tuple[str, ...]:
    meta = folder / "meta"
    if not meta.is_file():
        return ()
    with open(meta, "rb") as f:
        names = pickle.load(f, encoding="bytes").get(b"fine_label_names", [])
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)


def read_idx(path: Path) -> np.ndarray:
    """An idx file (LeCun's MNIST format; ``.gz`` or not) of unsigned bytes as a numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != IDX_UBYTE:
        raise ValueError(f"{path} is not an idx file of unsigned bytes (magic {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) != header + int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims} ({int(np.prod(dims))} bytes), file has {len(raw) - header}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _idx_file(folder: Path, stem: str) -> Path:
    plain = folder / stem
    return plain if plain.is_file() else folder / f"{stem}.gz"


def _mnist_read(folder: Path, split: str) -> Split:
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(_idx_file(folder, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_idx_file(folder, f"{prefix}-labels-idx1-ubyte")).astype(np.int64)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"{folder}: expected {prefix} images N x H x W and N labels, got {images.shape} and "
                         f"{labels.shape}")
    return torch.from_numpy(images[:, None].copy()), torch.from_numpy(labels)


def _svhn_read(folder: Path, split: str) -> Split:
    import scipy.io  # local import: only SVHN needs it

    path = folder / f"{split}_32x32.mat"
    mat = scipy.io.loadmat(str(path))
    x, y = np.asarray(mat["X"]), np.asarray(mat["y"]).astype(np.int64).reshape(-1)
    if x.ndim != 4 or x.shape[2] != 3 or x.shape[3] != len(y):
        raise ValueError(f"{path}: expected X H x W x 3 x N and N labels, got {x.shape} and {len(y)}")
    y = np.where(y == 10, 0, y)  # SVHN labels the digit 0 as 10
    return torch.from_numpy(np.ascontiguousarray(x.transpose(3, 2, 0, 1)).astype(np.uint8)), torch.from_numpy(y)


# --- downloads: torchvision's classes (official URLs, md5-checked) -------------------------------------
def _download(class_name: str, root: Path, split: str) -> None:
    """Put ``split``'s files under ``root`` with ``torchvision.datasets.<class_name>`` (SVHN's go in ``root/svhn``)."""
    import torchvision.datasets

    dataset_class = getattr(torchvision.datasets, class_name)
    if class_name == "SVHN":
        dataset_class(str(root / "svhn"), split=split, download=True)
    else:
        dataset_class(str(root), train=split == "train", download=True)


_MNIST_FILES = {split: tuple(f"{p}-{kind}-ubyte" for kind in ("images-idx3", "labels-idx1"))
                for split, p in (("train", "train"), ("test", "t10k"))}
SETS: dict[str, TorchvisionSet] = {
    "cifar100": TorchvisionSet("cifar100", "cifar-100-python", {"train": ("train",), "test": ("test",)}, 100, True,
                               _cifar100_read, partial(_download, "CIFAR100"), _cifar100_classes),
    "mnist": TorchvisionSet("mnist", "MNIST/raw", _MNIST_FILES, 10, False, _mnist_read, partial(_download, "MNIST")),
    "fashion_mnist": TorchvisionSet("fashion_mnist", "FashionMNIST/raw", _MNIST_FILES, 10, False, _mnist_read,
                                    partial(_download, "FashionMNIST"), lambda _folder: FASHION_CLASSES),
    "svhn": TorchvisionSet("svhn", "svhn", {"train": ("train_32x32.mat",), "test": ("test_32x32.mat",)}, 10, False,
                           _svhn_read, partial(_download, "SVHN")),
}
NAMES = tuple(SETS)


def _present(folder: Path, names: tuple[str, ...]) -> bool:
    return all((folder / n).is_file() or (folder / f"{n}.gz").is_file() for n in names)


def dataset_folder(name: str, data_root: str | Path | None, split: str, download: bool) -> Path:
    """The folder holding ``name``'s ``split`` files, downloading them with torchvision when absent and allowed."""
    if name not in SETS:
        raise ValueError(f"unknown torchvision dataset {name!r}; allowed: {', '.join(NAMES)}")
    spec = SETS[name]
    root = data_root_path(data_root)
    needed = spec.files[split]
    if name == "svhn" and _present(root, needed):  # torchvision's own SVHN layout: the .mat files in the root
        return root
    folder = root / spec.folder
    # a failed download: offline (URLError), refused, or torchvision's md5 check failed (a RuntimeError)
    reason = why_missing(partial(_present, folder, needed), partial(spec.download, root, split) if download else None,
                         "with torchvision", (OSError, RuntimeError))
    if reason is None:
        return folder
    raise FileNotFoundError(
        f"{name} not found: expected {', '.join(needed)} in {folder} ({reason}). Put the official files there "
        f"(torchvision's layout; torchvision.datasets downloads them with download=True when online); the data "
        f"root is the data_root argument, else ${DATA_ROOT_ENV}, else ~/.cache/nasrl/data."
    )


def load_torchvision_set(name: str, data_root: str | Path | None = None, download: bool = True,
                         val_size: int | None = None, val_fraction: float | None = None, split_seed: int = 0,
                         train_subset: int | None = None, val_subset: int | None = None) -> ImageData:
    """``name``'s official training split, divided into train and validation (5,000 images by default).

    The split is :func:`~nas_env.data.base.split_indices`'s seeded permutation, as for CIFAR-10;
    ``train_subset`` / ``val_subset`` keep the first N of each side.
    """
    folder = dataset_folder(name, data_root, "train", download)
    spec = SETS[name]
    images, labels = spec.read(folder, "train")
    return split_image_data(name, images, labels, spec.num_classes, spec.augment, classes=spec.classes(folder),
                            val_size=val_size, val_fraction=val_fraction, default_val_size=DEFAULT_VAL_SIZE,
                            split_seed=split_seed, train_subset=train_subset, val_subset=val_subset)


def load_torchvision_test(name: str, data_root: str | Path | None = None, download: bool = True) -> Split:
    """``name``'s official test split (uint8 images, int64 labels), for the final evaluation only."""
    folder = dataset_folder(name, data_root, "test", download)
    images, labels = SETS[name].read(folder, "test")
    check_labels(labels, SETS[name].num_classes, f"{name} test labels")
    return images, labels
