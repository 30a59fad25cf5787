"""Weight sharing on NAS-Bench-201's cell space: a supernet holding every op of every edge.

NAS-Bench-201's own skeleton (:mod:`nas_env.models.nb201`) with every cell holding all five ops on
each of its six edges: per edge one ReLU-Conv-BN weight for each conv op (each cell its own);
``avg_pool_3x3`` and ``skip_connect`` have no parameters, ``none`` drops the edge. A child, one op
per edge, is a path through it (single-path one-shot, as in SPOS / RSPS); an op no child used in a
step gets no gradient, so the optimiser leaves it untouched. :class:`NB201SuperNet.child_model`
copies a path's weights into :func:`build_nb201_model`'s network, which computes the same logits;
batch norm is as in the CNN supernet. :class:`NB201SupernetSpec` plugs it into
:class:`~nas_env.evaluators.shared.SharedWeightsEvaluator`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nas_env.checks import check_type
from nas_env.evaluators.shared import BatchNorms, BNStats, SharedConfig
from nas_env.models.nb201 import (
    CONV_KERNELS,
    NB201_C,
    NB201_N,
    NB201Builder,
    NB201Network,
    ResidualReduction,
    build_nb201_model,
    check_skeleton,
    stage_blocks,
)
from nas_env.spaces.nb201 import EDGES, NUM_NODES, NB201Architecture, NB201SearchSpace


def is_parameter_free(arch: NB201Architecture) -> bool:
    """Whether the cell has no convolution (its network's only weights are the skeleton's)."""
    return not any(op in CONV_KERNELS for op in arch.ops)


class _ConvBN(nn.Module):
    """One ReLU-Conv-BN op's weights: a conv without bias and a batch-norm affine (no running statistics)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, track_running_stats=False)

    def forward(self, x: torch.Tensor, norm: BatchNorms) -> torch.Tensor:
        return _bn(norm, self.conv(F.relu(x)), self.bn)


class _SuperCell(nn.Module):
    """A cell's weights for every op: ``edges[str(i)][op]`` for the two conv ops of edge ``i``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.edges = nn.ModuleDict({str(i): nn.ModuleDict({op: _ConvBN(channels, channels, k)
                                                           for op, k in CONV_KERNELS.items()})
                                    for i in range(len(EDGES))})


class _SuperReduction(nn.Module):
    """The residual reduction block's weights (fixed: every child uses all of them)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv_a = _ConvBN(c_in, c_out, 3, stride=2)
        self.conv_b = _ConvBN(c_out, c_out, 3)
        self.shortcut = nn.Conv2d(c_in, c_out, kernel_size=1, bias=False)

    def forward(self, h: torch.Tensor, norm: BatchNorms) -> torch.Tensor:
        return self.shortcut(F.avg_pool2d(h, kernel_size=2, stride=2)) + self.conv_b(self.conv_a(h, norm), norm)


