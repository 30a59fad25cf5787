"""The paper's recurrent-cell search space (Zoph & Le 2017, section 3.4 and Appendix A) as data.

A cell is a full binary tree of ``2 * base - 1`` nodes numbered bottom-up: the ``base`` leaves
are 0..base-1, the next level base..base+base/2-1, and so on up to the root (the last index).
What the nodes compute and how ``c_{t-1}`` and ``c_t`` enter and leave: docs/ptb.md. The cell
inject replaces node ``k``'s output by ``act(comb(a_k, c_{t-1}))``.

Tokens of one episode, in order (the paper's Figure 5 order):

* per node 0 .. 2*base-2: ``combine`` then ``activation``;
* ``inject_combine`` and ``inject_activation`` (how c_{t-1} is merged in: "Cell Inject");
* ``inject_index`` and ``cell_index`` (which node receives c_{t-1}, which gives c_t: "Cell Indices").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from nas_env.checks import check_in, check_type, is_int
from nas_env.spaces.base import JsonArchitecture, TokenSpec, check_actions, check_arch_dict, check_choice_list

# The paper's choice lists (section 3.4).
COMBINATIONS = ("add", "elem_mult")
ACTIVATIONS = ("identity", "tanh", "sigmoid", "relu")
BASE = 8  # the paper's tree: 8 leaves, then 4, 2, 1 nodes


def num_nodes(base: int) -> int:
    """Nodes of a full binary tree with ``base`` leaves."""
    return 2 * base - 1


def children(base: int, index: int) -> tuple[int, int] | None:
    """The two child indices of node ``index`` in the bottom-up numbering; None for a leaf."""
    if not 0 <= index < num_nodes(base):
        raise ValueError(f"node index {index} is outside 0..{num_nodes(base) - 1} for base {base}")
    if index < base:
        return None
    start, width = 0, base  # first index and size of the level below
    while index >= start + width + width // 2:
        start, width = start + width, width // 2
    pos = index - (start + width)
    return start + 2 * pos, start + 2 * pos + 1


def _check_base(base: Any) -> int:
    if not is_int(base) or base < 2 or int(base) & (int(base) - 1):
        raise ValueError(f"base must be a power of two >= 2 (the paper's: 8), got {base!r}")
    return int(base)


@dataclass(frozen=True)
class CellNode:
    """One tree node: how its two inputs are combined and the activation applied after."""

    combine: str
    activation: str

    def __post_init__(self) -> None:
        for name, allowed in (("combine", COMBINATIONS), ("activation", ACTIVATIONS)):
            check_in(name, getattr(self, name), allowed)


def _formula(combine: str, activation: str, left: str, right: str) -> str:
    inner = f"{left} + {right}" if combine == "add" else f"{left} * {right}"
    return inner if activation == "identity" else f"{activation}({inner})"


@dataclass(frozen=True)
class CellArchitecture(JsonArchitecture):
    """An immutable, hashable recurrent cell: its tree nodes and where the memory state enters and leaves."""

    nodes: tuple[CellNode, ...]
    inject_combine: str
    inject_activation: str
    inject_index: int
    cell_index: int

    def __post_init__(self) -> None:
        nodes = tuple(self.nodes)
        object.__setattr__(self, "nodes", nodes)
        n = len(nodes)
        if n < 3 or (n + 1) & n:  # 2 * base - 1 with base a power of two >= 2
            raise ValueError(f"a cell tree needs 2 * base - 1 nodes with base a power of two >= 2, got {n} nodes")
        for i, node in enumerate(nodes):
            if not isinstance(node, CellNode):
                raise ValueError(f"node {i} must be a CellNode, got {type(node).__name__}")
        CellNode(self.inject_combine, self.inject_activation)  # same rules as a node's
        for name in ("inject_index", "cell_index"):
            v = getattr(self, name)
            if not is_int(v) or not 0 <= v < n:
                raise ValueError(f"{name} must be a node index in 0..{n - 1}, got {v!r}")
            object.__setattr__(self, name, int(v))  # numpy ints become Python ints: one JSON per value

    @property
    def base(self) -> int:
        return (len(self.nodes) + 1) // 2

    @property
    def num_nodes(self) -> int:
        return len(self.nodes)

    @property
    def root(self) -> int:
        return len(self.nodes) - 1

    def children(self, index: int) -> tuple[int, int] | None:
        """The two child indices of node ``index``; None for a leaf."""
        return children(self.base, index)

    # --- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "rnn_cell",
            "nodes": [{"combine": n.combine, "activation": n.activation} for n in self.nodes],
            "inject": {"combine": self.inject_combine, "activation": self.inject_activation,
                       "index": self.inject_index},
            "cell_index": self.cell_index,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CellArchitecture:
        check_arch_dict(data, "rnn_cell", "recurrent-cell")
        try:
            nodes = tuple(CellNode(d["combine"], d["activation"]) for d in data["nodes"])
            inject = data["inject"]
            return cls(nodes, inject["combine"], inject["activation"], inject["index"], data["cell_index"])
        except (KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"malformed cell architecture JSON: missing or bad field {e}") from e

    def __str__(self) -> str:
        lines = [f"RNN cell, base {self.base} ({self.num_nodes} nodes): h_t = a{self.root}, "
                 f"c_t = a{self.cell_index} before its activation"]
        for i, node in enumerate(self.nodes):
            kids = self.children(i)
            left, right = (f"W{i} x_t", f"U{i} h_{{t-1}}") if kids is None else (f"a{kids[0]}", f"a{kids[1]}")
            lines.append(f"  a{i:<2} = {_formula(node.combine, node.activation, left, right)}")
            if i == self.inject_index:
                f = _formula(self.inject_combine, self.inject_activation, f"a{i}", "c_{t-1}")
                lines.append(f"  a{i:<2} <- {f}   (cell inject)")
        return "\n".join(lines)


def _check_names(name: str, values: Sequence[str], allowed: tuple[str, ...]) -> tuple[str, ...]:
    for v in () if isinstance(values, str) else values:
        if v not in allowed:
            raise ValueError(f"{name}: {v!r} is not allowed; allowed: {allowed}")
    return check_choice_list(name, values, f"names from {allowed}", lambda v: True)


@dataclass(frozen=True)
class RNNCellSearchSpace:
    """The paper's recurrent-cell space, configured by data: the tree's base and the choice lists.

    ``tokens()`` lists every decision of one episode; ``decode``/``encode`` map between action
    indices and a :class:`CellArchitecture`. Every token's choices are fixed, so the action
    masks are the env's usual "first n_t actions" masks.
    """

    base: int = BASE
    combinations: tuple[str, ...] = COMBINATIONS
    activations: tuple[str, ...] = ACTIVATIONS
    _tokens: tuple[TokenSpec, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "base", _check_base(self.base))
        object.__setattr__(self, "combinations", _check_names("combinations", self.combinations, COMBINATIONS))
        object.__setattr__(self, "activations", _check_names("activations", self.activations, ACTIVATIONS))
        object.__setattr__(self, "_tokens", tuple(self._build_tokens()))

    @property
    def num_nodes(self) -> int:
        return num_nodes(self.base)

    def _build_tokens(self) -> list[TokenSpec]:
        specs: list[TokenSpec] = []
        for i in range(self.num_nodes):  # layer = 1-based node number, as a CNN layer's
            specs.append(TokenSpec("combine", self.combinations, i + 1))
            specs.append(TokenSpec("activation", self.activations, i + 1))
        indices = tuple(range(self.num_nodes))
        specs += [TokenSpec("inject_combine", self.combinations), TokenSpec("inject_activation", self.activations),
                  TokenSpec("inject_index", indices), TokenSpec("cell_index", indices)]
        return specs

    def tokens(self) -> tuple[TokenSpec, ...]:
        return self._tokens

    def decode(self, actions: Sequence[int]) -> CellArchitecture:
        """Turn one choice index per token into a cell."""
        check_actions(self._tokens, actions)
        a = [int(v) for v in actions]
        n = self.num_nodes
        nodes = tuple(CellNode(self.combinations[a[2 * i]], self.activations[a[2 * i + 1]]) for i in range(n))
        return CellArchitecture(nodes, self.combinations[a[2 * n]], self.activations[a[2 * n + 1]], a[2 * n + 2],
                                a[2 * n + 3])

    def encode(self, arch: CellArchitecture) -> list[int]:
        """The action indices that decode to ``arch``; ``ValueError`` if the space cannot emit it."""
        check_type(arch, CellArchitecture, "expected a CellArchitecture")
        if arch.base != self.base:
            raise ValueError(f"architecture has base {arch.base}; this space has base {self.base}")

        def index(choices: tuple[str, ...], value: str, what: str) -> int:
            if value not in choices:
                raise ValueError(f"{what}={value!r} is not one of this space's {choices}")
            return choices.index(value)

        actions: list[int] = []
        for i, node in enumerate(arch.nodes):
            actions.append(index(self.combinations, node.combine, f"node {i}: combine"))
            actions.append(index(self.activations, node.activation, f"node {i}: activation"))
        actions.append(index(self.combinations, arch.inject_combine, "inject_combine"))
        actions.append(index(self.activations, arch.inject_activation, "inject_activation"))
        return [*actions, arch.inject_index, arch.cell_index]


def lstm_like_cell() -> CellArchitecture:
    """A base-8 tree that computes exactly a standard LSTM (Hochreiter & Schmidhuber; no peepholes).

    f = a8 = sigmoid(a0 + a1) with identity leaves; f * c_{t-1} by injecting c at node 8;
    i * g = a9 = sigmoid-leaf * tanh-leaf; c_t = a8' + a9 (node 12 before its tanh);
    o = a13 = sigmoid(a10 + a11) over identity sums; h_t = a14 = tanh(c_t) * o.
    """
    add_id, mult_id = CellNode("add", "identity"), CellNode("elem_mult", "identity")
    nodes = (
        add_id, add_id,  # 0, 1: the forget gate's two linear maps
        CellNode("add", "sigmoid"), CellNode("add", "tanh"),  # 2: input gate i, 3: candidate g
        add_id, add_id, add_id, add_id,  # 4..7: the output gate's linear maps
        CellNode("add", "sigmoid"),  # 8: f
        mult_id,  # 9: i * g
        add_id, add_id,  # 10, 11: sums feeding o
        CellNode("add", "tanh"),  # 12: tanh(f * c + i * g); its pre-activation is c_t
        CellNode("add", "sigmoid"),  # 13: o
        mult_id,  # 14: h_t = tanh(c_t) * o
    )
    return CellArchitecture(nodes, "elem_mult", "identity", inject_index=8, cell_index=12)
