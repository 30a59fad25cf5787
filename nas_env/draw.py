"""Pictures of architectures: a CNN child's layers and edges, a recurrent cell's tree, an NB201 cell.

What each picture shows, and why networkx + matplotlib and not graphviz: docs/pictures.md. The
layout is computed here (a generic one turns a dense 15-layer child into a hairball). An NB201 cell
is its 4 nodes in a row, each edge an arrow labelled with its op; skipping edges bow above (0 -> 2,
0 -> 3) or below (1 -> 3), ``none`` edges are faint dotted lines, undecided ones dashed ``?``.
Figures use matplotlib's Agg canvas directly (no pyplot, no display, no global backend switch).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
from matplotlib import colormaps, rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
from matplotlib.path import Path as MPath
from PIL import Image

from nas_env.checks import check_int
from nas_env.spaces.base import SearchSpace
from nas_env.spaces.cnn import CNNArchitecture
from nas_env.spaces.nb201 import EDGES, NUM_NODES, OP_SYMBOLS, OPS, NB201Architecture, NB201SearchSpace
from nas_env.spaces.rnn_cell import CellArchitecture

# --- numbers of the pictures (sizes in layout units; one unit is UNIT_INCH on paper) -----------
DPI = 120  # pixels per inch of the returned array and of a saved PNG
UNIT_INCH = 0.5  # inches per layout unit: fixes the text size relative to the boxes
FONT_SIZE = 7.5  # points, text in the boxes
TITLE_SIZE = 9.0  # points
SAVE_FORMATS = ("png", "svg")
PNG_COLORS = 256  # palette size of a saved PNG
# CNN: one row per layer.
CNN_ROW = 1.0  # vertical distance between layer rows (two text lines a box)
CNN_BOX_W, CNN_BOX_H = 5.4, 0.74  # smallest layer box (two text lines); wider for longer text
CNN_LINE = 0.27  # height of each further text line (a box, and so every row, grows by it)
CNN_CHAR_W = 0.115  # layout units per character at FONT_SIZE, to size a box to its longest line
TITLE_CHAR_W = 0.15  # the same at TITLE_SIZE, bold
CNN_WRAP = 12  # input layers per text line
CNN_PORT = 0.14  # image/classifier curves leave below the box's middle and arrive above it
CNN_PORTS = (0.04, 0.30)  # skip ports: offsets from the box's middle, incoming above it, outgoing below
CNN_ARC_MIN, CNN_ARC_STEP = 0.5, 0.42  # control-point offset of a skip curve: MIN + STEP * (span - 2)
CNN_ARC_MAX = 6.0  # the longest skip's offset; deep children get a smaller STEP to stay within it
CNN_ARC_JITTER = 0.06  # extra offset per source layer, so equal-span skips from neighbours do not coincide
CNN_SIDE_MIN, CNN_SIDE_STEP = 0.45, 0.16  # the same for image and classifier curves on the left
# Cell: one row per tree level.
CELL_DX = 2.95  # horizontal distance between leaves
CELL_BOX_W, CELL_BOX_H = 2.65, 0.8
CELL_LEVEL = 2.1  # vertical distance between tree levels (room for the inject box between them)
# Colours.
BOX_FACE, BOX_EDGE = "#eef3fb", "#3b5b92"
POOL_FACE = "#fde9cf"  # layers followed by max-pooling
IO_FACE = "#e8e8e8"  # image, classifier, inputs and outputs
INJECT_FACE = "#e3f4e1"
CELL_FACE = "#f6e7f7"  # the node whose pre-activation is c_t
PENDING_FACE, PENDING_TEXT = "#f4f4f4", "#9a9a9a"  # undecided nodes of an unfinished episode
CHAIN_COLOR, IMAGE_COLOR, CLASSIFIER_COLOR = "#333333", "#7f7f7f", "#222222"
MEMORY_COLOR, CELL_OUT_COLOR = "#2e7d32", "#8e24aa"  # c_{t-1} into the inject box, c_t out of the cell index
SKIP_CMAP = "tab20"  # skip curves: one colour per source layer

# NAS-Bench-201 cell: one row of nodes.
NB201_DX = 3.4  # horizontal distance between nodes
NB201_BOX_W, NB201_BOX_H = 1.5, 0.7
NB201_BOW = {2: 1.9, 3: 3.5}  # control-point height of an edge by the nodes it spans (the curve peaks at 3/4)
NB201_OP_COLORS = {"skip_connect": "#2e7d32", "nor_conv_1x1": "#1565c0", "nor_conv_3x3": "#3b5b92",
                   "avg_pool_3x3": "#ef6c00", "none": "#b0b0b0"}

Drawable = CNNArchitecture | CellArchitecture | NB201Architecture
ArchLike = Drawable | str | Mapping[str, Any]
ARCH_TYPES = {"cnn": CNNArchitecture, "rnn_cell": CellArchitecture, "nb201": NB201Architecture}


# --- architectures from JSON ---------------------------------------------------------------------
def architecture_from_json(data: str | Mapping[str, Any]) -> Drawable:
    """The architecture a canonical JSON text (or its dict) describes, by its ``"type"`` field.

    results.jsonl and best.json store ``arch`` this way; ``"cnn"``, ``"rnn_cell"`` and ``"nb201"`` are known.
    """
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as e:
            raise ValueError(f"architecture JSON does not parse ({e}): {data!r:.80}") from e
    if not isinstance(data, Mapping):
        raise ValueError(f"an architecture is a JSON object with a 'type' field, got {type(data).__name__}: "
                         f"{data!r:.80}")
    kind = data.get("type")
    if kind not in ARCH_TYPES:
        raise ValueError(f"unknown architecture type {kind!r}; allowed: {sorted(ARCH_TYPES)}")
    return ARCH_TYPES[kind].from_dict(dict(data))


def _as_architecture(arch: ArchLike) -> Drawable:
    if isinstance(arch, Drawable):
        return arch
    if isinstance(arch, str | Mapping):
        return architecture_from_json(arch)
    raise ValueError(f"cannot draw {type(arch).__name__}: expected a CNNArchitecture, a CellArchitecture, or "
                     "their JSON text or dict")


# --- the graph -------------------------------------------------------------------------------------
def architecture_graph(arch: ArchLike) -> nx.DiGraph:
    """The architecture as a directed graph: what the picture shows, for code to inspect.

    CNN nodes: ``"image"``, ``1..N`` (layers) and ``"classifier"``; edge ``kind`` is ``"chain"``
    (to the next layer), ``"skip"``, ``"image"`` or ``"classifier"``. Cell nodes: ``"x_t"``,
    ``"h_prev"``, ``0..2*base-2`` (tree nodes), ``"inject"``, ``"c_prev"``, ``"h_t"`` and ``"c_t"``;
    the inject node sits on the injected node's output edge.
    """
    a = _as_architecture(arch)
    if isinstance(a, NB201Architecture):
        return _nb201_graph(a)
    return _cnn_graph(a) if isinstance(a, CNNArchitecture) else _cell_graph(a)


def _cnn_graph(arch: CNNArchitecture) -> nx.DiGraph:
    g = nx.DiGraph()
    g.add_node("image", label="image")
    for i, layer in enumerate(arch.layers, start=1):
        g.add_node(i, layer=layer, pooled=i in arch.pool_after)
        if not layer.inputs:
            g.add_edge("image", i, kind="chain" if i == 1 else "image")
        for j in layer.inputs:
            g.add_edge(j, i, kind="chain" if j == i - 1 else "skip")
    g.add_node("classifier", label="classifier")
    for j in arch.unused_outputs():
        g.add_edge(j, "classifier", kind="chain" if j == arch.num_layers else "classifier")
    return g


def _nb201_graph(arch: NB201Architecture) -> nx.DiGraph:
    """NAS-Bench-201 cell: nodes 0 (input) .. 3 (output), one edge per cell edge with its ``op`` (``none`` too)."""
    g = nx.DiGraph()
    g.add_nodes_from(range(NUM_NODES))
    for (s, t), op in zip(EDGES, arch.ops, strict=True):
        g.add_edge(s, t, op=op)
    return g


def _cell_graph(arch: CellArchitecture) -> nx.DiGraph:
    g = nx.DiGraph()
    g.add_nodes_from(["x_t", "h_prev", "c_prev", "inject", "h_t", "c_t"])
    for i, node in enumerate(arch.nodes):
        g.add_node(i, combine=node.combine, activation=node.activation)
    g.nodes["inject"].update(combine=arch.inject_combine, activation=arch.inject_activation)
    for i in range(arch.num_nodes):
        kids = arch.children(i)
        if kids is None:
            g.add_edge("x_t", i, kind="input")
            g.add_edge("h_prev", i, kind="input")
        for k in kids or ():
            g.add_edge("inject" if k == arch.inject_index else k, i, kind="tree")
    g.add_edge(arch.inject_index, "inject", kind="tree")
    g.add_edge("c_prev", "inject", kind="memory")
    g.add_edge("inject" if arch.inject_index == arch.root else arch.root, "h_t", kind="tree")
    g.add_edge(arch.cell_index, "c_t", kind="memory")  # its combination before the activation
    return g


# --- public drawing --------------------------------------------------------------------------------
def architecture_figure(arch: ArchLike, *, title: str | None = None, caption: str | None = None,
                        input_shape: Sequence[int] | None = None) -> Figure:
    """A matplotlib Figure (Agg canvas attached) of the architecture.

    ``title`` replaces the default title; ``caption`` adds a line under it (e.g. the score);
    ``input_shape`` ``(C, H, W)`` (CNN only) adds each layer's output shape.
    """
    a = _as_architecture(arch)
    if isinstance(a, CNNArchitecture):
        return _cnn_figure(a, title=title, caption=caption, input_shape=input_shape)
    if input_shape is not None:
        what = "an NB201 cell" if isinstance(a, NB201Architecture) else "a cell"
        raise ValueError(f"input_shape is for CNN architectures only, got {input_shape!r} for {what}")
    if isinstance(a, NB201Architecture):
        return _nb201_figure(list(a.ops), title=title, caption=caption)
    return _cell_figure(a, title=title, caption=caption)


def draw_architecture(arch: ArchLike, path: str | Path | None = None, *, title: str | None = None,
                      caption: str | None = None, input_shape: Sequence[int] | None = None,
                      dpi: int = DPI) -> np.ndarray:
    """Draw ``arch`` (an architecture, or its JSON text or dict) and return it as an ``H x W x 3`` uint8 array.

    With ``path``, also save it: ``.png`` or ``.svg`` by the extension. See :func:`architecture_figure`
    for the other options.
    """
    check_int("dpi", dpi, minimum=10, maximum=1000)
    out = _check_path(path)
    fig = architecture_figure(arch, title=title, caption=caption, input_shape=input_shape)
    return _finish(fig, out, dpi)


def draw_episode(space: SearchSpace, actions: Sequence[int], arch: ArchLike | None = None, *,
                 caption: str | None = None, dpi: int = DPI) -> np.ndarray:
    """The picture of an episode: the finished ``arch`` if given, else what ``actions`` decided so far.

    An unfinished CNN episode shows its fully emitted layers (the classifier's inputs are not
    known yet); an unfinished cell shows the decided nodes and greys out the rest. Other spaces
    get their decoded architecture (or the tokens so far) as text. This is ``NASEnv``'s
    ``render_mode="rgb_array"``.
    """
    check_int("dpi", dpi, minimum=10, maximum=1000)
    if arch is not None:
        return _finish(architecture_figure(arch, caption=caption), None, dpi)
    specs = tuple(space.tokens())
    n = len(actions)
    if n > len(specs):
        raise ValueError(f"{n} actions for a space of {len(specs)} tokens")
    if n == len(specs):  # every token given: the whole architecture
        full = space.decode(list(actions))
        fig = (architecture_figure(full, caption=caption) if isinstance(full, Drawable)
               else _text_figure(str(full), f"architecture ({type(full).__name__})", caption))
        return _finish(fig, None, dpi)
    head = f"step {n}/{len(specs)}"
    if isinstance(space, NB201SearchSpace):  # undecided edges drawn as such
        ops = [OPS[int(a)] for a in actions]
        return _finish(_nb201_figure([*ops, *[None] * (len(specs) - n)],
                                     title=f"{head}: {n} of {len(EDGES)} edges decided", caption=caption), None, dpi)
    try:  # undecided tokens at choice 0, never shown
        decoded: Any = space.decode([*actions, *([0] * (len(specs) - n))])
    except ValueError:  # a user's space may reject that filling: show its tokens as text
        decoded = None
    # a layer (or node) is decided once all its tokens are emitted
    layers = [s.layer for s in specs]
    decided = {layer for layer in set(layers) if layer > 0 and all(t < n for t, v in enumerate(layers) if v == layer)}
    if isinstance(decoded, CNNArchitecture):
        m = 0
        while m + 1 in decided:
            m += 1
        if m:  # the first m layers, with the pooling among them
            prefix = CNNArchitecture(decoded.layers[:m], tuple(j for j in decoded.pool_after if j <= m))
            fig = _cnn_figure(prefix, title=f"{head}: layers 1..{m} of {decoded.num_layers} emitted",
                              caption=caption, classifier=False)
        else:
            fig = _text_figure("no layer emitted yet", head, caption)
    elif isinstance(decoded, CellArchitecture):
        fig = _cell_figure(decoded, title=f"{head}: {len(decided)} of {decoded.num_nodes} nodes decided",
                           caption=caption, decided={v - 1 for v in decided}, show_memory=False)
    else:
        text = "\n".join(f"{s.name} (layer {s.layer}) = {s.choices[a]}" for s, a in zip(specs, actions, strict=False))
        fig = _text_figure(text or "no token emitted yet", head, caption)
    return _finish(fig, None, dpi)


# --- helpers ---------------------------------------------------------------------------------------
def _check_path(path: str | Path | None) -> Path | None:
    if path is None:
        return None
    out = Path(path)
    ext = out.suffix.lower().lstrip(".")
    if ext not in SAVE_FORMATS:
        raise ValueError(f"cannot save a picture as {str(path)!r}: the extension must be one of "
                         f"{['.' + f for f in SAVE_FORMATS]}")
    return out


def _finish(fig: Figure, path: Path | None, dpi: int) -> np.ndarray:
    """Rasterise ``fig`` to RGB and save it to ``path`` (format by extension) when given."""
    fig.set_dpi(dpi)
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix.lower() == ".svg":
            with rc_context({"svg.fonttype": "none"}):  # text stays text: searchable, editable, smaller
                fig.savefig(path, format="svg", facecolor="white")
        else:  # the returned pixels with a palette: line drawings need few colours, and the file gets ~3x smaller
            Image.fromarray(rgb).quantize(colors=PNG_COLORS).save(path, format="PNG", optimize=True)
    return rgb


def _new_figure(xlim: tuple[float, float], ylim: tuple[float, float], title: str, caption: str | None,
                note: str | None) -> tuple[Figure, Any]:
    """A figure spanning ``xlim`` x ``ylim`` at UNIT_INCH per unit, with the title lines at its top left.

    A picture too narrow for the title lines is widened instead of cutting them off.
    """
    body = max([len(line) for t in (caption, note) if t for line in t.splitlines()], default=0)
    left, right = xlim[0], max(xlim[1], xlim[0] + max(TITLE_CHAR_W * len(title), CNN_CHAR_W * body) + 0.6)
    w, h = (right - left) * UNIT_INCH, (ylim[1] - ylim[0]) * UNIT_INCH
    fig = Figure(figsize=(w, h), dpi=DPI, facecolor="white")
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set_xlim(left, right)
    ax.set_ylim(*ylim)
    ax.axis("off")
    x, y = left + 0.25, ylim[1] - 0.15
    ax.text(x, y, title, ha="left", va="top", fontsize=TITLE_SIZE, fontweight="bold")
    lines = [t for t in (caption, note) if t]
    if lines:
        ax.text(x, y - 0.42, "\n".join(lines), ha="left", va="top", fontsize=FONT_SIZE, color="#444444",
                linespacing=1.4)
    return fig, ax


def _box(ax: Any, x: float, y: float, w: float, h: float, text: str, face: str = BOX_FACE, edge: str = BOX_EDGE,
         color: str = "black", lw: float = 1.0, size: float = FONT_SIZE, ls: str = "-") -> None:
    """A rounded box centred at (x, y) with centred text."""
    ax.add_artist(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0,rounding_size=0.12",
                                facecolor=face, edgecolor=edge, linewidth=lw, linestyle=ls, zorder=3))
    ax.text(x, y, text, ha="center", va="center", fontsize=size, color=color, zorder=4, linespacing=1.35)


def _arrow(ax: Any, verts: Sequence[tuple[float, float]], color: str, lw: float = 1.0, ls: str = "-",
           alpha: float = 1.0, z: float = 2) -> None:
    """A straight (2 points) or cubic Bezier (4 points) arrow along ``verts``."""
    codes = [MPath.MOVETO, MPath.LINETO] if len(verts) == 2 else [MPath.MOVETO, *[MPath.CURVE4] * 3]
    ax.add_artist(FancyArrowPatch(path=MPath(verts, codes), arrowstyle="-|>", mutation_scale=7, color=color,
                                 linewidth=lw, linestyle=ls, alpha=alpha, zorder=z))


def _side_curve(x0: float, y0: float, x1: float, y1: float, bulge: float) -> list[tuple[float, float]]:
    """A cubic curve from (x0, y0) to (x1, y1) bowing sideways by ``bulge`` (negative: to the left).

    Both control points sit ``bulge`` beyond the outer end point, so the curve peaks 0.75 * bulge out.
    """
    xb = (max(x0, x1) if bulge >= 0 else min(x0, x1)) + bulge
    return [(x0, y0), (xb, y0), (xb, y1), (x1, y1)]


# --- CNN -------------------------------------------------------------------------------------------
def _cnn_figure(arch: CNNArchitecture, *, title: str | None, caption: str | None,
                input_shape: Sequence[int] | None = None, classifier: bool = True) -> Figure:
    n = arch.num_layers
    shapes = arch.shapes(input_shape) if input_shape is not None else None
    g = _cnn_graph(arch)
    if not classifier:
        g.remove_node("classifier")
    texts = {i: _layer_text(arch, i, shapes) for i in range(1, n + 1)}
    lines = max(t.count("\n") + 1 for t in texts.values())
    box_h = CNN_BOX_H + CNN_LINE * (lines - 2)
    row = CNN_ROW + CNN_LINE * (lines - 2)
    longest = max(len(line) for t in texts.values() for line in t.splitlines())
    box_w = max(CNN_BOX_W, CNN_CHAR_W * longest + 0.6)
    y_of = {"image": 0.0, **{i: -i * row for i in range(1, n + 1)}, "classifier": -(n + 1) * row}
    skips = [(u, v) for u, v, k in g.edges(data="kind") if k == "skip"]
    lefts = [(u, v, k) for u, v, k in g.edges(data="kind") if k in ("image", "classifier")]
    max_span = max([v - u for u, v in skips], default=2)
    step = min(CNN_ARC_STEP, (CNN_ARC_MAX - CNN_ARC_MIN) / max(1, max_span - 2))  # deep children stay in bounds

    def skip_bulge(u: int, v: int) -> float:
        return CNN_ARC_MIN + step * (v - u - 2) + CNN_ARC_JITTER * (u - 1) * step / CNN_ARC_STEP

    def side_bulge(u: Any, v: Any) -> float:
        span = (y_of[u] - y_of[v]) / row
        return -(CNN_SIDE_MIN + CNN_SIDE_STEP * (span - 1))

    right = box_w / 2 + max([0.75 * skip_bulge(u, v) for u, v in skips], default=0.0) + 0.4
    left = -box_w / 2 + min([0.75 * side_bulge(u, v) for u, v, _ in lefts], default=0.0) - 0.4
    pools = f", max-pooling after {', '.join(f'L{j}' for j in arch.pool_after)}" if arch.pool_after else ""
    title = title or f"CNN child: {n} layers{pools}"
    note = "skips coloured by source layer; left: edges from the image" + (" and to the classifier" if classifier
                                                                          else "")
    bottom = y_of["classifier" if classifier else n] - row * 0.6
    fig, ax = _new_figure((left, right), (bottom, 1.95), title, caption, note)  # 1.95: room for the title lines
    head = "image" + (f" {'x'.join(str(int(v)) for v in input_shape)}" if input_shape is not None else "")
    img_w, img_h = box_w, CNN_BOX_H * 0.8  # as wide as the layers: curves from its left edge clear them
    _box(ax, 0.0, y_of["image"], img_w, img_h, head, face=IO_FACE, edge="#555555")
    for i in range(1, n + 1):
        _box(ax, 0.0, y_of[i], box_w, box_h, texts[i], face=POOL_FACE if i in arch.pool_after else BOX_FACE)
    if classifier:
        feeds = _wrap_inputs(arch.unused_outputs(), CNN_WRAP)
        _box(ax, 0.0, y_of["classifier"], box_w, box_h,
             f"classifier: concat({feeds})\n-> global avg pool -> linear", face=IO_FACE, edge="#555555")

    colors = _skip_colors(n)
    half = box_h / 2
    out_port, in_port = _skip_ports(skips, box_h)
    for u, v, kind in g.edges(data="kind"):
        if kind == "chain":
            top_u = img_h / 2 if u == "image" else half
            _arrow(ax, [(0.0, y_of[u] - top_u), (0.0, y_of[v] + half)], CHAIN_COLOR, lw=1.2)
        elif kind == "skip":
            x = box_w / 2
            _arrow(ax, _side_curve(x, y_of[u] - out_port[u, v], x, y_of[v] + in_port[u, v], skip_bulge(u, v)),
                   colors[u], lw=1.15)
        else:  # image -> layer, layer -> classifier: on the left
            x_u = -img_w / 2 if u == "image" else -box_w / 2
            dy = CNN_PORT if kind == "classifier" else 0.0
            _arrow(ax, _side_curve(x_u, y_of[u] - dy, -box_w / 2, y_of[v] + dy, side_bulge(u, v)),
                   IMAGE_COLOR if kind == "image" else CLASSIFIER_COLOR, lw=1.0,
                   ls="--" if kind == "classifier" else "-")
    return fig


def _layer_text(arch: CNNArchitecture, i: int, shapes: Sequence[Any] | None) -> str:
    """A layer box's text: its conv and pooling, then its inputs (wrapped) and output shape."""
    layer = arch.layers[i - 1]
    first = (f"L{i}   {layer.filter_height}x{layer.filter_width} conv, stride {layer.stride_height}x"
             f"{layer.stride_width}, {layer.num_filters} filters" + (", max-pool 2x2" if i in arch.pool_after else ""))
    second = "<- " + (_wrap_inputs(layer.inputs, CNN_WRAP) if layer.inputs else "image")
    if shapes is not None:
        oh, ow = shapes[i - 1].out_size
        second += f"   out {layer.num_filters}x{oh}x{ow}"
    return first + "\n" + second


