"""The recurrent-cell space: tokens, tree shape, codec, JSON, readable text, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from space_test_utils import round_trips

from nas_env.spaces.base import SearchSpace
from nas_env.spaces.rnn_cell import (
    ACTIVATIONS,
    COMBINATIONS,
    CellArchitecture,
    CellNode,
    RNNCellSearchSpace,
    children,
    lstm_like_cell,
)


def test_paper_space_tokens() -> None:
    space = RNNCellSearchSpace()
    assert isinstance(space, SearchSpace)
    specs = space.tokens()
    assert len(specs) == 2 * 15 + 4
    assert [s.name for s in specs[:2]] == ["combine", "activation"] and specs[0].layer == 1 and specs[29].layer == 15
    assert specs[0].choices == COMBINATIONS == ("add", "elem_mult")
    assert specs[1].choices == ACTIVATIONS == ("identity", "tanh", "sigmoid", "relu")
    assert [s.name for s in specs[-4:]] == ["inject_combine", "inject_activation", "inject_index", "cell_index"]
    assert specs[-1].choices == tuple(range(15)) and specs[-2].choices == tuple(range(15))


def test_tree_shape_base_8_4_2_1() -> None:
    assert [children(8, i) for i in (0, 7, 8, 11, 12, 13, 14)] == [None, None, (0, 1), (6, 7), (8, 9), (10, 11),
                                                                 (12, 13)]
    assert children(2, 2) == (0, 1)
    # every non-root node feeds exactly one parent
    fed = sorted(j for i in range(15) if (kids := children(8, i)) for j in kids)
    assert fed == list(range(14))


def test_configurable_base_and_choices() -> None:
    space = RNNCellSearchSpace(base=2, combinations=("add",), activations=("tanh", "relu"))
    specs = space.tokens()
    assert len(specs) == 2 * 3 + 4 and specs[0].choices == ("add",) and specs[-1].choices == (0, 1, 2)
    arch = space.decode([0, 1] * 3 + [0, 0, 2, 1])
    assert arch.base == 2 and arch.nodes[2] == CellNode("add", "relu") and arch.inject_index == 2


def test_decode_encode_json_round_trip_hashable() -> None:
    space = RNNCellSearchSpace()
    samples = list(round_trips(space, 100, seed=0))
    for _, arch in samples:
        again = CellArchitecture.from_json(arch.to_json())
        assert again == arch and hash(again) == hash(arch) and again.to_json() == arch.to_json()
    assert len({arch for _, arch in samples}) == 100
    actions, arch = samples[-1]
    assert space.decode(np.array(actions, dtype=np.int64)) == arch  # numpy ints decode to the same value
    assert space.decode(np.array(actions, dtype=np.int64)).to_json() == arch.to_json()


def test_str_is_readable() -> None:
    text = str(lstm_like_cell())
    assert text.splitlines()[0] == "RNN cell, base 8 (15 nodes): h_t = a14, c_t = a12 before its activation"
    assert "a0  = W0 x_t + U0 h_{t-1}" in text and "a2  = sigmoid(W2 x_t + U2 h_{t-1})" in text
    assert "a8  <- a8 * c_{t-1}   (cell inject)" in text and "a14 = a12 * a13" in text


def test_lstm_like_cell_is_in_the_paper_space() -> None:
    arch = lstm_like_cell()
    space = RNNCellSearchSpace()
    assert space.decode(space.encode(arch)) == arch


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"base": 6}, r"base must be a power of two >= 2 .*got 6"),
        ({"base": 1}, r"base must be a power of two >= 2 .*got 1"),
        ({"combinations": ("add", "max")}, r"combinations: 'max' is not allowed; allowed: \('add', 'elem_mult'\)"),
        ({"activations": ()}, r"activations must be a non-empty list"),
        ({"activations": "tanh"}, r"activations must be a list .* got the string 'tanh'"),
        ({"activations": ("tanh", "tanh")}, r"activations has duplicates"),
    ],
)
def test_bad_space_options(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RNNCellSearchSpace(**kwargs)  # type: ignore[arg-type]


def test_bad_actions_and_architectures() -> None:
    space = RNNCellSearchSpace()
    good = [0] * len(space.tokens())
    with pytest.raises(ValueError, match=r"expected 34 actions, got 3"):
        space.decode([0, 0, 0])
    with pytest.raises(ValueError, match=r"action 15 at step 33 \(cell_index.*allowed 0\.\.14"):
        space.decode([*good[:-1], 15])
    with pytest.raises(ValueError, match=r"combine must be one of \('add', 'elem_mult'\), got 'max'"):
        CellNode("max", "tanh")
    nodes = lstm_like_cell().nodes
    with pytest.raises(ValueError, match=r"inject_index must be a node index in 0\.\.14, got 15"):
        CellArchitecture(nodes, "add", "tanh", 15, 0)
    with pytest.raises(ValueError, match=r"2 \* base - 1 nodes .* got 4 nodes"):
        CellArchitecture(nodes[:4], "add", "tanh", 0, 0)
    with pytest.raises(ValueError, match=r"not a recurrent-cell architecture: type='cnn'"):
        CellArchitecture.from_dict({"type": "cnn", "layers": []})
    with pytest.raises(ValueError, match=r"malformed cell architecture JSON"):
        CellArchitecture.from_dict({"nodes": []})
    small = RNNCellSearchSpace(activations=("tanh",))
    with pytest.raises(ValueError, match=r"node 0: activation='identity' is not one of this space's \('tanh',\)"):
        small.encode(lstm_like_cell())
    with pytest.raises(ValueError, match=r"architecture has base 8; this space has base 4"):
        RNNCellSearchSpace(base=4).encode(lstm_like_cell())
