"""The in-memory image dataset every loader returns and every trainer consumes, and the checks and split they share."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from nas_env.checks import check_fraction, check_int, check_optional, check_type, is_int

MIN_CLASSES = 2  # a classifier needs two classes to learn anything


@dataclass(frozen=True)
class ImageData:
    """A classification dataset split into train and validation, held as uint8 tensors.

    Images are ``N x C x H x W`` uint8 (raw pixel values, not normalised) so that a
    trainer can move them to its device once and normalise/augment there. ``mean`` and
    ``std`` are per channel, on the 0-255 scale, computed on the training split.
    """

    name: str
    train_x: torch.Tensor  # uint8, N x C x H x W
    train_y: torch.Tensor  # int64, N
    val_x: torch.Tensor
    val_y: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: bool  # pad-4 random crop + horizontal flip make sense for this data
    classes: tuple[str, ...] = ()  # class names, label order (empty: unnamed)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(channels, height, width)`` of one image."""
        c, h, w = self.train_x.shape[1:]
        return (int(c), int(h), int(w))

    def __post_init__(self) -> None:
        for name in ("train_x", "val_x"):
            t = getattr(self, name)
            if t.dtype != torch.uint8 or t.dim() != 4:
                raise ValueError(f"{name} must be a uint8 N x C x H x W tensor, got {t.dtype} {tuple(t.shape)}")
        if len(self.train_x) != len(self.train_y) or len(self.val_x) != len(self.val_y):
            raise ValueError(f"images and labels differ in length: train {len(self.train_x)} images / "
                             f"{len(self.train_y)} labels, validation {len(self.val_x)} / {len(self.val_y)}")
        if self.train_x.shape[1:] != self.val_x.shape[1:]:
            raise ValueError(f"train and validation images differ in shape (C x H x W): "
                             f"{tuple(self.train_x.shape[1:])} and {tuple(self.val_x.shape[1:])}")
        if len(self.train_x) < 1 or len(self.val_x) < 1:
            raise ValueError(f"need at least one training and one validation image, got {len(self.train_x)} and "
                             f"{len(self.val_x)}")
        check_int("num_classes", self.num_classes, minimum=MIN_CLASSES)
        for name in ("train_y", "val_y"):
            check_labels(getattr(self, name), self.num_classes, name)
        if len(self.mean) != self.train_x.shape[1] or len(self.std) != self.train_x.shape[1]:
            raise ValueError("mean and std need one value per channel")
        if self.classes and len(self.classes) != self.num_classes:
            raise ValueError(f"classes names {len(self.classes)} classes, num_classes is {self.num_classes}")
        object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))


def image_data_from(source: ImageData | Callable[[], ImageData]) -> ImageData:
    """``source`` itself, or what the factory ``source`` returns (a TypeError unless it is an ImageData)."""
    image_data = source if isinstance(source, ImageData) else source()
    return check_type(image_data, ImageData, "data must be an ImageData or a factory returning one")


def check_labels(labels: torch.Tensor, num_classes: int, what: str) -> None:
    """Labels must be a 1-D int64 tensor with values in ``0..num_classes-1``."""
    if labels.dtype != torch.int64 or labels.dim() != 1:
        raise ValueError(f"{what} must be a 1-D int64 tensor, got {labels.dtype} {tuple(labels.shape)}")
    if len(labels):
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(f"{what}: labels out of range: found {lo}..{hi}, allowed 0..{num_classes - 1} "
                             f"({num_classes} classes)")


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std (0-255 scale) of a uint8 ``N x C x H x W`` tensor."""
    x = images.to(torch.float64)
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-6)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def take_subset(n: int, subset: int | None, what: str) -> int:
    """Validate a ``*_subset`` option against the ``n`` available items; return how many to keep."""
    subset = check_optional(what, subset, check_int, minimum=1)
    if subset is None:
        return n
    if subset > n:
        raise ValueError(f"{what}={subset} is larger than the {n} images available")
    return subset


def split_indices(n: int, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed seeded train/validation split of ``n`` items: ``(train_idx, val_idx)``.

    ``perm = np.random.default_rng(seed).permutation(n)``; validation is ``perm[:val_size]`` and
    training is ``perm[val_size:]``, both in permutation order, so a split never changes for a
    given ``(n, val_size, seed)``. At least one item must remain on each side.
    """
    if not is_int(val_size) or not 1 <= val_size <= n - 1:
        raise ValueError(
            f"val_size must be an int in 1..{n - 1} (leaving at least one training image of the {n}), got {val_size!r}"
        )
    seed = check_int("split_seed", seed)
    perm = np.random.default_rng(seed).permutation(n)
    return perm[val_size:], perm[:val_size]