def _wrap_inputs(layers: Sequence[int], per_line: int) -> str:
    """Layer numbers with runs of three or more as ``L3-L6``, ``per_line`` items a line."""
    items: list[str] = []
    k = 0
    while k < len(layers):
        m = k
        while m + 1 < len(layers) and layers[m + 1] == layers[m] + 1:
            m += 1
        if m - k >= 2:
            items.append(f"L{layers[k]}-L{layers[m]}")
        else:
            items.extend(f"L{j}" for j in layers[k:m + 1])
        k = m + 1
    rows = [", ".join(items[r:r + per_line]) for r in range(0, len(items), per_line)]
    return ",\n".join(rows)


def _skip_ports(skips: Sequence[tuple[int, int]],
                box_h: float) -> tuple[dict[tuple[int, int], float], dict[tuple[int, int], float]]:
    """Where each skip leaves (below the box's middle) and arrives (above it), as offsets from the middle.

    A box's outgoing skips are spread with the longest nearest the middle, its incoming ones with the
    longest nearest the middle too, so nested curves at one box do not cross each other.
    """
    lo, hi = CNN_PORTS[0], CNN_PORTS[1] + (box_h - CNN_BOX_H) / 2
    out: dict[tuple[int, int], float] = {}
    inc: dict[tuple[int, int], float] = {}
    for ends, table in ((0, out), (1, inc)):
        by_box: dict[int, list[tuple[int, int]]] = {}
        for e in skips:
            by_box.setdefault(e[ends], []).append(e)
        for group in by_box.values():
            group.sort(key=lambda e: -abs(e[1] - e[0]))  # longest first: nearest the middle
            for k, e in enumerate(group):
                table[e] = lo + (hi - lo) * (k / (len(group) - 1) if len(group) > 1 else 0.5)
    return out, inc


