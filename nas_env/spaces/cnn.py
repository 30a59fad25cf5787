"""The paper's CNN search space (Zoph & Le 2017, section 3.1 and 3.3) as data.

Per layer the controller emits, in this order: filter height, filter width, stride
height and stride width (only when strides are searched), number of filters, then for
layer i >= 2 the i-1 anchor bits: bit j = 1 makes layer j's output an input of layer i.

An architecture stores each layer's input list explicitly, so the model builder and the
cost counter need no knowledge of the space that produced it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from nas_env.checks import check_int, check_type, is_int
from nas_env.spaces.base import JsonArchitecture, TokenSpec, check_actions, check_arch_dict, check_choice_list

# The paper's choice lists (section 4.1).
FILTER_SIZES = (1, 3, 5, 7)
STRIDES = (1, 2, 3)
NUM_FILTERS = (24, 36, 48, 64)
LAYER_INTS = ("filter_height", "filter_width", "stride_height", "stride_width", "num_filters")  # a layer's numbers


@dataclass(frozen=True)
class ConvLayer:
    """One child layer: conv (filter_height x filter_width, stride) -> batch norm -> ReLU."""

    filter_height: int
    filter_width: int
    stride_height: int
    stride_width: int
    num_filters: int
    inputs: tuple[int, ...] = ()  # 1-based indices of earlier layers; () means the image

    def __post_init__(self) -> None:
        # numpy ints become Python ints, so equal layers always serialise to the same JSON
        for name in LAYER_INTS:
            v = getattr(self, name)
            if is_int(v):
                object.__setattr__(self, name, int(v))
        object.__setattr__(self, "inputs", tuple(int(j) if is_int(j) else j for j in self.inputs))

    def describe(self) -> str:
        src = ",".join(f"L{j}" for j in self.inputs) or "image"
        return (
            f"{self.filter_height}x{self.filter_width} conv, stride {self.stride_height}x{self.stride_width}, "
            f"{self.num_filters} filters <- {src}"
        )


@dataclass(frozen=True)
class LayerShape:
    """Shapes at one layer for a given input image shape."""

    in_channels: int
    in_size: tuple[int, int]  # (H, W) after zero-padding all inputs to the largest
    conv_size: tuple[int, int]  # (H, W) of the conv output
    out_size: tuple[int, int]  # (H, W) after the optional max-pooling


def conv_out(size: int, kernel: int, stride: int) -> int:
    """Output length of a 'same'-padded conv (padding kernel // 2): ceil(size / stride) for odd kernels."""
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


def pool_out(size: int) -> int:
    """Output length of a 2x2 / stride-2 max-pool with ceil mode (a 1-pixel map stays 1 pixel)."""
    return max(1, math.ceil(size / 2))


def _sorted_distinct(values: tuple[Any, ...], lo: int, hi: int) -> bool:
    """Whether ``values`` are distinct ints in ``lo..hi``, in increasing order."""
    return all(is_int(j) and lo <= j <= hi for j in values) and list(values) == sorted(set(values))


@dataclass(frozen=True)
class CNNArchitecture(JsonArchitecture):
    """An immutable, hashable CNN child: its layers and the layers followed by max-pooling."""

    layers: tuple[ConvLayer, ...]
    pool_after: tuple[int, ...] = ()  # 1-based layer indices whose output is max-pooled 2x2

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))
        object.__setattr__(self, "pool_after", tuple(int(j) if is_int(j) else j for j in self.pool_after))
        if not self.layers:
            raise ValueError("an architecture needs at least one layer")
        for i, layer in enumerate(self.layers, start=1):
            for name in LAYER_INTS:
                v = getattr(layer, name)
                if not is_int(v) or v < 1:
                    raise ValueError(f"layer {i}: {name} must be a positive int, got {v!r}")
            if not isinstance(layer, ConvLayer):
                raise ValueError(f"layer {i} must be a ConvLayer, got {type(layer).__name__}")
            if not _sorted_distinct(layer.inputs, 1, i - 1):
                raise ValueError(f"layer {i}: inputs must be sorted distinct earlier layers 1..{i - 1}, "
                                 f"got {layer.inputs}")
        if not _sorted_distinct(self.pool_after, 1, len(self.layers)):
            raise ValueError(f"pool_after must be sorted distinct layers 1..{len(self.layers)}, got {self.pool_after}")

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def unused_outputs(self) -> list[int]:
        """1-based layers whose output feeds no later layer: they are concatenated for the classifier."""
        used = {j for layer in self.layers for j in layer.inputs}
        return [i for i in range(1, self.num_layers + 1) if i not in used]

    def shapes(self, input_shape: Sequence[int]) -> list[LayerShape]:
        """Per-layer channel counts and spatial sizes for an input ``(C, H, W)``, without building anything."""
        c0, h0, w0 = (int(v) for v in input_shape)
        out: list[LayerShape] = []
        for i, layer in enumerate(self.layers, start=1):
            if layer.inputs:
                srcs = [out[j - 1] for j in layer.inputs]
                in_ch = sum(self.layers[j - 1].num_filters for j in layer.inputs)
                in_size = (max(s.out_size[0] for s in srcs), max(s.out_size[1] for s in srcs))
            else:
                in_ch, in_size = c0, (h0, w0)
            conv = (
                conv_out(in_size[0], layer.filter_height, layer.stride_height),
                conv_out(in_size[1], layer.filter_width, layer.stride_width),
            )
            size = (pool_out(conv[0]), pool_out(conv[1])) if i in self.pool_after else conv
            out.append(LayerShape(in_ch, in_size, conv, size))
        return out

    def classifier_features(self) -> int:
        """Channels reaching the classifier: the sum over unused outputs."""
        return sum(self.layers[i - 1].num_filters for i in self.unused_outputs())

    def num_params(self, input_shape: Sequence[int], num_classes: int) -> int:
        """Trainable parameters of the built model (conv weights without bias, BN affine, linear)."""
        total = 0
        for layer, shape in zip(self.layers, self.shapes(input_shape), strict=True):
            total += layer.filter_height * layer.filter_width * shape.in_channels * layer.num_filters
            total += 2 * layer.num_filters
        feats = self.classifier_features()
        return total + feats * num_classes + num_classes

    def multiply_adds(self, input_shape: Sequence[int], num_classes: int) -> int:
        """Multiply-accumulate operations of one forward pass of one image (convs and the linear layer)."""
        total = 0
        for layer, shape in zip(self.layers, self.shapes(input_shape), strict=True):
            k = layer.filter_height * layer.filter_width * shape.in_channels * layer.num_filters
            total += k * shape.conv_size[0] * shape.conv_size[1]
        return total + self.classifier_features() * num_classes

    # --- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "cnn",
            "layers": [{**{name: getattr(l, name) for name in LAYER_INTS}, "inputs": list(l.inputs)}
                       for l in self.layers],
            "pool_after": list(self.pool_after),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CNNArchitecture:
        check_arch_dict(data, "cnn", "CNN")
        try:
            layers = tuple(ConvLayer(d["filter_height"], d["filter_width"], d.get("stride_height", 1),
                                     d.get("stride_width", 1), d["num_filters"], tuple(d.get("inputs", ())))
                           for d in data["layers"])
            pool_after = tuple(data.get("pool_after", ()))
        except (KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"malformed CNN architecture JSON: missing or bad field {e}") from e
        return cls(layers=layers, pool_after=pool_after)

    def __str__(self) -> str:
        lines = [f"CNN, {self.num_layers} layers"]
        for i, layer in enumerate(self.layers, start=1):
            pool = " + maxpool 2x2" if i in self.pool_after else ""
            lines.append(f"  L{i}: {layer.describe()}{pool}")
        lines.append(f"  classifier <- {','.join(f'L{i}' for i in self.unused_outputs())}")
        return "\n".join(lines)


