"""One command-line style for every entry point: a dataclass of arguments, one docstring per field (CleanRL's).

``parse_dataclass(Args, argv, prog=...)`` turns each field into a flag (``--snake-case``) whose
help is the docstring under the field, and returns the filled dataclass plus the set of fields
given explicitly on the command line (so ``--resume RUN --episodes 200`` can tell an explicit
200 from the default). Types: ``str``, ``int``, ``float``, ``bool`` (``--flag/--no-flag``),
``dict`` (a JSON object), ``list[X]`` (several values), and ``X | None`` (default None). A field
with ``metadata={"positional": True}`` is a positional argument.

We keep this small parser rather than adopt tyro: it has no dependency, the runner needs the
explicit-flag set, and error messages name the bad value the way the rest of the project does.

:func:`cli_entry` is the one error boundary of every console script: a user's mistake ends in one
line (``nasrl-search: error: ...``) and exit status 2, as argparse's own errors do; ``--debug``
(a flag of every parser built here) shows the traceback instead.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import itertools
import json
import sys
import textwrap
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")
DEBUG_FLAG = "--debug"
# What a user can get wrong, as opposed to a bug: a ValueError (every check of the project, a damaged data or JSON
# file), or a path the user gave that is missing, taken or not what it should be. The other OSErrors (a full disk, a
# network failure) and everything else are not the user's input and keep their traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError,
                                                IsADirectoryError, PermissionError)


class OneLineParser(argparse.ArgumentParser):
    """argparse with its error as one line, ``PROG: error: MESSAGE``, like :func:`cli_entry`'s (no usage block:
    ``--help`` shows it)."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {one_line(message)}\n")


def one_line(message: object) -> str:
    """``message`` with its line breaks and runs of spaces folded into single spaces."""
    return " ".join(str(message).split())


def error_text(error: BaseException) -> str:
    """What a user-mistake exception says; an OSError from ``open`` etc. already names its file."""
    return one_line(error) or type(error).__name__


def wants_debug(argv: Sequence[str]) -> bool:
    """Whether ``--debug`` is among the flags (before a ``--`` that ends them)."""
    args = list(argv)
    return DEBUG_FLAG in (args[: args.index("--")] if "--" in args else args)


def cli_entry(prog: str, interrupted: str | None = None) -> Callable[[Callable[[list[str]], T]],
                                                                       Callable[[list[str] | None], T]]:
    """Decorate a console script's ``main(argv)`` with the error boundary shared by every entry point.

    A :data:`USER_ERRORS` exception ends the program with one line on stderr, ``PROG: error: MESSAGE``, and exit
    status 2 (unless ``--debug`` is given: then it propagates with its traceback). Ctrl-C prints ``interrupted``
    (what the user can do now) and exits with 130. Anything else (a bug) propagates with its traceback.
    ``main`` receives ``sys.argv[1:]`` when called with None. Use: ``main = cli_entry("nasrl-x")(main)``.
    """

    def decorate(main: Callable[[list[str]], T]) -> Callable[[list[str] | None], T]:
        @functools.wraps(main)
        def entry(argv: list[str] | None = None) -> T:
            argv = sys.argv[1:] if argv is None else list(argv)
            try:
                return main(argv)
            except KeyboardInterrupt:
                if interrupted is None:
                    raise
                print(f"\ninterrupted: {interrupted}", file=sys.stderr)
                raise SystemExit(130) from None
            except USER_ERRORS as e:
                if wants_debug(argv):
                    raise
                print(f"{prog}: error: {error_text(e)}", file=sys.stderr)
                raise SystemExit(2) from None

        return entry

    return decorate


def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each dataclass field (CleanRL's convention), for ``--help``; base classes' fields too."""
    docs: dict[str, str] = {}
    for klass in reversed([k for k in cls.__mro__ if dataclasses.is_dataclass(k)]):
        body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body  # type: ignore[attr-defined]
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


def _fields_in_help_order(cls: type) -> list[dataclasses.Field]:
    """``cls``'s dataclass fields in definition order, those of a base that sets ``help_last = True`` at the end
    (a shared group of secondary flags, e.g. the Ray settings, should not lead ``--help``)."""

    def last(f: dataclasses.Field) -> bool:
        owner = next(k for k in cls.__mro__ if f.name in vars(k).get("__annotations__", {}))
        return bool(vars(owner).get("help_last", False))

    return sorted(dataclasses.fields(cls), key=last)


def build_parser(cls: type, prog: str, description: str | None = None) -> argparse.ArgumentParser:
    """An ``ArgumentParser`` with one flag per field of the dataclass ``cls``."""
    parser = OneLineParser(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    for f in _fields_in_help_order(cls):
        doc = docs.get(f.name, "")
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)  # type: ignore[misc]
        kind, _ = _base_type(hints[f.name])
        origin = typing.get_origin(kind)
        if f.metadata.get("positional"):
            parser.add_argument(f.name, type=kind, help=doc)
            continue
        flag = "--" + f.name.replace("_", "-")
        options: dict[str, Any]
        if kind is bool:
            options, shown = {"action": argparse.BooleanOptionalAction}, f"default: {default}"
        elif kind is dict or origin is dict:
            options, shown = {"type": json_object(flag)}, f"JSON; default: {json.dumps(default)}"
        elif origin is list:
            (item,) = typing.get_args(kind)
            options, shown = {"type": item, "nargs": "+"}, f"default: {default}"
        else:
            options, shown = {"type": kind}, f"default: {default!r}"
        # SUPPRESS: a flag not given leaves no attribute, so the caller can tell explicit values from defaults.
        parser.add_argument(flag, dest=f.name, default=argparse.SUPPRESS, help=f"{doc} ({shown})", **options)
    # read by cli_entry from the raw flags (the boundary must know it even when parsing fails); dropped here
    parser.add_argument(DEBUG_FLAG, action="store_true", default=argparse.SUPPRESS,
                        help="on an error, show the full traceback instead of one line")
    return parser


def parse_dataclass(cls: type[T], argv: list[str] | None, prog: str,
                    description: str | None = None) -> tuple[T, set[str], argparse.ArgumentParser]:
    """Parse ``argv`` into ``cls``; returns the instance, the fields given explicitly, and the parser (for
    ``parser.error`` on checks that come later)."""
    parser = build_parser(cls, prog, description)
    given = vars(parser.parse_args(argv))
    given.pop("debug", None)
    return cls(**given), set(given), parser
