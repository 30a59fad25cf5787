"""Build a trainable ``torch.nn.Module`` from a :class:`CNNArchitecture` with the paper's rules.

Rules (Zoph & Le 2017, section 3.3): each layer is conv -> batch norm -> ReLU; several
inputs are concatenated along channels after zero-padding the smaller maps to the
largest; a layer with no input takes the image; every output that feeds no later layer
is concatenated (padded the same way) before global average pooling and a linear
classifier.

Two speed options compute the same function (``tests/training/test_gpu_options.py`` proves it):

* **Channel padding** (``channel_multiple``): every conv's output channel count is rounded up to
  a multiple (8 suits bf16 tensor cores; 36 filters become 40). The extra channels have zero
  conv weights, zero batch-norm scale and shift, and zero classifier columns, so they are
  exactly zero in the forward pass, every padded parameter gets an exactly zero gradient, and
  SGD (momentum, weight decay, Nesterov) keeps them zero: the real channels see the same
  function, up to the summation order of the extra zero terms.
* **Concatenation into one buffer** (``concat_buffer``): a layer's inputs are copied once into a
  preallocated buffer (:func:`concat_into_buffer`), not padded into temporaries and concatenated.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nas_env.checks import check_bool, check_image_shape, check_number, check_type, is_int
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


def padded_width(channels: int, multiple: int) -> int:
    """``channels`` rounded up to a multiple of ``multiple``."""
    return -(-channels // multiple) * multiple


def _buffer_format(x: torch.Tensor) -> torch.memory_format:
    """The memory format ``torch.cat`` would give: channels_last when ``x`` is laid out that way (and only that)."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


