"""What the benchmarks share: CIFAR-10's location, the sampled children, the device clock, the ceiling, the tables.

``scripts/bench.py``, ``scripts/bench_shared.py`` and ``scripts/gpu_check.py`` measure the same
children the same way, so their figures can be set side by side; this module is that common ground
(and that of the two NAS-Bench-201 benchmarks, ``scripts/bench_nb201_*.py``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import gymnasium as gym
import numpy as np
import torch
from reference_trainer import train_reference  # scripts/ is on sys.path when a benchmark runs
from scipy import stats

from nas_env.cli import parse_dataclass
from nas_env.data.base import ImageData
from nas_env.data.cifar10 import FOLDER, load_cifar10
from nas_env.data.download import default_data_root
from nas_env.models.cnn import build_model
from nas_env.spaces.base import random_arch
from nas_env.spaces.cnn import CNNArchitecture, cnn_space
from nas_env.spaces.nb201 import NB201Architecture
from nas_env.training.image_trainer import (
    DeviceData,
    TrainConfig,
    TrainOutcome,
    autocast,
    autocast_dtype,
    evaluate_accuracy,
    train_child,
    use_channels_last,
)

T = TypeVar("T")
# Where a checkout of this project's workspace keeps real CIFAR-10 pixels (PNG batches and their converter).
SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
CONVERT_TRAIN = 10_000  # images converted from the shared PNG copy: enough for the 5,000-image validation split
PROXY_EPOCHS, PROXY_TRAIN, PROXY_VAL = 5, 45_000, 5_000  # NASRL-CIFAR10-v0's proxy fidelity: children/hour's
NB201_ENV_ID = "NASRL-NB201-CIFAR10-v0"
TOP_SHARE = 0.1  # the top-k recall's share of the sample


@dataclass
class CIFAR10Args:
    """The flags every CIFAR-10 benchmark has (each script's ``Args`` adds its own, one docstring per field)."""

    data_root: str = ""
    """folder holding cifar-10-batches-py (empty: $NASRL_DATA_ROOT, ~/.cache/nasrl/data, or the shared copy)"""


@dataclass
class TrainingBenchArgs(CIFAR10Args):
    """Those of the child-training benchmarks (``bench.py``, ``bench_shared.py``)."""

    device: str = "auto"
    """device to benchmark on"""

    def cifar10(self, **subsets: int) -> ImageData:
        """CIFAR-10 from :func:`cifar10_root`, split as NASRL-CIFAR10-v0's proxy (5,000 validation images)."""
        with tempfile.TemporaryDirectory() as scratch:
            root = cifar10_root(self.data_root, Path(scratch))
            return load_cifar10(root, download=False, val_size=PROXY_VAL, **subsets)


@dataclass
class NB201Args(CIFAR10Args):
    """Those of the NAS-Bench-201 benchmarks (``bench_nb201_*.py``)."""

    threads: int = 1
    """torch threads on the CPU (0: torch's default)"""

    def set_threads(self) -> None:
        """Torch on ``--threads`` threads (0: left as it is)."""
        if self.threads > 0:
            torch.set_num_threads(self.threads)


def parse_quick(cls: type[T], argv: list[str] | None, prog: str, description: str, **quick: Any) -> T:
    """The flags of the dataclass ``cls``, with the ``quick`` sizes applied over the others under ``--quick``."""
    args, _, _ = parse_dataclass(cls, argv, prog=prog, description=description)
    return replace(args, **quick) if args.quick else args


def check_totals(parser: argparse.ArgumentParser, flag: str, totals: list[int]) -> None:
    """``parser.error`` unless ``totals`` (a flag's several step counts) increase from >= 0."""
    if not totals or totals[0] < 0 or any(b <= a for a, b in itertools.pairwise(totals)):
        parser.error(f"{flag} must be increasing totals >= 0, got {totals}")


def sample_children(n: int, seed: int, num_layers: int | None = None,
                    with_36_filters: bool = True) -> list[tuple[str, CNNArchitecture]]:
    """``n`` uniform samples of the paper's v1 space, then (optionally) one with 36 filters in every layer."""
    rng = np.random.default_rng(seed)
    spaces = [(f"v1 sample {i}", cnn_space("v1", num_layers=num_layers)) for i in range(n)]
    if with_36_filters:
        spaces.append(("v1, 36 filters", cnn_space("v1", num_layers=num_layers, num_filters=(36,))))
    return [(name, random_arch(space, rng)) for name, space in spaces]


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so the host clock measures it (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, run: Callable[[], T]) -> tuple[float, T]:
    """Seconds ``run()`` takes, the device's queued work waited for before and after, and what it returned."""
    synchronize(device)
    start = time.perf_counter()
    result = run()
    synchronize(device)
    return time.perf_counter() - start, result


def device_name(device: torch.device) -> str:
    """The device in words, with what decides its speed (GPU and cuDNN, or CPU model, threads and cores)."""
    if device.type == "cuda":
        return (f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, "
                f"cuDNN {torch.backends.cudnn.version()}")
    cpuinfo = Path("/proc/cpuinfo")
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                  if line.startswith("model name")), "") if cpuinfo.exists() else ""
    return (f"CPU: {model or platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
            f"{os.cpu_count()} cores, torch {torch.__version__}")


