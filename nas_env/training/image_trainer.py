"""Train one child CNN with its data resident on the device and augmentation done there.

The images are moved to the device once (uint8, already zero-padded for the crop);
every batch is an index gather, a batched random crop and flip, and a normalisation,
all on the device, so no per-sample Python or DataLoader runs in the loop.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from nas_env.data.base import ImageData

PAD = 4  # pad-4 random crop, the standard CIFAR-10 augmentation
SCHEDULES = ("cosine", "constant", "step")
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class TrainConfig:
    """How a child is trained. Defaults: the paper's optimiser (section 4.1) with a short proxy schedule.

    ``PAPER_TRAIN_CONFIG`` below holds the paper's full setting (50 epochs).
    """

    epochs: int = 5
    batch_size: int = 128
    lr: float = 0.1  # the paper's
    momentum: float = 0.9  # the paper's, Nesterov
    nesterov: bool = True
    weight_decay: float = 1e-4  # the paper's
    lr_schedule: str = "cosine"  # "cosine" to 0 per step, "constant", or "step" (x lr_decay_factor at lr_decay_epochs)
    lr_decay_epochs: tuple[int, ...] = ()
    lr_decay_factor: float = 0.1
    augment: bool | None = None  # None: the dataset's own default (crop+flip for CIFAR-10, none for digits)
    reward_window: int = 5  # reward = max validation accuracy over the last this-many epochs (the paper's)
    precision: str = "auto"  # "auto": bf16 autocast on CUDA, fp32 on the CPU; or "fp32" / "bf16" anywhere
    channels_last: bool | None = None  # None: on for CUDA and for bf16 on the CPU
    eval_batch_size: int = 1024

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "reward_window", "eval_batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        for name in ("lr", "momentum", "weight_decay", "lr_decay_factor"):
            v = getattr(self, name)
            if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        if self.lr_schedule not in SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {SCHEDULES}, got {self.lr_schedule!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        object.__setattr__(self, "lr_decay_epochs", tuple(self.lr_decay_epochs))

    def lr_at(self, step: int, steps_per_epoch: int) -> float:
        """Learning rate for optimiser step ``step`` (0-based)."""
        if self.lr_schedule == "cosine":
            total = max(1, self.epochs * steps_per_epoch)
            return 0.5 * self.lr * (1.0 + math.cos(math.pi * step / total))
        if self.lr_schedule == "step":
            epoch = step // max(1, steps_per_epoch)
            return self.lr * self.lr_decay_factor ** sum(epoch >= e for e in self.lr_decay_epochs)
        return self.lr


PAPER_TRAIN_CONFIG = TrainConfig(epochs=50)


@dataclass
class TrainOutcome:
    """What one child's training produced."""

    status: str  # "ok" or "diverged"
    val_acc_history: list[float] = field(default_factory=list)
    train_seconds: float = 0.0

    def best_recent(self, window: int) -> float:
        """The paper's reward: the maximum validation accuracy over the last ``window`` epochs."""
        return max(self.val_acc_history[-window:], default=0.0)