@dataclass(frozen=True)
class CNNSearchSpace:
    """The paper's CNN space, configured entirely by data.

    ``tokens()`` lists every decision of one episode; ``decode``/``encode`` map between
    action indices and a :class:`CNNArchitecture`. With ``skip_connections=False`` there
    are no anchor tokens and layer i takes layer i-1; without searched strides every
    stride is 1.
    """

    num_layers: int = 15
    filter_heights: tuple[int, ...] = FILTER_SIZES
    filter_widths: tuple[int, ...] = FILTER_SIZES
    stride_heights: tuple[int, ...] = STRIDES
    stride_widths: tuple[int, ...] = STRIDES
    num_filters: tuple[int, ...] = NUM_FILTERS
    search_strides: bool = False
    skip_connections: bool = True
    pool_after: tuple[int, ...] = ()
    _tokens: tuple[TokenSpec, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "num_layers", check_int("num_layers", self.num_layers, minimum=1))
        for name in ("filter_heights", "filter_widths", "stride_heights", "stride_widths", "num_filters"):
            values = check_choice_list(name, getattr(self, name), "positive ints", lambda v: is_int(v) and v >= 1)
            object.__setattr__(self, name, values)
        pools = tuple(self.pool_after)
        if any(not is_int(j) or not 1 <= j <= self.num_layers for j in pools):
            raise ValueError(f"pool_after must list layers in 1..{self.num_layers}, got {self.pool_after!r}")
        object.__setattr__(self, "pool_after", tuple(sorted(set(pools))))
        object.__setattr__(self, "_tokens", tuple(self._build_tokens()))

    def _build_tokens(self) -> list[TokenSpec]:
        specs: list[TokenSpec] = []
        for i in range(1, self.num_layers + 1):
            specs.append(TokenSpec("filter_height", self.filter_heights, i))
            specs.append(TokenSpec("filter_width", self.filter_widths, i))
            if self.search_strides:
                specs.append(TokenSpec("stride_height", self.stride_heights, i))
                specs.append(TokenSpec("stride_width", self.stride_widths, i))
            specs.append(TokenSpec("num_filters", self.num_filters, i))
            if self.skip_connections:
                specs.extend(TokenSpec("skip", (0, 1), i) for _ in range(i - 1))
        return specs

    def tokens(self) -> tuple[TokenSpec, ...]:
        return self._tokens

    def decode(self, actions: Sequence[int]) -> CNNArchitecture:
        """Turn one choice index per token into an architecture."""
        check_actions(self._tokens, actions)
        it = iter(int(a) for a in actions)
        layers = []
        for i in range(1, self.num_layers + 1):
            fh = self.filter_heights[next(it)]
            fw = self.filter_widths[next(it)]
            sh, sw = (self.stride_heights[next(it)], self.stride_widths[next(it)]) if self.search_strides else (1, 1)
            nf = self.num_filters[next(it)]
            if self.skip_connections:
                inputs = tuple(j for j in range(1, i) if next(it) == 1)
            else:
                inputs = (i - 1,) if i > 1 else ()
            layers.append(ConvLayer(fh, fw, sh, sw, nf, inputs))
        return CNNArchitecture(tuple(layers), self.pool_after)

    def encode(self, arch: CNNArchitecture) -> list[int]:
        """The action indices that decode to ``arch``; ``ValueError`` if the space cannot emit it."""
        check_type(arch, CNNArchitecture, "expected a CNNArchitecture")
        if arch.num_layers != self.num_layers or arch.pool_after != self.pool_after:
            raise ValueError(
                f"architecture has {arch.num_layers} layers and pool_after={arch.pool_after}; this space has "
                f"{self.num_layers} layers and pool_after={self.pool_after}"
            )

        def index(choices: tuple[int, ...], value: int, what: str, i: int) -> int:
            if value not in choices:
                raise ValueError(f"layer {i}: {what}={value} is not one of {choices}")
            return choices.index(value)

        actions: list[int] = []
        for i, layer in enumerate(arch.layers, start=1):
            actions.append(index(self.filter_heights, layer.filter_height, "filter_height", i))
            actions.append(index(self.filter_widths, layer.filter_width, "filter_width", i))
            if self.search_strides:
                actions.append(index(self.stride_heights, layer.stride_height, "stride_height", i))
                actions.append(index(self.stride_widths, layer.stride_width, "stride_width", i))
            elif (layer.stride_height, layer.stride_width) != (1, 1):
                raise ValueError(f"layer {i}: strides are not searched in this space, got "
                                 f"{layer.stride_height}x{layer.stride_width}")
            actions.append(index(self.num_filters, layer.num_filters, "num_filters", i))
            if self.skip_connections:
                actions.extend(1 if j in layer.inputs else 0 for j in range(1, i))
            elif layer.inputs != ((i - 1,) if i > 1 else ()):
                raise ValueError(f"layer {i}: skip connections are off, so its input must be the previous layer")
        return actions

    def with_layers(self, num_layers: int) -> CNNSearchSpace:
        """The same space at another depth (pooling positions beyond it are dropped)."""
        return replace(self, num_layers=num_layers, pool_after=tuple(j for j in self.pool_after if j <= num_layers))


# The paper's three CIFAR-10 variants (Table 1): v1 no strides or pooling (15 layers), v2 strides
# searched (20 layers), v3 two max-pooling layers instead of strides (39 layers; the paper puts them
# at layers 13 and 24). Every value is a keyword override away from change.
VARIANTS: dict[str, dict[str, Any]] = {
    "v1": {"num_layers": 15, "search_strides": False, "pool_after": ()},
    "v2": {"num_layers": 20, "search_strides": True, "pool_after": ()},
    "v3": {"num_layers": 39, "search_strides": False, "pool_after": (13, 24)},
}


def cnn_space(variant: str = "v1", **overrides: Any) -> CNNSearchSpace:
    """One of the paper's variants (``v1``, ``v2``, ``v3``) with optional keyword overrides."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown CNN space variant {variant!r}; allowed: {sorted(VARIANTS)}")
    kwargs = {**VARIANTS[variant], **{k: v for k, v in overrides.items() if v is not None}}
    if "pool_after" in kwargs and "num_layers" in overrides and "pool_after" not in overrides:
        kwargs["pool_after"] = tuple(j for j in kwargs["pool_after"] if j <= kwargs["num_layers"])
    return CNNSearchSpace(**kwargs)
