"""A folder of images in torchvision's ``ImageFolder`` layout, decoded once into an :class:`ImageData`.

``root/<class name>/<image>`` (any depth below the class folder; the extensions torchvision's
``ImageFolder`` accepts). Class names are the folder names, sorted, as ``ImageFolder`` numbers
them. When ``root`` has a ``train/`` folder it is a split layout: ``train/<class>/...`` is the
training pool, ``val/`` (or ``valid/``, ``validation/``), when present, is the validation split
as given, and ``test/`` is kept for the final evaluation only (:func:`load_image_folder_test`).
Without a validation folder the training pool is split by ``val_size`` / ``val_fraction``.

A file that cannot be read as an image (corrupt, truncated, or not an image at all) is left out with
one :class:`UnreadableImagesWarning`, and the data's name (hence every fingerprint and store key) says
how many were left out and which (a digest of their paths), so such results never mix with the complete
folder's. A training class with no readable image, or fewer than 2 readable images in all, is an error.

Every image is converted to RGB (or to one channel when all of them are greyscale) and resized
to ``image_size`` (bilinear, aspect ratio not kept); by default that is the median height and
width of the images, scaled down so that the longer side is at most :data:`MAX_DEFAULT_SIDE`.
"""

from __future__ import annotations

import hashlib
import os
import struct
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from nas_env.data.base import ImageData, make_image_data, split_image_data

MAX_DEFAULT_SIDE = 64  # default image_size: the median size, capped so that children stay cheap to train
DEFAULT_VAL_FRACTION = 0.1  # without a val/ folder: 10% of the training pool validates
VAL_DIRS = ("val", "valid", "validation")
GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")  # PIL modes read as one channel
# torchvision's ImageFolder extensions (not imported from it: importing torchvision takes seconds)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
DECODE_THREADS = 8  # PIL releases the GIL while decoding: a few threads load a folder faster
SHOWN_SKIPPED = 5  # unreadable files the warning names before "and N more"
# What PIL raises for a file that is not a readable image: UnidentifiedImageError and truncated data are OSErrors,
# a broken PNG chunk a SyntaxError, some malformed headers a ValueError, EOFError or struct.error.
UNREADABLE = (OSError, SyntaxError, ValueError, EOFError, struct.error)


class UnreadableImagesWarning(UserWarning):
    """Some files of an image folder could not be read as images and were left out."""


def folder_splits(root: str | Path) -> dict[str, Path]:
    """The class-folder roots of each split present: ``{"train": ..., "val": ..., "test": ...}`` (val/test optional)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist (expected {root}/<class name>/<images>, or "
                                f"{root}/train/<class name>/... with optional val/ and test/)")
    if not (root / "train").is_dir():
        return {"train": root}
    splits = {"train": root / "train"}
    for name in VAL_DIRS:
        if (root / name).is_dir():
            splits["val"] = root / name
            break
    if (root / "test").is_dir():
        splits["test"] = root / "test"
    return splits


def _class_folders(folder: Path) -> list[str]:
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    names = sorted(e.name for e in os.scandir(folder) if e.is_dir())
    if not names:
        raise FileNotFoundError(f"{folder} has no class folders: expected {folder}/<class name>/<images>")
    return names


def _images_in(folder: Path) -> list[str]:
    """Image files anywhere below ``folder`` (symlinks followed), sorted, as torchvision's ImageFolder lists them."""
    found = []
    for dirpath, _, files in sorted(os.walk(folder, followlinks=True)):
        found.extend(os.path.join(dirpath, f) for f in sorted(files) if f.lower().endswith(IMAGE_EXTENSIONS))
    return found


