"""One command-line style for every entry point: dataclass fields as flags, their docstrings as help."""

from __future__ import annotations

import pytest

from agents.experiment import agent_bench, compare, final, runner, tabulate
from agents.experiment.final import FinalArgs
from nas_env.cli import parse_dataclass


@pytest.mark.parametrize(("main", "flag", "doc"), [
    (runner.main, "--children-per-update", "m: children per policy update"),
    (compare.main, "--checkpoint-every", "children between points of the top-k plot"),
    (final.main, "--test-size", "10% of its"),
    (tabulate.main, "--max-archs", "refuse a space with more architectures"),
    (agent_bench.main, "--variants", "extra labels"),
])
def test_every_entry_point_documents_its_flags(main, flag: str, doc: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert flag in text and doc in text


def test_explicit_flags_are_told_apart_from_defaults() -> None:
    args, explicit, _ = parse_dataclass(FinalArgs, ["run", "--lr", "0.1", "0.2", "--no-progress"], prog="x")
    assert args.source == "run" and args.lr == [0.1, 0.2] and args.progress is False and args.epochs is None
    assert explicit == {"source", "lr", "progress"}


def test_a_bad_value_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        final.parse_args(["run", "--precision", "fp8"])
    assert "--precision 'fp8' is not one of" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        final.parse_args(["run", "--epochs", "many"])
    assert "--epochs: invalid int value: 'many'" in capsys.readouterr().err


def test_help_leads_with_the_commands_own_flags(capsys: pytest.CaptureFixture[str]) -> None:
    # nasrl-search shares its Ray flags with RayConfig through a base class marked help_last
    with pytest.raises(SystemExit):
        runner.main(["--help"])
    search_help = capsys.readouterr().out
    assert search_help.index("--env ") < search_help.index("--agent ") < search_help.index("--address ")
    # nasrl-train-final's shared settings are its main flags: base-class order is kept there
    with pytest.raises(SystemExit):
        final.main(["--help"])
    final_help = capsys.readouterr().out
    assert final_help.index("--dataset ") < final_help.index("--grid ")
