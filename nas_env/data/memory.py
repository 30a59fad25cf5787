"""Images already in memory (numpy arrays or tensors) as an :class:`ImageData`, checked and converted once.

Accepted ``data``:

* ``(train_x, train_y, val_x, val_y)``: the splits as given;
* ``(x, y)``: one labelled pool, split by ``val_size`` / ``val_fraction`` (default 10%);
* an :class:`ImageData`: used as it is (``train_subset`` / ``val_subset`` still apply).

Images may be ``N x C x H x W`` (C of 1, 3 or 4), ``N x H x W x C`` or ``N x H x W`` (greyscale);
uint8 as they are, floats either on 0..1 (when no value exceeds 1) or on 0..255, rounded to uint8.
Labels are integers ``0..num_classes-1``; ``num_classes`` defaults to the largest label + 1.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from nas_env.checks import check_int
from nas_env.data.base import ImageData, make_image_data, split_image_data

DEFAULT_VAL_FRACTION = 0.1  # a single (x, y) pool: 10% validates
CHANNELS = (1, 3, 4)  # channel counts recognised when telling N x C x H x W from N x H x W x C


def _as_array(value: Any, what: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value
    raise ValueError(f"{what} must be a numpy array or a torch tensor, got {type(value).__name__}")


def as_images(value: Any, what: str) -> torch.Tensor:
    """Images in any accepted layout and dtype as a uint8 ``N x C x H x W`` tensor."""
    x = _as_array(value, what)
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4:
        if x.shape[1] not in CHANNELS and x.shape[3] in CHANNELS:
            x = x.transpose(0, 3, 1, 2)
        elif x.shape[1] not in CHANNELS:
            raise ValueError(f"{what}: cannot tell the channels of shape {x.shape}: expected N x C x H x W or "
                             f"N x H x W x C with C in {CHANNELS}")
    else:
        raise ValueError(f"{what} must be N x C x H x W, N x H x W x C or N x H x W images, got shape {x.shape}")
    if x.dtype == np.bool_ or not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise ValueError(f"{what} must hold numbers (uint8 0..255, or floats on 0..1 or 0..255), got {x.dtype}")
    if x.dtype != np.uint8:
        xf = x.astype(np.float64)
        if not np.isfinite(xf).all():
            raise ValueError(f"{what} holds NaN or infinite values")
        lo, hi = float(xf.min(initial=0.0)), float(xf.max(initial=0.0))
        if lo < 0 or hi > 255:
            raise ValueError(f"{what} values must lie in 0..255 (or 0..1), found {lo:g}..{hi:g}")
        if np.issubdtype(x.dtype, np.floating) and hi <= 1.0:
            xf = xf * 255.0
        x = np.rint(xf).astype(np.uint8)
    return torch.from_numpy(np.ascontiguousarray(x))


def as_labels(value: Any, what: str) -> torch.Tensor:
    """Integer class labels as a 1-D int64 tensor."""
    y = _as_array(value, what)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_:
        raise ValueError(f"{what} must be a 1-D array of integer class labels, got {y.dtype} {y.shape}")
    return torch.from_numpy(y.astype(np.int64))


def content_digest(tensors: Sequence[torch.Tensor]) -> str:
    """sha256 (16 hex digits) over the shape and bytes of each tensor: the name of in-memory data."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(str(tuple(t.shape)).encode())
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def load_memory(data: ImageData | Sequence[Any], val_size: int | None = None, val_fraction: float | None = None,
                split_seed: int = 0, train_subset: int | None = None, val_subset: int | None = None,
                num_classes: int | None = None, augment: bool = False, classes: Sequence[str] = ()) -> ImageData:
    """In-memory images (see the module docstring) as an :class:`ImageData` named ``memory:<content digest>``.

    ``augment`` (default False: nothing is known about the images) is the dataset's default; a
    ``TrainConfig.augment`` overrides it.
    """
    if isinstance(data, ImageData):
        if val_size is not None or val_fraction is not None:
            raise ValueError("data is an ImageData, already split: val_size and val_fraction do not apply")
        return make_image_data(data.name, (data.train_x, data.train_y), (data.val_x, data.val_y), data.num_classes,
                               data.augment, data.classes, train_subset, val_subset)
    if not isinstance(data, list | tuple) or len(data) not in (2, 4):
        raise ValueError(f"data must be (train_x, train_y, val_x, val_y), (x, y) or an ImageData, got "
                         f"{type(data).__name__}{f' of length {len(data)}' if isinstance(data, list | tuple) else ''}")
    names = ("train_x", "train_y", "val_x", "val_y") if len(data) == 4 else ("x", "y")
    xs = [as_images(data[i], names[i]) for i in range(0, len(data), 2)]
    ys = [as_labels(data[i], names[i]) for i in range(1, len(data), 2)]
    for x, y, xn, yn in zip(xs, ys, names[::2], names[1::2], strict=True):
        if len(x) != len(y):
            raise ValueError(f"{xn} has {len(x)} images but {yn} has {len(y)} labels")
    if len(xs) == 2 and xs[0].shape[1:] != xs[1].shape[1:]:
        raise ValueError(f"train_x and val_x differ in image shape (C x H x W): {tuple(xs[0].shape[1:])} and "
                         f"{tuple(xs[1].shape[1:])}")
    if sum(len(y) for y in ys) < 2:
        raise ValueError(f"too few images: {sum(len(y) for y in ys)}; need at least 2")
    n_classes = (max(int(y.max()) for y in ys if len(y)) + 1 if num_classes is None
                 else check_int("num_classes", num_classes, minimum=2))
    name = f"memory:{content_digest([*xs, *ys])}"
    if len(xs) == 2:
        if val_size is not None or val_fraction is not None:
            raise ValueError("data already has a validation split (train_x, train_y, val_x, val_y): val_size and "
                             "val_fraction do not apply")
        return make_image_data(name, (xs[0], ys[0]), (xs[1], ys[1]), n_classes, augment, classes, train_subset,
                               val_subset)
    default_val = max(1, round(DEFAULT_VAL_FRACTION * len(ys[0])))
    return split_image_data(name, xs[0], ys[0], n_classes, augment, classes=classes, val_size=val_size,
                            val_fraction=val_fraction, default_val_size=default_val, split_seed=split_seed,
                            train_subset=train_subset, val_subset=val_subset)
