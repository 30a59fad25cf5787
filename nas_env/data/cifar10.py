"""CIFAR-10 from the official python archive, as an :class:`ImageData` (train/validation) plus a separate test loader.

The reward of the search must never see the test set, so :func:`load_cifar10` splits the 50,000
training images into train and validation only; the test batch is reachable only through
:func:`load_cifar10_test`, for the final evaluation of a found architecture.
"""

from __future__ import annotations

import os
import pickle
import shutil
import urllib.request
from pathlib import Path

import numpy as np
import torch

from nas_env.data.base import ImageData, split_image_data

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
MD5 = "c58f30108f718f92721af3b95e74349a"
FOLDER = "cifar-10-batches-py"
ARCHIVE = "cifar-10-python.tar.gz"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
DATA_ROOT_ENV = "NASRL_DATA_ROOT"
DEFAULT_VAL_SIZE = 5000  # the usual 45,000 / 5,000 split of the training batches
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


class ChecksumError(RuntimeError, ValueError):
    """A downloaded archive does not have the expected MD5: corrupted, truncated or not the official file.

    Also a ValueError: damaged data, which the command-line boundary (:func:`nas_env.cli.cli_entry`) reports
    as one line."""


def default_data_root() -> Path:
    """``$NASRL_DATA_ROOT`` if set and non-empty, else ``~/.cache/nasrl/data``."""
    env = os.environ.get(DATA_ROOT_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "nasrl" / "data"


def _read_batches(folder: Path, names: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate official batch pickles into uint8 ``N x 3 x 32 x 32`` images and int64 labels."""
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    for name in names:
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"CIFAR-10 batch file {path} is missing")
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")  # the official format is a pickle
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
            raise ValueError(
                f"{path}: expected data N x 3072 and N labels, got data {data.shape} and {len(labels)} labels"
            )
        if len(labels) and (labels.min() < 0 or labels.max() > 9):
            raise ValueError(f"{path}: labels outside 0..9")
        xs.append(data.reshape(-1, 3, 32, 32))  # rows are channel-major: R plane, G plane, B plane
        ys.append(labels)
    return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))


def read_cifar10(folder: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Read ``data_batch_1..5`` and ``test_batch`` from ``folder``: ``(train_x, train_y, test_x, test_y)``.

    Images are uint8 ``N x 3 x 32 x 32`` in file order, labels int64. Batch files may hold any
    number of images (a small local copy has fewer than the official 10,000 each).
    """
    folder = Path(folder)
    train_x, train_y = _read_batches(folder, TRAIN_BATCHES)
    test_x, test_y = _read_batches(folder, (TEST_BATCH,))
    return train_x, train_y, test_x, test_y


def _fetch(url: str, dest: Path) -> None:
    """Download ``url`` to ``dest``: torchvision's downloader for http(s), plain urllib for other schemes.

    torchvision 0.29's ``download_url`` fails on ``file://`` URLs (its progress bar reads
    ``response.length``, which file responses lack: ``AttributeError``, leaving an empty file), so
    those are copied with urllib. A failed transfer never leaves a partial file behind.
    """
    try:
        if url.startswith(("http://", "https://")):
            from torchvision.datasets.utils import download_url

            download_url(url, str(dest.parent), dest.name)  # md5 checked by the caller, with a clearer error
        else:
            with urllib.request.urlopen(url) as response, open(dest, "wb") as out:
                shutil.copyfileobj(response, out)
    except BaseException:
        dest.unlink(missing_ok=True)
        raise


def download_cifar10(data_root: Path, url: str = URL, md5: str = MD5) -> None:
    """Download the CIFAR-10 python archive into ``data_root``, verify its MD5 and extract it there.

    An archive already in ``data_root`` with the right MD5 is reused. A wrong MD5 removes the
    downloaded file and raises :class:`ChecksumError`; network failures propagate as ``OSError``.
    """
    from torchvision.datasets.utils import calculate_md5, check_integrity, extract_archive

    data_root = Path(data_root)
    data_root.mkdir(parents=True, exist_ok=True)
    archive = data_root / ARCHIVE
    if not check_integrity(str(archive), md5):
        _fetch(url, archive)
        if not archive.is_file():
            raise OSError(f"downloading {url} produced no file at {archive}")
        actual = calculate_md5(str(archive))
        if actual != md5:
            archive.unlink()
            raise ChecksumError(
                f"MD5 mismatch for {url}: expected {md5}, got {actual}; the download is corrupted or not the "
                "official CIFAR-10 python archive (removed it)"
            )
    extract_archive(str(archive), str(data_root))
    if not (data_root / FOLDER).is_dir():
        raise RuntimeError(f"the archive from {url} has no top-level folder {FOLDER!r}")


def _ensure_folder(data_root: str | Path | None, download: bool, url: str, md5: str, needed: tuple[str, ...]) -> Path:
    """Return ``<data_root>/cifar-10-batches-py`` with the ``needed`` files, downloading it if allowed."""
    root = default_data_root() if data_root is None else Path(data_root).expanduser()
    folder = root / FOLDER

    def complete() -> bool:
        return all((folder / name).is_file() for name in needed)

    if complete():
        return folder
    reason = "download=False"
    if download:
        try:
            download_cifar10(root, url=url, md5=md5)
        except OSError as err:  # URLError (offline, refused, missing file) is an OSError; ChecksumError propagates
            reason = f"downloading {url} failed: {type(err).__name__}: {err}"
        else:
            if complete():
                return folder
            reason = f"the archive from {url} lacks some of {', '.join(needed)}"
    raise FileNotFoundError(
        f"CIFAR-10 not found: expected the official python batches ({', '.join(needed)}) in {folder} ({reason}). "
        f"Provide them by extracting the official archive {ARCHIVE} ({URL}) into {root}, so that {folder} exists, "
        f"or in this project write the local real-pixel copy with "
        f"`python ../shared/data/make_cifar10_batches.py {root}`; "
        f"the data root is the data_root argument, else ${DATA_ROOT_ENV}, else ~/.cache/nasrl/data."
    )


def load_cifar10(
    data_root: str | Path | None = None,
    download: bool = True,
    val_size: int | None = None,
    split_seed: int = 0,
    train_subset: int | None = None,
    val_subset: int | None = None,
    url: str = URL,
    md5: str = MD5,
    val_fraction: float | None = None,
) -> ImageData:
    """Load CIFAR-10's training images split into train and validation (never the test set).

    Reads ``<data_root>/cifar-10-batches-py`` (downloading it when absent and ``download`` is true).
    With ``perm = np.random.default_rng(split_seed).permutation(n)`` over the ``n`` training images
    in file order (50,000 officially), validation is ``perm[:val_size]`` and training ``perm[val_size:]``
    (45,000 / 5,000 by default; ``val_fraction`` instead sets ``val_size = round(val_fraction * n)``).
    ``train_subset`` / ``val_subset`` keep the first N of each split; mean/std are computed on the
    training images actually kept.
    """
    folder = _ensure_folder(data_root, download, url, md5, TRAIN_BATCHES)
    images, labels = _read_batches(folder, TRAIN_BATCHES)
    return split_image_data("cifar10", images, labels, 10, True, classes=CLASSES, val_size=val_size,
                            val_fraction=val_fraction, default_val_size=DEFAULT_VAL_SIZE, split_seed=split_seed,
                            train_subset=train_subset, val_subset=val_subset)


def load_cifar10_test(
    data_root: str | Path | None = None,
    download: bool = True,
    url: str = URL,
    md5: str = MD5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10 test images (uint8 ``N x 3 x 32 x 32``) and int64 labels, for final evaluation only."""
    folder = _ensure_folder(data_root, download, url, md5, (TEST_BATCH,))
    return _read_batches(folder, (TEST_BATCH,))
