"""Tests of the CIFAR-10 loader on real CIFAR-10 pixels from the project's shared copy, downloads included.

The shared copy (``../shared/data`` from the repository root) writes the official python layout;
the download path is exercised with a real ``.tar.gz`` served from a ``file://`` URL, so no test
needs the network.
"""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nas_env.data import ImageData, load_cifar10, load_cifar10_test, load_dataset
from nas_env.data.cifar10 import ARCHIVE, FOLDER, read_cifar10
from nas_env.data.download import ChecksumError

SHARED = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"
N_TRAIN, N_TEST, VAL = 2000, 200, 500
PUBLISHED_MEAN = (125.307, 122.950, 113.865)


def _make_batches(out: Path, train: int, test: int) -> Path:
    """Write real CIFAR-10 images in the official layout under ``out``; skip if the shared copy is absent."""
    script = SHARED / "make_cifar10_batches.py"
    if not script.is_file():
        pytest.skip(
            f"shared CIFAR-10 copy not found at {SHARED.resolve()} (expected ../shared/data from the repo root)"
        )
    subprocess.run(
        [sys.executable, str(script), str(out), "--train", str(train), "--test", str(test)],
        check=True,
        capture_output=True,
    )
    return out


def _png_images(batch: int) -> np.ndarray:
    """Images of shared PNG sprite ``batch`` as uint8 ``1000 x 32 x 32 x 3`` (HWC)."""
    return np.asarray(Image.open(SHARED / "cifar10-png" / f"cifar10_batch_{batch}.png").convert("RGB")).reshape(
        1000, 32, 32, 3
    )


def _png_labels() -> list[int]:
    text = (SHARED / "cifar10-png" / "cifar10_labels.js").read_text()
    return json.loads(text[text.index("[") : text.rindex("]") + 1])


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


@pytest.fixture(scope="session")
def cifar_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root holding 2,000 real training and 200 real test images in the official layout."""
    return _make_batches(tmp_path_factory.mktemp("cifar_root"), N_TRAIN, N_TEST)


@pytest.fixture(scope="session")
def cifar(cifar_root: Path) -> ImageData:
    """The 2,000-image copy split 1,500 train / 500 validation with the default seed."""
    return load_cifar10(cifar_root, download=False, val_size=VAL)


@pytest.fixture(scope="session")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real ``.tar.gz`` of 1,000 training and 10 test images with the official top folder."""
    src = _make_batches(tmp_path_factory.mktemp("archive_src"), 1000, 10)
    path = tmp_path_factory.mktemp("archive") / "cifar-small.tar.gz"
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        tar.add(src / FOLDER, arcname=FOLDER)
    return path


def test_shapes_dtypes_and_metadata(cifar: ImageData) -> None:
    assert cifar.name == "cifar10" and cifar.num_classes == 10 and cifar.augment is True
    assert cifar.train_x.shape == (N_TRAIN - VAL, 3, 32, 32) and cifar.val_x.shape == (VAL, 3, 32, 32)
    assert cifar.train_x.dtype == torch.uint8 and cifar.val_x.dtype == torch.uint8
    assert cifar.train_y.dtype == torch.int64 and cifar.val_y.dtype == torch.int64
    assert cifar.input_shape == (3, 32, 32)
    for y in (cifar.train_y, cifar.val_y):
        assert int(y.min()) == 0 and int(y.max()) == 9


def test_channel_means_near_published(cifar: ImageData) -> None:
    allx = torch.cat([cifar.train_x, cifar.val_x]).double()
    means = allx.mean(dim=(0, 2, 3)).tolist()
    assert means == pytest.approx(PUBLISHED_MEAN, abs=4.0)
    assert cifar.mean == pytest.approx(tuple(cifar.train_x.double().mean(dim=(0, 2, 3)).tolist()))
    assert all(50.0 < s < 75.0 for s in cifar.std)  # published CIFAR-10 stds are about 63/62/67


def test_images_match_png_in_split_order(cifar: ImageData) -> None:
    perm = np.random.default_rng(0).permutation(N_TRAIN)
    val_idx, train_idx = perm[:VAL], perm[VAL:]
    png = np.concatenate([_png_images(0), _png_images(1)])  # training images 0..1999 in original order
    labels = np.asarray(_png_labels()[:N_TRAIN])
    assert np.array_equal(cifar.train_x.permute(0, 2, 3, 1).numpy(), png[train_idx])  # CHW -> HWC
    assert np.array_equal(cifar.val_x.permute(0, 2, 3, 1).numpy(), png[val_idx])
    assert np.array_equal(cifar.train_y.numpy(), labels[train_idx])
    assert np.array_equal(cifar.val_y.numpy(), labels[val_idx])