def _skip_colors(n: int) -> dict[int, tuple[float, float, float, float]]:
    """One distinct colour per source layer (tab20's dark shades first, then its light ones)."""
    cmap = colormaps[SKIP_CMAP]
    order = [2 * k for k in range(10)] + [2 * k + 1 for k in range(10)]
    return {i: to_rgba(cmap(order[(i - 1) % 20])) for i in range(1, n + 1)}


# --- cell ------------------------------------------------------------------------------------------
def _cell_figure(arch: CellArchitecture, *, title: str | None, caption: str | None,
                 decided: set[int] | None = None, show_memory: bool = True) -> Figure:
    base, root = arch.base, arch.root
    pos: dict[Any, tuple[float, float]] = {}
    level: dict[int, int] = {}  # 0 for the leaves
    for i in range(arch.num_nodes):  # bottom-up numbering: children come first
        kids = arch.children(i)
        level[i] = 0 if kids is None else level[kids[0]] + 1
        x = i * CELL_DX if kids is None else (pos[kids[0]][0] + pos[kids[1]][0]) / 2
        pos[i] = (x, -(level[i] + 1) * CELL_LEVEL)
    pos["inputs"] = ((base - 1) * CELL_DX / 2, 0.0)
    pos["h_t"] = (pos[root][0], pos[root][1] - CELL_LEVEL)
    inj = arch.inject_index
    pos["inject"] = (pos[inj][0], pos[inj][1] - CELL_LEVEL / 2)
    title = title or f"recurrent cell: base {base}, {arch.num_nodes} nodes"
    note = None
    if show_memory:
        note = (f"cell inject: a{inj} <- {arch.inject_activation}({arch.inject_combine}(a{inj}, $c_{{t-1}}$));   "
                f"$c_t$ = a{arch.cell_index} before its activation;   $h_t$ = a{root}")
    left, right = -CELL_DX * 0.8, (base - 1) * CELL_DX + CELL_DX * 0.8
    fig, ax = _new_figure((left, right), (pos["h_t"][1] - 0.9, 2.3), title, caption, note)
    known = set(range(arch.num_nodes)) if decided is None else decided
    _box(ax, *pos["inputs"], (base - 1) * CELL_DX + CELL_BOX_W, 0.6,
         r"inputs: every leaf $i$ combines $W_i\,x_t$ and $U_i\,h_{t-1}$", face=IO_FACE, edge="#555555")
    for i, node in enumerate(arch.nodes):
        x, y = pos[i]
        if i in known:
            face = CELL_FACE if show_memory and i == arch.cell_index else BOX_FACE
            _box(ax, x, y, CELL_BOX_W, CELL_BOX_H, f"a{i}\n{node.combine} -> {node.activation}", face=face)
        else:
            _box(ax, x, y, CELL_BOX_W, CELL_BOX_H, f"a{i}\n?", face=PENDING_FACE, edge=PENDING_TEXT,
                 color=PENDING_TEXT, ls="--")
    half = CELL_BOX_H / 2

    def bottom(k: int) -> tuple[float, float]:
        """Where node ``k``'s output leaves: below its box, or below the inject box on its edge."""
        if show_memory and k == inj:
            return pos["inject"][0], pos["inject"][1] - CELL_BOX_H * 0.4
        return pos[k][0], pos[k][1] - half

    for i in range(base):  # inputs -> leaves
        x, y = pos[i]
        _arrow(ax, [(x, -0.3), (x, y + half)], IMAGE_COLOR, lw=0.9)
    for i in range(arch.num_nodes):
        for k in arch.children(i) or ():
            _arrow(ax, [bottom(k), (pos[i][0], pos[i][1] + half)], CHAIN_COLOR, lw=1.1)
    hx, hy = pos["h_t"]
    _box(ax, hx, hy, CELL_BOX_W * 0.7, 0.6, r"$h_t$", face=IO_FACE, edge="#555555", size=FONT_SIZE + 1)
    _arrow(ax, [bottom(root), (hx, hy + 0.3)], CHAIN_COLOR, lw=1.1)
    if show_memory:
        ix, iy = pos["inject"]
        _arrow(ax, [(ix, pos[inj][1] - half), (ix, iy + CELL_BOX_H * 0.4)], CHAIN_COLOR, lw=1.1)
        _box(ax, ix, iy, CELL_BOX_W * 1.05, CELL_BOX_H * 0.8,
             f"inject\n{arch.inject_combine} -> {arch.inject_activation}", face=INJECT_FACE, edge=MEMORY_COLOR)
        # c_{t-1} enters from the side away from the injected node's parent; c_t leaves the cell-index
        # node on that side too, or on the other when both are at one node
        side_in = _outward(arch, inj, pos)
        cx = ix + side_in * (CELL_BOX_W * 0.55 + 0.75)
        ax.text(cx + side_in * 0.1, iy, r"$c_{t-1}$", ha="left" if side_in > 0 else "right", va="center",
                fontsize=FONT_SIZE + 1.5, color=MEMORY_COLOR)
        _arrow(ax, [(cx, iy), (ix + side_in * CELL_BOX_W * 0.53, iy)], MEMORY_COLOR, lw=1.1)
        ci = arch.cell_index
        ox, oy = pos[ci]
        side_out = -_outward(arch, ci, pos) if ci == inj else _outward(arch, ci, pos)
        sx, sy = ox + side_out * CELL_BOX_W * 0.35, oy - half
        tx, ty = ox + side_out * (CELL_BOX_W * 0.5 + 0.35), oy - half - 0.55
        _arrow(ax, [(sx, sy), (tx, ty + 0.12)], CELL_OUT_COLOR, lw=1.1, ls="--")
        ax.text(tx, ty, r"$c_t$", ha="center", va="top", fontsize=FONT_SIZE + 1.5, color=CELL_OUT_COLOR)
    return fig


