"""What the training benchmarks share: the sampled children, the device clock, the peak-convolution ceiling.

``scripts/bench.py``, ``scripts/bench_shared.py`` and ``scripts/gpu_check.py`` measure the same
children the same way, so their figures can be set side by side; this module is that common ground.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from nas_env.spaces.cnn import CNNArchitecture, cnn_space


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