def scan(folder: Path, classes: Sequence[str] | None = None) -> tuple[list[str], list[tuple[str, int]]]:
    """Class names and ``(path, label)`` pairs of one class-folder root, numbered like torchvision's ImageFolder.

    With ``classes`` given (a validation or test folder), its class folders must be among them and
    take their labels. A class folder without images is an error, as in ImageFolder.
    """
    found = _class_folders(folder)
    if classes is None:
        classes = found
    else:
        extra = sorted(set(found) - set(classes))
        if extra:
            raise ValueError(f"{folder} has class folders the training images lack: {extra}; training classes: "
                             f"{list(classes)}")
    index = {c: i for i, c in enumerate(classes)}
    samples: list[tuple[str, int]] = []
    for name in found:
        paths = _images_in(folder / name)
        if not paths:
            raise FileNotFoundError(f"class folder {folder / name} has no images (extensions: "
                                    f"{', '.join(IMAGE_EXTENSIONS)})")
        samples.extend((p, index[name]) for p in paths)
    return list(classes), samples


def _size_and_mode(path: str) -> tuple[int, int, str] | None:
    """The image's height, width and PIL mode from its header; None when it cannot be read as an image."""
    from PIL import Image

    try:
        with Image.open(path) as img:  # reads the header only
            return img.height, img.width, img.mode
    except UNREADABLE:
        return None


def default_image_size(sizes: Sequence[tuple[int, int]], max_side: int = MAX_DEFAULT_SIDE) -> tuple[int, int]:
    """The median height and width, scaled down (aspect kept) so that the longer side is at most ``max_side``."""
    h = float(np.median([s[0] for s in sizes]))
    w = float(np.median([s[1] for s in sizes]))
    scale = min(1.0, max_side / max(h, w))
    return max(1, round(h * scale)), max(1, round(w * scale))


def check_image_size(image_size: int | Sequence[int] | None) -> tuple[int, int] | None:
    """``image_size`` as ``(height, width)``: an int is square; None stays None (the default)."""
    if image_size is None:
        return None
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in size):
        raise ValueError(f"image_size must be a positive int or a (height, width) pair of them, got {image_size!r}")
    return int(size[0]), int(size[1])


