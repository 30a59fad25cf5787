"""The paper's evaluator: build the child network, train it from scratch, reward its validation accuracy.

The child is the paper's CNN by default; a :class:`ChildBuilder` (``builder=``) trains another
family's networks with the same trainer, data and statuses (NAS-Bench-201's: :class:`NB201Builder`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any, Protocol

import torch

from nas_env.checks import check_type
from nas_env.data.base import ImageData, image_data_from
from nas_env.evaluators.base import EvalResult, is_oom, oom_result
from nas_env.fingerprint import make_fingerprint, tensor_digest
from nas_env.models.cnn import build_model
from nas_env.spaces.base import Architecture
from nas_env.spaces.cnn import CNNArchitecture
from nas_env.training.device import resolve_device
from nas_env.training.image_trainer import DeviceData, TrainConfig, train_child


def cnn_cost_metrics(arch: CNNArchitecture, input_shape: Sequence[int], num_classes: int) -> dict[str, int]:
    return {"params": arch.num_params(input_shape, num_classes), "flops": arch.multiply_adds(input_shape, num_classes)}


class ChildBuilder(Protocol):
    """How a :class:`TrainingEvaluator` turns an architecture into a model: one per network family.

    ``kind`` is a key of :data:`nas_env.fingerprint.RESULT_SOURCES`; ``settings()`` (widths, depths) is also
    fingerprinted. ``metrics`` (costs known before training) and ``build`` raise ``TypeError`` for an
    architecture of another family.
    """

    kind: str

    def settings(self) -> dict[str, Any]: ...

    def metrics(self, arch: Architecture, input_shape: Sequence[int], num_classes: int) -> dict[str, Any]: ...

    def build(self, arch: Architecture, input_shape: Sequence[int], num_classes: int) -> torch.nn.Module: ...


class CNNBuilder:
    """The paper's child CNNs (:func:`build_model`): :class:`TrainingEvaluator`'s default builder."""

    kind = "image"  # the CNN's fingerprint kind (named before there were other families)

    def settings(self) -> dict[str, Any]:
        return {}  # everything is in the architecture: the CNN's fingerprints stay what they were

    @staticmethod
    def _check(arch: Architecture) -> CNNArchitecture:
        return check_type(arch, CNNArchitecture, "TrainingEvaluator trains CNN architectures")

    def metrics(self, arch: Architecture, input_shape: Sequence[int], num_classes: int) -> dict[str, Any]:
        return cnn_cost_metrics(self._check(arch), input_shape, num_classes)

    def build(self, arch: Architecture, input_shape: Sequence[int], num_classes: int) -> torch.nn.Module:
        return build_model(self._check(arch), input_shape, num_classes)


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
    """Build the child with ``builder`` (default: the paper's CNN, :func:`build_model`), train it with
    :func:`train_child`, report its accuracy. ``data`` (an :class:`ImageData` or a zero-argument factory) is
    loaded on first use and moved to the device once."""

    def __init__(self, data: ImageData | Callable[[], ImageData], config: TrainConfig | None = None,
                 device: str | torch.device | None = "auto",
                 test_data: tuple[torch.Tensor, torch.Tensor] | None = None,
                 builder: ChildBuilder | None = None) -> None:
        self.config = config or TrainConfig()
        self.builder: ChildBuilder = builder if builder is not None else CNNBuilder()
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
            self._device_data = DeviceData(image_data_from(self._data_source), self.device, self.config.augment)
        return self._device_data

    def fingerprint(self) -> str:
        """A hash of all that decides a child's result but its architecture and seed (:mod:`nas_env.fingerprint`)."""
        if self._fingerprint is None:
            d = self.data.data
            settings: dict[str, Any] = {"data": [d.name, list(d.input_shape), d.num_classes],
                                        "config": asdict(self.config), "device": self.device.type}
            model = self.builder.settings()
            if model:
                settings["model"] = {"kind": self.builder.kind, **model}
            digest = tensor_digest([d.train_x, d.train_y, d.val_x, d.val_y, *(self.test_data or ())])
            self._fingerprint = make_fingerprint(self.builder.kind, digest, settings)
        return self._fingerprint

    def __call__(self, arch: Architecture, seed: int) -> EvalResult:
        data = self.data
        metrics: dict[str, Any] = self.builder.metrics(arch, data.data.input_shape, data.data.num_classes)
        model = None
        try:
            with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's global RNG
                torch.manual_seed(int(seed))
                model = self.builder.build(arch, data.data.input_shape, data.data.num_classes)
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
