"""Image data sources: an image folder, torchvision's sets in their official file layouts, arrays in memory.

Every file here is written by the test in the official layout (CIFAR-100's python pickles,
MNIST's gzipped idx files, SVHN's .mat), so nothing needs the network; real pictures come
from the project's shared CIFAR-10 copy.
"""

from __future__ import annotations

import gzip
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from nas_env.data import ImageData, load_dataset, load_image_folder, load_image_source, load_memory
from nas_env.data.base import resolve_val_size
from nas_env.data.imagefolder import UnreadableImagesWarning, load_image_folder_test
from nas_env.data.torchvision_sets import load_torchvision_set, load_torchvision_test, read_idx

ROOT = Path(__file__).resolve().parents[3]
SHARED_PNG = ROOT / ".." / "shared" / "data" / "cifar10-png"


# --- writers of the official layouts --------------------------------------------------------------------------
def pattern(n: int, c: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """Distinct uint8 images N x C x H x W (reproducible noise)."""
    return np.random.default_rng(seed).integers(0, 256, (n, c, h, w), dtype=np.uint8)


def write_cifar100(root: Path, train: int, test: int) -> tuple[np.ndarray, np.ndarray]:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    x = pattern(train + test, 3, 32, 32)
    y = np.arange(train + test) % 100
    for name, sl in (("train", slice(0, train)), ("test", slice(train, None))):
        batch = {b"data": x[sl].reshape(-1, 3072), b"fine_labels": y[sl].tolist(),
                 b"coarse_labels": (y[sl] // 5).tolist(), b"filenames": [b"f.png"] * len(y[sl])}
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "meta").write_bytes(pickle.dumps({b"fine_label_names": [f"class{i}".encode() for i in range(100)]}))
    return x, y


def idx_bytes(a: np.ndarray) -> bytes:
    return bytes([0, 0, 8, a.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in a.shape) + a.tobytes()


def write_mnist(root: Path, folder: str, train: int, test: int, gz: bool = True) -> tuple[np.ndarray, np.ndarray]:
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    x = pattern(train + test, 1, 28, 28)[:, 0]
    y = (np.arange(train + test) % 10).astype(np.uint8)
    for prefix, sl in (("train", slice(0, train)), ("t10k", slice(train, None))):
        for kind, a in (("images-idx3", x[sl]), ("labels-idx1", y[sl])):
            name = f"{prefix}-{kind}-ubyte"
            if gz:
                (raw / f"{name}.gz").write_bytes(gzip.compress(idx_bytes(a)))
            else:
                (raw / name).write_bytes(idx_bytes(a))
    return x, y


def write_svhn(folder: Path, train: int, test: int) -> tuple[np.ndarray, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    x = pattern(train + test, 3, 32, 32)
    digits = np.arange(train + test) % 10
    y = np.where(digits == 0, 10, digits).astype(np.uint8)  # SVHN writes the digit 0 as label 10
    for split, sl in (("train", slice(0, train)), ("test", slice(train, None))):
        scipy.io.savemat(str(folder / f"{split}_32x32.mat"),
                         {"X": x[sl].transpose(2, 3, 1, 0), "y": y[sl].reshape(-1, 1)})
    return x, digits


def write_folder(root: Path, classes: dict[str, int], size: tuple[int, int] = (12, 10), mode: str = "RGB",
                 sizes: list[tuple[int, int]] | None = None) -> None:
    """``classes[name]`` PNGs of ``size`` (H, W), or of ``sizes`` in turn, per class folder."""
    rng = np.random.default_rng(0)
    k = 0
    for name, count in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            h, w = sizes[k % len(sizes)] if sizes else size
            k += 1
            shape = (h, w, 3) if mode == "RGB" else (h, w)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(root / name / f"{i}.png")


# --- torchvision's sets -----------------------------------------------------------------------------------
def test_cifar100_pickles_split_and_test(tmp_path: Path) -> None:
    x, y = write_cifar100(tmp_path, train=300, test=50)
    d = load_torchvision_set("cifar100", tmp_path, download=False, val_size=100)
    assert d.name == "cifar100" and d.num_classes == 100 and d.augment and d.classes[3] == "class3"
    assert (len(d.train_y), len(d.val_y)) == (200, 100) and d.input_shape == (3, 32, 32)
    perm = np.random.default_rng(0).permutation(300)  # the documented split: validation = perm[:val_size]
    assert torch.equal(d.val_x, torch.from_numpy(x[perm[:100]])) and d.val_y.tolist() == y[perm[:100]].tolist()
    test_x, test_y = load_torchvision_test("cifar100", tmp_path, download=False)
    assert torch.equal(test_x, torch.from_numpy(x[300:])) and test_y.tolist() == y[300:].tolist()


@pytest.mark.parametrize(("name", "folder", "gz"), [("mnist", "MNIST", True), ("fashion_mnist", "FashionMNIST", False)])
def test_mnist_idx_files(tmp_path: Path, name: str, folder: str, gz: bool) -> None:
    x, y = write_mnist(tmp_path, folder, train=120, test=30, gz=gz)
    d = load_image_source(name, data_root=tmp_path, download=False, val_fraction=0.25, split_seed=3)
    assert (len(d.train_y), len(d.val_y)) == (90, 30) and d.input_shape == (1, 28, 28) and not d.augment
    perm = np.random.default_rng(3).permutation(120)
    assert torch.equal(d.train_x[:, 0], torch.from_numpy(x[perm[30:]]))
    assert d.classes[0] == ("T-shirt/top" if name == "fashion_mnist" else "0")
    test_x, test_y = load_torchvision_test(name, tmp_path, download=False)
    assert torch.equal(test_x[:, 0], torch.from_numpy(x[120:])) and test_y.tolist() == y[120:].tolist()
    assert read_idx(tmp_path / folder / "raw" / ("t10k-labels-idx1-ubyte" + (".gz" if gz else ""))).shape == (30,)


@pytest.mark.parametrize("in_root", [True, False])
def test_svhn_mat_files_map_ten_to_zero(tmp_path: Path, in_root: bool) -> None:
    x, digits = write_svhn(tmp_path if in_root else tmp_path / "svhn", train=80, test=20)
    d = load_torchvision_set("svhn", tmp_path, download=False, val_size=20)
    perm = np.random.default_rng(0).permutation(80)
    assert torch.equal(d.val_x, torch.from_numpy(x[perm[:20]])) and d.val_y.tolist() == digits[perm[:20]].tolist()
    assert d.val_y.min() >= 0 and d.val_y.max() <= 9 and (d.val_y == 0).any()
    test_x, test_y = load_torchvision_test("svhn", tmp_path, download=False)
    assert torch.equal(test_x, torch.from_numpy(x[80:])) and test_y.tolist() == digits[80:].tolist()


def test_offline_errors_name_the_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = re.escape(str(tmp_path / "cifar-100-python"))
    with pytest.raises(FileNotFoundError, match=rf"cifar100 not found: expected train in {folder} \(download=False\)"):
        load_torchvision_set("cifar100", tmp_path, download=False)
    # download=True with an unreachable host: torchvision's real download fails, the error still names the folder
    from torchvision.datasets import MNIST

    monkeypatch.setattr(MNIST, "mirrors", ["http://127.0.0.1:9/"])
    with pytest.raises(FileNotFoundError, match=rf"mnist not found: .* in {re.escape(str(tmp_path / 'MNIST' / 'raw'))} "
                                                r"\(downloading with torchvision failed"):
        load_torchvision_set("mnist", tmp_path, download=True)


# --- an image folder ---------------------------------------------------------------------------------------
def test_real_pictures_folder_from_the_script(tmp_path: Path) -> None:
    if not (SHARED_PNG / "cifar10_labels.js").is_file():
        pytest.skip(f"shared CIFAR-10 PNGs not found at {SHARED_PNG.resolve()}")
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_image_folder.py"), str(tmp_path / "f"), "--count",
                    "300"], check=True, capture_output=True)
    d = load_image_folder(tmp_path / "f", val_size=50)
    assert d.classes == ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    assert d.name == f"imagefolder:{(tmp_path / 'f').resolve()}" and d.input_shape == (3, 32, 32)
    assert (len(d.train_y), len(d.val_y)) == (250, 50) and d.augment
    # the pixels are CIFAR-10's own: image 0 of the copy (a frog) is in the folder unchanged
    first = np.asarray(Image.open(SHARED_PNG / "cifar10_batch_0.png").convert("RGB"))[0].reshape(32, 32, 3)
    frog = np.asarray(Image.open(tmp_path / "f" / "frog" / "00000.png"))
    assert np.array_equal(frog, first)
    target = torch.from_numpy(first.transpose(2, 0, 1).copy())
    frog_label = d.classes.index("frog")
    assert any(torch.equal(x, target) and int(y) == frog_label
               for x, y in zip(torch.cat([d.train_x, d.val_x]), torch.cat([d.train_y, d.val_y]), strict=True))


def test_folder_default_size_is_the_capped_median(tmp_path: Path) -> None:
    write_folder(tmp_path / "a", {"x": 3, "y": 2}, sizes=[(20, 40), (30, 50), (100, 30)])
    d = load_image_folder(tmp_path / "a", val_size=1)
    assert d.input_shape == (3, 30, 40)  # median height 30 and width 40, under the cap
    write_folder(tmp_path / "b", {"x": 2, "y": 2}, size=(128, 256))
    assert load_image_folder(tmp_path / "b", val_size=1).input_shape == (3, 32, 64)  # longer side capped at 64
    assert load_image_folder(tmp_path / "b", val_size=1, image_size=16).input_shape == (3, 16, 16)
    assert load_image_folder(tmp_path / "b", val_size=1, image_size=(8, 12)).input_shape == (3, 8, 12)
    write_folder(tmp_path / "g", {"x": 2, "y": 2}, mode="L")
    assert load_image_folder(tmp_path / "g", val_size=1).input_shape == (1, 12, 10)  # greyscale stays one channel


def test_folder_split_layout_is_honoured(tmp_path: Path) -> None:
    write_folder(tmp_path / "train", {"cat": 4, "dog": 5})
    write_folder(tmp_path / "val", {"dog": 2})  # a validation folder may lack a class
    write_folder(tmp_path / "test", {"cat": 1, "dog": 1})
    d = load_image_source("imagefolder", data_root=tmp_path)
    assert (len(d.train_y), len(d.val_y)) == (9, 2) and d.val_y.tolist() == [1, 1]
    assert sorted(d.train_y.tolist()) == [0] * 4 + [1] * 5
    with pytest.raises(ValueError, match="has its own validation folder val/"):
        load_image_folder(tmp_path, val_size=3)
    write_folder(tmp_path / "val", {"bird": 1})
    with pytest.raises(ValueError, match=r"class folders the training images lack: \['bird'\]"):
        load_image_folder(tmp_path)


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_image_folder(tmp_path / "missing")
    write_folder(tmp_path / "one", {"only": 3})
    with pytest.raises(ValueError, match=r"single class folder \(\['only'\]\)"):
        load_image_folder(tmp_path / "one")
    write_folder(tmp_path / "tiny", {"a": 1, "b": 0})
    with pytest.raises(FileNotFoundError, match="has no images"):
        load_image_folder(tmp_path / "tiny")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="has no class folders"):
        load_image_folder(tmp_path / "empty")
    write_folder(tmp_path / "two", {"a": 1, "b": 1})
    with pytest.raises(ValueError, match=r"val_size must be an int in 1\.\.1"):
        load_image_folder(tmp_path / "two", val_size=2)
    with pytest.raises(ValueError, match="image_size must be a positive int"):
        load_image_folder(tmp_path / "two", image_size=0)
    with pytest.raises(ValueError, match="needs data_root=DIR"):
        load_image_source("imagefolder")
    with pytest.raises(ValueError, match="image_size applies to dataset='imagefolder' only"):
        load_image_source("digits", image_size=8)


# --- arrays in memory --------------------------------------------------------------------------------------
def test_memory_layouts_and_dtypes() -> None:
    x = pattern(40, 3, 6, 5)
    y = np.arange(40) % 4
    nchw = load_memory((x[:30], y[:30], x[30:], y[30:]))
    nhwc = load_memory((x[:30].transpose(0, 2, 3, 1), y[:30], torch.from_numpy(x[30:].transpose(0, 2, 3, 1)),
                        torch.from_numpy(y[30:])))
    floats = load_memory((x[:30] / 255.0, y[:30], x[30:].astype(np.float32), y[30:]))  # 0..1 and 0..255 floats
    for d in (nchw, nhwc, floats):
        assert torch.equal(d.train_x, torch.from_numpy(x[:30])) and torch.equal(d.val_x, torch.from_numpy(x[30:]))
        assert d.num_classes == 4 and d.input_shape == (3, 6, 5) and d.name == nchw.name
    assert nchw.name.startswith("memory:") and load_memory((x[:30], y[:30], x[31:], y[31:])).name != nchw.name
    grey = load_memory((x[:, 0], y), val_fraction=0.25)  # one (x, y) pool, N x H x W
    assert grey.input_shape == (1, 6, 5) and (len(grey.train_y), len(grey.val_y)) == (30, 10)
    given = ImageData("mine", nchw.train_x, nchw.train_y, nchw.val_x, nchw.val_y, 4, nchw.mean, nchw.std, True)
    kept = load_memory(given, train_subset=7)
    assert kept.name == "mine" and len(kept.train_y) == 7 and kept.augment


@pytest.mark.parametrize(("data", "kwargs", "message"), [
    ((np.zeros((4, 3, 8, 8), np.uint8), np.array([0, 1, 0, 1]), np.zeros((2, 3, 8, 7), np.uint8), np.array([0, 1])),
     {}, r"differ in image shape"),
    ((np.zeros((4, 3, 8, 8), np.uint8), np.array([0, 1, 0])), {}, r"x has 4 images but y has 3 labels"),
    ((np.zeros((4, 3, 8, 8), np.uint8), np.array([0, 0, 0, 0])), {}, r"single class \(\[0\]\)"),
    ((np.zeros((4, 3, 8, 8), np.uint8), np.array([0, 1, 2, 5])), {"num_classes": 3},
     r"labels out of range: found 0\.\.5, allowed 0\.\.2"),
    ((np.zeros((4, 3, 8, 8), np.uint8), np.array([0, 1, -1, 1])), {}, r"labels out of range: found -1\.\.1"),
    ((np.zeros((1, 3, 8, 8), np.uint8), np.array([0])), {}, "too few images: 1"),
    ((np.zeros((4, 5, 8, 8), np.uint8), np.array([0, 1, 0, 1])), {}, "cannot tell the channels"),
    ((np.full((4, 3, 8, 8), 300.0), np.array([0, 1, 0, 1])), {}, r"values must lie in 0\.\.255"),
    ((np.zeros((4, 3, 8, 8)), np.array([0.0, 1.0, 0.0, 1.0])), {}, "integer class labels"),
    ((np.zeros((6, 3, 8, 8), np.uint8), np.array([0, 1] * 3)), {"val_size": 2, "val_fraction": 0.5},
     "give val_size or val_fraction, not both"),
    ((np.zeros((6, 3, 8, 8), np.uint8),), {}, r"data must be \(train_x, train_y, val_x, val_y\), \(x, y\)"),
])
def test_memory_errors(data: tuple, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_memory(data, **kwargs)


def test_val_size_and_fraction_rules() -> None:
    assert resolve_val_size(10, None, None, 3) == 3 and resolve_val_size(10, 4, None, 3) == 4
    assert resolve_val_size(10, None, 0.25, 3) == 2 and resolve_val_size(10, None, 0.01, 3) == 1
    with pytest.raises(ValueError, match=r"val_size must be an int in 1\.\.9 .* got 10 \(the default of 10 is too "
                                         r"large here\); pass val_size=N or val_fraction=F"):
        resolve_val_size(10, None, None, 10)
    with pytest.raises(ValueError, match=r"val_fraction must be a number in \(0, 1\), got 1"):
        resolve_val_size(10, None, 1, 3)
    assert len(load_dataset("digits", val_fraction=0.5).val_y) == round(0.5 * 1797)


# --- unreadable files in an image folder -------------------------------------------------------------------
def break_files(folder: Path, names: list[str]) -> None:
    """Corrupt files: a text file named .jpg, and a PNG cut after its header (the header reads, the pixels don't)."""
    for i, name in enumerate(names):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if i % 2 == 0:
            path.with_suffix(".jpg").write_text("not an image")
        else:
            Image.fromarray(pattern(1, 3, 12, 10, seed=i)[0].transpose(1, 2, 0)).save(path)
            path.write_bytes(path.read_bytes()[:200])


def test_unreadable_images_are_skipped_with_one_warning(tmp_path: Path) -> None:
    write_folder(tmp_path / "f", {"cat": 4, "dog": 4})
    whole = load_image_folder(tmp_path / "f", val_size=2)
    break_files(tmp_path / "f", ["cat/bad0.png", "dog/bad1.png"])
    with pytest.warns(UnreadableImagesWarning) as caught:
        d = load_image_folder(tmp_path / "f", val_size=2)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "skipped 2 unreadable image file(s)" in message
    assert "cat/bad0.jpg" in message and "dog/bad1.png" in message and "more" not in message
    assert len(d.train_y) + len(d.val_y) == 8  # the readable images, all of them
    assert torch.equal(torch.cat([d.train_x, d.val_x]).sort(0).values, torch.cat([whole.train_x, whole.val_x])
                       .sort(0).values)
    # the name (part of every fingerprint) tells the subset from the complete folder, and from another subset
    assert d.name != whole.name and d.name.startswith(whole.name) and "without 2 unreadable" in d.name
    break_files(tmp_path / "g", [])
    write_folder(tmp_path / "g", {"cat": 4, "dog": 4})
    break_files(tmp_path / "g", ["cat/other0.png", "dog/other1.png"])
    with pytest.warns(UnreadableImagesWarning):
        other = load_image_folder(tmp_path / "g", val_size=2)
    assert other.name.split(" (")[1] != d.name.split(" (")[1]


def test_many_unreadable_images_are_counted_not_all_named(tmp_path: Path) -> None:
    write_folder(tmp_path, {"a": 3, "b": 3})
    break_files(tmp_path, [f"a/bad{i:02d}.png" for i in range(12)])
    with pytest.warns(UnreadableImagesWarning, match=r"skipped 12 unreadable .*: a/bad00.jpg, .* and 7 more") as w:
        d = load_image_folder(tmp_path, val_size=1)
    assert len(w) == 1 and len(d.train_y) + len(d.val_y) == 6


def test_unreadable_images_in_a_split_layout(tmp_path: Path) -> None:
    write_folder(tmp_path / "train", {"cat": 3, "dog": 3})
    write_folder(tmp_path / "val", {"cat": 1, "dog": 1})
    write_folder(tmp_path / "test", {"cat": 2, "dog": 2})
    break_files(tmp_path, ["val/dog/bad0.png", "test/cat/bad1.png"])
    with pytest.warns(UnreadableImagesWarning, match=r"val/dog/bad0.jpg"):
        d = load_image_source("imagefolder", data_root=tmp_path)
    assert (len(d.train_y), len(d.val_y)) == (6, 2)
    with pytest.warns(UnreadableImagesWarning, match=r"skipped 1 .*cat/bad1.png"):
        test_x, test_y = load_image_folder_test(tmp_path, d.classes, d.input_shape)
    assert len(test_y) == 4 and test_x.shape[1:] == (3, 12, 10)


def test_a_folder_left_without_two_readable_classes_is_an_error(tmp_path: Path) -> None:
    write_folder(tmp_path / "one", {"cat": 3})
    break_files(tmp_path / "one", ["dog/bad0.png", "dog/bad1.png"])  # dog has files, none readable
    with pytest.raises(ValueError, match=r"class folder .*dog has no readable images \(2 unreadable"):
        load_image_folder(tmp_path / "one")
    break_files(tmp_path / "none", ["cat/bad0.png", "dog/bad1.png"])
    with pytest.raises(ValueError, match=r"too few readable images in .*none: 0 \(2 unreadable\)"):
        load_image_folder(tmp_path / "none")
    write_folder(tmp_path / "single", {"cat": 3})
    with pytest.raises(ValueError, match=r"single class folder \(\['cat'\]\)"):
        load_image_folder(tmp_path / "single")
