"""What every search space offers the environment: a fixed list of decisions and a codec.

The environment walks ``SearchSpace.tokens()`` one decision per step and hands the
finished action list to ``SearchSpace.decode``; it knows nothing about what a token
means. A new space (the CNN space, the recurrent-cell space, a user's own) plugs in
by implementing this small interface.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np

from nas_env.checks import is_int


@dataclass(frozen=True)
class TokenSpec:
    """One decision of an episode: its kind, its choices, and the layer it belongs to."""

    name: str  # "filter_height", "skip", ...
    choices: tuple[Any, ...]  # the values an action index maps to
    layer: int = 0  # 1-based layer (or node) this decision configures; 0 when not layer-bound

    @property
    def num_choices(self) -> int:
        return len(self.choices)


@runtime_checkable
class Architecture(Protocol):
    """An immutable, hashable value describing one child network."""

    def to_dict(self) -> dict[str, Any]: ...

    def to_json(self) -> str: ...


@runtime_checkable
class SearchSpace(Protocol):
    """A fixed sequence of decisions and the map between action lists and architectures."""

    def tokens(self) -> Sequence[TokenSpec]: ...

    def decode(self, actions: Sequence[int]) -> Architecture: ...

    def encode(self, arch: Architecture) -> list[int]: ...


def random_arch(space: SearchSpace, rng: np.random.Generator) -> Architecture:
    """A uniformly random architecture of ``space``: one ``rng.integers`` draw per token, in token order."""
    return space.decode([int(rng.integers(spec.num_choices)) for spec in space.tokens()])


def canonical_json(data: dict[str, Any]) -> str:
    """One JSON text per value: sorted keys, no spaces, so equal architectures hash equally."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


A = TypeVar("A", bound="JsonArchitecture")


class JsonArchitecture:
    """An architecture's JSON text from its ``to_dict``, and back through its ``from_dict``."""

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_dict(cls: type[A], data: dict[str, Any]) -> A:
        raise NotImplementedError

    def to_json(self) -> str:
        """Canonical JSON: equal architectures give identical text."""
        return canonical_json(self.to_dict())

    @classmethod
    def from_json(cls: type[A], text: str) -> A:
        return cls.from_dict(json.loads(text))


def check_arch_dict(data: Any, kind: str, name: str) -> None:
    """Raise ``ValueError`` unless ``data`` is a dict whose ``"type"``, when given, is ``kind``."""
    if not isinstance(data, dict):
        raise ValueError(f"a {name} architecture is a JSON object, got {type(data).__name__}: {data!r:.80}")
    if data.get("type", kind) != kind:
        raise ValueError(f"not a {name} architecture: type={data.get('type')!r}")


def check_choice_list(name: str, values: Sequence[Any], what: str, ok: Callable[[Any], bool]) -> tuple[Any, ...]:
    """``values`` as a tuple, else a ValueError: a list (not a string) of ``what``, non-empty, each ``ok``, distinct."""
    if isinstance(values, str):
        raise ValueError(f"{name} must be a list of {what}, got the string {values!r}")
    vals = tuple(values)
    if not vals or not all(ok(v) for v in vals):
        raise ValueError(f"{name} must be a non-empty list of {what}, got {values!r}")
    if len(set(vals)) != len(vals):
        raise ValueError(f"{name} has duplicates: {values!r}")
    return vals


def check_actions(tokens: Sequence[TokenSpec], actions: Sequence[int]) -> None:
    """Raise ``ValueError`` unless ``actions`` is one valid choice index per token."""
    if len(actions) != len(tokens):
        raise ValueError(f"expected {len(tokens)} actions, got {len(actions)}")
    for step, (spec, a) in enumerate(zip(tokens, actions, strict=True)):
        if not is_int(a):
            raise ValueError(f"action {a!r} at step {step} ({spec.name}) must be an int in 0..{spec.num_choices - 1}")
        if not 0 <= int(a) < spec.num_choices:
            raise ValueError(
                f"action {a!r} at step {step} ({spec.name}, layer {spec.layer}) is invalid: "
                f"allowed 0..{spec.num_choices - 1} for choices {spec.choices}"
            )
