"""Benchmark weight sharing against training from scratch: children evaluated per hour, side by side in one run.

Run: ``python scripts/bench_shared.py`` (about 5 minutes on 2 idle CPU cores; ``--quick`` about half).
Prints a table and, as its last line, one JSON object. For the same uniformly sampled children of
NASRL-CIFAR10-v0 (real CIFAR-10 pixels):

* **from scratch** at the 5-epoch proxy, extrapolated as ``scripts/bench.py`` does from the training rate
  over ``--train-images`` and the evaluation rate over ``--eval-images``;
* **shared** (:class:`SharedWeightsEvaluator`): each child evaluated for real (``shared_steps`` minibatches,
  then the reward) and timed; the supernet's one-off set-up and ``--warmup-steps`` are timed apart.

Data: ``--data-root`` (official python layout), else where ``bench_common.cifar10_root`` finds CIFAR-10.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, replace
from functools import partial

import torch
from bench_common import (  # scripts/ is on sys.path when this file runs
    PROXY_EPOCHS,
    PROXY_TRAIN,
    PROXY_VAL,
    TrainingBenchArgs,
    eval_images_per_s,
    parse_quick,
    print_report,
    proxy_child_seconds,
    sample_children,
    subset,
    timed,
    train_images_per_s,
)

from nas_env.data.base import ImageData
from nas_env.evaluators.shared import SharedConfig, SharedWeightsEvaluator
from nas_env.spaces.cnn import CNNArchitecture, cnn_space
from nas_env.training.device import resolve_device
from nas_env.training.image_trainer import DeviceData, TrainConfig


@dataclass
class Args(TrainingBenchArgs):
    children: int = 2
    """sampled v1 children, measured both ways"""
    quick: bool = False
    """a shorter run: 1 child, 128 training images for the from-scratch rate"""
    train_images: int = 256
    """training images of the from-scratch training rate measurement (one epoch)"""
    eval_images: int = 256
    """validation images of the from-scratch evaluation rate measurement"""
    shared_steps: int = SharedConfig.shared_steps
    """shared training minibatches per child"""
    warmup_steps: int = 2
    """random-child steps before the first shared child (timed apart, with the supernet's set-up)"""
    val_images: int = SharedConfig.val_images
    """the shared reward's fixed validation subset"""
    bn_eval: str = SharedConfig.bn_eval
    """batch norm at evaluation: batch or recalibrate"""
    batch_size: int = 128
    """training batch size of both (NASRL-CIFAR10-v0's)"""
    seed: int = 0
    """seed of the sampled children and of both evaluators"""


def scratch_child_seconds(arch: CNNArchitecture, data: ImageData, config: TrainConfig, device: torch.device,
                          seed: int, train_images: int, eval_images: int) -> float:
    """The from-scratch cost of one child at the proxy fidelity, from its measured training and evaluation rates."""
    warm, measured = (DeviceData(subset(data, n), device) for n in (config.batch_size, train_images))
    train_ips, _ = train_images_per_s(arch, warm, measured, config, seed)
    # only the measured slice of the training split: evaluation timing must not copy the whole split to the device
    evaluated = replace(subset(data, train_images), val_x=data.val_x[:eval_images], val_y=data.val_y[:eval_images])
    return proxy_child_seconds(train_ips, eval_images_per_s(arch, evaluated, config, device))


def main(argv: list[str] | None = None) -> dict[str, object]:
    args = parse_quick(Args, argv, "bench_shared.py", __doc__, children=1, train_images=128)
    device = resolve_device(args.device)
    space = cnn_space("v1")  # NASRL-CIFAR10-v0's space
    children = [arch for _, arch in sample_children(args.children, args.seed, with_36_filters=False)]
    scratch_config = TrainConfig(epochs=1, batch_size=args.batch_size)
    data = args.cifar10()

    rows: list[tuple[str, str]] = []
    scratch_seconds = []
    for k, arch in enumerate(children):
        scratch_seconds.append(scratch_child_seconds(arch, data, scratch_config, device, args.seed + k,
                                                     args.train_images, args.eval_images))
        rows.append((f"child {k}: from scratch, {PROXY_EPOCHS} epochs (extrapolated)", f"{scratch_seconds[-1]:,.0f} s"))
        print(*rows[-1], sep="  ", flush=True)

    shared_config = SharedConfig(shared_steps=args.shared_steps, warmup_steps=args.warmup_steps,
                                 val_images=args.val_images, bn_eval=args.bn_eval, seed=args.seed)
    evaluator = SharedWeightsEvaluator(data, space, shared_config, TrainConfig(batch_size=args.batch_size), device)
    setup_seconds, _ = timed(device, evaluator.warmup)  # builds the supernet, moves the data, trains random children
    shared_seconds = []
    for k, arch in enumerate(children):
        seconds, result = timed(device, partial(evaluator, arch, args.seed + k))
        shared_seconds.append(seconds)
        rows.append((f"child {k}: shared ({args.shared_steps} steps + {min(args.val_images, len(data.val_y))} "
                     "val images)", f"{shared_seconds[-1]:,.2f} s, reward {result.reward:.3f}"))
        print(*rows[-1], sep="  ", flush=True)

    scratch_mean, shared_mean = statistics.fmean(scratch_seconds), statistics.fmean(shared_seconds)
    warmup_step = setup_seconds / max(1, args.warmup_steps)
    result = {
        "device": str(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} torch threads",
        "scratch_child_seconds": round(scratch_mean, 1),
        "scratch_children_per_hour": round(3600 / scratch_mean, 3),
        "shared_child_seconds": round(shared_mean, 3),
        "shared_children_per_hour": round(3600 / shared_mean, 1),
        "speedup": round(scratch_mean / shared_mean, 1),
        "shared_setup_seconds": round(setup_seconds, 2),
        "warmup_step_seconds": round(warmup_step, 3),
        "children": args.children,
        "shared_steps": args.shared_steps,
        "val_images": min(args.val_images, len(data.val_y)),
        "bn_eval": args.bn_eval,
        "batch_size": args.batch_size,
        "scratch_train_images_measured": min(args.train_images, len(data.train_y)),
    }
    rows += [
        (f"from scratch, {PROXY_EPOCHS}-epoch proxy ({PROXY_TRAIN:,} + {PROXY_VAL:,} images)",
         f"{scratch_mean:,.0f} s a child -> {3600 / scratch_mean:,.2f} children/hour"),
        (f"shared weights ({args.shared_steps} steps of {args.batch_size})",
         f"{shared_mean:,.2f} s a child -> {3600 / shared_mean:,.0f} children/hour"),
        ("shared / scratch children per hour", f"{scratch_mean / shared_mean:,.0f}x"),
        (f"supernet set-up + {args.warmup_steps} warm-up steps (once per search)",
         f"{setup_seconds:,.1f} s ({warmup_step:.2f} s a step)"),
        ("device", result["device"]),
    ]
    print_report(rows, result)
    return result


if __name__ == "__main__":
    main()
