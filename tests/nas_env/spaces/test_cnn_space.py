"""Tests of the paper's CNN search space: token layout, codec, architecture values, JSON and cost counts."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence

import numpy as np
import pytest
import torch
from space_test_utils import random_actions, round_trips
from torch import nn

from nas_env.models.cnn import build_model
from nas_env.spaces.base import canonical_json
from nas_env.spaces.cnn import (
    FILTER_SIZES,
    NUM_FILTERS,
    STRIDES,
    CNNArchitecture,
    CNNSearchSpace,
    ConvLayer,
    cnn_space,
)

VARIANTS = ("v1", "v2", "v3")
CIFAR = (3, 32, 32)
DIGITS = (1, 8, 8)


def conv(fh: int = 3, fw: int = 3, nf: int = 8, inputs: tuple[int, ...] = (), sh: int = 1, sw: int = 1) -> ConvLayer:
    return ConvLayer(filter_height=fh, filter_width=fw, stride_height=sh, stride_width=sw, num_filters=nf,
                     inputs=inputs)


def chain(n: int, fh: int = 3, nf: int = 8) -> CNNArchitecture:
    return CNNArchitecture(tuple(conv(fh, fh, nf, (i - 1,) if i > 1 else ()) for i in range(1, n + 1)))


def expected_layer_names(i: int, strides: bool, skips: bool = True) -> list[str]:
    names = ["filter_height", "filter_width"]
    if strides:
        names += ["stride_height", "stride_width"]
    names.append("num_filters")
    if skips:
        names += ["skip"] * (i - 1)
    return names


# --- token layout ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("variant", "num_layers", "strides", "pools", "count"), [
    ("v1", 15, False, (), 15 * 3 + 15 * 14 // 2),
    ("v2", 20, True, (), 20 * 5 + 20 * 19 // 2),
    ("v3", 39, False, (13, 24), 39 * 3 + 39 * 38 // 2),
])
def test_preset_token_order_and_counts(variant: str, num_layers: int, strides: bool, pools: tuple[int, ...],
                                       count: int) -> None:
    space = cnn_space(variant)
    assert space.num_layers == num_layers and space.search_strides is strides and space.pool_after == pools
    tokens = space.tokens()
    assert len(tokens) == count
    pos = 0
    for i in range(1, num_layers + 1):
        names = expected_layer_names(i, strides)
        block = tokens[pos : pos + len(names)]
        assert [t.name for t in block] == names, f"layer {i}"
        assert all(t.layer == i for t in block)
        for t in block:
            expected_choices = {"filter_height": FILTER_SIZES, "filter_width": FILTER_SIZES, "stride_height": STRIDES,
                                "stride_width": STRIDES, "num_filters": NUM_FILTERS, "skip": (0, 1)}[t.name]
            assert t.choices == expected_choices
            assert t.num_choices == len(expected_choices)
        pos += len(names)
    assert pos == len(tokens)


def test_decode_maps_each_token_to_its_field() -> None:
    space = CNNSearchSpace(num_layers=3, search_strides=True)
    # layer 1: fh 5, fw 1, sh 2, sw 3, nf 64
    # layer 2: fh 7, fw 3, sh 1, sw 1, nf 24, skip bit (L1)=0
    # layer 3: fh 1, fw 7, sh 3, sw 2, nf 36, skip bits (L1, L2) = (1, 1)
    actions = [2, 0, 1, 2, 3,
               3, 1, 0, 0, 0, 0,
               0, 3, 2, 1, 1, 1, 1]
    arch = space.decode(actions)
    assert arch.layers == (
        ConvLayer(5, 1, 2, 3, 64, ()),
        ConvLayer(7, 3, 1, 1, 24, ()),
        ConvLayer(1, 7, 3, 2, 36, (1, 2)),
    )
    assert arch.unused_outputs() == [3]
    assert space.encode(arch) == actions


def test_skip_bits_select_exactly_the_marked_layers() -> None:
    space = CNNSearchSpace(num_layers=5)
    actions = []
    bits = {2: [1], 3: [0, 1], 4: [1, 0, 1], 5: [0, 0, 0, 0]}
    for i in range(1, 6):
        actions += [1, 1, 0, *bits.get(i, [])]
    arch = space.decode(actions)
    assert [layer.inputs for layer in arch.layers] == [(), (1,), (2,), (1, 3), ()]
    assert arch.unused_outputs() == [4, 5]


def test_without_skip_connections_there_are_no_skip_tokens_and_decode_gives_a_chain() -> None:
    space = cnn_space("v1", skip_connections=False)
    tokens = space.tokens()
    assert len(tokens) == 15 * 3
    assert all(t.name != "skip" for t in tokens)
    assert [t.name for t in tokens[:6]] == expected_layer_names(1, False, False) * 2
    rng = np.random.default_rng(7)
    for _ in range(10):
        arch = space.decode(random_actions(space, rng))
        assert arch.layers[0].inputs == ()
        assert all(arch.layers[i - 1].inputs == (i - 1,) for i in range(2, 16))
        assert arch.unused_outputs() == [15]
    strided = cnn_space("v2", skip_connections=False)
    assert len(strided.tokens()) == 20 * 5


def test_v3_decodes_with_its_pooling_layers() -> None:
    space = cnn_space("v3")
    arch = space.decode([0] * len(space.tokens()))
    assert arch.pool_after == (13, 24) and arch.num_layers == 39
    assert all(layer.inputs == () for layer in arch.layers)  # all skip bits 0: every layer reads the image
    assert arch.unused_outputs() == list(range(1, 40))


def test_v1_and_v3_decode_stride_one_everywhere() -> None:
    rng = np.random.default_rng(3)
    for variant in ("v1", "v3"):
        space = cnn_space(variant)
        arch = space.decode(random_actions(space, rng))
        assert all((layer.stride_height, layer.stride_width) == (1, 1) for layer in arch.layers)


# --- codec round trip and rejections --------------------------------------------------------------

SPACES = {
    "v1": cnn_space("v1"),
    "v2": cnn_space("v2"),
    "v3": cnn_space("v3"),
    "v2-no-skips": cnn_space("v2", skip_connections=False),
    "custom": CNNSearchSpace(num_layers=4, filter_heights=(2, 5), filter_widths=(1,), num_filters=(3, 9, 17),
                             stride_heights=(1, 4), stride_widths=(2,), search_strides=True, pool_after=(2,)),
}


@pytest.mark.parametrize("name", list(SPACES))
def test_decode_encode_round_trip(name: str) -> None:
    space = SPACES[name]
    seen = set()
    for _, arch in round_trips(space, 40, seed=1234):
        assert space.decode(space.encode(arch)) == arch
        assert arch.num_layers == space.num_layers and arch.pool_after == space.pool_after
        seen.add(arch)
    assert len(seen) > 30  # the draws really were different architectures


def test_decode_accepts_numpy_actions() -> None:
    space = SPACES["v2"]
    actions = random_actions(space, np.random.default_rng(5))
    assert space.decode(np.asarray(actions, dtype=np.int64)) == space.decode(actions)


@pytest.mark.parametrize(("space_name", "arch", "pattern"), [
    ("v1", chain(14), r"14 layers"),
    ("v1", chain(16), r"16 layers"),
    ("v1", CNNArchitecture((*chain(14, nf=24).layers, conv(2, 3, 24, (14,)))),
     r"layer 15: filter_height=2 is not one of \(1, 3, 5, 7\)"),
    ("v1", CNNArchitecture((*chain(14, nf=24).layers, conv(3, 4, 24, (14,)))),
     r"layer 15: filter_width=4 is not one of"),
    ("v1", CNNArchitecture((*chain(14, nf=24).layers, conv(3, 3, 32, (14,)))),
     r"layer 15: num_filters=32 is not one of \(24, 36, 48, 64\)"),
    ("v1", CNNArchitecture((conv(3, 3, 24, (), sh=2), *chain(15, nf=24).layers[1:])),
     r"layer 1: strides are not searched.*2x1"),
    ("v2", CNNArchitecture(tuple(conv(3, 3, 24, (i - 1,) if i > 1 else (), sw=4 if i == 3 else 1)
                                 for i in range(1, 21))), r"layer 3: stride_width=4 is not one of \(1, 2, 3\)"),
    ("v2-no-skips", CNNArchitecture(tuple(conv(3, 3, 24, (1,) if i == 3 else ((i - 1,) if i > 1 else ()))
                                          for i in range(1, 21))), r"layer 3: skip connections are off"),
    ("v2-no-skips", CNNArchitecture(tuple(conv(3, 3, 24, () if i == 5 else ((i - 1,) if i > 1 else ()))
                                          for i in range(1, 21))), r"layer 5: skip connections are off"),
    ("v3", chain(39, nf=24), r"pool_after=\(\).*pool_after=\(13, 24\)"),
])
def test_encode_rejects_architectures_the_space_cannot_emit(space_name: str, arch: CNNArchitecture,
                                                            pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        SPACES[space_name].encode(arch)


def test_encode_rejects_non_architectures() -> None:
    with pytest.raises(TypeError, match="CNNArchitecture"):
        SPACES["v1"].encode({"layers": []})  # type: ignore[arg-type]


def test_decode_rejects_wrong_length() -> None:
    space = SPACES["v1"]
    n = len(space.tokens())
    for bad in (n - 1, n + 1, 0):
        with pytest.raises(ValueError, match=rf"expected {n} actions, got {bad}"):
            space.decode([0] * bad)


@pytest.mark.parametrize(("step", "value", "allowed"), [(0, 4, "0..3"), (2, -1, "0..3"), (6, 2, "0..1"),
                                                        (149, 7, "0..1"), (5, 4, "0..3")])
def test_decode_rejects_out_of_range_actions(step: int, value: int, allowed: str) -> None:
    space = SPACES["v1"]
    actions = [0] * len(space.tokens())
    actions[step] = value
    spec = space.tokens()[step]
    with pytest.raises(ValueError, match=rf"action {value} at step {step} \({spec.name}, layer {spec.layer}\).*"
                                         rf"allowed {re.escape(allowed)}"):
        space.decode(actions)


def test_decode_rejects_a_stride_index_past_the_stride_choices() -> None:
    space = SPACES["v2"]
    actions = [0] * len(space.tokens())
    actions[2] = 3  # stride_height of layer 1 has 3 choices
    with pytest.raises(ValueError, match=r"step 2 \(stride_height, layer 1\).*allowed 0\.\.2"):
        space.decode(actions)


# --- architecture values ---------------------------------------------------------------------------


def test_architectures_are_immutable() -> None:
    arch = SPACES["v1"].decode([0] * len(SPACES["v1"].tokens()))
    with pytest.raises(dataclasses.FrozenInstanceError):
        arch.layers = ()  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        arch.pool_after = (1,)  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        arch.layers[0].num_filters = 99  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        SPACES["v1"].num_layers = 3  # type: ignore[misc]
    assert arch.layers[0].num_filters == 24


def test_equal_architectures_are_equal_hash_equally_and_dedupe() -> None:
    space = SPACES["v2"]
    rng = np.random.default_rng(11)
    a_actions, b_actions = random_actions(space, rng), random_actions(space, rng)
    a1, a2, b = space.decode(a_actions), space.decode(list(a_actions)), space.decode(b_actions)
    assert a1 is not a2 and a1 == a2 and hash(a1) == hash(a2)
    assert a1 != b
    a3 = CNNArchitecture.from_json(a1.to_json())
    assert a3 == a1 and hash(a3) == hash(a1)
    table = {a1: "first"}
    table[a2] = "second"
    table[b] = "other"
    assert len(table) == 2 and table[a3] == "second"
    assert len({a1, a2, a3, b}) == 2


def test_canonical_json_is_identical_for_equal_architectures_and_round_trips() -> None:
    rng = np.random.default_rng(21)
    for name in ("v1", "v2", "v3", "custom"):
        space = SPACES[name]
        actions = random_actions(space, rng)
        arch = space.decode(actions)
        text = arch.to_json()
        rebuilt = CNNArchitecture(tuple(dataclasses.replace(layer) for layer in arch.layers), tuple(arch.pool_after))
        assert rebuilt.to_json() == text
        assert CNNArchitecture.from_json(text) == arch
        assert CNNArchitecture.from_dict(json.loads(text)) == arch
        assert text == canonical_json(json.loads(text))  # sorted keys, compact separators
        assert " " not in text and "\n" not in text
        data = json.loads(text)
        assert list(data) == sorted(data) == ["layers", "pool_after", "type"]
        assert all(list(d) == sorted(d) for d in data["layers"])
        assert data["type"] == "cnn" and data["pool_after"] == list(space.pool_after)
        assert len(data["layers"]) == space.num_layers


def test_json_text_is_independent_of_dict_key_order() -> None:
    arch = CNNArchitecture((conv(3, 5, 8), conv(1, 7, 4, (1,), sh=2)), pool_after=(1,))
    shuffled = {"pool_after": [1], "layers": [dict(reversed(list(d.items()))) for d in arch.to_dict()["layers"]],
                "type": "cnn"}
    assert CNNArchitecture.from_dict(shuffled).to_json() == arch.to_json()


def test_from_dict_fills_default_strides_inputs_pool_and_type() -> None:
    arch = CNNArchitecture.from_dict({"layers": [{"filter_height": 3, "filter_width": 1, "num_filters": 5}]})
    assert arch == CNNArchitecture((ConvLayer(3, 1, 1, 1, 5, ()),), ())


def test_str_mentions_every_layer_pooling_inputs_and_classifier() -> None:
    space = SPACES["v3"]
    arch = space.decode(random_actions(space, np.random.default_rng(4)))
    text = str(arch)
    lines = text.splitlines()
    assert lines[0] == "CNN, 39 layers"
    for i, layer in enumerate(arch.layers, start=1):
        line = lines[i]
        assert line.strip().startswith(f"L{i}: {layer.filter_height}x{layer.filter_width} conv")
        assert f"{layer.num_filters} filters" in line
        assert ("maxpool" in line) == (i in (13, 24))
        src = ",".join(f"L{j}" for j in layer.inputs) or "image"
        assert line.split("<- ")[1].split(" ")[0] == src
    assert lines[-1].strip() == "classifier <- " + ",".join(f"L{i}" for i in arch.unused_outputs())


@pytest.mark.parametrize("text", [
    "{not json",
    "",
    '{"type": "rnn", "layers": [{"filter_height": 3, "filter_width": 3, "num_filters": 4}]}',
    '{"pool_after": []}',
    '{"layers": []}',
    '{"layers": null}',
    '{"layers": 5}',
    '{"layers": [1, 2]}',
    '{"layers": [{"filter_width": 3, "num_filters": 4}]}',
    '{"layers": [{"filter_height": 3, "filter_width": 3}]}',
    '{"layers": [{"filter_height": "3", "filter_width": 3, "num_filters": 4}]}',
    '{"layers": [{"filter_height": 3.0, "filter_width": 3, "num_filters": 4}]}',
    '{"layers": [{"filter_height": 3, "filter_width": 3, "num_filters": 4, "inputs": 1}]}',
    '{"layers": [{"filter_height": 3, "filter_width": 3, "num_filters": 4, "inputs": [1]}]}',
    '{"layers": [{"filter_height": 3, "filter_width": 3, "num_filters": 0}]}',
    '{"layers": [{"filter_height": 3, "filter_width": 3, "num_filters": 4}], "pool_after": [2]}',
])
def test_malformed_json_raises_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        CNNArchitecture.from_json(text)


@pytest.mark.parametrize("text", ["[]", "null", "3", '"cnn"'])
def test_non_object_json_raises_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        CNNArchitecture.from_json(text)


@pytest.mark.parametrize("pool", [1, None])
def test_non_list_pool_after_in_json_raises_value_error(pool: object) -> None:
    data = {"layers": [{"filter_height": 3, "filter_width": 3, "num_filters": 4}], "pool_after": pool}
    with pytest.raises(ValueError):
        CNNArchitecture.from_dict(data)


@pytest.mark.parametrize(("inputs", "pool"), [((1.0,), ()), ((True,), ()), (("1",), ()), ((1,), (1.5,)),
                                              ((1,), (True,))])
def test_non_int_inputs_or_pool_after_raise_value_error(inputs: tuple, pool: tuple) -> None:
    with pytest.raises(ValueError):
        CNNArchitecture((conv(), conv(inputs=inputs)), pool)


def test_bool_inputs_are_rejected_so_equal_architectures_give_identical_json() -> None:
    with pytest.raises(ValueError, match="inputs"):
        CNNArchitecture((conv(), conv(inputs=(True,))))  # type: ignore[arg-type]
    a = CNNArchitecture((conv(), conv(inputs=(np.int64(1),))))
    b = CNNArchitecture((conv(), conv(inputs=(1,))))
    assert a == b and hash(a) == hash(b) and a.to_json() == b.to_json()


@pytest.mark.parametrize(("layers", "pool", "pattern"), [
    ((), (), r"at least one layer"),
    ((conv(), conv(inputs=(2,))), (), r"layer 2: inputs must be .*1\.\.1, got \(2,\)"),
    ((conv(), conv(inputs=(3,))), (), r"layer 2: inputs .*got \(3,\)"),
    ((conv(inputs=(1,)),), (), r"layer 1: inputs .*got \(1,\)"),
    ((conv(), conv(), conv(inputs=(0,))), (), r"layer 3: inputs .*got \(0,\)"),
    ((conv(), conv(), conv(inputs=(2, 1))), (), r"layer 3: inputs .*got \(2, 1\)"),
    ((conv(), conv(), conv(inputs=(1, 1))), (), r"layer 3: inputs .*got \(1, 1\)"),
    ((conv(fh=0),), (), r"layer 1: filter_height must be a positive int, got 0"),
    ((conv(), conv(fw=-3, inputs=(1,))), (), r"layer 2: filter_width must be a positive int, got -3"),
    ((conv(nf=0),), (), r"num_filters must be a positive int, got 0"),
    ((conv(sh=0),), (), r"stride_height must be a positive int, got 0"),
    ((conv(sw=2.0),), (), r"stride_width must be a positive int, got 2\.0"),  # type: ignore[arg-type]
    ((conv(fh=True),), (), r"filter_height must be a positive int, got True"),
    ((conv(), conv()), (0,), r"pool_after must be sorted distinct layers 1\.\.2, got \(0,\)"),
    ((conv(), conv()), (3,), r"pool_after .*got \(3,\)"),
    ((conv(), conv()), (2, 1), r"pool_after .*got \(2, 1\)"),
    ((conv(), conv()), (1, 1), r"pool_after .*got \(1, 1\)"),
])
def test_invalid_architectures_raise_value_error(layers: tuple[ConvLayer, ...], pool: tuple[int, ...],
                                                 pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        CNNArchitecture(layers, pool)


# --- space configuration ---------------------------------------------------------------------------


def test_custom_choice_lists_drive_tokens_and_decode() -> None:
    space = CNNSearchSpace(num_layers=2, filter_heights=[2, 9], filter_widths=[4], num_filters=[6, 10, 12],
                           stride_heights=[5], stride_widths=[1, 2], search_strides=True)
    assert space.filter_heights == (2, 9) and isinstance(space.num_filters, tuple)
    hash(space)  # lists were turned into tuples, so the space stays hashable
    assert [(t.name, t.choices) for t in space.tokens()] == [
        ("filter_height", (2, 9)), ("filter_width", (4,)), ("stride_height", (5,)), ("stride_width", (1, 2)),
        ("num_filters", (6, 10, 12)),
        ("filter_height", (2, 9)), ("filter_width", (4,)), ("stride_height", (5,)), ("stride_width", (1, 2)),
        ("num_filters", (6, 10, 12)), ("skip", (0, 1)),
    ]
    arch = space.decode([1, 0, 0, 1, 2, 0, 0, 0, 0, 0, 1])
    assert arch.layers == (ConvLayer(9, 4, 5, 2, 12, ()), ConvLayer(2, 4, 5, 1, 6, (1,)))


@pytest.mark.parametrize(("kwargs", "pattern"), [
    ({"filter_heights": ()}, r"filter_heights must be a non-empty list"),
    ({"filter_widths": []}, r"filter_widths must be a non-empty list"),
    ({"num_filters": (24, 36, 24)}, r"num_filters has duplicates: \(24, 36, 24\)"),
    ({"stride_heights": (1, 1)}, r"stride_heights has duplicates"),
    ({"filter_heights": (0, 3)}, r"filter_heights .*positive ints, got \(0, 3\)"),
    ({"stride_widths": (1, 2.0)}, r"stride_widths .*got \(1, 2\.0\)"),
    ({"num_filters": (True, 8)}, r"num_filters .*got \(True, 8\)"),
    ({"num_layers": 0}, r"num_layers must be an integer >= 1, got 0"),
    ({"num_layers": -2}, r"num_layers must be an integer >= 1, got -2"),
    ({"num_layers": True}, r"num_layers must be an integer >= 1, got True"),
    ({"num_layers": 3.0}, r"num_layers must be an integer >= 1, got 3\.0"),
    ({"num_layers": 5, "pool_after": (6,)}, r"pool_after must list layers in 1\.\.5, got \(6,\)"),
    ({"num_layers": 5, "pool_after": (0, 2)}, r"pool_after .*got \(0, 2\)"),
    ({"num_layers": 5, "pool_after": (True,)}, r"pool_after .*got \(True,\)"),
])
def test_bad_space_configs_raise_value_error(kwargs: dict, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        CNNSearchSpace(**kwargs)


def test_space_pool_after_is_sorted_and_deduplicated() -> None:
    space = CNNSearchSpace(num_layers=6, pool_after=(5, 2, 5))
    assert space.pool_after == (2, 5)
    assert space.decode([0] * len(space.tokens())).pool_after == (2, 5)


def test_unknown_variant_lists_allowed_ones() -> None:
    with pytest.raises(ValueError, match=r"'v9'.*\['v1', 'v2', 'v3'\]"):
        cnn_space("v9")


def test_preset_overrides_and_depth_changes() -> None:
    assert cnn_space("v3", num_layers=20).pool_after == (13,)
    assert cnn_space("v3", num_layers=10).pool_after == ()
    assert cnn_space("v3", num_layers=30, pool_after=(2,)).pool_after == (2,)
    assert cnn_space("v1", num_filters=(8, 16)).num_filters == (8, 16)
    assert cnn_space("v2", search_strides=None).search_strides is True  # None means "keep the preset"
    shallow = cnn_space("v3").with_layers(20)
    assert shallow.num_layers == 20 and shallow.pool_after == (13,)
    assert len(shallow.tokens()) == 20 * 3 + 20 * 19 // 2
    with pytest.raises(ValueError, match="num_layers"):
        cnn_space("v1").with_layers(0)


# --- shapes, parameter and multiply-add counts -------------------------------------------------------

HAND_MADE = {
    "strides": CNNArchitecture((
        conv(3, 3, 16, (), sh=2, sw=2),
        conv(5, 1, 12, (1,), sh=3, sw=1),
        conv(1, 7, 10, (1, 2), sh=1, sw=2),
        conv(7, 7, 6, (), sh=3, sw=3),
    )),
    "pooling": CNNArchitecture((
        conv(3, 3, 8),
        conv(1, 1, 8, (1,)),
        conv(5, 3, 12, (1, 2)),
        conv(3, 3, 4, (3,)),
        conv(3, 3, 6, (1, 4)),
    ), pool_after=(1, 3, 4)),
    "multi-input": CNNArchitecture((
        conv(3, 3, 24),
        conv(1, 1, 36, ()),
        conv(3, 5, 48, (1, 2)),
        conv(7, 1, 64, (1, 2, 3)),
        conv(3, 3, 24, (2, 4)),
    )),
    "even-kernels": CNNArchitecture((
        conv(2, 4, 5),
        conv(4, 2, 7, (1,), sh=2, sw=1),
        conv(2, 2, 3, (1, 2)),
    ), pool_after=(2,)),
    "single": CNNArchitecture((conv(1, 1, 1),)),
}


def hooked_counts(model: nn.Module, input_shape: Sequence[int]) -> tuple[int, list[tuple[int, ...]],
                                                                          list[tuple[int, ...]]]:
    """Multiply-adds of one image counted from the modules actually run, plus conv input/output shapes."""
    total = 0
    in_shapes: list[tuple[int, ...]] = []
    out_shapes: list[tuple[int, ...]] = []

    def conv_hook(m: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        assert isinstance(m, nn.Conv2d)
        kh, kw = m.kernel_size
        total += out.numel() * kh * kw * m.in_channels // m.groups
        in_shapes.append(tuple(args[0].shape))
        out_shapes.append(tuple(out.shape))

    def linear_hook(m: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        assert isinstance(m, nn.Linear)
        total += args[0].shape[0] * m.in_features * m.out_features

    handles = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))
    model.eval()
    with torch.no_grad():
        model(torch.randn(1, *input_shape))
    for h in handles:
        h.remove()
    return total, in_shapes, out_shapes


def check_counts(arch: CNNArchitecture, input_shape: tuple[int, int, int], num_classes: int,
                 macs: bool = True) -> None:
    model = build_model(arch, input_shape, num_classes)
    assert arch.num_params(input_shape, num_classes) == sum(p.numel() for p in model.parameters())
    if not macs:
        return
    total, in_shapes, out_shapes = hooked_counts(model, input_shape)
    assert arch.multiply_adds(input_shape, num_classes) == total
    shapes = arch.shapes(input_shape)
    assert [s[1:] for s in in_shapes] == [(s.in_channels, *s.in_size) for s in shapes]
    assert [s[2:] for s in out_shapes] == [s.conv_size for s in shapes]


@pytest.mark.parametrize("variant", VARIANTS)
def test_num_params_matches_built_model_for_random_architectures(variant: str) -> None:
    space = cnn_space(variant)
    rng = np.random.default_rng(100 + VARIANTS.index(variant))
    for k in range(6):
        arch = space.decode(random_actions(space, rng))
        check_counts(arch, CIFAR if k % 2 == 0 else DIGITS, 10 if k < 4 else 7, macs=False)


@pytest.mark.parametrize("variant", VARIANTS)
def test_multiply_adds_match_forward_hooks_for_random_architectures(variant: str) -> None:
    space = cnn_space(variant)
    rng = np.random.default_rng(200 + VARIANTS.index(variant))
    for input_shape in (CIFAR, DIGITS, (2, 11, 7)):
        check_counts(space.decode(random_actions(space, rng)), input_shape, 10)


@pytest.mark.parametrize("name", list(HAND_MADE))
@pytest.mark.parametrize("input_shape", [CIFAR, DIGITS, (2, 9, 13), (1, 1, 1)])
def test_counts_match_built_model_for_hand_made_architectures(name: str, input_shape: tuple[int, int, int]) -> None:
    check_counts(HAND_MADE[name], input_shape, 10)


def test_num_params_by_hand() -> None:
    arch = CNNArchitecture((conv(3, 3, 4), conv(1, 5, 6, (1,)), conv(3, 1, 2, ())))
    # L1 3*3*3*4 + 2*4; L2 1*5*4*6 + 2*6; L3 3*1*3*2 + 2*2; linear (6+2)*10 + 10
    assert arch.num_params(CIFAR, 10) == (108 + 8) + (120 + 12) + (18 + 4) + 90
    # per image on 8x8: L1 108*64, L2 120*64, L3 18*64, linear 8*10
    assert arch.multiply_adds((3, 8, 8), 10) == (108 + 120 + 18) * 64 + 80


def test_shapes_follow_strides_padding_and_ceil_pooling() -> None:
    shapes = HAND_MADE["strides"].shapes(CIFAR)
    assert [s.out_size for s in shapes] == [(16, 16), (6, 16), (16, 8), (11, 11)]
    assert [s.in_channels for s in shapes] == [3, 16, 28, 3]
    assert shapes[2].in_size == (16, 16)  # L1 (16x16) and L2 (6x16) padded to the larger
    pooled = HAND_MADE["pooling"].shapes((1, 7, 9))
    assert [s.conv_size for s in pooled] == [(7, 9), (4, 5), (4, 5), (2, 3), (4, 5)]
    assert [s.out_size for s in pooled] == [(4, 5), (4, 5), (2, 3), (1, 2), (4, 5)]
    assert [s.in_size for s in pooled] == [(7, 9), (4, 5), (4, 5), (2, 3), (4, 5)]
    assert [s.in_channels for s in pooled] == [1, 8, 16, 12, 12]
    assert HAND_MADE["pooling"].unused_outputs() == [5]
    assert HAND_MADE["pooling"].classifier_features() == 6
    one = CNNArchitecture((conv(3, 3, 4, sh=3, sw=3), conv(3, 3, 4, (1,))), pool_after=(1, 2)).shapes((1, 3, 3))
    assert [s.out_size for s in one] == [(1, 1), (1, 1)]
