"""The in-memory image dataset every loader returns and every trainer consumes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


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
            raise ValueError("images and labels differ in length")
        if len(self.mean) != self.train_x.shape[1] or len(self.std) != self.train_x.shape[1]:
            raise ValueError("mean and std need one value per channel")


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std (0-255 scale) of a uint8 ``N x C x H x W`` tensor."""
    x = images.to(torch.float64)
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-6)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def take_subset(n: int, subset: int | None, what: str) -> int:
    """Validate a ``*_subset`` option against the ``n`` available items; return how many to keep."""
    if subset is None:
        return n
    if isinstance(subset, bool) or not isinstance(subset, int) or subset < 1:
        raise ValueError(f"{what} must be a positive int or None, got {subset!r}")
    if subset > n:
        raise ValueError(f"{what}={subset} is larger than the {n} images available")
    return subset


def split_indices(n: int, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed seeded train/validation split of ``n`` items: ``(train_idx, val_idx)``.

    ``perm = np.random.default_rng(seed).permutation(n)``; validation is ``perm[:val_size]`` and
    training is ``perm[val_size:]``, both in permutation order, so a split never changes for a
    given ``(n, val_size, seed)``. At least one item must remain on each side.
    """
    if isinstance(val_size, bool) or not isinstance(val_size, int) or not 1 <= val_size <= n - 1:
        raise ValueError(
            f"val_size must be an int in 1..{n - 1} (leaving at least one training image of the {n}), got {val_size!r}"
        )
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"split_seed must be an int, got {seed!r}")
    perm = np.random.default_rng(seed).permutation(n)
    return perm[val_size:], perm[:val_size]
