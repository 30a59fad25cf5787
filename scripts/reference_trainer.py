"""A plain PyTorch training loop: the yardstick the fast trainer is measured and checked against.

This is how most CIFAR-10 code trains a network: a torchvision ``CIFAR10``-style dataset held
in memory (uint8 ``H x W x C`` arrays, one PIL image made per sample), a ``DataLoader``,
torchvision transforms for the pad-4 random crop and the horizontal flip, and float32 NCHW
tensors. The model, optimiser and schedule are the fast trainer's (:func:`train_child`), so the
two differ only in how the data reaches the model and in memory format and precision.
``scripts/bench.py`` times both on the same children; the tests check that both compute the
same first-step loss and the same augmentation distribution.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from nas_env.data.base import ImageData
from nas_env.training.image_trainer import PAD, TrainConfig


class InMemoryImages(Dataset):
    """torchvision ``CIFAR10``'s ``__getitem__``: a PIL image per sample, then the transform."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: transforms.Compose) -> None:
        self.images = images.permute(0, 2, 3, 1).contiguous().numpy()  # N x H x W x C, as CIFAR10.data
        self.labels = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        pixels = self.images[index]
        image = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)
        return self.transform(image), self.labels[index]


def reference_transform(data: ImageData, augment: bool) -> transforms.Compose:
    """The usual torchvision pipeline: random crop with padding and flip (if augmenting), to tensor, normalise."""
    height, width = data.input_shape[1:]
    steps: list[object] = []
    if augment:
        steps += [transforms.RandomCrop((height, width), padding=PAD), transforms.RandomHorizontalFlip()]
    steps += [transforms.ToTensor(),  # to 0-1: the 0-255 statistics are rescaled to match
              transforms.Normalize([m / 255 for m in data.mean], [s / 255 for s in data.std])]
    return transforms.Compose(steps)


@dataclass
class ReferenceOutcome:
    """What the reference loop measured."""

    first_loss: float
    val_acc_history: list[float]
    train_images: int
    seconds: float


@torch.random.fork_rng(devices=[])
def train_reference(model: nn.Module, data: ImageData, config: TrainConfig, seed: int, num_workers: int = 0,
                    device: torch.device | str = "cpu") -> ReferenceOutcome:
    """Train ``model`` the plain way for ``config.epochs`` epochs, validating after each; float32 NCHW.

    Batches are made on the CPU by ``num_workers`` loader processes (0: in this process) and
    copied to ``device`` per step, as a plain CUDA script does (pinned memory when on CUDA).
    ``seed`` fixes the order and, through a forked global generator (torchvision's transforms
    draw from it), the augmentation; the caller's random state is left as it was.
    """
    torch.manual_seed(int(seed))
    device = torch.device(device)
    pin = device.type == "cuda"
    model.to(device)
    augment = data.augment if config.augment is None else config.augment
    generator = torch.Generator().manual_seed(int(seed))
    single_last = len(data.train_y) % config.batch_size == 1  # batch norm needs 2+ samples: drop a batch of one
    train = DataLoader(InMemoryImages(data.train_x, data.train_y, reference_transform(data, augment)),
                       batch_size=config.batch_size, shuffle=True, generator=generator, num_workers=num_workers,
                       pin_memory=pin, drop_last=single_last)
    val = DataLoader(InMemoryImages(data.val_x, data.val_y, reference_transform(data, False)),
                     batch_size=config.eval_batch_size, num_workers=num_workers, pin_memory=pin)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                nesterov=config.nesterov and config.momentum > 0, weight_decay=config.weight_decay)
    first_loss = float("nan")
    history: list[float] = []
    step, images = 0, 0
    start = time.perf_counter()
    for _epoch in range(config.epochs):
        model.train()
        for x, y in train:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            for group in optimizer.param_groups:
                group["lr"] = config.lr_at(step, len(train))
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if step == 0:
                first_loss = loss.item()
            step += 1
            images += len(y)
        model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in val:
                correct += int((model(x.to(device)).argmax(dim=1).cpu() == y).sum())
        history.append(correct / len(data.val_y))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return ReferenceOutcome(first_loss, history, images, time.perf_counter() - start)

