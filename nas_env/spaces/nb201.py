"""NAS-Bench-201's cell space (Dong & Yang, ICLR 2020) as data: six edges of a 4-node DAG, five ops each.

The space as NAS-Bench-201 defines it: docs/nb201.md. Tokens: one ``op`` token per edge of
:data:`EDGES` (NAS-Bench-201's order), ``layer`` = the edge's target node (1..3), choices :data:`OPS`.
The mixed-radix index of the action list (first edge most significant) is the cell's row in a
NAS-Bench-201 table: index = int(key, 5) with key the six op indices as digits, NAS-Bench-201's own key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from nas_env.checks import check_type
from nas_env.spaces.base import JsonArchitecture, TokenSpec, canonical_json, check_actions

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")  # NAS-Bench-201's op order
EDGES = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))  # (source, target) in NAS-Bench-201's string order
NUM_NODES = 4
OP_SYMBOLS = {"none": "none", "skip_connect": "skip", "nor_conv_1x1": "conv1x1", "nor_conv_3x3": "conv3x3",
              "avg_pool_3x3": "avgpool3x3"}  # short names for the text picture


def _check_ops(ops: Sequence[str]) -> tuple[str, ...]:
    if isinstance(ops, str) or len(ops) != len(EDGES):
        raise ValueError(f"an NB201 cell has one op per each of its {len(EDGES)} edges, got {ops!r}")
    for i, op in enumerate(ops):
        if op not in OPS:
            raise ValueError(f"edge {i} ({EDGES[i][1]}<-{EDGES[i][0]}): op {op!r} is not one of {OPS}")
    return tuple(ops)


@dataclass(frozen=True)
class NB201Architecture(JsonArchitecture):
    """An immutable, hashable NAS-Bench-201 cell: its op per edge, in :data:`EDGES` order."""

    ops: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "ops", _check_ops(self.ops))

    # cached: an env meets the same (immutable) cell object again and again, and an episode is microseconds
    @cached_property
    def key(self) -> str:
        """The six op indices as digits ("333133"): NAS-Bench-201's table key."""
        return "".join(str(OPS.index(op)) for op in self.ops)

    @cached_property
    def index(self) -> int:
        """The cell's row among the 15,625: its key read in base 5."""
        return int(self.key, len(OPS))

    @classmethod
    def from_key(cls, key: str) -> NB201Architecture:
        if not isinstance(key, str) or len(key) != len(EDGES) or any(c not in "01234" for c in key):
            raise ValueError(f"an NB201 key is {len(EDGES)} digits 0..{len(OPS) - 1}, got {key!r}")
        return cls(tuple(OPS[int(c)] for c in key))

    @classmethod
    def from_index(cls, index: int) -> NB201Architecture:
        """The cell of table row ``index`` (0..15,624): the inverse of :attr:`index`."""
        return cls.from_key(np.base_repr(index, len(OPS)).zfill(len(EDGES)))

    def inputs(self, node: int) -> list[tuple[int, str]]:
        """(source, op) of the edges into ``node`` (1..3), ``none`` edges included."""
        return [(s, op) for (s, t), op in zip(EDGES, self.ops, strict=True) if t == node]

    def is_connected(self) -> bool:
        """Whether some path of non-``none`` edges joins the input to the output (else it outputs zeros)."""
        reach = {0}
        for node in range(1, NUM_NODES):
            if any(s in reach and op != "none" for s, op in self.inputs(node)):
                reach.add(node)
        return NUM_NODES - 1 in reach

    # --- NAS-Bench-201's arch string ------------------------------------------------------------
    def to_arch_str(self) -> str:
        """``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``: NAS-Bench-201's own notation of the cell."""
        groups = ["|" + "|".join(f"{op}~{s}" for s, op in self.inputs(node)) + "|" for node in range(1, NUM_NODES)]
        return "+".join(groups)

    @classmethod
    def from_arch_str(cls, text: str) -> NB201Architecture:
        """Parse NAS-Bench-201's arch string; a ValueError says what does not fit."""
        if not isinstance(text, str):
            raise ValueError(f"an NB201 arch string is a str, got {type(text).__name__}")
        groups = text.strip().split("+")
        if len(groups) != NUM_NODES - 1:
            raise ValueError(f"an NB201 arch string has {NUM_NODES - 1} '+'-separated node groups, got "
                             f"{len(groups)} in {text!r}")
        ops: list[str] = []
        for node, group in enumerate(groups, start=1):
            if not (group.startswith("|") and group.endswith("|")):
                raise ValueError(f"node {node}'s group {group!r} must be written |op~source|...| in {text!r}")
            parts = group[1:-1].split("|")
            if len(parts) != node:
                raise ValueError(f"node {node} takes {node} inputs, got {len(parts)} in {group!r}")
            for source, part in enumerate(parts):
                op, _, src = part.partition("~")
                if src != str(source):
                    raise ValueError(f"node {node}'s input {source} must be written {op}~{source}, got {part!r}")
                ops.append(op)
        # the string lists each node's inputs by source: exactly EDGES' order
        return cls(tuple(ops))

    # --- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"type": "nb201", "ops": list(self.ops)}

    def to_json(self) -> str:
        """Canonical JSON: equal architectures give identical text."""
        return self._json

    @cached_property
    def _json(self) -> str:
        return canonical_json(self.to_dict())

    @cached_property
    def arch_str(self) -> str:
        """:meth:`to_arch_str`, computed once."""
        return self.to_arch_str()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NB201Architecture:
        if not isinstance(data, dict) or data.get("type", "nb201") != "nb201" or "ops" not in data:
            raise ValueError(f"not an NB201 cell (want {{'type': 'nb201', 'ops': [...]}}): {data!r:.80}")
        return cls(tuple(data["ops"]))

    def __str__(self) -> str:
        return self.to_arch_str()


def cell_text(ops: Sequence[str | None]) -> str:
    """The cell as text, one line per node; ``None`` ops (not decided yet) show as ``?``.

    ``node 2 = conv3x3(n0) + skip(n1)``; ``none`` edges are left out, a node with no live input is ``0``.
    """
    ops = list(ops) + [None] * (len(EDGES) - len(ops))
    lines = ["node 0 = input"]
    for node in range(1, NUM_NODES):
        terms = []
        for (s, t), op in zip(EDGES, ops, strict=True):
            if t != node:
                continue
            if op is None:
                terms.append(f"?(n{s})")
            elif op != "none":
                terms.append(f"{OP_SYMBOLS[op]}(n{s})")
        suffix = "   (output)" if node == NUM_NODES - 1 else ""
        lines.append(f"node {node} = {' + '.join(terms) or '0'}{suffix}")
    return "\n".join(lines)


@dataclass(frozen=True)
class NB201SearchSpace:
    """NAS-Bench-201's space: one ``op`` token per edge (in :data:`EDGES` order), five choices each.

    Fixed, like the benchmark: the 15,625 cells of its tables. ``decode`` / ``encode`` map
    between action lists and :class:`NB201Architecture`.
    """

    def tokens(self) -> tuple[TokenSpec, ...]:
        return _TOKENS

    def decode(self, actions: Sequence[int]) -> NB201Architecture:
        check_actions(_TOKENS, actions)
        return NB201Architecture(tuple(OPS[int(a)] for a in actions))

    def encode(self, arch: NB201Architecture) -> list[int]:
        check_type(arch, NB201Architecture, "expected an NB201Architecture")
        return [OPS.index(op) for op in arch.ops]


_TOKENS = tuple(TokenSpec("op", OPS, target) for _, target in EDGES)
