"""NAS-Bench-201's network (Dong & Yang, ICLR 2020) for one cell of :mod:`nas_env.spaces.nb201`, trainable.

The cell's ops and NAS-Bench-201's ``TinyNetwork`` skeleton around it, as built here, are described
in docs/nb201-training.md ("The network"). NAS-Bench-201 trains ``C=16``, ``N=5``; its published model
sizes are this network's parameter counts in millions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from nas_env.checks import check_image_shape, check_int, check_type
from nas_env.spaces.base import Architecture
from nas_env.spaces.nb201 import EDGES, NUM_NODES, NB201Architecture

NB201_C, NB201_N = 16, 5  # NAS-Bench-201's own width (stem channels) and cells per stage
STAGES = 3  # stages of N cells; the width doubles and the image halves between them
CONV_KERNELS = {"nor_conv_1x1": 1, "nor_conv_3x3": 3}


class ReLUConvBN(nn.Sequential):
    """ReLU -> Conv (no bias, same padding) -> BatchNorm: NAS-Bench-201's convolution op."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1) -> None:
        super().__init__(nn.ReLU(inplace=False),
                         nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
                         nn.BatchNorm2d(c_out))


def make_op(op: str, channels: int) -> nn.Module:
    """The module of a non-``none`` op at ``channels`` channels (a cell keeps its width and size)."""
    if op in CONV_KERNELS:
        return ReLUConvBN(channels, channels, CONV_KERNELS[op])
    if op == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    if op == "skip_connect":
        return nn.Identity()
    raise ValueError(f"op must be one of {(*CONV_KERNELS, 'avg_pool_3x3', 'skip_connect')} (none has no module), "
                     f"got {op!r}")


class NB201Cell(nn.Module):
    """One cell: each node the sum of its non-``none`` incoming edges' ops (zeros if it has none)."""

    def __init__(self, arch: NB201Architecture, channels: int) -> None:
        super().__init__()
        live = [(i, s, t) for i, ((s, t), op) in enumerate(zip(EDGES, arch.ops, strict=True)) if op != "none"]
        # one module per live edge, keyed by its edge index: state dicts name edges as NAS-Bench-201 orders them
        self.edges = nn.ModuleDict({str(i): make_op(arch.ops[i], channels) for i, _, _ in live})
        self._inputs = [[(str(i), s) for i, s, t in live if t == node] for node in range(NUM_NODES)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for node in range(1, NUM_NODES):
            terms = [self.edges[name](nodes[s]) for name, s in self._inputs[node]]
            total = terms[0] if terms else torch.zeros_like(x)
            for term in terms[1:]:
                total = total + term
            nodes.append(total)
        return nodes[-1]


class ResidualReduction(nn.Module):
    """NAS-Bench-201's block between stages: two ReLU-Conv3x3-BN (the first stride 2) plus a pooled 1x1 shortcut."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, stride=2)
        self.conv_b = ReLUConvBN(c_out, c_out, 3)
        self.shortcut = nn.Sequential(nn.AvgPool2d(kernel_size=2, stride=2),
                                      nn.Conv2d(c_in, c_out, kernel_size=1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.conv_b(self.conv_a(x))


def check_skeleton(input_shape: Sequence[int], num_classes: int, C: int, N: int) -> tuple[int, int, int]:
    """Validate the skeleton's arguments (ValueError naming the value); ``input_shape`` as a tuple of ints.

    The image is halved twice by blocks whose two paths (stride-2 conv, 2x2 pool) agree only on even
    sizes, so height and width must be multiples of 4.
    """
    shape = check_image_shape(input_shape)
    if shape[1] % 4 or shape[2] % 4:
        raise ValueError(f"the NB201 skeleton halves the image twice: height and width must be multiples of 4, "
                         f"got input_shape {shape!r}")
    check_int("num_classes", num_classes, minimum=2)
    check_int("C", C, minimum=1)
    check_int("N", N, minimum=1)
    return shape


def stage_blocks(C: int, N: int, cell: Callable[[int], nn.Module], reduction: Callable[[int, int], nn.Module]
                 ) -> tuple[list[nn.Module], int]:
    """The skeleton's body: ``N`` cells a stage at C, 2C, 4C channels, a reduction between stages; and its last
    width (the stand-alone network and the supernet share it)."""
    blocks: list[nn.Module] = []
    channels = C
    for stage in range(STAGES):
        if stage:
            blocks.append(reduction(channels, 2 * channels))
            channels *= 2
        blocks.extend(cell(channels) for _ in range(N))
    return blocks, channels


class NB201Network(nn.Module):
    """NAS-Bench-201's ``TinyNetwork`` around one cell: stem, 3 stages of ``N`` cells (``C``, 2C, 4C), classifier."""

    def __init__(self, arch: NB201Architecture, input_shape: Sequence[int] = (3, 32, 32), num_classes: int = 10,
                 C: int = NB201_C, N: int = NB201_N) -> None:
        super().__init__()
        check_type(arch, NB201Architecture, "NB201Network expects an NB201Architecture")
        self.input_shape = check_skeleton(input_shape, num_classes, C, N)
        self.arch, self.C, self.N = arch, int(C), int(N)
        self.stem = nn.Sequential(nn.Conv2d(self.input_shape[0], C, 3, padding=1, bias=False), nn.BatchNorm2d(C))
        blocks, channels = stage_blocks(C, N, lambda c: NB201Cell(arch, c), ResidualReduction)
        self.cells = nn.Sequential(*blocks)
        self.last_act = nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(inplace=False))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.pool(self.last_act(self.cells(self.stem(x))))
        return self.classifier(features.flatten(1))