class _ConcatInto(torch.autograd.Function):
    """Concatenate maps along channels into one new buffer, each centred spatially as :func:`pad_to` does.

    Forward: one copy per map into its region of the buffer (no padded temporaries). Backward:
    each map's gradient is a view of the buffer's gradient (no copy), as for ``torch.cat``.
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, size: tuple[int, int],
                *maps: torch.Tensor) -> torch.Tensor:
        n, height, width = maps[0].shape[0], size[0], size[1]
        spatial_pad = any(m.shape[2] != height or m.shape[3] != width for m in maps)
        channels = sum(m.shape[1] for m in maps)
        buf = torch.empty((n, channels, height, width), dtype=maps[0].dtype, device=maps[0].device,
                          memory_format=_buffer_format(maps[0]))
        if spatial_pad:  # only padding needs the zeros
            buf.zero_()
        regions = []
        c0 = 0
        for m in maps:
            c, h, w = m.shape[1:]
            top, left = (height - h) // 2, (width - w) // 2
            buf[:, c0 : c0 + c, top : top + h, left : left + w].copy_(m)
            regions.append((c0, c0 + c, top, top + h, left, left + w))
            c0 += c
        ctx.regions = regions
        return buf

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        return (None, *(grad[:, c0:c1, t:b, lo:hi] for c0, c1, t, b, lo, hi in ctx.regions))


def concat_into_buffer(maps: Sequence[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
    """What :func:`concat_padded` computes, written into one preallocated buffer (see :class:`_ConcatInto`)."""
    if len(maps) == 1 and tuple(maps[0].shape[2:]) == tuple(size):
        return maps[0]
    if len({m.dtype for m in maps}) > 1:  # mixed precisions: let torch.cat promote
        return concat_padded(maps, size)
    return _ConcatInto.apply(tuple(size), *maps)


def _positive_int(value: object) -> bool:
    return is_int(value) and value >= 1


class ChildCNN(nn.Module):
    """A child network: the architecture's layers wired by their input lists, then GAP + linear.

    ``bn_eps`` is every batch norm's epsilon (PyTorch's 1e-5 by default; the final training's
    grid search tunes it, as in the paper). ``channel_multiple`` and ``concat_buffer`` are the
    module docstring's speed options; both can be changed later, in place, by
    :meth:`set_channel_multiple` and the ``concat_buffer`` attribute. The initial weights of the
    real channels do not depend on either (padding is applied after the usual initialisation).
    """

    def __init__(self, arch: CNNArchitecture, input_shape: Sequence[int], num_classes: int,
                 bn_eps: float = BN_EPS, channel_multiple: int = 1, concat_buffer: bool = False) -> None:
        super().__init__()
        self.input_shape = check_image_shape(input_shape)
        if not _positive_int(num_classes) or num_classes < 2:
            raise ValueError(f"num_classes must be an int of at least 2, got {num_classes!r}")
        check_number("bn_eps", bn_eps, minimum=0, above=True)
        concat_buffer = check_bool("concat_buffer", concat_buffer)
        self.arch = arch
        self.concat_buffer = concat_buffer
        self.channel_multiple = 1
        self._filters = [layer.num_filters for layer in arch.layers]  # real output channels per layer
        self._widths = list(self._filters)  # output channels as built: the real ones plus zero padding
        shapes = arch.shapes(self.input_shape)
        self._in_sizes = [s.in_size for s in shapes]
        self._out_sizes = [s.out_size for s in shapes]
        self._inputs = [layer.inputs for layer in arch.layers]
        self._pooled = [i in arch.pool_after for i in range(1, arch.num_layers + 1)]
        self._unused = [i - 1 for i in arch.unused_outputs()]
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        for layer, shape in zip(arch.layers, shapes, strict=True):
            kernel = (layer.filter_height, layer.filter_width)
            self.convs.append(nn.Conv2d(shape.in_channels, layer.num_filters, kernel_size=kernel,
                                        stride=(layer.stride_height, layer.stride_width),
                                        padding=(kernel[0] // 2, kernel[1] // 2),
                                        bias=False))  # batch norm's shift makes a conv bias redundant
            self.norms.append(nn.BatchNorm2d(layer.num_filters, eps=float(bn_eps)))
        final = (max(self._out_sizes[i][0] for i in self._unused), max(self._out_sizes[i][1] for i in self._unused))
        self._final_size = final
        self.classifier = nn.Linear(arch.classifier_features(), num_classes)
        self.set_channel_multiple(channel_multiple)

    def _real_positions(self, sources: Sequence[int], widths: Sequence[int]) -> torch.Tensor:
        """Indices of the real channels in a concatenation of ``sources`` (0-based layers) laid out at ``widths``."""
        positions: list[int] = []
        offset = 0
        for j in sources:
            positions.extend(range(offset, offset + self._filters[j]))
            offset += widths[j]
        return torch.tensor(positions, dtype=torch.long)

    def _input_positions(self, i: int, widths: Sequence[int]) -> tuple[torch.Tensor, int]:
        """Real input-channel indices of layer ``i`` (0-based) at ``widths``, and its total input channels."""
        if not self._inputs[i]:
            c = self.input_shape[0]
            return torch.arange(c), c
        sources = [j - 1 for j in self._inputs[i]]
        return self._real_positions(sources, widths), sum(widths[j] for j in sources)

    @torch.no_grad()
    def set_channel_multiple(self, multiple: int) -> None:
        """Re-lay every layer at output widths rounded up to ``multiple`` (1: unpadded), keeping the function.

        In place: parameters are replaced by new ones (same device, dtype and ``requires_grad``)
        holding the real weights and exact zeros in the padding; batch-norm running statistics
        move with them (padding: mean 0, variance 1). Build any optimiser after calling this.
        """
        if not _positive_int(multiple):
            raise ValueError(f"channel_multiple must be a positive int (1: off), got {multiple!r}")
        multiple = int(multiple)
        old, new = self._widths, [padded_width(f, multiple) for f in self._filters]
        self.channel_multiple = multiple
        if new == old:
            return
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms, strict=True)):
            f = self._filters[i]
            in_old, _ = self._input_positions(i, old)
            in_new, in_total = self._input_positions(i, new)
            w = conv.weight
            weight = w.new_zeros((new[i], in_total, *w.shape[2:]))
            weight[:f, in_new.to(w.device)] = w[:f, in_old.to(w.device)]
            conv.weight = nn.Parameter(weight, requires_grad=w.requires_grad)
            conv.in_channels, conv.out_channels = in_total, new[i]
            for name, fill in (("weight", 0.0), ("bias", 0.0), ("running_mean", 0.0), ("running_var", 1.0)):
                t = getattr(norm, name)
                if t is not None:
                    q = t.new_full((new[i],), fill)
                    q[:f] = t[:f]
                    if isinstance(t, nn.Parameter):  # scale and shift; the running statistics are buffers
                        q = nn.Parameter(q, requires_grad=t.requires_grad)
                    setattr(norm, name, q)
            norm.num_features = new[i]
        w = self.classifier.weight
        feat_old = self._real_positions(self._unused, old).to(w.device)
        feat_new = self._real_positions(self._unused, new)
        weight = w.new_zeros((w.shape[0], sum(new[j] for j in self._unused)))
        weight[:, feat_new.to(w.device)] = w[:, feat_old]
        self.classifier.weight = nn.Parameter(weight, requires_grad=w.requires_grad)
        self.classifier.in_features = weight.shape[1]
        self._widths = new

    def real_part(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        """The real-channel part of ``tensor`` shaped like the parameter or buffer ``name`` (e.g. its gradient).

        Lets a padded model's weights, gradients or optimiser state be compared with an unpadded one's.
        """
        kind, _, rest = name.partition(".")
        if kind == "classifier":
            if rest == "weight":
                return tensor[:, self._real_positions(self._unused, self._widths).to(tensor.device)]
            return tensor
        index, _, field_name = rest.partition(".")
        i = int(index)
        f = self._filters[i]
        if kind == "convs":
            return tensor[:f, self._input_positions(i, self._widths)[0].to(tensor.device)]
        if kind == "norms" and field_name != "num_batches_tracked":
            return tensor[:f]
        return tensor

    @torch.no_grad()
    def padding_is_zero(self) -> bool:
        """Every padded weight, batch-norm scale and shift and classifier column is exactly zero."""
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms, strict=True)):
            f = self._filters[i]
            real_in, _ = self._input_positions(i, self._widths)
            pad_in = torch.ones(conv.weight.shape[1], dtype=torch.bool)
            pad_in[real_in] = False
            if conv.weight[f:].count_nonzero() or conv.weight[:f, pad_in.to(conv.weight.device)].count_nonzero():
                return False
            if norm.weight[f:].count_nonzero() or norm.bias[f:].count_nonzero():
                return False
        pad_feat = torch.ones(self.classifier.in_features, dtype=torch.bool)
        pad_feat[self._real_positions(self._unused, self._widths)] = False
        return not self.classifier.weight[:, pad_feat.to(self.classifier.weight.device)].count_nonzero()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        concat = concat_into_buffer if self.concat_buffer else concat_padded
        outs: list[torch.Tensor] = []
        for conv, norm, inputs, in_size, pooled in zip(
            self.convs, self.norms, self._inputs, self._in_sizes, self._pooled, strict=True
        ):
            h = concat([outs[j - 1] for j in inputs], in_size) if inputs else x
            h = F.relu(norm(conv(h)), inplace=True)  # batch norm backward needs its input, not its output
            if pooled:
                h = F.max_pool2d(h, kernel_size=2, stride=2, ceil_mode=True)
            outs.append(h)
        feats = concat([outs[i] for i in self._unused], self._final_size)
        return self.classifier(feats.mean(dim=(2, 3)))


def build_model(arch: CNNArchitecture, input_shape: Sequence[int], num_classes: int,
                bn_eps: float = BN_EPS, channel_multiple: int = 1, concat_buffer: bool = False) -> ChildCNN:
    """The child CNN for ``arch`` on images of ``input_shape = (C, H, W)`` with ``num_classes`` outputs.

    The options are :class:`ChildCNN`'s.
    """
    check_type(arch, CNNArchitecture, "build_model expects a CNNArchitecture")
    return ChildCNN(arch, input_shape, num_classes, bn_eps=bn_eps, channel_multiple=channel_multiple,
                    concat_buffer=concat_buffer)