def _read(samples: list[tuple[str, int]], size: tuple[int, int], mode: str,
          skipped: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode, convert and resize the images of ``samples`` into a uint8 ``N x C x H x W`` tensor of the readable
    ones, with their labels; the paths that fail to decode (a corrupt or truncated file) are added to ``skipped``."""
    from PIL import Image

    height, width = size

    def one(path: str) -> np.ndarray | None:
        try:
            with Image.open(path) as img:
                img = img.convert(mode)
                if img.size != (width, height):
                    img = img.resize((width, height), Image.Resampling.BILINEAR)
                return np.asarray(img, dtype=np.uint8)
        except UNREADABLE:
            return None

    with ThreadPoolExecutor(max_workers=min(DECODE_THREADS, os.cpu_count() or 1)) as pool:
        arrays = list(pool.map(one, [p for p, _ in samples]))
    skipped.extend(path for (path, _), a in zip(samples, arrays, strict=True) if a is None)
    kept = [a for a in arrays if a is not None]
    labels = [label for (_, label), a in zip(samples, arrays, strict=True) if a is not None]
    x = np.stack(kept) if kept else np.zeros((0, height, width) if mode == "L" else (0, height, width, 3), np.uint8)
    x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(x)), torch.tensor(labels, dtype=torch.int64)


def _geometry(samples: list[tuple[str, int]], image_size: tuple[int, int] | None,
              skipped: list[str]) -> tuple[list[tuple[str, int]], tuple[int, int], str]:
    """The samples whose header reads (the others are added to ``skipped``), the size every image is resized to,
    and the PIL mode ("RGB", or "L" when all images are greyscale)."""
    headers = [_size_and_mode(p) for p, _ in samples]
    skipped.extend(p for (p, _), h in zip(samples, headers, strict=True) if h is None)
    kept = [(s, h) for s, h in zip(samples, headers, strict=True) if h is not None]
    if not kept:
        return [], image_size or (1, 1), "RGB"
    mode = "L" if all(m in GREY_MODES for _, (_, _, m) in kept) else "RGB"
    return [s for s, _ in kept], image_size or default_image_size([(h, w) for _, (h, w, _) in kept]), mode


def warn_skipped(root: Path, skipped: Sequence[str]) -> str:
    """One warning naming the first few unreadable files and counting the rest; the suffix of the data's name for
    a folder read without them: their count and a digest of their paths (relative to ``root``), so results never
    mix with those of the complete folder or another subset."""
    relative = sorted(os.path.relpath(p, root) for p in skipped)
    shown = ", ".join(relative[:SHOWN_SKIPPED])
    more = f" and {len(relative) - SHOWN_SKIPPED} more" if len(relative) > SHOWN_SKIPPED else ""
    warnings.warn(f"skipped {len(relative)} unreadable image file(s) in {root}: {shown}{more}",
                  UnreadableImagesWarning, stacklevel=3)
    digest = hashlib.sha256("\n".join(relative).encode()).hexdigest()[:12]
    return f" (without {len(relative)} unreadable: {digest})"


def load_image_folder(data_root: str | Path, image_size: int | Sequence[int] | None = None, val_size: int | None = None,
                      val_fraction: float | None = None, split_seed: int = 0, train_subset: int | None = None,
                      val_subset: int | None = None, augment: bool = True) -> ImageData:
    """Decode an image folder (see the module docstring) into uint8 train / validation splits.

    ``augment`` (default True: pad-4 crop + horizontal flip, right for photographs) is the
    dataset's default; a ``TrainConfig.augment`` overrides it. ``ImageData.name`` is
    ``"imagefolder:<absolute path>"`` and ``classes`` holds the folder names.
    """
    size = check_image_size(image_size)
    root = Path(data_root).expanduser().resolve()
    splits = folder_splits(root)
    classes, train_samples = scan(splits["train"])
    if len(classes) < 2:
        raise ValueError(f"{splits['train']} holds a single class folder ({classes}); a classifier needs at least 2")
    val_samples = scan(splits["val"], classes)[1] if "val" in splits else []
    if "val" in splits and (val_size is not None or val_fraction is not None):
        raise ValueError(f"{root} has its own validation folder {splits['val'].name}/: val_size and val_fraction "
                         "do not apply (remove that folder to split the training images instead)")
    skipped: list[str] = []
    readable, size, mode = _geometry(train_samples + val_samples, size, skipped)
    kept = set(readable)
    train = _read([s for s in train_samples if s in kept], size, mode, skipped)
    val = _read([s for s in val_samples if s in kept], size, mode, skipped) if "val" in splits else None
    count = len(train[1]) + (len(val[1]) if val is not None else 0)
    if count < 2:
        note = f" ({len(skipped)} unreadable)" if skipped else ""
        raise ValueError(f"too few readable images in {root}: {count}{note}; need at least 2")
    name = f"imagefolder:{root}"
    if skipped:
        present = set(train[1].tolist())  # every training class keeps a readable image, as ImageFolder wants
        empty = [c for i, c in enumerate(classes) if i not in present]
        if empty:
            raise ValueError(f"class folder {splits['train'] / empty[0]} has no readable images ({len(skipped)} "
                             f"unreadable file(s) in all, e.g. {skipped[0]})")
        name += warn_skipped(root, skipped)
    if val is not None:
        return make_image_data(name, train, val, len(classes), augment, classes, train_subset, val_subset)
    default_val = max(1, round(DEFAULT_VAL_FRACTION * len(train[1])))
    return split_image_data(name, *train, len(classes), augment, classes=classes, val_size=val_size,
                            val_fraction=val_fraction, default_val_size=default_val, split_seed=split_seed,
                            train_subset=train_subset, val_subset=val_subset)


def load_image_folder_test(data_root: str | Path, classes: Sequence[str],
                           input_shape: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The ``test/`` folder's images at the search's ``input_shape`` and class numbering; None without one."""
    splits = folder_splits(Path(data_root).expanduser().resolve())
    if "test" not in splits:
        return None
    _, samples = scan(splits["test"], classes)
    channels, height, width = (int(v) for v in input_shape)
    skipped: list[str] = []
    test = _read(samples, (height, width), "L" if channels == 1 else "RGB", skipped)
    if skipped:
        warn_skipped(splits["test"], skipped)
    if not len(test[1]):
        raise ValueError(f"{splits['test']} has no readable images ({len(skipped)} unreadable)")
    return test