def build_nb201_model(arch: NB201Architecture, input_shape: Sequence[int] = (3, 32, 32), num_classes: int = 10,
                      C: int = NB201_C, N: int = NB201_N) -> NB201Network:
    """The NAS-Bench-201 network of ``arch`` for images of ``input_shape = (C, H, W)``; NB201's C=16, N=5 by default."""
    return NB201Network(arch, input_shape, num_classes, C=C, N=N)


def _stage_widths(C: int) -> list[int]:
    return [C * 2**stage for stage in range(STAGES)]


def nb201_num_params(arch: NB201Architecture, input_shape: Sequence[int] = (3, 32, 32), num_classes: int = 10,
                     C: int = NB201_C, N: int = NB201_N) -> int:
    """Trainable parameters of :func:`build_nb201_model`'s network, counted without building it."""
    in_channels = check_skeleton(input_shape, num_classes, C, N)[0]
    total = 9 * in_channels * C + 2 * C  # stem conv + BN
    for stage, c in enumerate(_stage_widths(C)):
        if stage:
            half = c // 2
            total += 9 * half * c + 2 * c + 9 * c * c + 2 * c + half * c  # conv_a, conv_b (+ BNs), shortcut 1x1
        per_cell = sum(CONV_KERNELS[op] ** 2 * c * c + 2 * c for op in arch.ops if op in CONV_KERNELS)
        total += N * per_cell
    c = 4 * C
    return total + 2 * c + c * num_classes + num_classes  # last BN, classifier


def nb201_multiply_adds(arch: NB201Architecture, input_shape: Sequence[int] = (3, 32, 32), num_classes: int = 10,
                        C: int = NB201_C, N: int = NB201_N) -> int:
    """Multiply-accumulates of one image's forward pass (convolutions and the classifier), as the CNN space counts."""
    in_channels, height, width = check_skeleton(input_shape, num_classes, C, N)
    total = 9 * in_channels * C * height * width
    for stage, c in enumerate(_stage_widths(C)):
        pixels = (height >> stage) * (width >> stage)
        if stage:
            half = c // 2
            total += (9 * half * c + 9 * c * c + half * c) * pixels
        total += N * pixels * sum(CONV_KERNELS[op] ** 2 * c * c for op in arch.ops if op in CONV_KERNELS)
    return total + 4 * C * num_classes


class NB201Builder:
    """NAS-Bench-201's networks at width ``C`` and ``N`` cells a stage, for :class:`TrainingEvaluator`'s ``builder``.

    Its fingerprint kind is ``"nb201"`` and its settings ``C`` and ``N``: results at other widths, or the
    CNN space's, never mix with these in a store. Metrics: ``params``, ``flops`` (multiply-adds of one
    image) and ``model_size`` (millions of parameters: NAS-Bench-201's "MB").
    """

    kind = "nb201"

    def __init__(self, C: int = NB201_C, N: int = NB201_N) -> None:
        self.C, self.N = check_int("C", C, minimum=1), check_int("N", N, minimum=1)

    def settings(self) -> dict[str, int]:
        return {"C": self.C, "N": self.N}

    @staticmethod
    def _check(arch: Architecture) -> NB201Architecture:
        return check_type(arch, NB201Architecture, "NB201Builder builds NB201 cells")

    def metrics(self, arch: Architecture, input_shape: Sequence[int], num_classes: int) -> dict[str, float]:
        cell = self._check(arch)
        params = nb201_num_params(cell, input_shape, num_classes, C=self.C, N=self.N)
        return {"params": params, "flops": nb201_multiply_adds(cell, input_shape, num_classes, C=self.C, N=self.N),
                "model_size": params / 1e6}

    def build(self, arch: Architecture, input_shape: Sequence[int], num_classes: int) -> NB201Network:
        return build_nb201_model(self._check(arch), input_shape, num_classes, C=self.C, N=self.N)
