"""NAS-Bench-201's cell space: edge order, arch strings both ways, the codec, the text and graph pictures."""

from __future__ import annotations

import pytest

from nas_env.draw import architecture_from_json, architecture_graph, draw_architecture
from nas_env.spaces.nb201 import EDGES, OPS, NB201Architecture, NB201SearchSpace, cell_text

BEST_CIFAR100 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
# NAS-Bench-201's ResNet cell: 3x3 convs 0 -> 1 -> 2, skips 0 -> 3 and 2 -> 3
RESNET = "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|"


def test_tokens_are_one_op_per_edge_in_nb201_string_order() -> None:
    specs = NB201SearchSpace().tokens()
    assert EDGES == ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))
    assert [s.layer for s in specs] == [1, 2, 2, 3, 3, 3]  # the target node of each edge
    assert all(s.name == "op" and s.choices == OPS for s in specs)
    assert OPS == ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")


def test_arch_strings_parse_and_print_in_edge_order() -> None:
    best = NB201Architecture.from_arch_str(BEST_CIFAR100)
    assert best.ops == ("nor_conv_3x3",) * 3 + ("skip_connect",) + ("nor_conv_3x3",) * 2
    assert best.key == "333133" and best.index == int("333133", 5)
    assert str(best) == best.to_arch_str() == BEST_CIFAR100
    resnet = NB201Architecture.from_arch_str(RESNET)
    assert resnet.key == "303101"  # 1<-0 conv, 2<-0 none, 2<-1 conv, 3<-0 skip, 3<-1 none, 3<-2 skip
    assert resnet.inputs(3) == [(0, "skip_connect"), (1, "none"), (2, "skip_connect")]
    assert NB201Architecture.from_key("303101") == resnet


def test_decode_encode_and_json_round_trip() -> None:
    space = NB201SearchSpace()
    arch = space.decode([3, 0, 3, 1, 0, 1])
    assert arch.to_arch_str() == RESNET and space.encode(arch) == [3, 0, 3, 1, 0, 1]
    assert NB201Architecture.from_json(arch.to_json()) == arch and hash(arch) == hash(NB201Architecture(arch.ops))
    assert architecture_from_json(arch.to_json()) == arch
    with pytest.raises(ValueError, match="action 5 at step 2"):
        space.decode([0, 0, 5, 0, 0, 0])
    with pytest.raises(TypeError, match="NB201Architecture"):
        space.encode("333133")  # type: ignore[arg-type]


NODE_3 = "+|skip_connect~0|none~1|skip_connect~2|"  # a good last group


@pytest.mark.parametrize(("text", "message"), [
    ("|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|", "3 '\\+'-separated node groups"),
    ("|nor_conv_3x3~0|+|none~0|" + NODE_3, "node 2 takes 2 inputs"),
    ("|nor_conv_3x3~1|+|none~0|nor_conv_3x3~1|" + NODE_3, "input 0 must be"),
    ("|conv_5x5~0|+|none~0|nor_conv_3x3~1|" + NODE_3, "'conv_5x5' is not one of"),
    ("nor_conv_3x3~0+|none~0|nor_conv_3x3~1|" + NODE_3, "must be written"),
])
def test_bad_arch_strings_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        NB201Architecture.from_arch_str(text)


def test_bad_cells_and_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="one op per each of its 6 edges"):
        NB201Architecture(("none",) * 5)
    with pytest.raises(ValueError, match=r"6 digits 0\.\.4"):
        NB201Architecture.from_key("333135")
    with pytest.raises(ValueError, match="not an NB201 cell"):
        NB201Architecture.from_dict({"type": "cnn", "layers": []})


def test_connectivity_follows_the_live_edges() -> None:
    assert not NB201Architecture.from_key("000000").is_connected()
    assert not NB201Architecture.from_key("333000").is_connected()  # nothing enters the output
    assert NB201Architecture.from_key("000100").is_connected()  # a skip straight to the output
    assert NB201Architecture.from_key("300010").is_connected()  # 0 -> 1 -> 3
    assert not NB201Architecture.from_key("300001").is_connected()  # node 2 has no input


def test_cell_text_and_graph() -> None:
    resnet = NB201Architecture.from_arch_str(RESNET)
    assert cell_text(resnet.ops).splitlines() == [
        "node 0 = input", "node 1 = conv3x3(n0)", "node 2 = conv3x3(n1)", "node 3 = skip(n0) + skip(n2)   (output)"]
    assert cell_text(["nor_conv_1x1"]).splitlines()[2] == "node 2 = ?(n0) + ?(n1)"
    assert cell_text(["none"] * 6).splitlines()[3] == "node 3 = 0   (output)"
    g = architecture_graph(resnet)
    assert sorted(g.edges) == sorted(EDGES) and g.edges[0, 3]["op"] == "skip_connect"
    picture = draw_architecture(resnet)
    assert picture.ndim == 3 and picture.shape[2] == 3 and picture.shape[1] > 300
