"""NAS-Bench-201's network: its parameter counts are the benchmark's model sizes, its shapes, its zero edges."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from nas_env.bench.nb201 import NUM_CELLS, load_table
from nas_env.models.nb201 import NB201Network, build_nb201_model, nb201_multiply_adds, nb201_num_params
from nas_env.spaces.nb201 import NB201Architecture

KNOWN_CELLS = {
    "best CIFAR-100 cell": "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|"
                           "nor_conv_3x3~2|",
    "ResNet-like cell": "|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|nor_conv_3x3~2|",
    "all none": "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|",
    "all conv3x3": "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|"
                   "nor_conv_3x3~2|",
    "pools and 1x1s": "|avg_pool_3x3~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|nor_conv_1x1~0|skip_connect~1|"
                      "avg_pool_3x3~2|",
}
NUM_CLASSES = {"cifar10": 10, "cifar100": 100}


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("dataset", list(NUM_CLASSES))
@pytest.mark.parametrize("name", list(KNOWN_CELLS))
def test_parameter_count_is_the_benchmarks_model_size(dataset: str, name: str) -> None:
    arch = NB201Architecture.from_arch_str(KNOWN_CELLS[name])
    model = build_nb201_model(arch, num_classes=NUM_CLASSES[dataset])  # NB201's C=16, N=5
    params = count(model)
    assert params == nb201_num_params(arch, num_classes=NUM_CLASSES[dataset])
    # the table's MB are millions of parameters, written to 6 decimals: exact to the parameter
    assert round(params / 1e6, 6) == pytest.approx(load_table(dataset).model_size[arch.index], abs=1e-9)


def test_the_count_matches_every_cell_whose_trained_seeds_agree() -> None:
    """95 cells' seeds were stored with a pruned twin's size (their sizes differ between seeds; one seed
    always has ours): the table keeps their median, so only those 95 differ."""
    table = load_table("cifar10")
    ours = np.array([nb201_num_params(NB201Architecture.from_index(i)) for i in range(NUM_CELLS)]) / 1e6
    assert int((np.abs(ours - table.model_size) > 1e-9).sum()) == 95


@pytest.mark.parametrize(("shape", "classes"), [((3, 32, 32), 10), ((1, 8, 8), 10), ((3, 16, 12), 100)])
def test_forward_shapes_and_multiply_adds(shape: tuple[int, int, int], classes: int) -> None:
    arch = NB201Architecture.from_arch_str(KNOWN_CELLS["pools and 1x1s"])
    model = build_nb201_model(arch, shape, classes, C=4, N=2)
    assert isinstance(model, NB201Network) and len(model.cells) == 3 * 2 + 2
    macs = 0

    def add(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal macs
        macs += output[0].numel() * (module.weight[0].numel() if isinstance(module, nn.Conv2d) else module.in_features)

    for m in model.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            m.register_forward_hook(add)
    assert model(torch.randn(1, *shape)).shape == (1, classes)
    assert macs == nb201_multiply_adds(arch, shape, classes, C=4, N=2)  # one image's convolutions and classifier
    assert model(torch.randn(5, *shape)).shape == (5, classes)
    assert count(model) == nb201_num_params(arch, shape, classes, C=4, N=2)


@pytest.mark.parametrize("key", ["000000", "000010", "010000"])
def test_a_cell_cut_off_by_none_gives_an_output_independent_of_the_input(key: str) -> None:
    arch = NB201Architecture.from_key(key)
    assert not arch.is_connected()
    torch.manual_seed(0)
    model = build_nb201_model(arch, (3, 16, 16), 10, C=4, N=1).eval()
    for p in model.parameters():  # arbitrary BN shifts, so the constant output is not just zero
        nn.init.normal_(p)
    a, b = model(torch.randn(3, 3, 16, 16)), model(100 * torch.randn(3, 3, 16, 16))
    assert torch.equal(a, b) and torch.equal(a[0], a[1])
    connected = build_nb201_model(NB201Architecture.from_key("000100"), (3, 16, 16), 10, C=4, N=1).eval()
    x, y = torch.randn(2, 3, 16, 16), torch.randn(2, 3, 16, 16)
    assert not torch.equal(connected(x)[0], connected(y)[0])  # 3<-0 skip: the input gets through


def test_none_edges_have_no_modules_and_ops_are_nb201s() -> None:
    model = build_nb201_model(NB201Architecture.from_arch_str(KNOWN_CELLS["ResNet-like cell"]), C=4, N=1)
    cell = model.cells[0]
    assert sorted(cell.edges) == ["0", "3", "5"]  # edges 1<-0, 3<-0, 3<-2 in NB201's order
    assert isinstance(cell.edges["3"], nn.Identity)
    relu, conv, bn = cell.edges["0"]
    assert isinstance(relu, nn.ReLU) and isinstance(bn, nn.BatchNorm2d)
    assert conv.kernel_size == (3, 3) and conv.bias is None
    pool = build_nb201_model(NB201Architecture.from_key("400000"), C=4, N=1).cells[0].edges["0"]
    assert isinstance(pool, nn.AvgPool2d) and pool.count_include_pad is False and pool.stride == 1
    reduction = model.cells[1]
    assert reduction.conv_a[1].stride == (2, 2) and not any(isinstance(m, nn.BatchNorm2d) for m in reduction.shortcut)


def test_bad_arguments_are_named() -> None:
    arch = NB201Architecture.from_key("333333")
    with pytest.raises(ValueError, match="multiples of 4"):
        build_nb201_model(arch, (3, 30, 30))
    with pytest.raises(ValueError, match="C must be an integer >= 1, got 0"):
        build_nb201_model(arch, C=0)
    with pytest.raises(ValueError, match=r"N must be an integer >= 1, got 2\.5"):
        build_nb201_model(arch, N=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_classes must be an integer >= 2"):
        build_nb201_model(arch, num_classes=1)
    with pytest.raises(ValueError, match="input_shape must be"):
        build_nb201_model(arch, (3, 32))
    with pytest.raises(TypeError, match="NB201Architecture"):
        build_nb201_model("333333")  # type: ignore[arg-type]
