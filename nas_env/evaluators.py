"""Evaluators: callables that turn an architecture into a result the environment can reward.

``TrainingEvaluator`` builds the child, trains it and reports its validation accuracy;
``SyntheticEvaluator`` scores architectures instantly against a known optimum, for
tests and for checking agents. Anything with the signature ``(arch, seed) -> EvalResult``
(or a plain float) plugs into the environment the same way.
"""

from __future__ import annotations

import gc
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from nas_env.data.base import ImageData
from nas_env.fingerprint import make_fingerprint, tensor_digest
from nas_env.models.cnn import build_model
from nas_env.spaces.base import Architecture
from nas_env.spaces.cnn import CNNArchitecture, CNNSearchSpace
from nas_env.training.device import resolve_device
from nas_env.training.image_trainer import DeviceData, TrainConfig, train_child

STATUSES = ("ok", "diverged", "oom", "invalid_action", "stopped_early", "failed")


@dataclass(frozen=True)
class EvalResult:
    """The outcome of evaluating one child.

    ``reward`` is the raw score (validation accuracy for image children) before the
    environment's ``reward_transform``; ``metrics`` holds ``val_acc``, ``val_acc_history``,
    ``params``, ``flops``, ``train_seconds`` and anything else worth recording.
    """

    reward: float
    status: str = "ok"
    metrics: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")


@runtime_checkable
class Evaluator(Protocol):
    """What the environment calls on the final step."""

    def __call__(self, arch: Architecture, seed: int) -> EvalResult: ...


def as_result(value: EvalResult | float | int) -> EvalResult:
    """Accept a user evaluator's plain number as an ``ok`` result with that validation accuracy."""
    if isinstance(value, EvalResult):
        return value
    if isinstance(value, int | float | np.floating | np.integer) and not isinstance(value, bool):
        return EvalResult(reward=float(value), metrics={"val_acc": float(value)})
    raise TypeError(f"an evaluator must return an EvalResult or a number, got {type(value).__name__}")


def _cost_metrics(arch: CNNArchitecture, input_shape: Sequence[int], num_classes: int) -> dict[str, int]:
    return {"params": arch.num_params(input_shape, num_classes), "flops": arch.multiply_adds(input_shape, num_classes)}


def is_oom(error: BaseException) -> bool:
    """CUDA (or CPU allocator) out-of-memory, in any of the forms PyTorch raises it."""
    if isinstance(error, torch.cuda.OutOfMemoryError | MemoryError):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def oom_result(error: BaseException, device: torch.device, metrics: dict[str, Any]) -> EvalResult:
    """Free what a child that ran out of memory left behind and report it as an ``"oom"`` result (reward 0).

    The caller drops its own reference to the model first, so the collection can free it.
    """
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return EvalResult(0.0, "oom", {**metrics, "train_seconds": 0.0, "error": str(error).splitlines()[0][:200]})


@torch.no_grad()
def test_accuracy(model: torch.nn.Module, data: DeviceData, images: torch.Tensor, labels: torch.Tensor,
                  batch_size: int = 1024) -> float:
    """Top-1 accuracy of a trained child on held-out uint8 ``images`` (normalised as its training data was)."""
    model.eval()
    correct = 0
    for start in range(0, len(labels), batch_size):
        x = data.normalise(images[start : start + batch_size].to(data.device))
        correct += int((model(x).argmax(dim=1).cpu() == labels[start : start + batch_size]).sum())
    return correct / len(labels)


