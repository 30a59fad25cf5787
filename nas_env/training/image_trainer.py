"""Train one child CNN with its data resident on the device and augmentation done there.

The images are moved to the device once (uint8, already zero-padded for the crop);
every batch is an index gather, a batched random crop and flip, and a normalisation,
all on the device, so no per-sample Python or DataLoader runs in the loop.

Speed decisions, each measured (``scripts/bench.py`` prints the figures side by side):

* **Memory format.** channels_last on CUDA, and on the CPU for images of 16x16 or more: oneDNN's
  convolutions ran 1.3-1.8x faster in channels_last on 32x32 CIFAR-10 layers here; on 8x8 digits it
  made no difference (within 4%), so small images stay NCHW.
* **Precision.** bf16 autocast on CUDA (batch norm keeps float32 weights and statistics); float32 on
  the CPU. On this project's 2-core Xeon (AVX512-BF16, no AMX) bf16 convolutions measured 0.6-0.9x
  the speed of float32 channels_last, so ``precision="bf16"`` is opt-in on the CPU.
* **cuDNN autotuning** (``cudnn.benchmark``) is on for CUDA: a child runs thousands of steps at a
  fixed shape, so the one-off search per layer shape is repaid within the first epoch.
* **No torch.compile, no CUDA graphs.** Every child is a new architecture, so compilation is paid
  per child: on the CPU it took 80 s for a 6-layer child and the compiled step was slower than
  eager; on a GPU 20-60 s of compilation exceeds a whole 5-epoch proxy child (a few seconds).
  CUDA graphs would need a static learning rate tensor and a capture per child for the same
  small gain, so neither is used.

Large batches (``lr_reference_batch``), early stopping and the GPU options (``channel_multiple``,
``concat_buffer``, ``fused_optimizer``, ``format_trial``, ``validate``): docs/child-training.md. Each
GPU option computes the same function as without it and is off by default
(``tests/nas_env/training/test_gpu_options.py`` proves the equivalences on the CPU).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from nas_env.checks import check_bool, check_fraction, check_in, check_int, check_number, check_optional, is_int
from nas_env.data.base import ImageData
from nas_env.models.cnn import ChildCNN

PAD = 4  # pad-4 random crop, the standard CIFAR-10 augmentation
CHANNELS_LAST_MIN_PIXELS = 16 * 16  # CPU: channels_last only pays from this image size up (see above)
SCHEDULES = ("cosine", "constant", "step")
PRECISIONS = ("auto", "fp32", "bf16")
FUSED_OPTIMIZERS = ("auto", "off", "foreach", "fused")  # torch's choice, per-parameter loop, multi-tensor, one kernel
_SGD_IMPL = {"auto": {}, "off": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}
VALIDATIONS = ("every_epoch", "reward_window")
TRIAL_WARMUP_STEPS = 1  # format trial: untimed steps per candidate (cuDNN autotuning, allocator)
TRIAL_TIMED_STEPS = 2  # format trial: timed steps per candidate; the fastest total wins


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
    channels_last: bool | None = None  # None: on for CUDA, and on the CPU for images of 16x16 or more
    eval_batch_size: int = 1024
    lr_reference_batch: int | None = None  # set: lr is for this batch size, scaled linearly to batch_size
    cudnn_benchmark: bool = True  # CUDA only: autotune convolution kernels once per layer shape
    early_stop_epoch: int = 0  # 0: off; else after this epoch, stop children that fail either test below
    early_stop_min_acc: float = 0.0  # stop when validation accuracy is below this
    early_stop_gap: float | None = None  # stop when more than this below the best accuracy seen so far
    # GPU options (module docstring): each computes the same function; all off by default
    channel_multiple: int = 1  # 1: off; N: zero-pad every conv's output channels to a multiple of N
    concat_buffer: bool = False  # concatenate layer inputs into one preallocated buffer
    fused_optimizer: str = "auto"  # SGD implementation, one of FUSED_OPTIMIZERS
    format_trial: bool = False  # time the allowed memory formats and precisions per child, train with the fastest
    validate: str = "every_epoch"  # or "reward_window": only the epochs the reward and early stopping read

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "reward_window", "eval_batch_size"):
            object.__setattr__(self, name, check_int(name, getattr(self, name), minimum=1))
        for name in ("lr", "momentum", "weight_decay", "lr_decay_factor"):
            check_number(name, getattr(self, name), minimum=0)  # checked, kept as given (configs print as written)
        for name, allowed in (("lr_schedule", SCHEDULES), ("precision", PRECISIONS),
                              ("fused_optimizer", FUSED_OPTIMIZERS), ("validate", VALIDATIONS)):
            check_in(name, getattr(self, name), allowed)
        object.__setattr__(self, "lr_decay_epochs", tuple(self.lr_decay_epochs))
        object.__setattr__(self, "lr_reference_batch",
                           check_optional("lr_reference_batch", self.lr_reference_batch, check_int, minimum=1))
        if not is_int(self.early_stop_epoch) or not 0 <= self.early_stop_epoch < max(self.epochs, 1):
            raise ValueError(f"early_stop_epoch must be an int in [0, epochs={self.epochs}) (0 = off), "
                             f"got {self.early_stop_epoch!r}")
        object.__setattr__(self, "early_stop_epoch", int(self.early_stop_epoch))
        check_fraction("early_stop_min_acc", self.early_stop_min_acc, one=True)
        check_optional("early_stop_gap", self.early_stop_gap, check_fraction, one=True)
        multiple = 1 if self.channel_multiple is None else self.channel_multiple
        if not is_int(multiple) or multiple < 1:
            raise ValueError(f"channel_multiple must be None or a positive int (1: off), got {multiple!r}")
        object.__setattr__(self, "channel_multiple", int(multiple))
        for name in ("concat_buffer", "format_trial"):
            object.__setattr__(self, name, check_bool(name, getattr(self, name)))

    @property
    def base_lr(self) -> float:
        """The peak learning rate actually used: ``lr``, scaled linearly when ``lr_reference_batch`` is set."""
        if self.lr_reference_batch is None:
            return self.lr
        return self.lr * self.batch_size / self.lr_reference_batch

    def validation_epochs(self) -> tuple[int, ...]:
        """The 1-based epochs after which the child is validated.

        ``"every_epoch"``: all. ``"reward_window"``: the last ``reward_window`` epochs, plus the
        ``reward_window`` epochs up to ``early_stop_epoch`` when early stopping is on, so a stopped
        child's reward (the best of its last ``reward_window`` validations) is the same too.
        """
        if self.validate == "every_epoch":
            return tuple(range(1, self.epochs + 1))
        epochs = set(range(max(1, self.epochs - self.reward_window + 1), self.epochs + 1))
        if self.early_stop_epoch:
            epochs |= set(range(max(1, self.early_stop_epoch - self.reward_window + 1), self.early_stop_epoch + 1))
        return tuple(sorted(epochs))

    def should_stop(self, epoch: int, val_acc: float, best_so_far: float | None) -> bool:
        """Early stopping: after epoch ``early_stop_epoch`` (1-based), is this child hopeless?"""
        if self.early_stop_epoch == 0 or epoch != self.early_stop_epoch:
            return False
        if val_acc < self.early_stop_min_acc:
            return True
        gap = self.early_stop_gap
        return gap is not None and best_so_far is not None and val_acc < best_so_far - gap

    def lr_at(self, step: int, steps_per_epoch: int) -> float:
        """Learning rate for optimiser step ``step`` (0-based)."""
        lr = self.base_lr
        if self.lr_schedule == "cosine":
            total = max(1, self.epochs * steps_per_epoch)
            return 0.5 * lr * (1.0 + math.cos(math.pi * step / total))
        if self.lr_schedule == "step":
            epoch = step // max(1, steps_per_epoch)
            return lr * self.lr_decay_factor ** sum(epoch >= e for e in self.lr_decay_epochs)
        return lr


PAPER_TRAIN_CONFIG = TrainConfig(epochs=50)


@dataclass
class TrainOutcome:
    """What one child's training produced."""

    status: str  # "ok", "diverged" or "stopped_early"
    val_acc_history: list[float] = field(default_factory=list)
    train_seconds: float = 0.0  # the format trial's seconds included
    first_loss: float = math.nan  # the training loss of the first step (checked against a reference loop)
    val_epochs: list[int] = field(default_factory=list)  # the 1-based epoch of each val_acc_history entry
    memory_format: str = ""  # what the child trained in: "channels_last" or "contiguous"
    precision: str = ""  # "bf16" or "fp32"
    trial_seconds: float = 0.0  # the format trial's cost (0: no trial)
    trial_step_seconds: dict[str, float] = field(default_factory=dict)  # per candidate: its timed steps' seconds

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

    def sample_augmentation(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Crop offsets ``dy``, ``dx`` (uniform over 0..2*PAD, as torchvision's ``RandomCrop(padding=PAD)``)
        and flip flags (probability 0.5, as ``RandomHorizontalFlip``) for ``n`` images."""
        dy = torch.randint(0, 2 * PAD + 1, (n,), device=self.device, generator=gen)
        dx = torch.randint(0, 2 * PAD + 1, (n,), device=self.device, generator=gen)
        flip = torch.rand(n, device=self.device, generator=gen) < 0.5
        return dy, dx, flip

    def crop_and_flip(self, padded: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor,
                      flip: torch.Tensor) -> torch.Tensor:
        """Crop every padded image at its own offset and mirror the flagged ones: one gather for the batch."""
        n, c = padded.shape[:2]
        rows = (dy.view(n, 1, 1) + torch.arange(self.height, device=padded.device).view(1, -1, 1))
        cols = torch.arange(self.width, device=padded.device).view(1, 1, -1)
        cols = torch.where(flip.view(n, 1, 1), (self.width - 1) - cols, cols) + dx.view(n, 1, 1)
        flat = (rows * padded.shape[3] + cols).view(n, 1, -1).expand(n, c, -1)
        return padded.flatten(2).gather(2, flat).view(n, c, self.height, self.width)

    def train_batch(self, idx: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``idx`` of the training split, randomly cropped and flipped when augmenting, normalised."""
        x = self.train_x[idx]
        if self.augment:
            x = self.crop_and_flip(x, *self.sample_augmentation(len(idx), gen))
        return self.normalise(x), self.train_y[idx]


def autocast_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of the module docstring's precision rule (None: plain float32)."""
    if config.precision == "fp32":
        return None
    if config.precision == "bf16":
        return torch.bfloat16
    # CPU "auto" stays fp32: on the small digits children bf16 autocast measured 1.2-1.4x slower
    # here even with native AVX512-BF16; ask for precision="bf16" explicitly for large CPU children.
    return torch.bfloat16 if device.type == "cuda" else None


def autocast(device: torch.device, dtype: torch.dtype | None) -> torch.autocast:
    """Autocast to ``dtype`` on ``device``, or a context that changes nothing when ``dtype`` is None (float32)."""
    return torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def use_channels_last(config: TrainConfig, device: torch.device, image_shape: tuple[int, ...]) -> bool:
    """The memory format rule of the module docstring: measured per device type and image size."""
    if config.channels_last is not None:
        return config.channels_last
    return device.type == "cuda" or image_shape[-1] * image_shape[-2] >= CHANNELS_LAST_MIN_PIXELS


def format_candidates(config: TrainConfig, device: torch.device,
                      image_shape: tuple[int, ...]) -> list[tuple[torch.memory_format, torch.dtype | None]]:
    """The (memory format, autocast dtype) pairs a child may train in, the rule's own choice first.

    Without ``format_trial`` only that choice; with it, every pair the config leaves open: both
    formats unless ``channels_last`` is set, both precisions unless ``precision`` is not ``"auto"``.
    """
    fmt = torch.channels_last if use_channels_last(config, device, image_shape) else torch.contiguous_format
    first = (fmt, autocast_dtype(config, device))
    if not config.format_trial:
        return [first]
    formats = [fmt] if config.channels_last is not None else [torch.channels_last, torch.contiguous_format]
    dtypes = [first[1]] if config.precision != "auto" else [torch.bfloat16, None]
    return [first] + [(f, d) for f in formats for d in dtypes if (f, d) != first]


def describe_format(memory_format: torch.memory_format, dtype: torch.dtype | None) -> str:
    """``"channels_last/bf16"`` and the like: how outcomes and reports name a candidate."""
    fmt = "channels_last" if memory_format == torch.channels_last else "contiguous"
    return f"{fmt}/{'bf16' if dtype == torch.bfloat16 else 'fp32'}"


def make_optimizer(params: Iterable[torch.Tensor], config: TrainConfig) -> torch.optim.SGD:
    """The paper's SGD (Nesterov momentum, weight decay) in the implementation ``config.fused_optimizer`` names."""
    try:
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                               nesterov=config.nesterov and config.momentum > 0, weight_decay=config.weight_decay,
                               **_SGD_IMPL[config.fused_optimizer])
    except (RuntimeError, ValueError) as e:
        raise ValueError(f"fused_optimizer={config.fused_optimizer!r} is not supported by torch {torch.__version__} "
                         f"for these parameters: {e}") from e


def _step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
          dtype: torch.dtype | None) -> torch.Tensor:
    """One training step (forward in autocast when ``dtype``, loss in float32, backward, update); the loss."""
    with autocast(x.device, dtype):
        loss = F.cross_entropy(model(x).float(), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_format_trial(model: nn.Module, data: DeviceData, config: TrainConfig,
                     candidates: list[tuple[torch.memory_format, torch.dtype | None]],
                     ) -> tuple[tuple[torch.memory_format, torch.dtype | None], dict[str, float]]:
    """Time ``TRIAL_TIMED_STEPS`` steps (after ``TRIAL_WARMUP_STEPS``) of each candidate; the fastest and the times.

    Each candidate trains its own deep copy of ``model`` on one fixed batch drawn with its own
    generator, so neither the model, its batch-norm statistics nor the training's random stream
    are touched: training after the trial is what it would be with the chosen pair forced.
    """
    device = data.device
    bs = min(config.batch_size, data.num_train)
    x_raw, y = data.train_batch(torch.arange(bs, device=device), torch.Generator(device=device).manual_seed(0))
    seconds: dict[str, float] = {}
    trial_config = replace(config, lr=config.base_lr, lr_reference_batch=None)  # the scaled lr, as training starts
    for fmt, dtype in candidates:
        trial = copy.deepcopy(model).to(device=device, memory_format=fmt)
        trial.train()
        optimizer = make_optimizer(trial.parameters(), trial_config)
        x = x_raw.contiguous(memory_format=fmt)
        for _ in range(TRIAL_WARMUP_STEPS):
            _step(trial, optimizer, x, y, dtype)
        _synchronize(device)
        start = time.perf_counter()
        for _ in range(TRIAL_TIMED_STEPS):
            _step(trial, optimizer, x, y, dtype)
        _synchronize(device)
        seconds[describe_format(fmt, dtype)] = time.perf_counter() - start
        del trial, optimizer
    best = min(candidates, key=lambda c: seconds[describe_format(*c)])  # ties: the rule's own choice (first)
    return best, seconds


@torch.no_grad()
def evaluate_accuracy(model: nn.Module, data: DeviceData, config: TrainConfig, memory_format: torch.memory_format,
                      dtype: torch.dtype | None) -> float:
    """Top-1 accuracy on the validation split."""
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=data.device)
    for start in range(0, len(data.val_y), config.eval_batch_size):
        x = data.normalise(data.val_x[start : start + config.eval_batch_size]).contiguous(memory_format=memory_format)
        with autocast(data.device, dtype):
            logits = model(x)
        correct += (logits.argmax(dim=1) == data.val_y[start : start + config.eval_batch_size]).sum()
    return correct.item() / len(data.val_y)


