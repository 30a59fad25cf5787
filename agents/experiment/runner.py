"""``nasrl-search``: a search's command line. The loop is :mod:`.search`, the folder :mod:`.run_folder`.

Every field of :class:`~agents.experiment.search.SearchArgs` is a flag (``--help`` lists them with their
docstrings). Every combination is checked before a run folder, env or worker exists; a mistake ends in one
line on stderr and exit status 2 (``--debug``: the traceback), see :func:`nas_env.cli.cli_entry`.
"""

from __future__ import annotations

from agents.experiment.keywords import check_run_config
from agents.experiment.search import SearchArgs, make_envs, resolve_args, run_search
from nas_env.cli import cli_entry, parse_dataclass

__all__ = ["SearchArgs", "main", "make_envs", "parse_args", "run_search"]


def _parse(argv: list[str] | None) -> tuple[SearchArgs, set[str], SearchArgs]:
    """The flags as given, the names given explicitly, and the settled arguments (a bad value exits)."""
    args, explicit, parser = parse_dataclass(SearchArgs, argv, prog="nasrl-search",
                                             description="Neural architecture search with RL (Zoph & Le).")
    try:
        if args.resume:
            check_run_config(args.resume, SearchArgs)
        return args, explicit, resolve_args(args, explicit)
    except ValueError as e:
        parser.error(str(e))


def parse_args(argv: list[str] | None = None) -> SearchArgs:
    """The flags as settled :class:`SearchArgs` (see :func:`~agents.experiment.search.resolve_args`: a resume's saved
    settings, m fitted to --num-envs); a bad value exits with a message naming it."""
    return _parse(argv)[2]


@cli_entry("nasrl-search", interrupted="continue with --resume RUN_DIR (finished children are kept)")
def main(argv: list[str]) -> None:
    """Console entry point ``nasrl-search``."""
    args, explicit, _ = _parse(argv)  # checked here; run_search settles them again from the same flags
    run_search(args, explicit)


if __name__ == "__main__":
    main()