def _bn(norm: BatchNorms, h: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
    return norm(h, bn.weight, bn.bias, bn.eps)


class NB201SuperNet(nn.Module):
    """Every NAS-Bench-201 cell as a path through one network of width ``C`` and ``N`` cells a stage."""

    def __init__(self, input_shape: Sequence[int] = (3, 32, 32), num_classes: int = 10, C: int = NB201_C,
                 N: int = NB201_N) -> None:
        super().__init__()
        self.input_shape = check_skeleton(input_shape, num_classes, C, N)
        self.num_classes, self.C, self.N = int(num_classes), int(C), int(N)
        self.stem = nn.Conv2d(self.input_shape[0], C, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(C, track_running_stats=False)
        blocks, channels = stage_blocks(C, N, _SuperCell, _SuperReduction)
        self.cells = nn.ModuleList(blocks)
        self.last_bn = nn.BatchNorm2d(channels, track_running_stats=False)
        self.classifier = nn.Linear(channels, num_classes)

    def plan(self, arch: NB201Architecture) -> NB201Architecture:
        """The cell itself (every cell is a child); TypeError for anything else."""
        return check_type(arch, NB201Architecture, "the NB201 supernet runs NB201 cells (NB201Architecture)")

    def _cell(self, h: torch.Tensor, cell: _SuperCell, ops: tuple[str, ...], norm: BatchNorms) -> torch.Tensor:
        nodes = [h]
        for node in range(1, NUM_NODES):
            total: torch.Tensor | None = None
            for i, ((source, target), op) in enumerate(zip(EDGES, ops, strict=True)):
                if target != node or op == "none":
                    continue
                x = nodes[source]
                if op in CONV_KERNELS:
                    term = cell.edges[str(i)][op](x, norm)
                elif op == "avg_pool_3x3":
                    term = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
                else:  # skip_connect
                    term = x
                total = term if total is None else total + term
            nodes.append(torch.zeros_like(h) if total is None else total)
        return nodes[-1]

    def forward(self, x: torch.Tensor, plan: NB201Architecture, stats: BNStats | None = None,
                collect: BNStats | None = None) -> torch.Tensor:
        """The cell's logits; batch norms (in forward order) as :class:`~nas_env.evaluators.shared.Supernet` says."""
        norm = BatchNorms(stats, collect)
        h = _bn(norm, self.stem(x), self.stem_bn)
        for block in self.cells:
            h = block(h, norm) if isinstance(block, _SuperReduction) else self._cell(h, block, plan.ops, norm)
        h = F.relu(_bn(norm, h, self.last_bn))
        return self.classifier(h.mean(dim=(2, 3)))

    @torch.no_grad()
    def child_model(self, arch: NB201Architecture, stats: BNStats | None = None) -> NB201Network:
        """A stand-alone :func:`build_nb201_model` network holding copies of the cell's weights (and ``stats`` as
        its batch norms' running statistics, when given): it computes what the supernet computes for the cell."""
        cell_ops = self.plan(arch).ops
        model = build_nb201_model(arch, self.input_shape, self.num_classes, C=self.C, N=self.N)

        def copy(target: nn.Module, *sources: nn.Module) -> None:  # the same parameters in the same order
            for t, p in zip(target.parameters(), (p for s in sources for p in s.parameters()), strict=True):
                t.copy_(p)

        copy(model.stem, self.stem, self.stem_bn)
        for block, source in zip(model.cells, self.cells, strict=True):
            if isinstance(block, ResidualReduction):
                copy(block, source)  # (conv_a, conv_b, shortcut)
            else:  # each live edge's op, in edge order: the conv ops' (conv, bn) weights
                copy(block, *(source.edges[str(i)][op] for i, op in enumerate(cell_ops) if op in CONV_KERNELS))
        copy(model.last_act, self.last_bn)
        copy(model.classifier, self.classifier)
        if stats is not None:
            norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]  # forward order
            if len(norms) != len(stats):
                raise ValueError(f"stats holds {len(stats)} batch norms' statistics; the cell's network has "
                                 f"{len(norms)}")
            for bn, (mean, var) in zip(norms, stats, strict=True):
                bn.running_mean.copy_(mean)
                bn.running_var.copy_(var)
        return model.to(self.classifier.weight.device)


class NB201SupernetSpec:
    """NAS-Bench-201's space for :class:`~nas_env.evaluators.shared.SharedWeightsEvaluator`: an
    :class:`NB201SuperNet` of width ``C`` and ``N`` cells a stage; metrics as :class:`NB201Builder`'s."""

    fingerprint_kind = "shared_nb201"

    def __init__(self, C: int = NB201_C, N: int = NB201_N) -> None:
        self.builder = NB201Builder(C, N)
        self.space = NB201SearchSpace()

    def settings(self) -> dict[str, Any]:
        return {"kind": "nb201", **self.builder.settings()}

    def check_config(self, config: SharedConfig) -> None:
        """``kernel_sharing`` is the CNN space's (filter sizes cropped from one kernel): here each conv op of
        each edge always has its own weights, so only the default is accepted."""
        if config.kernel_sharing != "crop":
            raise ValueError(f"kernel_sharing applies to the CNN space only (NB201's 1x1 and 3x3 convs always have "
                             f"their own weights); leave it at its default 'crop', got {config.kernel_sharing!r}")

    def build(self, input_shape: tuple[int, ...], num_classes: int, config: SharedConfig) -> NB201SuperNet:
        return NB201SuperNet(input_shape, num_classes, **self.builder.settings())

    def metrics(self, arch: NB201Architecture, input_shape: tuple[int, ...], num_classes: int) -> dict[str, Any]:
        return self.builder.metrics(arch, input_shape, num_classes)
