"""Write real CIFAR-10 images from the shared PNG copy as an ImageFolder tree: ``OUT/<class>/<n>.png``.

For trying ``dataset="imagefolder"`` on real pictures without any download::

    python scripts/make_image_folder.py /tmp/cifar_folder                     # 2,000 training images
    python scripts/make_image_folder.py /tmp/split --count 2000 --val 500 --test 500   # train/ val/ test/

The images come in the copy's order (CIFAR-10's training batches; ``--test`` images come from
the official test batch). With ``--val`` or ``--test`` the tree is the split layout
``OUT/train/<class>/``, ``OUT/val/<class>/``, ``OUT/test/<class>/``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

SHARED_PNG = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cifar10-png"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
PER_SPRITE = 1000  # images per sprite PNG (one 32x32x3 image a row)
TRAIN_SPRITES = 50  # cifar10_batch_0..49: training images; cifar10_batch_50: the first 1,000 test images


def sprite_labels(source: Path) -> list[int]:
    """Every label of the copy (``cifar10_labels.js``), in its order."""
    text = (source / "cifar10_labels.js").read_text()
    return json.loads(text[text.index("[") : text.rindex("]") + 1])


def sprite_images(source: Path, first: int, count: int) -> np.ndarray:
    """``count`` images (uint8 N x 32 x 32 x 3) starting at global index ``first`` of the copy."""
    out = []
    for sprite in range(first // PER_SPRITE, (first + count - 1) // PER_SPRITE + 1):
        rows = np.asarray(Image.open(source / f"cifar10_batch_{sprite}.png").convert("RGB")).reshape(-1, 32, 32, 3)
        lo = max(first, sprite * PER_SPRITE) - sprite * PER_SPRITE
        hi = min(first + count, (sprite + 1) * PER_SPRITE) - sprite * PER_SPRITE
        out.append(rows[lo:hi])
    return np.concatenate(out)


def write_split(out: Path, source: Path, first: int, count: int, labels: list[int]) -> None:
    """Write images ``first .. first+count-1`` of the copy as ``out/<class>/<index>.png``."""
    for name in CLASSES:
        (out / name).mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(sprite_images(source, first, count)):
        Image.fromarray(image).save(out / CLASSES[labels[first + i]] / f"{first + i:05d}.png")


def main(argv: list[str] | None = None) -> None:
    """Command line: see the module docstring."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, help="folder to write (created)")
    p.add_argument("--count", type=int, default=2000, help="training images (default 2000)")
    p.add_argument("--val", type=int, default=0, help="validation images: writes the train/ val/ layout")
    p.add_argument("--test", type=int, default=0, help="test images (official test batch): writes test/")
    p.add_argument("--source", type=Path, default=SHARED_PNG, help="the shared cifar10-png folder")
    a = p.parse_args(argv)
    if a.count < 1 or a.val < 0 or a.test < 0 or a.count + a.val > TRAIN_SPRITES * PER_SPRITE or a.test > PER_SPRITE:
        p.error(f"need 1 <= count, count + val <= {TRAIN_SPRITES * PER_SPRITE}, 0 <= test <= {PER_SPRITE}")
    if not (a.source / "cifar10_labels.js").is_file():
        p.error(f"no CIFAR-10 PNG copy at {a.source}")
    labels = sprite_labels(a.source)
    split = a.val > 0 or a.test > 0
    write_split(a.out / "train" if split else a.out, a.source, 0, a.count, labels)
    if a.val:
        write_split(a.out / "val", a.source, a.count, a.val, labels)
    if a.test:
        write_split(a.out / "test", a.source, TRAIN_SPRITES * PER_SPRITE, a.test, labels)
    print(f"wrote {a.count + a.val + a.test} PNGs under {a.out}")


if __name__ == "__main__":
    main()
