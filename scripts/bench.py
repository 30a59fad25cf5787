"""Benchmark child training: our trainer beside a plain PyTorch loop, on the same real CIFAR-10 children.

Run: ``python scripts/bench.py --quick`` (about two minutes on 2 idle CPU cores) or without
``--quick`` for more children and images. Prints a table and, as its last line, one JSON object.
All in this one run on this one device (docs/benchmarks.md):

* **trainer vs reference**: per child (v1 samples plus the all-36-filter child), ours
  (:func:`train_child`) and the plain loop (``scripts/reference_trainer.py``) train the same initial
  weights for one epoch after a one-batch warm-up (two validation images: training images per second);
* **children_per_hour**: extrapolated per sampled child to 5 epochs x 45,000 images plus 5 x 5,000
  validation images at its measured rates, not measured on whole children;
* **achieved_gflops / peak_gflops**: 6 x multiply-adds per image per second, against one large
  convolution's rate in the trainer's memory format and precision;
* ``token_step_us`` / ``cartpole_step_us`` (``scripts/bench_env.py``) and ``controller_ms_per_update``
  (``scripts/bench_controller.py``: sample 8 children as one batch + update).

Data: ``--data-root`` (official python layout), else where ``bench_common.cifar10_root`` finds CIFAR-10.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
from bench_common import (  # scripts/ is on sys.path when this file runs
    PROXY_EPOCHS,
    PROXY_TRAIN,
    TrainingBenchArgs,
    device_name,
    eval_images_per_s,
    loader_workers,
    parse_quick,
    peak_conv_flops,
    print_report,
    proxy_child_seconds,
    reference_images_per_s,
    sample_children,
    subset,
    train_images_per_s,
)
from bench_controller import agent_only_ms, prepared_agent
from bench_env import median_step_us
from reference_trainer import InMemoryImages, reference_transform

import nas_env  # noqa: F401  (registers the ids)
from nas_env.data.base import ImageData
from nas_env.training.device import resolve_device
from nas_env.training.image_trainer import DeviceData, TrainConfig, autocast_dtype, use_channels_last


@dataclass
class Args(TrainingBenchArgs):
    quick: bool = False
    """a short run (1 sampled child + the 36-filter one, 64 training images each at batch 64); noisier figures"""
    children: int = 3
    """sampled v1 children to measure (plus one 36-filter child)"""
    train_images: int = 512
    """training images each trainer trains each child on (one epoch)"""
    val_images: int = 512
    """validation images for the evaluation rate"""
    batch_size: int = 128
    """training batch size of both trainers"""
    reference_workers: int = -1
    """DataLoader workers of the reference loop (-1: 0 on the CPU, min(8, CPUs) on CUDA)"""
    seed: int = 0
    """seed of the sampled children and their weights"""


def loader_images_per_s(data: ImageData, batch_size: int, workers: int) -> float:
    """The reference's data pipeline alone (PIL, crop, flip, to tensor, normalise, collate): its ceiling."""
    loader = torch.utils.data.DataLoader(InMemoryImages(data.train_x, data.train_y, reference_transform(data, True)),
                                         batch_size=batch_size, shuffle=True, num_workers=workers)
    start = time.perf_counter()
    images = sum(len(y) for _x, y in loader)
    return images / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    args = parse_quick(Args, argv, "bench.py", __doc__, children=1, train_images=64, batch_size=64, val_images=128)
    device = resolve_device(args.device)
    workers = loader_workers(device, args.reference_workers)
    config = TrainConfig(epochs=1, batch_size=args.batch_size)

    full = args.cifar10(train_subset=args.train_images, val_subset=args.val_images)
    measured, warm = subset(full, args.train_images), subset(full, args.batch_size)
    measured_dev, warm_dev = DeviceData(measured, device), DeviceData(warm, device)

    rows: list[tuple[str, str]] = []
    ours_rates, ref_rates, child_seconds, flops_done, ours_seconds = [], [], [], 0.0, 0.0
    for k, (name, arch) in enumerate(sample_children(args.children, args.seed)):
        seed = args.seed + k
        ours_ips, _ = train_images_per_s(arch, warm_dev, measured_dev, config, seed)
        ref_ips = reference_images_per_s(arch, warm, measured, args.batch_size, device, seed, workers)
        macs = arch.multiply_adds(full.input_shape, full.num_classes)
        if name.startswith("v1 sample"):
            ours_rates.append(ours_ips)
            ref_rates.append(ref_ips)
            eval_ips = eval_images_per_s(arch, full, config, device)
            child_seconds.append(proxy_child_seconds(ours_ips, eval_ips))
            flops_done += 6 * macs * len(measured.train_y)
            ours_seconds += len(measured.train_y) / ours_ips
        rows.append((f"{name}: {macs / 1e9:.2f} GMAC/image, ours / reference",
                     f"{ours_ips:,.1f} / {ref_ips:,.1f} img/s ({ours_ips / ref_ips:.2f}x)"))
        print(*rows[-1], sep="  ", flush=True)

    # Totals over the sampled children: images over summed seconds (a slow child weighs what it costs).
    reference_ips = statistics.harmonic_mean(ref_rates)
    trainer_ips = statistics.harmonic_mean(ours_rates)
    mean_child = statistics.fmean(child_seconds)
    loader_ips = statistics.median(loader_images_per_s(full, args.batch_size, workers) for _ in range(3))
    peak = peak_conv_flops(device, use_channels_last(config, device, (3, 32, 32)), autocast_dtype(config, device),
                           batch=64 if device.type == "cpu" else 512) / 1e9
    achieved = flops_done / ours_seconds / 1e9

    env = gym.make("NASRL-CIFAR10-v0", evaluator="synthetic")
    rng = np.random.default_rng(args.seed)
    steps = 2000 if args.quick else 20000
    token_us = median_step_us(env, steps, rng, skip_final=True)
    cartpole_us = median_step_us(gym.make("CartPole-v1"), steps, rng, skip_final=False)
    agent, masks = prepared_agent(env, args.seed, 8)
    controller = [sum(agent_only_ms(agent, masks, 8, lockstep=True)) for _ in range(4 if args.quick else 11)][1:]

    result = {
        "device": device_name(device),
        "trainer_images_per_s": round(trainer_ips, 2),
        "reference_images_per_s": round(reference_ips, 2),
        "trainer_speedup_vs_reference": round(trainer_ips / reference_ips, 3),
        "reference_loader_images_per_s": round(loader_ips, 1),
        "children_per_hour": round(3600 / mean_child, 3),
        "child_seconds_estimate": round(mean_child, 1),
        "achieved_gflops": round(achieved, 1),
        "peak_gflops": round(peak, 1),
        "token_step_us": round(token_us, 2),
        "cartpole_step_us": round(cartpole_us, 2),
        "controller_ms_per_update": round(statistics.median(controller), 2),
        "children_measured": len(ours_rates),
        "train_images_per_child": len(measured.train_y),
        "batch_size": args.batch_size,
        "quick": args.quick,
    }
    rows += [
        ("training images/s over the sampled children, ours / reference",
         f"{trainer_ips:,.1f} / {reference_ips:,.1f} ({trainer_ips / reference_ips:.2f}x)"),
        ("reference's data pipeline alone (DataLoader + transforms)",
         f"{loader_ips:,.0f} img/s: {reference_ips / loader_ips:.1%} of the reference's step time"),
        (f"v1 child at {PROXY_EPOCHS} epochs x {PROXY_TRAIN:,} images (extrapolated)",
         f"{mean_child:,.0f} s -> {3600 / mean_child:,.2f} children/hour"),
        ("achieved / peak (one large conv) GFLOP/s", f"{achieved:,.1f} / {peak:,.1f} ({achieved / peak:.0%})"),
        ("token step / CartPole step", f"{token_us:.1f} / {cartpole_us:.1f} us"),
        ("controller: sample 8 children + update", f"{result['controller_ms_per_update']:.1f} ms"),
        ("device", result["device"]),
    ]
    print_report(rows, result)


if __name__ == "__main__":
    main()