def loader_workers(device: torch.device, requested: int = -1) -> int:
    """The reference loop's DataLoader workers: ``requested``, or (-1) 0 on the CPU and min(8, CPUs) on CUDA."""
    if requested >= 0:
        return requested
    return min(8, os.cpu_count() or 1) if device.type == "cuda" else 0


def peak_conv_flops(device: torch.device, channels_last: bool, dtype: torch.dtype | None, batch: int) -> float:
    """Training FLOP/s (forward + backward) of one large 5x5 convolution, 128 -> 128 channels at 32x32: the ceiling.

    Best of three timed steps after a warm-up, in the given memory format and autocast dtype
    (None: float32), with cuDNN autotuning on as the trainer has it.
    """
    conv = torch.nn.Conv2d(128, 128, 5, padding=2, bias=False).to(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    conv.to(memory_format=fmt)
    x = torch.randn(batch, 128, 32, 32, device=device).contiguous(memory_format=fmt).requires_grad_()
    flops = 3 * 2 * batch * 128 * 128 * 25 * 32 * 32

    def step() -> None:
        with autocast(device, dtype):
            y = conv(x)
        y.float().sum().backward()

    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        step()
        return max(flops / timed(device, step)[0] for _ in range(3))
    finally:
        torch.backends.cudnn.benchmark = previous


def cifar10_root(data_root: str, scratch: Path, train_images: int = CONVERT_TRAIN) -> Path:
    """CIFAR-10's python batches: ``data_root``, else ``$NASRL_DATA_ROOT`` or ``~/.cache/nasrl/data``, else the
    workspace's real-pixel PNG copy converted into ``scratch`` (its first ``train_images``, a multiple of 1,000)."""
    if data_root:
        return Path(data_root)
    root = default_data_root()
    if (root / FOLDER / "data_batch_1").is_file():
        return root
    script = SHARED_DATA / "make_cifar10_batches.py"
    if not script.is_file():
        raise SystemExit(f"no CIFAR-10 in {root} and no shared copy at {SHARED_DATA}: pass --data-root")
    subprocess.run([sys.executable, str(script), str(scratch), "--train", str(train_images), "--test", "1"],
                   check=True, capture_output=True)
    return scratch


def with_cifar10_root(env_id: str, env_kwargs: dict[str, Any], data_root: str, scratch: Path) -> dict[str, Any]:
    """``env_kwargs``, plus :func:`cifar10_root`'s folder where the env reads CIFAR-10 and is given no data."""
    dataset = env_kwargs.get("dataset", gym.spec(env_id).kwargs.get("dataset"))
    if dataset != "cifar10" or "data_root" in env_kwargs or "data" in env_kwargs:
        return dict(env_kwargs)
    return {**env_kwargs, "data_root": str(cifar10_root(data_root, scratch)), "download": False}


def subset(data: ImageData, n: int) -> ImageData:
    """The first ``n`` training images, and two validation images: timing measures training."""
    return replace(data, train_x=data.train_x[:n], train_y=data.train_y[:n], val_x=data.val_x[:2],
                   val_y=data.val_y[:2])


def warmed_up(arch: CNNArchitecture, warm: DeviceData, config: TrainConfig, seed: int) -> torch.nn.Module:
    """A child built from ``seed`` and trained one epoch over ``warm``: its kernels chosen, its memory allocated."""
    torch.manual_seed(seed)
    model = build_model(arch, warm.data.input_shape, warm.data.num_classes)
    train_child(model, warm, config, seed)
    synchronize(warm.device)
    return model


def train_images_per_s(arch: CNNArchitecture, warm: DeviceData, data: DeviceData, config: TrainConfig,
                       seed: int) -> tuple[float, TrainOutcome]:
    """Our trainer's images/s over one epoch of ``data`` after one over ``warm`` (the format trial's cost excluded)."""
    model = warmed_up(arch, warm, config, seed)
    seconds, outcome = timed(data.device, lambda: train_child(model, data, config, seed))
    return data.num_train / (seconds - outcome.trial_seconds), outcome


def reference_images_per_s(arch: CNNArchitecture, warm: ImageData, data: ImageData, batch: int,
                           device: torch.device, seed: int, workers: int) -> float:
    """The plain loop's training images/s (DataLoader, torchvision transforms, float32 NCHW), after a warm-up."""
    config = TrainConfig(epochs=1, batch_size=batch)
    torch.manual_seed(seed)
    model = build_model(arch, warm.input_shape, warm.num_classes)
    train_reference(model, warm, config, seed, num_workers=workers, device=device)
    return len(data.train_y) / train_reference(model, data, config, seed, num_workers=workers, device=device).seconds


def eval_images_per_s(arch: CNNArchitecture, data: ImageData, config: TrainConfig, device: torch.device) -> float:
    """Validation images per second of a freshly built child (after one warm-up pass), in the trainer's format."""
    model = build_model(arch, data.input_shape, data.num_classes).to(device)
    device_data = DeviceData(data, device)
    fmt = torch.channels_last if use_channels_last(config, device, data.input_shape) else torch.contiguous_format
    model.to(memory_format=fmt)
    dtype = autocast_dtype(config, device)
    evaluate_accuracy(model, device_data, config, fmt, dtype)  # warm-up
    return len(data.val_y) / timed(device, lambda: evaluate_accuracy(model, device_data, config, fmt, dtype))[0]


def proxy_child_seconds(train_images_per_s: float, eval_images_per_s: float) -> float:
    """A child's seconds at the proxy fidelity, extrapolated from its training and evaluation rates."""
    return PROXY_EPOCHS * (PROXY_TRAIN / train_images_per_s + PROXY_VAL / eval_images_per_s)


def print_report(rows: list[tuple[str, str]], result: dict[str, object]) -> None:
    """A blank line, the rows as a two-column table, and ``result`` as the last line (one JSON object)."""
    print()
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    print(json.dumps(result))


def draw_cells(accuracy: np.ndarray, n: int, seed: int) -> list[NB201Architecture]:
    """One NAS-Bench-201 cell from each of ``n`` equal-size bins of the table's rows sorted by ``accuracy``, in a
    seeded random order (every cell, in row order, where ``n`` covers the table)."""
    if n >= len(accuracy):
        return [NB201Architecture.from_index(row) for row in range(len(accuracy))]
    rng = np.random.default_rng(seed)
    bins = np.array_split(np.argsort(accuracy, kind="stable"), n)
    picks = [int(rng.choice(b)) for b in bins]
    return [NB201Architecture.from_index(picks[i]) for i in rng.permutation(n)]


def top_recall(truth: np.ndarray, proxy: np.ndarray, share: float) -> float:
    """The share of the ``share`` best by ``truth`` that are also among the ``share`` best by ``proxy``."""
    k = max(1, round(share * len(truth)))
    best = set(np.argsort(-truth, kind="stable")[:k].tolist())
    return len(best & set(np.argsort(-proxy, kind="stable")[:k].tolist())) / k


def rank_agreement(truth: np.ndarray, scores: np.ndarray, recall_key: str) -> dict[str, float]:
    """Kendall tau, Spearman rho and (under ``recall_key``) the top-10% recall of ``scores`` against ``truth``."""
    return {"kendall_tau": round(float(stats.kendalltau(truth, scores).statistic), 4),
            "spearman_rho": round(float(stats.spearmanr(truth, scores).statistic), 4),
            recall_key: round(top_recall(truth, scores, TOP_SHARE), 4)}


def append_jsonl(path: Path, row: dict[str, Any]) -> None:
    """Append ``row`` to ``path`` as one JSON line, as soon as it is made."""
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")
