"""Build a trainable ``torch.nn.Module`` from a :class:`CNNArchitecture` with the paper's rules.

Rules (Zoph & Le 2017, section 3.3): each layer is conv -> batch norm -> ReLU; several
inputs are concatenated along channels after zero-padding the smaller maps to the
largest; a layer with no input takes the image; every output that feeds no later layer
is concatenated (padded the same way) before global average pooling and a linear
classifier.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nas_env.spaces.cnn import CNNArchitecture

BN_EPS = 1e-5  # PyTorch's BatchNorm2d default


def pad_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Zero-pad an ``N x C x H x W`` map to ``size``, splitting the padding evenly (extra row/col at the end)."""
    dh, dw = size[0] - x.shape[2], size[1] - x.shape[3]
    if dh == 0 and dw == 0:
        return x
    return F.pad(x, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2))


def concat_padded(maps: Sequence[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
    """Concatenate maps along channels after padding each to ``size``."""
    if len(maps) == 1:
        return pad_to(maps[0], size)
    return torch.cat([pad_to(m, size) for m in maps], dim=1)


def _positive_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool) and value >= 1


class ChildCNN(nn.Module):
    """A child network: the architecture's layers wired by their input lists, then GAP + linear.

    ``bn_eps`` is every batch norm's epsilon (PyTorch's 1e-5 by default; the final training's
    grid search tunes it, as in the paper).
    """

    def __init__(self, arch: CNNArchitecture, input_shape: Sequence[int], num_classes: int,
                 bn_eps: float = BN_EPS) -> None:
        super().__init__()
        if len(input_shape) != 3 or not all(_positive_int(v) for v in input_shape):
            raise ValueError(f"input_shape must be (channels, height, width) of positive ints, got {input_shape!r}")
        if not _positive_int(num_classes) or num_classes < 2:
            raise ValueError(f"num_classes must be an int of at least 2, got {num_classes!r}")
        if isinstance(bn_eps, bool) or not isinstance(bn_eps, int | float) or not math.isfinite(bn_eps) or bn_eps <= 0:
            raise ValueError(f"bn_eps must be a finite number > 0, got {bn_eps!r}")
        self.arch = arch
        self.input_shape = tuple(int(v) for v in input_shape)
        shapes = arch.shapes(self.input_shape)
        self._in_sizes = [s.in_size for s in shapes]
        self._out_sizes = [s.out_size for s in shapes]
        self._inputs = [layer.inputs for layer in arch.layers]
        self._pooled = [i in arch.pool_after for i in range(1, arch.num_layers + 1)]
        self._unused = [i - 1 for i in arch.unused_outputs()]
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        for layer, shape in zip(arch.layers, shapes, strict=True):
            self.convs.append(
                nn.Conv2d(
                    shape.in_channels,
                    layer.num_filters,
                    kernel_size=(layer.filter_height, layer.filter_width),
                    stride=(layer.stride_height, layer.stride_width),
                    padding=(layer.filter_height // 2, layer.filter_width // 2),
                    bias=False,  # batch norm's shift makes a conv bias redundant
                )
            )
            self.norms.append(nn.BatchNorm2d(layer.num_filters, eps=float(bn_eps)))
        final = (max(self._out_sizes[i][0] for i in self._unused), max(self._out_sizes[i][1] for i in self._unused))
        self._final_size = final
        self.classifier = nn.Linear(arch.classifier_features(), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs: list[torch.Tensor] = []
        for conv, norm, inputs, in_size, pooled in zip(
            self.convs, self.norms, self._inputs, self._in_sizes, self._pooled, strict=True
        ):
            h = concat_padded([outs[j - 1] for j in inputs], in_size) if inputs else x
            h = F.relu(norm(conv(h)), inplace=True)  # batch norm backward needs its input, not its output
            if pooled:
                h = F.max_pool2d(h, kernel_size=2, stride=2, ceil_mode=True)
            outs.append(h)
        feats = concat_padded([outs[i] for i in self._unused], self._final_size)
        return self.classifier(feats.mean(dim=(2, 3)))


def build_model(arch: CNNArchitecture, input_shape: Sequence[int], num_classes: int,
                bn_eps: float = BN_EPS) -> ChildCNN:
    """The child CNN for ``arch`` on images of ``input_shape = (C, H, W)`` with ``num_classes`` outputs.

    ``bn_eps``: the batch norms' epsilon (default PyTorch's 1e-5).
    """
    if not isinstance(arch, CNNArchitecture):
        raise TypeError(f"build_model expects a CNNArchitecture, got {type(arch).__name__}")
    return ChildCNN(arch, input_shape, num_classes, bn_eps=bn_eps)