def resolve_val_size(n: int, val_size: int | None, val_fraction: float | None, default_size: int) -> int:
    """How many of ``n`` images go to validation: ``val_size``, else ``round(val_fraction * n)``, else the default.

    Giving both is an error; the result leaves at least one image on each side.
    """
    if n < 2:
        raise ValueError(f"too few images: {n}; a train/validation split needs at least 2")
    if val_size is not None and val_fraction is not None:
        raise ValueError(f"give val_size or val_fraction, not both (got {val_size!r} and {val_fraction!r})")
    if val_fraction is not None:
        check_fraction("val_fraction", val_fraction, zero=False)
        return min(n - 1, max(1, round(val_fraction * n)))
    size = default_size if val_size is None else val_size
    if not is_int(size) or not 1 <= size <= n - 1:
        hint = "" if val_size is not None else f" (the default of {default_size} is too large here)"
        raise ValueError(f"val_size must be an int in 1..{n - 1} (leaving at least one training image of the {n}), "
                         f"got {size!r}{hint}; pass val_size=N or val_fraction=F")
    return size


def make_image_data(name: str, train: tuple[torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, torch.Tensor],
                    num_classes: int, augment: bool, classes: Sequence[str] = (), train_subset: int | None = None,
                    val_subset: int | None = None) -> ImageData:
    """An :class:`ImageData` from given splits: first ``*_subset`` images kept, mean/std on the kept training images."""
    train_x, train_y = train
    val_x, val_y = val
    present = torch.unique(torch.cat([train_y.reshape(-1), val_y.reshape(-1)]).to(torch.int64))
    if len(present) < MIN_CLASSES:
        raise ValueError(f"{name}: the images hold a single class ({present.tolist()}); a classifier needs at least "
                         f"{MIN_CLASSES}")
    train_n = take_subset(len(train_y), train_subset, "train_subset")
    val_n = take_subset(len(val_y), val_subset, "val_subset")
    train_x, train_y, val_x, val_y = train_x[:train_n], train_y[:train_n], val_x[:val_n], val_y[:val_n]
    mean, std = channel_stats(train_x)  # ImageData checks the lengths
    return ImageData(name, train_x, train_y, val_x, val_y, num_classes, mean, std, augment, tuple(classes))


def split_image_data(name: str, images: torch.Tensor, labels: torch.Tensor, num_classes: int, augment: bool, *,
                     classes: Sequence[str] = (), val_size: int | None = None, val_fraction: float | None = None,
                     default_val_size: int, split_seed: int = 0, train_subset: int | None = None,
                     val_subset: int | None = None) -> ImageData:
    """One labelled pool split by :func:`split_indices` into train / validation, then :func:`make_image_data`."""
    if len(images) != len(labels):
        raise ValueError(f"images and labels differ in length: {len(images)} images, {len(labels)} labels")
    check_labels(labels, num_classes, f"{name} labels")
    n_val = resolve_val_size(len(images), val_size, val_fraction, default_val_size)
    train_idx, val_idx = (torch.from_numpy(i) for i in split_indices(len(images), n_val, split_seed))
    return make_image_data(name, (images[train_idx], labels[train_idx]), (images[val_idx], labels[val_idx]),
                           num_classes, augment, classes, train_subset, val_subset)
