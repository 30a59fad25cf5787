"""One prepared GPU check of child training: where the time goes, and which options pay.

On a fresh GPU machine (under 8 minutes on an H200): ``python scripts/gpu_check.py --png-dir gpu_data --out $OUT``;
on the CPU, tiny, for its test: ``--quick``. docs/gpu_check.md gives the data and wheels to carry, the output files
and what each section (profile, variants, concurrency, bench, search, targets) measures.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import multiprocessing as mp
import os
import pickle
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

try:
    import nas_env  # noqa: F401  (imports gymnasium to register the environments)
except ModuleNotFoundError as _missing:
    raise SystemExit(f"gpu_check needs {_missing.name!r}: carry its wheel (see docs/gpu_check.md) or install it") \
        from None
from bench_common import (
    PROXY_EPOCHS,
    PROXY_TRAIN,
    device_name,
    loader_workers,
    peak_conv_flops,
    reference_images_per_s,
    sample_children,
    subset,
    synchronize,
    train_images_per_s,
    warmed_up,
)
from make_image_folder import PER_SPRITE, TRAIN_SPRITES, sprite_images, sprite_labels

from agents.experiment.run_folder.records import RESULTS, read_results
from nas_env.cli import json_object, parse_dataclass
from nas_env.data.base import ImageData, split_image_data
from nas_env.spaces.cnn import CNNArchitecture
from nas_env.training.device import resolve_device
from nas_env.training.image_trainer import DeviceData, TrainConfig, autocast_dtype, train_child

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"speedup_vs_reference": 2.5, "min_child_speedup": 1.0, "images_per_s": 13_000.0,
           "children_per_hour": 300.0}  # the bars (H200, batch 512, sampled v1 children)
BF16_PEAK_TFLOPS = 790.0  # the H200's measured bf16 matmul rate (device KINDS.md), for scale only
ALL_OPTIONS = {"channel_multiple": 8, "concat_buffer": True, "fused_optimizer": "fused"}
OPTION_SETS: dict[str, dict[str, Any]] = {  # each new option alone, then all of them
    "none": {}, "pad8": {"channel_multiple": 8}, "concat_buffer": {"concat_buffer": True},
    "fused_sgd": {"fused_optimizer": "fused"}, "foreach_sgd": {"fused_optimizer": "foreach"}, "all": ALL_OPTIONS,
}


@dataclass
class Sizes:
    """Every size of the check; ``--quick`` swaps in the tiny CPU ones."""

    train_images: int = 15_000
    val_images: int = 5_000
    children: int = 3  # sampled v1 children, plus the 36-filter one
    num_layers: int = 15  # the v1 space's
    batch_sizes: tuple[int, ...] = (512, 128)  # the first is the headline batch
    timed_images: int = 4096  # images per timed run (a multiple of every batch size: no odd last batch)
    profile_steps: int = 4
    concurrency: tuple[int, ...] = (1, 2, 4, 8)
    concurrency_images: int = 6144
    variant_tiers: int = 5  # how many tiers of variant_plan to run (the time cap may stop earlier)
    ceiling_batch: int = 512  # batch of the one-conv ceiling measurement
    budget_seconds: float = 450.0  # the whole check; bench and search shrink to fit what is left
    profile_seconds: float = 30.0  # the time caps of the sections (a row under way when a cap passes finishes)
    variants_seconds: float = 110.0
    concurrency_seconds: float = 70.0
    bench_seconds: float = 90.0
    search_seconds: float = 120.0  # two lockstep waves of children at 15k images, with start-up
    search_min_seconds: float = 60.0  # below this the search cannot measure a rate: skipped
    search_max_envs: int = 4  # more at once would not finish two waves in search_seconds (unless asked for)


QUICK = Sizes(train_images=256, val_images=64, children=1, num_layers=2, batch_sizes=(16,), timed_images=32,
              profile_steps=1, concurrency=(1, 2), concurrency_images=32, variant_tiers=1, ceiling_batch=2,
              profile_seconds=20, variants_seconds=20, concurrency_seconds=60, bench_seconds=0, search_seconds=0)


SECTIONS = ("profile", "variants", "concurrency", "bench", "search")  # in the order they run


@dataclass
class Args:
    png_dir: Path | None = None
    """folder with cifar10_batch_N.png + cifar10_labels.js (required)"""
    out: Path | None = None
    """folder for every output file (created; required)"""
    quick: bool = False
    """tiny sizes, for the CPU test (no bench, no search)"""
    device: str = "auto"
    """device to check: auto, cpu, cuda, cuda:N"""
    seed: int = 0
    """seed of the sampled children (bench.py's sampling)"""
    sections: str = ",".join(SECTIONS)
    """comma-separated subset of profile,variants,concurrency,bench,search"""
    search_num_envs: int = 0
    """children at once in the search (0: best from 3)"""
    search_train_config: str = "auto"
    """the search's train_config as JSON, or 'auto': validate='reward_window', plus every option when 'all' beat
    'none' at batch 128 in the variants"""


def parse_args(argv: list[str] | None = None) -> tuple[Args, Sizes, set[str]]:
    """The flags, the sizes they select (``--quick``: the tiny ones) and the sections to run."""
    args, _, p = parse_dataclass(Args, argv, prog="gpu_check.py", description=__doc__)
    missing = [flag for flag, value in (("--png-dir", args.png_dir), ("--out", args.out)) if value is None]
    if missing:
        p.error(f"the following arguments are required: {', '.join(missing)}")
    wanted = {s.strip() for s in args.sections.split(",") if s.strip()}
    if not wanted <= set(SECTIONS):
        p.error(f"--sections: {sorted(wanted - set(SECTIONS))} not among {sorted(SECTIONS)}")
    if args.search_num_envs < 0:
        p.error(f"--search-num-envs must be >= 0 (0: the best count), got {args.search_num_envs}")
    if args.search_train_config != "auto":  # checked now, not after minutes of the other sections
        try:
            json_object("--search-train-config")(args.search_train_config)
        except argparse.ArgumentTypeError as e:
            p.error(str(e))
    if args.quick:
        wanted -= {"bench", "search"}  # minutes each even on a GPU: never in the CPU test
    return args, QUICK if args.quick else Sizes(), wanted


def read_png_cifar10(png_dir: Path, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``count`` training images (uint8 N x 3 x 32 x 32) and labels from the carried PNG sprites."""
    if not (png_dir / "cifar10_labels.js").is_file():
        raise SystemExit(f"--png-dir {png_dir}: no cifar10_labels.js (see docs/gpu_check.md)")
    batches = sorted(int(p.stem.rsplit("_", 1)[1]) for p in png_dir.glob("cifar10_batch_*.png"))
    batches = [n for n in batches if n < TRAIN_SPRITES]  # the test batch: never used for training or validation
    if batches != list(range(len(batches))) or PER_SPRITE * len(batches) < count:
        raise SystemExit(f"--png-dir {png_dir}: need cifar10_batch_0..{math.ceil(count / PER_SPRITE) - 1}.png for "
                         f"{count} images, found training batches {batches}")
    images = sprite_images(png_dir, 0, count).transpose(0, 3, 1, 2)
    return np.ascontiguousarray(images), np.asarray(sprite_labels(png_dir)[:count], dtype=np.int64)


def write_python_batches(images: np.ndarray, labels: np.ndarray, root: Path) -> None:
    """The official python layout (``data_batch_1..5``) for the tools that read a data root (bench, search)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for i, part in enumerate(np.array_split(np.arange(len(images)), 5), start=1):
        batch = {b"data": images[part].reshape(len(part), -1), b"labels": labels[part].tolist()}
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump(batch, f, protocol=2)


class Report:
    """Prints and keeps every line (gpu_check.txt) and every figure (gpu_check.json)."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.lines: list[str] = []
        self.data: dict[str, Any] = {}

    def print(self, text: str = "") -> None:
        print(text, flush=True)
        self.lines.append(text)

    def heading(self, text: str) -> None:
        self.print()
        self.print(f"== {text} ==")

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
        for r in [header, ["-" * w for w in widths], *rows]:
            cells = (str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
            self.print("  ".join(cells))

    def save(self) -> None:
        (self.out / "gpu_check.txt").write_text("\n".join(self.lines) + "\n")
        (self.out / "gpu_check.json").write_text(json.dumps(self.data, indent=1, default=str) + "\n")


KERNEL_KINDS = (  # (kind, substrings of the lower-cased kernel or op name), first match wins
    ("batch norm", ("batch_norm", "batchnorm", "bn_fw", "bn_bw", "bn_")),
    ("convolution", ("conv", "xmma", "gemm", "cudnn", "fprop", "dgrad", "wgrad", "winograd", "implicit", "mkldnn",
                     "sm80", "sm90", "cutlass")),
    ("optimizer", ("sgd", "foreach", "multi_tensor", "_fused")),
    ("copy / concat / pad", ("copy", "cat", "pad", "contiguous", "gather", "index")),
)


def kernel_kind(name: str) -> str:
    low = name.lower()
    return next((kind for kind, keys in KERNEL_KINDS if any(k in low for k in keys)), "elementwise / other")


def profile_section(report: Report, children: list[tuple[str, CNNArchitecture]], data: ImageData,
                    device: torch.device, sizes: Sizes, seed: int) -> None:
    from torch.profiler import ProfilerActivity, profile

    report.heading("kernel profile (torch.profiler, a few training steps)")
    cuda = device.type == "cuda"
    sort_by = "self_device_time_total" if cuda else "self_cpu_time_total"
    batch = sizes.batch_sizes[0]
    steps = DeviceData(subset(data, batch * sizes.profile_steps), device)
    warm = DeviceData(subset(data, batch), device)
    picked = children[:-1][:2] + children[-1:]  # two sampled children and the 36-filter one
    deadline = time.perf_counter() + sizes.profile_seconds
    texts, results = [], []
    for (name, arch), (label, options) in itertools.product(picked, (("as built", {}), ("all options", ALL_OPTIONS))):
        if time.perf_counter() > deadline:
            report.print(f"{name}, {label}: skipped (time cap {sizes.profile_seconds:.0f} s)")
            continue
        config = TrainConfig(epochs=1, batch_size=batch, **options)
        model = warmed_up(arch, warm, config, seed)  # kernels chosen and memory allocated before profiling
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with profile(activities=activities) as prof:
            train_child(model, steps, config, seed)
            synchronize(device)
        averages = prof.key_averages()
        try:
            table = averages.table(sort_by=sort_by, row_limit=25)
        except (AttributeError, KeyError):  # older torch names device time after CUDA
            sort_by = "self_cuda_time_total"
            table = averages.table(sort_by=sort_by, row_limit=25)
        by_kind: dict[str, float] = {}
        for event in averages:
            us = getattr(event, sort_by, 0.0) or 0.0
            if us > 0 and (cuda or not event.key.startswith("aten::") or "::" in event.key):
                by_kind[kernel_kind(event.key)] = by_kind.get(kernel_kind(event.key), 0.0) + us
        total = sum(by_kind.values()) or 1.0
        share = {k: round(v / total, 3) for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])}
        title = f"{name} ({arch.multiply_adds(data.input_shape, 10) / 1e9:.2f} GMAC/img), {label}, batch {batch}, " \
                f"{sizes.profile_steps} steps"
        texts.append(f"### {title}\n{table}")
        results.append({"child": name, "config": label, "sort_by": sort_by, "share_by_kind": share,
                        "total_ms": round(total / 1000, 2)})
        report.print(f"{title}: {total / 1000:,.1f} ms {'device' if cuda else 'CPU'} time; by kind (approximate, by "
                     f"name): " + ", ".join(f"{k} {v:.0%}" for k, v in share.items()))
    (report.out / "profile.txt").write_text("\n\n".join(texts) + "\n")
    report.print(f"top 25 by {sort_by} of each (also in {report.out / 'profile.txt'}):")
    for text in texts:
        report.print(text)
    report.data["profiles"] = results


def variant_plan(children: list[tuple[str, CNNArchitecture]], sizes: Sizes,
                 device: torch.device) -> list[tuple[str, int, str, bool, str]]:
    """(child, batch, precision, channels_last, variant) rows, the most telling first; variant "reference" and
    "format trial" are the plain loop and the per-child pick."""
    big, *others = sizes.batch_sizes
    names = [n for n, _ in children]
    default_prec = "bf16" if device.type == "cuda" else "fp32"
    tiers: list[list[tuple[str, int, str, bool, str]]] = [
        [(n, big, "fp32", False, "reference") for n in names]
        + [(n, big, default_prec, True, v) for n in names for v in ("none", "all")],
        [(n, big, default_prec, True, v) for n in names for v in OPTION_SETS if v not in ("none", "all")]
        + [(n, big, "fp32", False, "none") for n in names] + [(n, big, "auto", True, "format trial") for n in names],
        [(n, b, p, True, v) for b in others for n in names for (p, v) in
         (("fp32", "reference"), (default_prec, "none"), (default_prec, "all"))],
        [(n, b, p, cl, v) for b in sizes.batch_sizes for p in ("bf16", "fp32") for cl in (True, False)
         for n in names for v in ("none", "all")],
        [(n, b, p, cl, v) for b in sizes.batch_sizes for p in ("bf16", "fp32") for cl in (True, False)
         for n in names for v in OPTION_SETS],
    ]
    plan, seen = [], set()
    for row in (r for tier in tiers[:sizes.variant_tiers] for r in tier):
        key = (row[0], row[1], "fp32", False, "reference") if row[4] == "reference" else row
        if key not in seen:
            seen.add(key)
            plan.append(key)
    return plan


def variants_section(report: Report, children: list[tuple[str, CNNArchitecture]], data: ImageData,
                     device: torch.device, sizes: Sizes, seed: int) -> list[dict[str, Any]]:
    report.heading("variants: training images/s per child (one epoch after a one-batch warm-up)")
    workers = loader_workers(device)
    archs = dict(children)
    timed_data = subset(data, sizes.timed_images)
    timed, warm = DeviceData(timed_data, device), DeviceData(subset(data, max(sizes.batch_sizes)), device)
    ceilings = {(cl, prec): peak_conv_flops(device, cl, torch.bfloat16 if prec == "bf16" else None,
                                            sizes.ceiling_batch) / 1e12
                for cl in (True, False) for prec in ("bf16", "fp32")}
    report.data["ceiling_tflops"] = {f"{'channels_last' if k[0] else 'nchw'}/{k[1]}": round(v, 4)
                                     for k, v in ceilings.items()}
    deadline = time.perf_counter() + sizes.variants_seconds
    rows: list[dict[str, Any]] = []
    for child, batch, prec, cl, variant in variant_plan(children, sizes, device):
        arch = archs[child]
        macs = arch.multiply_adds(data.input_shape, data.num_classes)
        row: dict[str, Any] = {"child": child, "gmac": round(macs / 1e9, 3), "batch": batch, "precision": prec,
                               "channels_last": cl, "variant": variant, "status": "ok", "images_per_s": 0.0}
        rows.append(row)
        if time.perf_counter() > deadline:
            row["status"] = "skipped (time cap)"
            continue
        try:
            if variant == "reference":
                ips = reference_images_per_s(arch, subset(data, batch), timed_data, batch, device, seed, workers)
            else:
                trial = variant == "format trial"
                config = TrainConfig(epochs=1, batch_size=batch, precision=prec, channels_last=None if trial else cl,
                                     **({"format_trial": True} if trial else OPTION_SETS[variant]))
                ips, outcome = train_images_per_s(arch, warm, timed, config, seed)
                if trial:
                    row["picked"] = f"{outcome.memory_format}/{outcome.precision}"
                    row["trial_seconds"] = round(outcome.trial_seconds, 3)
                    prec, cl = outcome.precision, outcome.memory_format == "channels_last"
            row["images_per_s"] = round(ips, 1)
            row["achieved_tflops"] = round(6 * macs * ips / 1e12, 3)
            row["ceiling_tflops"] = round(ceilings[(cl, "bf16" if prec == "bf16" else "fp32")], 4)
        except Exception as e:  # one failing variant (OOM, unsupported fused SGD) must not end the check
            row["status"] = f"error: {type(e).__name__}: {str(e).splitlines()[0][:120]}"
            if device.type == "cuda":
                torch.cuda.empty_cache()
    ref = {(r["child"], r["batch"]): r["images_per_s"] for r in rows if r["variant"] == "reference"
           and r["status"] == "ok"}
    table = []
    for r in rows:
        base = ref.get((r["child"], r["batch"]))
        if r["status"] == "ok" and base:
            r["vs_reference"] = round(r["images_per_s"] / base, 3)
        fmt = "-" if r["variant"] == "reference" else ("CL" if r["channels_last"] else "NCHW")
        table.append([r["child"], str(r["batch"]), r["precision"] if r["variant"] != "reference" else "fp32 (TF32)",
                      fmt, r["variant"] + (f" -> {r['picked']}" if "picked" in r else ""),
                      f"{r['images_per_s']:,.0f}" if r["status"] == "ok" else r["status"],
                      f"{r.get('vs_reference', 0):.2f}x" if "vs_reference" in r else "",
                      f"{r['achieved_tflops']:.3g} / {r['ceiling_tflops']:.3g}" if "achieved_tflops" in r else ""])
    report.table(["child", "batch", "precision", "format", "variant", "img/s", "vs ref", "TFLOP/s / ceiling"], table)
    report.print(f"ceilings (one 5x5 128->128 conv, TFLOP/s): {report.data['ceiling_tflops']}; "
                 f"bf16 matmul rate of an H200 for scale: about {BF16_PEAK_TFLOPS:.0f}")
    report.data["variants"] = rows
    return rows


def _concurrency_worker(rank: int, payload: dict[str, Any], commands: Any, results: Any) -> None:
    """One child's trainer in its own process: warm up, then train one epoch at each "go" (a start time)."""
    try:
        torch.set_num_threads(1)
        device = torch.device(payload["device"])
        x, y = torch.from_numpy(payload["x"]), torch.from_numpy(payload["y"])
        data = ImageData("cifar10", x, y, x[:2], y[:2], 10, payload["mean"], payload["std"], True)
        config = TrainConfig(**payload["config"])
        arch = CNNArchitecture.from_json(payload["arch"])
        dev = DeviceData(data, device)
        warm = DeviceData(subset(data, config.batch_size), device)
        model = warmed_up(arch, warm, config, rank)
        results.put(("ready", rank))
        while True:
            command = commands.get()
            if command[0] == "stop":
                return
            time.sleep(max(0.0, command[1] - time.time()))
            start = time.time()
            train_child(model, dev, config, rank)
            synchronize(device)
            results.put(("done", rank, start, time.time(), dev.num_train))
    except Exception as e:  # reported to the parent, which records it
        results.put(("error", rank, f"{type(e).__name__}: {e}"))


def concurrency_section(report: Report, children: list[tuple[str, CNNArchitecture]], data: ImageData,
                        device: torch.device, sizes: Sizes) -> list[dict[str, Any]]:
    batch = sizes.batch_sizes[-1]  # the search's batch (128 on the GPU)
    name, arch = children[0]
    report.heading(f"children at once: {name}, batch {batch}, as built, one process each, started together")
    payload = {"device": str(device), "x": data.train_x[:sizes.concurrency_images].numpy(),
               "y": data.train_y[:sizes.concurrency_images].numpy(), "mean": data.mean, "std": data.std,
               "config": {"epochs": 1, "batch_size": batch}, "arch": arch.to_json()}
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    count = max(sizes.concurrency)
    commands = [ctx.Queue() for _ in range(count)]
    procs = [ctx.Process(target=_concurrency_worker, args=(r, payload, commands[r], results), daemon=True)
             for r in range(count)]
    deadline = time.perf_counter() + sizes.concurrency_seconds
    rows: list[dict[str, Any]] = []

    def get(timeout: float) -> tuple:
        message = results.get(timeout=max(1.0, timeout))
        if message[0] == "error":
            raise RuntimeError(f"worker {message[1]}: {message[2]}")
        return message

    try:
        for proc in procs:
            proc.start()
        for _ in procs:
            get(deadline - time.perf_counter())
        for k in sizes.concurrency:
            if time.perf_counter() > deadline:
                rows.append({"children": k, "status": "skipped (time cap)", "total_images_per_s": 0.0})
                continue
            go = time.time() + 0.3
            for r in range(k):
                commands[r].put(("go", go))
            done = [get(deadline - time.perf_counter()) for _ in range(k)]
            start, end = min(d[2] for d in done), max(d[3] for d in done)
            images = sum(d[4] for d in done)
            rows.append({"children": k, "status": "ok", "total_images_per_s": round(images / (end - start), 1),
                         "per_child_images_per_s": round(images / k / (end - start), 1),
                         "seconds": round(end - start, 3)})
    except (RuntimeError, queue.Empty) as e:
        report.print(f"stopped: {e or 'a worker did not answer in time'}")
    finally:
        for c in commands:
            c.put(("stop",))
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
    one = next((r["total_images_per_s"] for r in rows if r["children"] == 1 and r["status"] == "ok"), 0.0)
    report.table(["children at once", "total img/s", "per child", "vs one"],
                 [[str(r["children"]), f"{r['total_images_per_s']:,.0f}" if r["status"] == "ok" else r["status"],
                   f"{r.get('per_child_images_per_s', 0):,.0f}",
                   f"{r['total_images_per_s'] / one:.2f}x" if one and r["status"] == "ok" else ""] for r in rows])
    report.data["concurrency"] = rows
    return rows


def run_logged(command: list[str], log: Path, timeout: float) -> tuple[int | None, str]:
    """Run ``command`` (this checkout on its path) in its own session, output to ``log``; kill the whole session at
    ``timeout``."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    with open(log, "w") as f:
        proc = subprocess.Popen(command, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, env=env,
                                start_new_session=True)
        try:
            code: int | None = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the search's env workers too
            proc.wait()
            code = None
    return code, log.read_text(errors="replace")


def bench_section(report: Report, data_root: Path, sizes: Sizes, seconds: float) -> None:
    report.heading("scripts/bench.py (batch 512, 15,000 / 5,000 images, 3 children)")
    command = [sys.executable, str(ROOT / "scripts" / "bench.py"), "--batch-size", "512", "--train-images",
               str(sizes.train_images), "--val-images", str(sizes.val_images), "--children", "3", "--data-root",
               str(data_root)]
    code, text = run_logged(command, report.out / "bench.log", seconds)
    last = text.strip().splitlines()[-1] if text.strip() else ""
    try:
        report.data["bench"] = json.loads(last)
        report.print(last)
    except json.JSONDecodeError:
        report.data["bench"] = {"status": "timed out" if code is None else f"exit {code}"}
        report.print(f"bench.py gave no JSON ({report.data['bench']['status']}); see bench.log")


def search_config(arg: str, variants: list[dict[str, Any]]) -> dict[str, Any]:
    """The search's train_config: the JSON given, or 'auto' (see --search-train-config)."""
    if arg != "auto":
        return json.loads(arg)
    rates: dict[str, list[float]] = {"none": [], "all": []}
    for r in variants:
        if r["batch"] == 128 and r["precision"] == "bf16" and r["channels_last"] and r["variant"] in rates \
                and r["status"] == "ok" and r["child"].startswith("v1 sample"):
            rates[r["variant"]].append(r["images_per_s"])
    faster = len(rates["all"]) == len(rates["none"]) > 0 and \
        sum(1 / v for v in rates["all"]) < sum(1 / v for v in rates["none"])
    return {"validate": "reward_window", **(ALL_OPTIONS if faster else {})}


def search_section(report: Report, data_root: Path, sizes: Sizes, args: Args, concurrency: list[dict[str, Any]],
                   variants: list[dict[str, Any]], seconds: float) -> None:
    if seconds < sizes.search_min_seconds:
        report.print(f"search skipped: {seconds:.0f} s left of the {sizes.budget_seconds:.0f} s budget")
        return
    ok = [r for r in concurrency if r["status"] == "ok"]
    best = max(ok, key=lambda r: r["total_images_per_s"])["children"] if ok else 1
    num_envs = args.search_num_envs or min(best, sizes.search_max_envs)
    config = search_config(args.search_train_config, variants)
    report.heading(f"search: nasrl-search, REINFORCE, NASRL-CIFAR10-v0, {num_envs} at once, {seconds:.0f} s")
    logdir = Path(tempfile.mkdtemp(prefix="gpu_check_runs_"))
    env_kwargs = {"data_root": str(data_root), "download": False, "train_subset": sizes.train_images,
                  "val_subset": sizes.val_images, "train_config": config}
    command = [sys.executable, "-m", "agents.experiment.runner", "--env", "NASRL-CIFAR10-v0", "--episodes", "100000",
               "--num-envs", str(num_envs), "--logdir", str(logdir), "--run-name", "gpu_check", "--no-progress",
               "--env-kwargs", json.dumps(env_kwargs)]
    started = time.time()
    code, _text = run_logged(command, report.out / "search.log", seconds)
    records = [r for path in logdir.glob(f"*/{RESULTS}") for r in read_results(path)]  # a line torn by the kill: cut
    times = sorted(r["time"] for r in records if isinstance(r.get("time"), int | float))
    result: dict[str, Any] = {"num_envs": num_envs, "train_config": config, "children": len(times),
                              "seconds": seconds, "exit": "stopped at its time" if code is None else code,
                              "statuses": {s: sum(r.get("status") == s for r in records)
                                           for s in {r.get("status") for r in records}}}
    if len(times) > num_envs:  # steady state: after the first lockstep batch, startup excluded
        per_hour = (len(times) - num_envs) / (times[-1] - times[num_envs - 1]) * 3600
        result["children_per_hour"] = round(per_hour, 1)
        result["children_per_hour_with_startup"] = round(len(times) / (times[-1] - started) * 3600, 1)
        # at 45k images a child trains 45k/n as long; scaling its whole time is a lower bound on children/hour
        result["children_per_hour_at_45k"] = round(per_hour * sizes.train_images / PROXY_TRAIN, 1)
        report.print(f"{len(times)} children in {seconds:.0f} s with {num_envs} at once: {per_hour:,.0f} "
                     f"children/hour at {sizes.train_images:,} images, >= {result['children_per_hour_at_45k']:,.0f} "
                     f"extrapolated to {PROXY_EPOCHS} epochs x {PROXY_TRAIN:,}; train_config {config}")
    else:
        report.print(f"only {len(times)} children finished: no rate (see search.log)")
    report.data["search"] = result


def targets_section(report: Report, variants: list[dict[str, Any]], sizes: Sizes) -> None:
    report.heading("targets (sampled v1 children at the headline batch)")
    big = sizes.batch_sizes[0]
    sampled = sorted({r["child"] for r in variants if r["child"].startswith("v1 sample")})
    candidates: dict[str, dict[str, float]] = {}
    for r in variants:
        if r["batch"] == big and r["status"] == "ok":
            key = "reference" if r["variant"] == "reference" else \
                f"{r['precision']}/{'CL' if r['channels_last'] else 'NCHW'}/{r['variant']}"
            candidates.setdefault(key, {})[r["child"]] = r["images_per_s"]
    ref = candidates.pop("reference", {})

    def over(rates: dict[str, float]) -> float:  # images over summed seconds, as bench.py totals
        return statistics.harmonic_mean([rates[c] for c in sampled])

    complete = {k: v for k, v in candidates.items() if all(c in v for c in sampled) and all(c in ref for c in v)}
    if not sampled or not all(c in ref for c in sampled) or not complete:
        report.print("not enough rows measured to judge the targets")
        return
    best = max(complete, key=lambda k: over(complete[k]))
    default = next((k for k in complete if k.endswith("/CL/none")), best)
    judged = {}
    for label, key in (("as built", default), ("best measured", best)):
        rates = complete[key]
        speedup = over(rates) / over(ref)
        worst = min(rates[c] / ref[c] for c in rates)
        judged[label] = {"settings": key, "images_per_s": round(over(rates), 1), "speedup_vs_reference":
                         round(speedup, 3), "min_child_speedup": round(worst, 3)}
        report.print(f"{label} ({key}): {over(rates):,.0f} img/s over the sampled children (target "
                     f">= {TARGETS['images_per_s']:,.0f}), {speedup:.2f}x the reference (target >= "
                     f"{TARGETS['speedup_vs_reference']}x), slowest child {worst:.2f}x (target >= 1x)")
    search = report.data.get("search", {})
    if "children_per_hour_at_45k" in search:
        report.print(f"search: >= {search['children_per_hour_at_45k']:,.0f} children/hour at the 5-epoch x 45k proxy "
                     f"with {search['num_envs']} at once (target >= {TARGETS['children_per_hour']:.0f})")
    report.data["targets"] = {"bars": TARGETS, **judged}


def main(argv: list[str] | None = None) -> None:
    args, sizes, wanted = parse_args(argv)
    assert args.png_dir is not None and args.out is not None  # parse_args requires both
    begun = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    report = Report(args.out)
    device = resolve_device(args.device)
    report.data.update(device=device_name(device), quick=args.quick, sizes=asdict(sizes), seed=args.seed)
    report.print(f"gpu_check on {report.data['device']}; sections {sorted(wanted)}")
    images, labels = read_png_cifar10(args.png_dir, sizes.train_images + sizes.val_images)
    data = split_image_data("cifar10", torch.from_numpy(images), torch.from_numpy(labels), 10, True,
                            val_size=sizes.val_images, default_val_size=sizes.val_images)  # as load_cifar10 splits
    children = sample_children(sizes.children, args.seed, sizes.num_layers)
    report.print(f"data: {len(data.train_y):,} train / {len(data.val_y):,} validation real CIFAR-10 images from "
                 f"{args.png_dir}; default precision on this device: "
                 f"{autocast_dtype(TrainConfig(), device) or torch.float32}")
    for name, arch in children:
        report.print(f"  {name}: {arch.multiply_adds(data.input_shape, 10) / 1e9:.2f} GMAC/img, filters "
                     f"{[layer.num_filters for layer in arch.layers]}")
    timings: dict[str, float] = report.data.setdefault("section_seconds", {})

    def run(name: str, section: Callable[[], Any]) -> None:
        if name in wanted:
            start = time.perf_counter()
            section()
            timings[name] = round(time.perf_counter() - start, 1)
            report.save()

    def left() -> float:  # of the whole check's budget: bench and search shrink to fit
        return sizes.budget_seconds - (time.perf_counter() - begun)

    variants: list[dict[str, Any]] = []
    concurrency: list[dict[str, Any]] = []
    run("profile", lambda: profile_section(report, children, data, device, sizes, args.seed))
    run("variants", lambda: variants.extend(variants_section(report, children, data, device, sizes, args.seed)))
    run("concurrency", lambda: concurrency.extend(concurrency_section(report, children, data, device, sizes)))
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        if wanted & {"bench", "search"}:
            write_python_batches(images, labels, root)
        reserve = sizes.search_min_seconds if "search" in wanted else 0.0
        run("bench", lambda: bench_section(report, root, sizes, min(sizes.bench_seconds, max(30.0, left() - reserve))))
        run("search", lambda: search_section(report, root, sizes, args, concurrency, variants,
                                             min(sizes.search_seconds, left())))
    if variants:
        targets_section(report, variants, sizes)
    report.data["seconds"] = round(time.perf_counter() - begun, 1)
    report.print(f"\ngpu_check finished in {report.data['seconds']:,.0f} s (sections: {timings}); files in {args.out}")
    report.save()


if __name__ == "__main__":
    main()