class DeviceData:
    """An :class:`ImageData` moved to a device once, with batched augmentation and normalisation there."""

    def __init__(self, data: ImageData, device: torch.device, augment: bool | None = None) -> None:
        self.data = data
        self.device = device
        self.augment = data.augment if augment is None else augment
        train_x = data.train_x
        if self.augment:  # pad once, crop per batch
            train_x = F.pad(train_x, (PAD, PAD, PAD, PAD))
        self.train_x = train_x.to(device)
        self.train_y = data.train_y.to(device)
        self.val_x = data.val_x.to(device)
        self.val_y = data.val_y.to(device)
        self.height, self.width = data.input_shape[1:]
        # x_norm = x * scale + shift: one fused multiply-add per batch
        self.scale = (1.0 / torch.tensor(data.std, device=device)).view(1, -1, 1, 1)
        self.shift = (-torch.tensor(data.mean, device=device) / torch.tensor(data.std, device=device)).view(1, -1, 1, 1)

    @property
    def num_train(self) -> int:
        return len(self.train_y)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.shift, x.float(), self.scale)

    def train_batch(self, idx: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``idx`` of the training split, randomly cropped and flipped when augmenting, normalised."""
        x = self.train_x[idx]
        if self.augment:
            n = len(idx)
            dy = torch.randint(0, 2 * PAD + 1, (n, 1, 1), device=self.device, generator=gen)
            dx = torch.randint(0, 2 * PAD + 1, (n, 1, 1), device=self.device, generator=gen)
            rows = (dy + torch.arange(self.height, device=self.device).view(1, -1, 1)).expand(n, self.height,
                                                                                               self.width)
            cols = (dx + torch.arange(self.width, device=self.device).view(1, 1, -1)).expand(n, self.height,
                                                                                              self.width)
            flip = torch.rand(n, device=self.device, generator=gen) < 0.5
            cols = torch.where(flip.view(n, 1, 1), dx + (self.width - 1) - (cols - dx), cols)
            flat = (rows * x.shape[3] + cols).view(n, 1, -1).expand(n, x.shape[1], -1)
            x = x.flatten(2).gather(2, flat).view(n, x.shape[1], self.height, self.width)
        return self.normalise(x), self.train_y[idx]


def _autocast_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    if config.precision == "fp32":
        return None
    if config.precision == "bf16":
        return torch.bfloat16
    # CPU "auto" stays fp32: on the small digits children bf16 autocast measured 1.2-1.4x slower
    # here even with native AVX512-BF16; ask for precision="bf16" explicitly for large CPU children.
    return torch.bfloat16 if device.type == "cuda" else None


@torch.no_grad()
def evaluate_accuracy(model: nn.Module, data: DeviceData, config: TrainConfig, memory_format: torch.memory_format,
                      dtype: torch.dtype | None) -> float:
    """Top-1 accuracy on the validation split."""
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=data.device)
    for start in range(0, len(data.val_y), config.eval_batch_size):
        x = data.normalise(data.val_x[start : start + config.eval_batch_size]).contiguous(memory_format=memory_format)
        with torch.autocast(data.device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            logits = model(x)
        correct += (logits.argmax(dim=1) == data.val_y[start : start + config.eval_batch_size]).sum()
    return correct.item() / len(data.val_y)


def train_child(model: nn.Module, data: DeviceData, config: TrainConfig, seed: int) -> TrainOutcome:
    """Train ``model`` on ``data`` and record the validation accuracy after every epoch.

    ``seed`` fixes the data order and the augmentation. A non-finite training loss ends
    training with status ``"diverged"``. CUDA out-of-memory errors propagate to the caller,
    which owns the model and can free it.
    """
    device = data.device
    dtype = _autocast_dtype(config, device)
    channels_last = config.channels_last if config.channels_last is not None else (
        device.type == "cuda" or dtype is not None)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model.to(device=device, memory_format=memory_format)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                nesterov=config.nesterov and config.momentum > 0, weight_decay=config.weight_decay)
    gen = torch.Generator(device=device).manual_seed(int(seed))
    n, bs = data.num_train, min(config.batch_size, data.num_train)
    batches = [(s, min(s + bs, n)) for s in range(0, n, bs) if min(s + bs, n) - s >= 2]  # BN needs 2+ samples
    outcome = TrainOutcome(status="ok")
    start_time = time.perf_counter()
    step = 0
    for _epoch in range(config.epochs):
        model.train()
        perm = torch.randperm(n, device=device, generator=gen)
        loss_sum = torch.zeros((), device=device)
        for s, e in batches:
            for group in optimizer.param_groups:
                group["lr"] = config.lr_at(step, len(batches))
            x, y = data.train_batch(perm[s:e], gen)
            x = x.contiguous(memory_format=memory_format)
            with torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                loss = F.cross_entropy(model(x).float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach()
            step += 1
        if not math.isfinite(loss_sum.item()):  # one host sync per epoch, not per step
            outcome.status = "diverged"
            break
        outcome.val_acc_history.append(evaluate_accuracy(model, data, config, memory_format, dtype))
    outcome.train_seconds = time.perf_counter() - start_time
    return outcome