def test_read_cifar10_file_order(cifar_root: Path) -> None:
    train_x, train_y, test_x, test_y = read_cifar10(cifar_root / FOLDER)
    assert train_x.shape == (N_TRAIN, 3, 32, 32) and test_x.shape == (N_TEST, 3, 32, 32)
    assert np.array_equal(train_x[:1000].permute(0, 2, 3, 1).numpy(), _png_images(0))
    assert train_y.tolist() == _png_labels()[:N_TRAIN] and test_y.tolist() == _png_labels()[50000 : 50000 + N_TEST]


def test_split_deterministic_and_seeded(cifar_root: Path, cifar: ImageData) -> None:
    again = load_cifar10(cifar_root, download=False, val_size=VAL)
    assert torch.equal(again.train_x, cifar.train_x) and torch.equal(again.val_y, cifar.val_y)
    other = load_cifar10(cifar_root, download=False, val_size=VAL, split_seed=1)
    assert not torch.equal(other.val_y, cifar.val_y)


def test_val_size_and_subsets(cifar_root: Path, cifar: ImageData) -> None:
    small = load_cifar10(cifar_root, download=False, val_size=VAL, train_subset=100, val_subset=30)
    assert len(small.train_x) == 100 and len(small.val_x) == 30
    assert torch.equal(small.train_x, cifar.train_x[:100]) and torch.equal(small.val_y, cifar.val_y[:30])
    assert small.mean == pytest.approx(tuple(small.train_x.double().mean(dim=(0, 2, 3)).tolist()))
    big_val = load_cifar10(cifar_root, download=False, val_size=N_TRAIN - 1)
    assert len(big_val.train_x) == 1 and len(big_val.val_x) == N_TRAIN - 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, r"val_size must be an int in 1\.\.1999 .*2000.*got 5000"),  # default 5,000 > the 2,000 here
        ({"val_size": N_TRAIN}, r"val_size must be an int in 1\.\.1999"),
        ({"val_size": 0}, r"val_size must be an int in 1\.\.1999"),
        ({"val_size": VAL, "train_subset": 1501}, r"train_subset=1501 is larger than the 1500"),
        ({"val_size": VAL, "val_subset": 0}, r"val_subset must be None or an integer >= 1, got 0"),
    ],
)
def test_bad_options_raise(cifar_root: Path, kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        load_cifar10(cifar_root, download=False, **kwargs)  # type: ignore[arg-type]


def test_test_loader_is_separate(cifar_root: Path) -> None:
    x, y = load_cifar10_test(cifar_root, download=False)
    assert x.shape == (N_TEST, 3, 32, 32) and x.dtype == torch.uint8 and y.dtype == torch.int64
    assert np.array_equal(x.permute(0, 2, 3, 1).numpy(), _png_images(50)[:N_TEST])


def test_env_var_data_root_and_dispatch(cifar_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NASRL_DATA_ROOT", str(cifar_root))
    data = load_dataset("cifar10", download=False, val_size=VAL, val_subset=5)
    assert data.name == "cifar10" and len(data.val_x) == 5


def test_download_from_file_url(archive: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    data = load_cifar10(root, url=archive.as_uri(), md5=_md5(archive), val_size=100)
    assert len(data.train_x) == 900 and len(data.val_x) == 100
    assert (root / FOLDER / "data_batch_5").is_file() and (root / ARCHIVE).is_file()
    assert np.array_equal(load_cifar10_test(root, download=False)[0].permute(0, 2, 3, 1).numpy(), _png_images(50)[:10])


def test_archive_already_present_is_reused(archive: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / ARCHIVE).write_bytes(archive.read_bytes())
    data = load_cifar10(root, url="file:///nonexistent/x.tar.gz", md5=_md5(archive), val_size=100)
    assert len(data.train_x) == 900


def test_wrong_md5_raises_and_removes_file(archive: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    with pytest.raises(ChecksumError, match=r"MD5 mismatch .*expected 0{32}"):
        load_cifar10(root, url=archive.as_uri(), md5="0" * 32, val_size=100)
    assert not (root / ARCHIVE).exists() and not (root / FOLDER).exists()


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("url", ["file:///nonexistent/x.tar.gz", "http://127.0.0.1:{port}/cifar-10-python.tar.gz"])
def test_unreachable_url_raises_file_not_found(url: str, tmp_path: Path) -> None:
    root = tmp_path / "root"
    with pytest.raises(FileNotFoundError) as info:
        load_cifar10(root, url=url.format(port=_unused_port()))
    message = str(info.value)
    assert str(root / FOLDER) in message and "make_cifar10_batches.py" in message and "failed" in message
    assert not (root / ARCHIVE).exists()


def test_download_false_raises_file_not_found(tmp_path: Path) -> None:
    for load in (load_cifar10, load_cifar10_test):
        with pytest.raises(FileNotFoundError, match="download=False") as info:
            load(tmp_path, download=False)
        assert str(tmp_path / FOLDER) in str(info.value)