def train_child(model: nn.Module, data: DeviceData, config: TrainConfig, seed: int,
                on_epoch: Callable[[int, float, float], None] | None = None,
                best_so_far: float | None = None) -> TrainOutcome:
    """Train ``model`` on ``data`` and record the validation accuracy after every epoch.

    ``on_epoch(epoch, val_acc, mean_train_loss)``, if given, follows every epoch (progress bars, logging);
    ``val_acc`` is NaN after an epoch that ``config.validation_epochs()`` leaves out.

    ``seed`` fixes the data order and the augmentation. A non-finite training loss ends
    training with status ``"diverged"``; a child that fails the config's early-stopping test
    (against ``best_so_far``, the best accuracy of the search so far) ends with ``"stopped_early"``.
    CUDA out-of-memory errors propagate to the caller, which owns the model and can free it.
    On CUDA, cuDNN autotuning (``config.cudnn_benchmark``) is on for this child only; it may pick
    different kernels from run to run, so GPU results are reproducible only up to that choice.
    """
    if data.device.type != "cuda":
        return _train(model, data, config, seed, on_epoch, best_so_far)
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = config.cudnn_benchmark
    try:
        return _train(model, data, config, seed, on_epoch, best_so_far)
    finally:
        torch.backends.cudnn.benchmark = previous  # the caller's setting, not ours, outside this child


