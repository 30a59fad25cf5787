"""CIFAR-10 from the official python archive, as an :class:`ImageData` (train/validation) plus a separate test loader.

The reward of the search must never see the test set, so :func:`load_cifar10` splits the 50,000
training images into train and validation only; the test batch is reachable only through
:func:`load_cifar10_test`, for the final evaluation of a found architecture.
"""

from __future__ import annotations

import pickle
from functools import partial
from pathlib import Path

import numpy as np
import torch

from nas_env.data.base import ImageData, split_image_data
from nas_env.data.download import DATA_ROOT_ENV, all_files, data_root_path, fetch_checked, why_missing

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
MD5 = "c58f30108f718f92721af3b95e74349a"
FOLDER = "cifar-10-batches-py"
ARCHIVE = "cifar-10-python.tar.gz"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
DEFAULT_VAL_SIZE = 5000  # the usual 45,000 / 5,000 split of the training batches
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def read_pickle_batch(path: Path, label_key: bytes = b"labels") -> tuple[np.ndarray, np.ndarray]:
    """One official CIFAR pickle (CIFAR-100's too, ``label_key=b"fine_labels"``): uint8 ``N x 3 x 32 x 32`` images
    and int64 labels."""
    with open(path, "rb") as f:
        batch = pickle.load(f, encoding="bytes")  # the official format is a pickle
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    labels = np.asarray(batch[label_key], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise ValueError(f"{path}: expected data N x 3072 and N {label_key.decode()}, got data {data.shape} and "
                         f"{len(labels)} labels")
    return data.reshape(-1, 3, 32, 32), labels  # rows are channel-major: R plane, G plane, B plane


def _read_batches(folder: Path, names: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate official batch pickles into uint8 ``N x 3 x 32 x 32`` images and int64 labels."""
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    for name in names:
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"CIFAR-10 batch file {path} is missing")
        data, labels = read_pickle_batch(path)
        if len(labels) and (labels.min() < 0 or labels.max() > 9):
            raise ValueError(f"{path}: labels outside 0..9")
        xs.append(data)
        ys.append(labels)
    return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))


def read_cifar10(folder: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Read ``data_batch_1..5`` and ``test_batch`` from ``folder``: ``(train_x, train_y, test_x, test_y)``.

    Images are uint8 ``N x 3 x 32 x 32`` in file order, labels int64. Batch files may hold any
    number of images (a small local copy has fewer than the official 10,000 each).
    """
    folder = Path(folder)
    return (*_read_batches(folder, TRAIN_BATCHES), *_read_batches(folder, (TEST_BATCH,)))


def download_cifar10(data_root: Path, url: str = URL, md5: str = MD5) -> None:
    """Download the CIFAR-10 python archive into ``data_root``, verify its MD5 and extract it there.

    An archive already in ``data_root`` with the right MD5 is reused. A wrong MD5 removes the
    downloaded file and raises :class:`~nas_env.data.download.ChecksumError`; network failures propagate
    as ``OSError``.
    """
    from torchvision.datasets.utils import extract_archive

    data_root = Path(data_root)
    data_root.mkdir(parents=True, exist_ok=True)
    archive = data_root / ARCHIVE
    fetch_checked(url, archive, md5, "the official CIFAR-10 python archive")
    extract_archive(str(archive), str(data_root))
    if not (data_root / FOLDER).is_dir():
        raise RuntimeError(f"the archive from {url} has no top-level folder {FOLDER!r}")


def cifar10_folder(data_root: str | Path | None, download: bool, url: str = URL, md5: str = MD5,
                   needed: tuple[str, ...] = TRAIN_BATCHES) -> Path:
    """``<data_root>/cifar-10-batches-py`` holding the ``needed`` batch files, downloaded first if allowed."""
    root = data_root_path(data_root)
    folder = root / FOLDER
    reason = why_missing(partial(all_files, folder, needed), partial(download_cifar10, root, url, md5) if download
                         else None, url, incomplete=f"the archive from {url} lacks some of {', '.join(needed)}")
    if reason is None:
        return folder
    raise FileNotFoundError(
        f"CIFAR-10 not found: expected the official python batches ({', '.join(needed)}) in {folder} ({reason}). "
        f"Provide them by extracting the official archive {ARCHIVE} ({URL}) into {root}, so that {folder} exists, "
        f"or in this project write the local real-pixel copy with "
        f"`python ../shared/data/make_cifar10_batches.py {root}`; "
        f"the data root is the data_root argument, else ${DATA_ROOT_ENV}, else ~/.cache/nasrl/data."
    )


def load_cifar10(data_root: str | Path | None = None, download: bool = True, val_size: int | None = None,
                 split_seed: int = 0, train_subset: int | None = None, val_subset: int | None = None, url: str = URL,
                 md5: str = MD5, val_fraction: float | None = None) -> ImageData:
    """Load CIFAR-10's training images split into train and validation (never the test set).

    Reads ``<data_root>/cifar-10-batches-py`` (downloading it when absent and ``download`` is true). The
    split is :func:`~nas_env.data.base.split_indices`'s over the training images in file order (45,000 /
    5,000 by default); ``train_subset`` / ``val_subset`` keep the first N of each side.
    """
    folder = cifar10_folder(data_root, download, url, md5)
    images, labels = _read_batches(folder, TRAIN_BATCHES)
    return split_image_data("cifar10", images, labels, 10, True, classes=CLASSES, val_size=val_size,
                            val_fraction=val_fraction, default_val_size=DEFAULT_VAL_SIZE, split_seed=split_seed,
                            train_subset=train_subset, val_subset=val_subset)


def load_cifar10_test(data_root: str | Path | None = None, download: bool = True, url: str = URL,
                      md5: str = MD5) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10 test images (uint8 ``N x 3 x 32 x 32``) and int64 labels, for final evaluation only."""
    folder = cifar10_folder(data_root, download, url, md5, (TEST_BATCH,))
    return _read_batches(folder, (TEST_BATCH,))