class TrainingEvaluator:
    """Build the child with :func:`build_model`, train it with :func:`train_child`, report its accuracy.

    The dataset is loaded lazily (``data`` may be an :class:`ImageData` or a zero-argument
    factory) and moved to the device once, then reused by every child.
    """

    def __init__(self, data: ImageData | Callable[[], ImageData], config: TrainConfig | None = None,
                 device: str | torch.device | None = "auto",
                 test_data: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        self.config = config or TrainConfig()
        # Optional (uint8 images, labels) never used for the reward: each child also reports test_acc on it.
        self.test_data = test_data
        self.device = resolve_device(device)
        self._data_source = data
        self._device_data: DeviceData | None = None
        self.best_val_acc: float | None = None  # best "ok" child trained here: early stopping's yardstick
        self._fingerprint: str | None = None

    @property
    def data(self) -> DeviceData:
        if self._device_data is None:
            source = self._data_source
            image_data = source if isinstance(source, ImageData) else source()
            self._device_data = DeviceData(image_data, self.device, self.config.augment)
        return self._device_data

    def fingerprint(self) -> str:
        """A hash of everything that determines a child's result except the architecture and seed.

        Code and torch versions, the data's content (hashed once per evaluator), the config and the
        device type: see :mod:`nas_env.fingerprint`.
        """
        if self._fingerprint is None:
            d = self.data.data
            settings = {"data": [d.name, list(d.input_shape), d.num_classes], "config": asdict(self.config),
                        "device": self.device.type}
            digest = tensor_digest([d.train_x, d.train_y, d.val_x, d.val_y, *(self.test_data or ())])
            self._fingerprint = make_fingerprint("image", digest, settings)
        return self._fingerprint

    def __call__(self, arch: Architecture, seed: int) -> EvalResult:
        if not isinstance(arch, CNNArchitecture):
            raise TypeError(f"TrainingEvaluator trains CNN architectures, got {type(arch).__name__}")
        data = self.data
        metrics: dict[str, Any] = _cost_metrics(arch, data.data.input_shape, data.data.num_classes)
        model = None
        try:
            with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's global RNG
                torch.manual_seed(int(seed))
                model = build_model(arch, data.data.input_shape, data.data.num_classes)
            outcome = train_child(model, data, self.config, seed, best_so_far=self.best_val_acc)
        except Exception as e:  # only OOM is turned into a result; everything else propagates
            if not is_oom(e):
                raise
            del model
            return oom_result(e, self.device, {**metrics, "val_acc": 0.0, "val_acc_history": []})
        # A stopped child keeps the accuracy it reached (a lower bound); a diverged one scores 0.
        val_acc = outcome.best_recent(self.config.reward_window) if outcome.status != "diverged" else 0.0
        if outcome.status == "ok":
            self.best_val_acc = max(self.best_val_acc or 0.0, val_acc)
        metrics.update(val_acc=val_acc, val_acc_history=outcome.val_acc_history,
                       train_seconds=outcome.train_seconds)
        if self.test_data is not None:
            metrics["test_acc"] = test_accuracy(model, data, *self.test_data) if outcome.status == "ok" else 0.0
        return EvalResult(val_acc, outcome.status, metrics)


class SyntheticEvaluator:
    """An instant evaluator with a known optimum: the share of tokens that match a target architecture.

    For tests and agent sanity checks only; it never trains anything. The target defaults
    to a fixed pseudo-random action list drawn from ``target_seed``. A shallower architecture
    (a depth curriculum's) is scored on its own tokens against the target's first ones.
    """

    def __init__(self, space: CNNSearchSpace, target: Sequence[int] | None = None, target_seed: int = 0,
                 input_shape: Sequence[int] = (3, 32, 32), num_classes: int = 10) -> None:
        self.space = space
        specs = space.tokens()
        if target is None:
            rng = np.random.default_rng(target_seed)
            target = [int(rng.integers(spec.num_choices)) for spec in specs]
        self.target_arch = space.decode(list(target))
        self.target = np.asarray(space.encode(self.target_arch))
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes

    def fingerprint(self) -> str:
        return "synthetic/" + hashlib.sha256(self.target.tobytes()).hexdigest()[:12]

    def __call__(self, arch: Architecture, seed: int) -> EvalResult:
        space = self.space if arch.num_layers == self.space.num_layers else self.space.with_layers(arch.num_layers)
        actions = np.asarray(space.encode(arch))
        score = float(np.mean(actions == self.target[: len(actions)]))
        metrics = {**_cost_metrics(arch, self.input_shape, self.num_classes), "val_acc": score,
                   "val_acc_history": [score], "train_seconds": 0.0}
        return EvalResult(score, "ok", metrics)
