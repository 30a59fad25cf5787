"""One command-line style for every entry point: a dataclass of arguments, one docstring per field (CleanRL's).

``parse_dataclass(Args, argv, prog=...)`` turns each field into a flag (``--snake-case``) whose
help is the docstring under the field, and returns the filled dataclass plus the set of fields
given explicitly on the command line (so ``--resume RUN --episodes 200`` can tell an explicit
200 from the default). Types: ``str``, ``int``, ``float``, ``bool`` (``--flag/--no-flag``),
``dict`` (a JSON object), ``list[X]`` (several values), and ``X | None`` (default None). A field
with ``metadata={"positional": True}`` is a positional argument.

We keep this small parser rather than adopt tyro: it has no dependency, the runner needs the
explicit-flag set, and error messages name the bad value the way the rest of the project does.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import itertools
import json
import textwrap
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")


def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each dataclass field (CleanRL's convention), for ``--help``."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, after in itertools.pairwise(body):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr) \
                and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str):
            docs[node.target.id] = " ".join(after.value.value.split()).replace("%", "%%")  # argparse formats help
    return docs


def json_object(flag: str):
    """An argparse type: a JSON object, with an error naming the flag and the text."""

    def parse(text: str) -> dict[str, Any]:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:
            raise argparse.ArgumentTypeError(f"{flag} must be a JSON object, got {text!r}: {e}") from e
        if not isinstance(value, dict):
            raise argparse.ArgumentTypeError(f"{flag} must be a JSON object like '{{\"epochs\": 3}}', got {text!r}")
        return value

    return parse


def _base_type(annotation: Any) -> tuple[Any, bool]:
    """(the type without ``| None``, whether None is allowed)."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return annotation, False


def build_parser(cls: type, prog: str, description: str | None = None) -> argparse.ArgumentParser:
    """An ``ArgumentParser`` with one flag per field of the dataclass ``cls``."""
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        doc = docs.get(f.name, "")
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)  # type: ignore[misc]
        kind, _ = _base_type(hints[f.name])
        origin = typing.get_origin(kind)
        if f.metadata.get("positional"):
            parser.add_argument(f.name, type=kind, help=doc)
            continue
        flag = "--" + f.name.replace("_", "-")
        # SUPPRESS: a flag not given leaves no attribute, so the caller can tell explicit values from defaults.
        common: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS}
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, help=f"{doc} (default: {default})",
                                **common)
        elif kind is dict or origin is dict:
            parser.add_argument(flag, type=json_object(flag), help=f"{doc} (JSON; default: {json.dumps(default)})",
                                **common)
        elif origin is list:
            (item,) = typing.get_args(kind)
            parser.add_argument(flag, type=item, nargs="+", help=f"{doc} (default: {default})", **common)
        else:
            parser.add_argument(flag, type=kind, help=f"{doc} (default: {default!r})", **common)
    return parser


def parse_dataclass(cls: type[T], argv: list[str] | None, prog: str,
                    description: str | None = None) -> tuple[T, set[str], argparse.ArgumentParser]:
    """Parse ``argv`` into ``cls``; returns the instance, the fields given explicitly, and the parser (for
    ``parser.error`` on checks that come later)."""
    parser = build_parser(cls, prog, description)
    given = vars(parser.parse_args(argv))
    return cls(**given), set(given), parser
