"""What the training benchmarks share: CIFAR-10's location, the sampled children, the device clock, the ceiling.

``scripts/bench.py``, ``scripts/bench_shared.py`` and ``scripts/gpu_check.py`` measure the same
children the same way, so their figures can be set side by side; this module is that common ground.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from nas_env.data.base import ImageData
from nas_env.data.cifar10 import FOLDER
from nas_env.data.download import default_data_root
from nas_env.models.cnn import build_model
from nas_env.spaces.cnn import CNNArchitecture, cnn_space
from nas_env.training.image_trainer import (
    DeviceData,
    TrainConfig,
    autocast_dtype,
    evaluate_accuracy,
    train_child,
    use_channels_last,
)

# Where a checkout of this project's workspace keeps real CIFAR-10 pixels (PNG batches and their converter).
SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
CONVERT_TRAIN = 10_000  # images converted from the shared PNG copy: enough for the 5,000-image validation split
PROXY_EPOCHS, PROXY_TRAIN, PROXY_VAL = 5, 45_000, 5_000  # NASRL-CIFAR10-v0's proxy fidelity: children/hour's


def sample_children(n: int, seed: int, num_layers: int | None = None,
                    with_36_filters: bool = True) -> list[tuple[str, CNNArchitecture]]:
    """``n`` uniform samples of the paper's v1 space, then (optionally) one with 36 filters in every layer."""
    rng = np.random.default_rng(seed)
    spaces = [(f"v1 sample {i}", cnn_space("v1", num_layers=num_layers)) for i in range(n)]
    if with_36_filters:
        spaces.append(("v1, 36 filters", cnn_space("v1", num_layers=num_layers, num_filters=(36,))))
    return [(name, space.decode([int(rng.integers(s.num_choices)) for s in space.tokens()])) for name, space in spaces]


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so the host clock measures it (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
        with torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            y = conv(x)
        y.float().sum().backward()

    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        step()
        best = 0.0
        for _ in range(3):
            synchronize(device)
            start = time.perf_counter()
            step()
            synchronize(device)
            best = max(best, flops / (time.perf_counter() - start))
    finally:
        torch.backends.cudnn.benchmark = previous
    return best


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


def time_ours(arch: CNNArchitecture, data: ImageData, config: TrainConfig, device: torch.device,
              seed: int) -> float:
    """Seconds for one epoch of our trainer over ``data`` (model built and moved before the clock starts)."""
    torch.manual_seed(seed)
    model = build_model(arch, data.input_shape, data.num_classes)
    device_data = DeviceData(data, device)
    synchronize(device)
    start = time.perf_counter()
    train_child(model, device_data, config, seed)
    synchronize(device)
    return time.perf_counter() - start


def eval_images_per_s(arch: CNNArchitecture, data: ImageData, config: TrainConfig, device: torch.device) -> float:
    """Validation images per second of a freshly built child (after one warm-up pass), in the trainer's format."""
    model = build_model(arch, data.input_shape, data.num_classes).to(device)
    device_data = DeviceData(data, device)
    fmt = torch.channels_last if use_channels_last(config, device, data.input_shape) else torch.contiguous_format
    model.to(memory_format=fmt)
    dtype = autocast_dtype(config, device)
    evaluate_accuracy(model, device_data, config, fmt, dtype)  # warm-up
    synchronize(device)
    start = time.perf_counter()
    evaluate_accuracy(model, device_data, config, fmt, dtype)
    synchronize(device)
    return len(data.val_y) / (time.perf_counter() - start)


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
