"""The evaluator interface: what the environment calls on an episode's last step, and what it gets back.

Every evaluator of this package, or any user callable ``(arch, seed) -> EvalResult | float``, plugs into the
environment the same way.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from nas_env.checks import check_in
from nas_env.spaces.base import Architecture

STATUSES = ("ok", "diverged", "oom", "invalid_action", "stopped_early", "failed")


@dataclass(frozen=True)
class EvalResult:
    """The outcome of evaluating one child: ``reward``, the raw score before the environment's ``reward_transform``,
    and ``metrics`` (``val_acc``, ``val_acc_history``, ``params``, ``flops``, ``train_seconds``, ...)."""

    reward: float
    status: str = "ok"
    metrics: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_in("status", self.status, STATUSES)


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
