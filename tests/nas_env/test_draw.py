"""Pictures of architectures: JSON dispatch, the graph, PNG/SVG files, their content, and the env's rgb_array render."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from PIL import Image

import nas_env  # noqa: F401  (registers the ids)
from nas_env.draw import architecture_from_json, architecture_graph, draw_architecture, draw_episode
from nas_env.spaces.cnn import CNNArchitecture, ConvLayer, cnn_space
from nas_env.spaces.rnn_cell import CellArchitecture, CellNode, RNNCellSearchSpace, lstm_like_cell


def random_child(variant: str, seed: int = 0, skip_p: float = 0.5) -> CNNArchitecture:
    """A child of a preset space: uniform choices, each skip bit set with probability ``skip_p``."""
    space = cnn_space(variant)
    rng = np.random.default_rng(seed)
    return space.decode([int(rng.random() < skip_p) if s.name == "skip" else int(rng.integers(s.num_choices))
                         for s in space.tokens()])


SMALL = CNNArchitecture((ConvLayer(3, 5, 1, 1, 24), ConvLayer(1, 1, 1, 1, 36, (1,)), ConvLayer(7, 3, 1, 1, 48, (1,)),
                         ConvLayer(5, 5, 1, 1, 64, (2, 3))))


def svg_text(arch: object, tmp_path: Path, **kwargs: object) -> str:
    path = tmp_path / "pic.svg"
    draw_architecture(arch, path, **kwargs)
    return path.read_text(encoding="utf-8")


# --- JSON and the graph ---------------------------------------------------------------------------
def test_architecture_from_json_dispatches_on_type() -> None:
    cell = lstm_like_cell()
    assert architecture_from_json(SMALL.to_json()) == SMALL
    assert architecture_from_json(SMALL.to_dict()) == SMALL
    assert architecture_from_json(cell.to_json()) == cell
    assert architecture_from_json(json.loads(cell.to_json())) == cell


@pytest.mark.parametrize(("bad", "match"), [
    ('{"type": "transformer"}', "unknown architecture type 'transformer'.*allowed"),
    ('{"layers": []}', "unknown architecture type None"),
    ("not json", "does not parse"),
    ("[1, 2]", "JSON object"),
    ('{"type": "cnn", "layers": [{"filter_height": 3}]}', "malformed CNN"),
])
def test_architecture_from_json_rejects_bad_input(bad: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        architecture_from_json(bad)


def test_cnn_graph_has_every_input_and_the_classifier_inputs() -> None:
    arch = random_child("v1", seed=3)
    g = architecture_graph(arch)
    for i, layer in enumerate(arch.layers, start=1):
        preds = set(g.predecessors(i))
        assert preds == (set(layer.inputs) or {"image"})
    assert set(g.predecessors("classifier")) == set(arch.unused_outputs())
    kinds = {(u, v): k for u, v, k in g.edges(data="kind")}
    assert all(k == "chain" for (u, v), k in kinds.items() if isinstance(u, int) and v == u + 1)
    assert all(k == "skip" for (u, v), k in kinds.items() if isinstance(u, int) and isinstance(v, int) and v > u + 1)
    assert g.number_of_edges() == sum(max(1, len(l.inputs)) for l in arch.layers) + len(arch.unused_outputs())


def test_cell_graph_is_the_tree_with_inject_and_cell_index() -> None:
    cell = lstm_like_cell()  # inject at node 8, c_t from node 12
    g = architecture_graph(cell)
    assert set(g.predecessors(0)) == {"x_t", "h_prev"}
    assert set(g.predecessors(12)) == {"inject", 9}  # node 8's output passes the inject box
    assert set(g.predecessors("inject")) == {8, "c_prev"}
    assert set(g.predecessors("c_t")) == {12}
    assert set(g.predecessors("h_t")) == {14}
    assert g.nodes[9]["combine"] == "elem_mult"


# --- pictures ------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["v1", "v2", "v3"])
def test_draw_cnn_returns_an_rgb_picture(variant: str) -> None:
    arch = random_child(variant, skip_p=0.2)
    img = draw_architecture(arch)
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    assert img.shape[0] > 40 * arch.num_layers  # a row per layer
    assert (img < 250).any(axis=2).mean() > 0.05  # boxes, text and edges, not a blank page
    vivid = img.max(axis=2).astype(int) - img.min(axis=2) > 80  # saturated pixels: the coloured skip curves
    assert vivid.sum() > 50 * sum(len(layer.inputs) > 1 for layer in arch.layers)


def test_svg_shows_filters_strides_inputs_pooling_and_classifier(tmp_path: Path) -> None:
    v2 = random_child("v2", seed=1, skip_p=0.2)
    text = svg_text(v2, tmp_path, input_shape=(3, 32, 32))
    for i, layer in enumerate(v2.layers, start=1):
        assert (f"L{i}   {layer.filter_height}x{layer.filter_width} conv, stride {layer.stride_height}x"
                f"{layer.stride_width}, {layer.num_filters} filters") in text
    assert "out 36x" in text or "out 24x" in text or "out 48x" in text or "out 64x" in text
    v3 = random_child("v3", seed=2, skip_p=0.1)
    text = svg_text(v3, tmp_path)
    assert text.count("max-pool 2x2") == 2 and "max-pooling after L13, L24" in text
    text = svg_text(SMALL, tmp_path)
    assert "&lt;- L2, L3" in text and "&lt;- image" in text
    assert "classifier: concat(L4)" in text
    gap = CNNArchitecture((ConvLayer(3, 3, 1, 1, 24), ConvLayer(3, 3, 1, 1, 24), ConvLayer(3, 3, 1, 1, 24, (1,))))
    assert "classifier: concat(L2, L3)" in svg_text(gap, tmp_path)


def test_input_lists_compress_runs_and_wrap(tmp_path: Path) -> None:
    chain = [ConvLayer(3, 3, 1, 1, 24, (i - 1,) if i > 1 else ()) for i in range(1, 31)]
    dense = CNNArchitecture((*chain[:20], ConvLayer(3, 3, 1, 1, 24, tuple(range(1, 21)))))
    assert "&lt;- L1-L20" in svg_text(dense, tmp_path)
    odd = CNNArchitecture((*chain, ConvLayer(3, 3, 1, 1, 24, tuple(range(1, 31, 2)))))
    text = svg_text(odd, tmp_path)
    assert "&lt;- L1, L3, L5" in text and "L23,</text>" in text and ">L25, L27, L29</text>" in text  # 12 a line


def test_cell_picture_shows_nodes_inject_and_cell_index(tmp_path: Path) -> None:
    cell = lstm_like_cell()
    img = draw_architecture(cell)
    assert img.dtype == np.uint8 and img.shape[2] == 3 and img.shape[1] > img.shape[0]  # a wide tree
    text = svg_text(cell, tmp_path)
    assert all(f">a{i}</text>" in text for i in range(cell.num_nodes))
    assert text.count("elem_mult -&gt; identity") == 3  # nodes 9 and 14, and the inject box
    assert "add -&gt; sigmoid" in text and "inject" in text and "a12 before its activation" in text


def test_cell_picture_counts_match_the_nodes(tmp_path: Path) -> None:
    nodes = tuple(CellNode("add", "relu") for _ in range(7))
    cell = CellArchitecture(nodes, "elem_mult", "tanh", inject_index=6, cell_index=0)
    text = svg_text(cell, tmp_path)
    assert text.count("add -&gt; relu") == 7 and text.count("elem_mult -&gt; tanh") == 1
    assert "a0 before its activation" in text and "a6 &lt;- tanh(elem_mult(a6," in text


def test_files_by_extension_match_the_array(tmp_path: Path) -> None:
    png, svg = tmp_path / "sub" / "best.png", tmp_path / "best.svg"
    img = draw_architecture(SMALL.to_json(), png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    back = np.asarray(Image.open(png).convert("RGB"))
    assert back.shape == img.shape and np.abs(back.astype(int) - img).mean() < 2  # the same pixels, palette aside
    draw_architecture(SMALL, svg)
    assert svg.read_text(encoding="utf-8").lstrip().startswith("<?xml") and "<svg" in svg.read_text(encoding="utf-8")
    with pytest.raises(ValueError, match=r"extension must be one of \['.png', '.svg'\]"):
        draw_architecture(SMALL, tmp_path / "best.jpg")
    with pytest.raises(ValueError, match="dpi must be an int"):
        draw_architecture(SMALL, dpi=0)
    with pytest.raises(ValueError, match="cannot draw int"):
        draw_architecture(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="input_shape is for CNN"):
        draw_architecture(lstm_like_cell(), input_shape=(3, 32, 32))


def test_different_architectures_give_different_pictures() -> None:
    a, b = random_child("v1", seed=0, skip_p=0.3), random_child("v1", seed=1, skip_p=0.3)
    pa, pb = draw_architecture(a), draw_architecture(b)
    assert pa.shape != pb.shape or not np.array_equal(pa, pb)
    np.testing.assert_array_equal(pa, draw_architecture(a))  # deterministic
    one_filter = CNNArchitecture((*SMALL.layers[:3], ConvLayer(5, 5, 1, 1, 36, (2, 3))))  # 64 -> 36 filters
    p1, p2 = draw_architecture(SMALL), draw_architecture(one_filter)
    assert p1.shape == p2.shape and not np.array_equal(p1, p2)
    c1 = lstm_like_cell()
    c2 = CellArchitecture(c1.nodes, c1.inject_combine, c1.inject_activation, c1.inject_index, cell_index=13)
    assert not np.array_equal(draw_architecture(c1), draw_architecture(c2))


def test_draw_episode_shows_the_prefix(tmp_path: Path) -> None:
    space = cnn_space("v1", num_layers=4)
    arch = random_child("v1")
    actions = space.encode(CNNArchitecture(arch.layers[:4]))
    empty = draw_episode(space, [])
    two = draw_episode(space, actions[:7])  # layer 1 (3 tokens) and layer 2 (4 tokens)
    two_and_a_bit = draw_episode(space, actions[:9])  # layer 3 half emitted: not drawn yet
    assert two.shape[0] == two_and_a_bit.shape[0]  # the same two layers
    assert two.shape[0] < draw_episode(space, actions).shape[0]
    assert empty.shape != two.shape
    np.testing.assert_array_equal(draw_episode(space, actions), draw_architecture(space.decode(actions)))
    cells = RNNCellSearchSpace()
    acts = cells.encode(lstm_like_cell())
    partial = draw_episode(cells, acts[:6])  # three nodes decided, the rest greyed
    assert partial.dtype == np.uint8 and partial.shape[2] == 3
    assert not np.array_equal(partial, draw_episode(cells, acts[:8]))
    with pytest.raises(ValueError, match="actions for a space of"):
        draw_episode(space, [0] * 100)


# --- the env ---------------------------------------------------------------------------------------
def test_env_renders_rgb_array_before_during_and_after_an_episode() -> None:
    env = gym.make("NASRL-Digits-v0", evaluator="synthetic", render_mode="rgb_array")
    assert env.metadata["render_modes"] == ["ansi", "human", "rgb_array"]
    base = env.unwrapped
    frames = [base.render()]  # before reset (the order-enforcing wrapper forbids it): nothing emitted
    _, info = env.reset(seed=0)
    frames.append(env.render())
    rng = np.random.default_rng(0)
    done = False
    while not done:
        action = int(rng.choice(np.flatnonzero(info["action_mask"])))
        _, _, done, _, info = env.step(action)
        if info["step"] == 7:  # two layers emitted
            frames.append(env.render())
    final = env.render()
    for f in [*frames, final]:
        assert isinstance(f, np.ndarray) and f.dtype == np.uint8 and f.ndim == 3 and f.shape[2] == 3
    assert frames[2].shape[0] < final.shape[0]  # two layers, then four and the classifier
    expected = draw_architecture(info["arch"], caption=f"status ok, val_acc {info['val_acc']:.4f}")
    np.testing.assert_array_equal(final, expected)
    assert base.space.decode(base._actions) == architecture_from_json(info["arch"])
    env.reset(seed=1)
    assert env.render().shape != final.shape  # a new episode starts from an empty picture


def test_env_rgb_array_passes_gymnasium_render_check_and_ansi_still_works() -> None:
    check_env(gym.make("NASRL-Digits-v0", evaluator="synthetic", render_mode="rgb_array").unwrapped)
    env = gym.make("NASRL-Digits-v0", evaluator="synthetic", render_mode="ansi")
    env.reset(seed=0)
    assert isinstance(env.render(), str)


def test_env_render_after_an_invalid_action_and_for_the_ptb_cell() -> None:
    env = gym.make("NASRL-Digits-v0", evaluator="synthetic", render_mode="rgb_array")
    env.reset(seed=0)
    for _ in range(6):  # layer 1 (3 tokens), then layer 2's filter height, width and count
        env.step(0)
    _, _, done, _, info = env.step(3)  # layer 2's skip token has 2 choices: invalid, the episode ends
    assert done and info["status"] == "invalid_action"
    assert env.render().dtype == np.uint8
    ptb = gym.make("NASRL-PTB-v0", evaluator="synthetic", render_mode="rgb_array")
    _, info = ptb.reset(seed=0)
    mid = None
    done = False
    while not done:
        _, _, done, _, info = ptb.step(0)
        if info["step"] == 10:
            mid = ptb.render()
    final = ptb.render()
    assert mid is not None and mid.shape[2] == 3 and final.shape[2] == 3 and not np.array_equal(mid, final)
    assert isinstance(architecture_from_json(info["arch"]), CellArchitecture)