def _train(model: nn.Module, data: DeviceData, config: TrainConfig, seed: int,
           on_epoch: Callable[[int, float, float], None] | None, best_so_far: float | None) -> TrainOutcome:
    if config.channel_multiple == 1 and not config.concat_buffer:
        return _train_model(model, data, config, seed, on_epoch, best_so_far)
    if not isinstance(model, ChildCNN):
        raise ValueError(f"channel_multiple={config.channel_multiple} and concat_buffer={config.concat_buffer} need a "
                         f"ChildCNN (build_model's), got {type(model).__name__}")
    saved = (model.channel_multiple, model.concat_buffer)
    if config.channel_multiple != 1:
        model.set_channel_multiple(config.channel_multiple)
    model.concat_buffer = model.concat_buffer or config.concat_buffer
    outcome = _train_model(model, data, config, seed, on_epoch, best_so_far)
    # Give the caller back the model it passed: same shapes and options (not after an error: the caller frees it)
    model.set_channel_multiple(saved[0])
    model.concat_buffer = saved[1]
    model.to(memory_format=torch.channels_last if outcome.memory_format == "channels_last"
             else torch.contiguous_format)
    return outcome


def _train_model(model: nn.Module, data: DeviceData, config: TrainConfig, seed: int,
                 on_epoch: Callable[[int, float, float], None] | None, best_so_far: float | None) -> TrainOutcome:
    device = data.device
    candidates = format_candidates(config, device, data.data.input_shape)
    trial_start = time.perf_counter()
    trial_seconds: dict[str, float] = {}
    if len(candidates) > 1:
        model.to(device=device)
        (memory_format, dtype), trial_seconds = run_format_trial(model, data, config, candidates)
    else:
        memory_format, dtype = candidates[0]
    trial_cost = time.perf_counter() - trial_start if trial_seconds else 0.0
    model.to(device=device, memory_format=memory_format)
    optimizer = make_optimizer(model.parameters(), config)
    gen = torch.Generator(device=device).manual_seed(int(seed))
    n, bs = data.num_train, min(config.batch_size, data.num_train)
    if bs < config.batch_size and config.lr_reference_batch is not None:
        config = replace(config, batch_size=bs)  # the linear lr scaling follows the batch actually used
    batches = [(s, min(s + bs, n)) for s in range(0, n, bs) if min(s + bs, n) - s >= 2]  # BN needs 2+ samples
    fmt_name, _, precision = describe_format(memory_format, dtype).partition("/")
    outcome = TrainOutcome(status="ok", memory_format=fmt_name, precision=precision, trial_seconds=trial_cost,
                           trial_step_seconds=trial_seconds)
    validated = set(config.validation_epochs())
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
            loss = _step(model, optimizer, x.contiguous(memory_format=memory_format), y, dtype)
            if step == 0:
                outcome.first_loss = loss.item()  # the one extra host sync of the child
            loss_sum += loss.detach()
            step += 1
        if not math.isfinite(loss_sum.item()):  # one host sync per epoch, not per step
            outcome.status = "diverged"
            break
        val_acc = math.nan  # not validated after this epoch (validate="reward_window")
        if _epoch + 1 in validated:
            val_acc = evaluate_accuracy(model, data, config, memory_format, dtype)
            outcome.val_acc_history.append(val_acc)
            outcome.val_epochs.append(_epoch + 1)
        if on_epoch is not None:
            on_epoch(_epoch, val_acc, loss_sum.item() / max(1, len(batches)))
        if _epoch + 1 in validated and config.should_stop(_epoch + 1, val_acc, best_so_far):
            outcome.status = "stopped_early"
            break
    outcome.train_seconds = time.perf_counter() - start_time + trial_cost
    return outcome