def _outward(arch: CellArchitecture, i: int, pos: Mapping[Any, tuple[float, float]]) -> int:
    """+1 (right) or -1 (left): the side of node ``i`` away from its parent (right for the root)."""
    for p in range(arch.base, arch.num_nodes):
        kids = arch.children(p)
        if kids is not None and i in kids:
            return 1 if pos[i][0] > pos[p][0] else -1
    return 1


# --- NAS-Bench-201 cell ----------------------------------------------------------------------------
def _nb201_figure(ops: Sequence[str | None], *, title: str | None, caption: str | None) -> Figure:
    """The 4-node cell in a row; ``ops`` per edge in NAS-Bench-201's order, None for an undecided edge."""
    title = title or "NAS-Bench-201 cell"
    note = None
    if all(op is not None for op in ops):
        note = NB201Architecture(tuple(ops)).to_arch_str()  # type: ignore[arg-type]
    xs = [k * NB201_DX for k in range(NUM_NODES)]
    ylim = (-NB201_BOW[2] * 0.75 - 0.9, NB201_BOW[3] * 0.75 + 2.0)
    fig, ax = _new_figure((-1.3, xs[-1] + 1.3), ylim, title, caption, note)
    names = {0: "input\nnode 0", NUM_NODES - 1: "output\nnode 3"}
    for k, x in enumerate(xs):
        face = IO_FACE if k in (0, NUM_NODES - 1) else BOX_FACE
        _box(ax, x, 0.0, NB201_BOX_W, NB201_BOX_H, names.get(k, f"node {k}"), face=face)
    half_w, half_h = NB201_BOX_W / 2, NB201_BOX_H / 2
    for (s, t), op in zip(EDGES, ops, strict=True):
        span = t - s
        color = PENDING_TEXT if op is None else NB201_OP_COLORS[op]
        ls = "--" if op is None else (":" if op == "none" else "-")
        label = "?" if op is None else OP_SYMBOLS[op]
        if span == 1:
            verts = [(xs[s] + half_w, 0.0), (xs[t] - half_w, 0.0)]
            ly = 0.22
        else:
            sign = -1.0 if (s, t) == (1, 3) else 1.0  # 1 -> 3 below, so it does not cross 0 -> 2
            h = sign * NB201_BOW[span]
            y0 = sign * half_h
            verts = [(xs[s], y0), (xs[s], y0 + h), (xs[t], y0 + h), (xs[t], y0)]
            ly = y0 + 0.75 * h + 0.2 * sign
        _arrow(ax, verts, color, lw=1.3, ls=ls, alpha=0.7 if op == "none" else 1.0)
        ax.text((xs[s] + xs[t]) / 2, ly, label, ha="center", va="center", fontsize=FONT_SIZE, color=color, zorder=5,
                bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none"})
    return fig


# --- text ------------------------------------------------------------------------------------------
def _text_figure(text: str, title: str, caption: str | None) -> Figure:
    """A card of monospace text: the fallback for architectures this module cannot draw as a graph."""
    lines = text.splitlines() or [""]
    width = max(8.0, 0.16 * max(len(line) for line in lines) + 1.0)
    fig, ax = _new_figure((0.0, width), (-(1.6 + 0.32 * len(lines)), 0.0), title, caption, None)
    ax.text(0.25, -1.3, "\n".join(lines), ha="left", va="top", fontsize=FONT_SIZE, family="monospace")
    return fig
