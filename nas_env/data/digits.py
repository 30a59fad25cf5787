"""scikit-learn's 8x8 handwritten digits as an :class:`ImageData`: a tiny real dataset for fast CPU runs.

The 1,797 images ship with scikit-learn, so this loader never touches the network.
"""

from __future__ import annotations

import numpy as np
import torch

from nas_env.data.base import ImageData, channel_stats, split_indices, take_subset

NUM_IMAGES = 1797


def load_digits_data(
    val_size: int = 297,
    split_seed: int = 0,
    train_subset: int | None = None,
    val_subset: int | None = None,
) -> ImageData:
    """Load the digits as uint8 ``N x 1 x 8 x 8`` images (0..255) with a fixed seeded train/validation split.

    Pixels (0..16 in scikit-learn) are rescaled to 0..255 as ``round(x * 255 / 16)``. The split
    follows :func:`split_indices`: validation is ``perm[:val_size]``, training ``perm[val_size:]``
    with ``perm = np.random.default_rng(split_seed).permutation(1797)``. ``train_subset`` /
    ``val_subset`` keep the first N of each split. No augmentation: flips and crops change digits.
    """
    from sklearn.datasets import load_digits  # local import: sklearn is slow to import and only needed here

    bunch = load_digits()
    pixels = np.asarray(bunch.data, dtype=np.float64)
    images = np.rint(pixels * 255.0 / 16.0).clip(0, 255).astype(np.uint8).reshape(-1, 1, 8, 8)
    labels = np.asarray(bunch.target, dtype=np.int64)

    train_idx, val_idx = split_indices(len(images), val_size, split_seed)
    train_idx = train_idx[: take_subset(len(train_idx), train_subset, "train_subset")]
    val_idx = val_idx[: take_subset(len(val_idx), val_subset, "val_subset")]

    train_x = torch.from_numpy(images[train_idx])
    val_x = torch.from_numpy(images[val_idx])
    mean, std = channel_stats(train_x)
    return ImageData(
        name="digits",
        train_x=train_x,
        train_y=torch.from_numpy(labels[train_idx]),
        val_x=val_x,
        val_y=torch.from_numpy(labels[val_idx]),
        num_classes=10,
        mean=mean,
        std=std,
        augment=False,
    )
