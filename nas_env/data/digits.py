"""scikit-learn's 8x8 handwritten digits as an :class:`ImageData`: a tiny real dataset for fast CPU runs.

The 1,797 images ship with scikit-learn, so this loader never touches the network.
"""

from __future__ import annotations

import numpy as np
import torch

from nas_env.data.base import ImageData, split_image_data

DEFAULT_VAL_SIZE = 297  # a fixed 1500 / 297 split


def load_digits_data(val_size: int | None = None, split_seed: int = 0, train_subset: int | None = None,
                     val_subset: int | None = None, val_fraction: float | None = None) -> ImageData:
    """Load the digits as uint8 ``N x 1 x 8 x 8`` images (0..255) with a fixed seeded train/validation split.

    Pixels (0..16 in scikit-learn) are rescaled to 0..255 as ``round(x * 255 / 16)``. The split is
    :func:`~nas_env.data.base.split_indices`'s over the 1,797 images (297 validate by default);
    ``train_subset`` / ``val_subset`` keep the first N of each side. No augmentation: flips and crops
    change digits.
    """
    from sklearn.datasets import load_digits  # local import: sklearn is slow to import and only needed here

    bunch = load_digits()
    pixels = np.asarray(bunch.data, dtype=np.float64)
    images = np.rint(pixels * 255.0 / 16.0).clip(0, 255).astype(np.uint8).reshape(-1, 1, 8, 8)
    labels = np.asarray(bunch.target, dtype=np.int64)
    return split_image_data("digits", torch.from_numpy(images), torch.from_numpy(labels), 10, False,
                            classes=tuple(str(d) for d in range(10)), val_size=val_size, val_fraction=val_fraction,
                            default_val_size=DEFAULT_VAL_SIZE, split_seed=split_seed, train_subset=train_subset,
                            val_subset=val_subset)
