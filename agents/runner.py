"""``nasrl-search``: a search's command line. The loop is :mod:`agents.search`, the folder :mod:`agents.run_folder`.

Every field of :class:`~agents.search.SearchArgs` is a flag (``--help`` lists them with their
docstrings). Every combination is checked before a run folder, env or worker exists.
"""

from __future__ import annotations

import sys

from agents.search import SearchArgs, make_envs, resolve_args, run_search
from nas_env.cli import parse_dataclass

__all__ = ["SearchArgs", "main", "make_envs", "parse_args", "run_search"]


def parse_args(argv: list[str] | None = None) -> SearchArgs:
    """The flags as settled :class:`SearchArgs` (see :func:`~agents.search.resolve_args`: a resume's saved
    settings, m fitted to --num-envs); a bad value exits with a message naming it."""
    args, explicit, parser = parse_dataclass(SearchArgs, argv, prog="nasrl-search",
                                             description="Neural architecture search with RL (Zoph & Le).")
    try:
        return resolve_args(args, explicit)
    except ValueError as e:
        parser.error(str(e))


def main(argv: list[str] | None = None) -> None:
    """Console entry point ``nasrl-search``."""
    args = parse_args(argv)
    try:
        run_search(args)
    except KeyboardInterrupt:
        print("\ninterrupted: continue with --resume RUN_DIR (finished children are kept)", file=sys.stderr)
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
