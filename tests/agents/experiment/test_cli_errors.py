"""A user's mistake at any console entry point ends in one line on stderr and exit status 2, never a traceback.

Each case calls the entry point's ``main(argv)`` in this process (the console script calls nothing else)
and checks: exit status 2, exactly one line on stderr (``PROG: error: ...``) naming the offending value,
and no "Traceback". Two cases run the console module as a new user would (``python -m ...``), where the
interpreter itself would print a traceback that escaped; ``--debug`` brings it back. The synthetic
evaluator keeps every case instant.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[3]
SYNTHETIC = {"evaluator": "synthetic"}
RUNNER, COMPARE, FINAL, TABULATE, BENCH = ("runner", "compare", "final", "tabulate", "agent_bench")
PROGS = {RUNNER: "nasrl-search", COMPARE: "nasrl-compare", FINAL: "nasrl-train-final", TABULATE: "nasrl-tabulate",
         BENCH: "nasrl-agent-bench"}


def run_cli(module: str, argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-W", "ignore", "-m", f"agents.experiment.{module}", *argv], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=120)


def search(*argv: str, env_kwargs: dict | None = None) -> Callable[[Path], list[str]]:
    """A nasrl-search command line in a fresh log folder, with the instant evaluator unless told otherwise."""
    kwargs = SYNTHETIC if env_kwargs is None else env_kwargs
    return lambda tmp: ["--episodes", "2", "--logdir", str(tmp / "runs"), "--no-progress",
                        "--env-kwargs", json.dumps(kwargs), *argv]


def text_file(tmp: Path) -> Path:
    (tmp / "some.txt").write_text("not a database, not a table\n")
    return tmp / "some.txt"


def run_folder(tmp: Path, config: str | None) -> Path:
    """A folder that looks like a run folder: no config.json (None), or one with ``config`` as its text."""
    folder = tmp / "run"
    folder.mkdir()
    if config is not None:
        (folder / "config.json").write_text(config)
    return folder


def image_folder(tmp: Path, classes: tuple[str, ...]) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in classes:
        (tmp / "images" / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp / "images" / name / f"{i}.png")
    return tmp / "images"


# (module, argv from tmp_path, text the error line must hold)
CASES: dict[str, tuple[str, Callable[[Path], list[str]], str]] = {
    "unknown env keyword": (RUNNER, search(env_kwargs={"epoch": 1, **SYNTHETIC}), "--env-kwargs key 'epoch' is not "
                            "a keyword of env NASRL-Digits-v1 (did you mean 'epochs'?); allowed: active_layers,"),
    "unknown agent keyword": (RUNNER, search("--agent-kwargs", '{"lrr": 1}'),
                              "--agent-kwargs key 'lrr' is not a keyword of agent 'reinforce'"),
    "unknown SB3 keyword": (RUNNER, search("--agent", "ppo", "--agent-kwargs", '{"learning_rat": 1}'),
                            "key 'learning_rat' is not a keyword of agent 'ppo' (did you mean 'learning_rate'?)"),
    "bad agent value": (RUNNER, search("--agent-kwargs", '{"lr": -1}'), "lr must be a finite number > 0, got -1"),
    "bad env value": (RUNNER, search(env_kwargs={"num_layers": 0, **SYNTHETIC}),
                      "num_layers must be an integer >= 1, got 0"),
    "unknown evaluator": (RUNNER, search(env_kwargs={"evaluator": "nope"}), "got 'nope'"),
    "missing CIFAR-10": (RUNNER, search("--env", "NASRL-CIFAR10-v0",
                                        env_kwargs={"data_root": "/nonexistent", "download": False}),
                         "CIFAR-10 not found: expected the official python batches"),
    "single-class image folder": (RUNNER, lambda tmp: search("--env", "NASRL-CIFAR10-v0", env_kwargs={
        "dataset": "imagefolder", "data_root": str(image_folder(tmp, ("cat",))), **SYNTHETIC})(tmp),
        "holds a single class folder (['cat'])"),
    "missing image folder": (RUNNER, search("--env", "NASRL-CIFAR10-v0", env_kwargs={
        "dataset": "imagefolder", "data_root": "/nonexistent/images", **SYNTHETIC}), "/nonexistent/images"),
    "not an int": (RUNNER, lambda tmp: ["--episodes", "abc"], "--episodes: invalid int value: 'abc'"),
    "unknown flag": (RUNNER, lambda tmp: ["--epochs", "3"], "unrecognized arguments: --epochs 3"),
    "unknown agent": (RUNNER, lambda tmp: ["--agent", "genetic"], "--agent 'genetic' is not one of"),
    "resume a folder without config.json": (RUNNER, lambda tmp: ["--resume", str(run_folder(tmp, None))],
                                            "is not a run folder (no config.json in it)"),
    "resume a damaged config.json": (RUNNER, lambda tmp: ["--resume", str(run_folder(tmp, '{"env": '))],
                                     "config.json is damaged (not a JSON object)"),
    "resume a foreign config.json": (RUNNER, lambda tmp: ["--resume", str(run_folder(tmp, '{"envv": 1}'))],
                                     "config.json key 'envv' is not a keyword of SearchArgs"),
    "compare: unknown agent": (COMPARE, lambda tmp: ["--agents", "genetic", "--out", str(tmp / "c")],
                               "unknown agent 'genetic'"),
    "compare: bad --top-k": (COMPARE, lambda tmp: ["--top-k", "0", "--out", str(tmp / "c")],
                             "--top-k must be an integer >= 1, got 0"),
    "compare: unknown variant keyword": (COMPARE, lambda tmp: [
        "--agents", "x", "--variants", '{"x": {"agent": "random", "kwargs": {"lr": 1}}}', "--seeds", "0",
        "--episodes", "2", "--env-kwargs", json.dumps(SYNTHETIC), "--out", str(tmp / "c"), "--no-progress"],
        "--agent-kwargs key 'lr' is not a keyword of agent 'random'"),
    "tabulate: unknown env keyword": (TABULATE, lambda tmp: ["--env-kwargs", '{"epoch": 1}', "--logdir", str(tmp)],
                                      "--env-kwargs key 'epoch' is not a keyword of env NASRL-Digits-v0"),
    "tabulate: missing table": (TABULATE, lambda tmp: ["--describe", str(tmp / "none.json.gz")], "none.json.gz"),
    "tabulate: a table that is not one": (TABULATE, lambda tmp: ["--describe", str(text_file(tmp))],
                                          "some.txt is not a NASRL-Bench table"),
    "agent-bench: unknown variant keyword": (BENCH, lambda tmp: [
        "--agents", "x", "--variants", '{"x": {"agent": "reinforce", "kwargs": {"lrr": 1}}}', "--out", str(tmp)],
        "--variants 'x' kwargs key 'lrr' is not a keyword of agent 'reinforce'"),
    "agent-bench: unknown agent in a variant": (BENCH, lambda tmp: [
        "--agents", "x", "--variants", '{"x": {"agent": "nope"}}', "--out", str(tmp)], "agent 'nope' is not one of"),
    "agent-bench: bad --noise": (BENCH, lambda tmp: ["--noise", "loud", "--out", str(tmp)], "got 'loud'"),
    "train-final: missing run": (FINAL, lambda tmp: [str(tmp / "no_such_run")], "no_such_run"),
    "train-final: bad --precision": (FINAL, lambda tmp: ["x", "--precision", "fp8"], "--precision 'fp8'"),
}


def run_in_process(module: str, argv: list[str],
                   capsys: pytest.CaptureFixture[str]) -> subprocess.CompletedProcess[str]:
    """The entry point's main(argv) here, as the exit status and stderr a console run would give."""
    capsys.readouterr()
    try:
        importlib.import_module(f"agents.experiment.{module}").main(argv)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:  # escaped the boundary: the interpreter would print this traceback
        import traceback

        return subprocess.CompletedProcess(argv, 1, "", traceback.format_exc())
    return subprocess.CompletedProcess(argv, code, "", capsys.readouterr().err)


def assert_one_line_error(result: subprocess.CompletedProcess[str], prog: str, text: str) -> None:
    lines = result.stderr.splitlines()
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{prog}: error: ") and text in lines[0], lines[0]


@pytest.mark.parametrize("case", list(CASES))
def test_a_mistake_is_one_line_and_exit_2(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    module, argv, text = CASES[case]
    monkeypatch.chdir(tmp_path)
    assert_one_line_error(run_in_process(module, argv(tmp_path), capsys), PROGS[module], text)


@pytest.mark.parametrize("case", ["unknown env keyword", "train-final: missing run"])
def test_the_console_module_prints_one_line_too(case: str, tmp_path: Path) -> None:
    module, argv, text = CASES[case]
    assert_one_line_error(run_cli(module, argv(tmp_path), tmp_path), PROGS[module], text)


def test_a_store_file_that_is_not_a_store_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = text_file(tmp_path)
    before = store.read_bytes()
    result = run_in_process(RUNNER, search("--store", str(store))(tmp_path), capsys)
    assert_one_line_error(result, "nasrl-search", "some.txt")
    assert store.read_bytes() == before  # a damaged store is never overwritten


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = run_cli(RUNNER, search("--agent-kwargs", '{"lr": -1}', "--debug")(tmp_path), tmp_path)
    assert result.returncode == 1
    assert "Traceback" in result.stderr and result.stderr.rstrip().endswith(
        "ValueError: lr must be a finite number > 0, got -1")


def test_a_bug_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from nas_env.cli import cli_entry

    @cli_entry("nasrl-x")
    def main(argv: list[str]) -> None:
        raise KeyError("a bug")

    with pytest.raises(KeyError, match="a bug"):
        main([])
    assert capsys.readouterr().err == ""


def test_interrupt_keeps_its_message_and_exit_130(capsys: pytest.CaptureFixture[str]) -> None:
    from nas_env.cli import cli_entry

    @cli_entry("nasrl-x", interrupted="continue with --resume RUN_DIR")
    def main(argv: list[str]) -> None:
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 130
    assert capsys.readouterr().err == "\ninterrupted: continue with --resume RUN_DIR\n"


def test_a_user_error_in_process_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from nas_env.cli import cli_entry

    @cli_entry("nasrl-x")
    def main(argv: list[str]) -> None:
        raise FileNotFoundError(f"data folder {argv[0]} does not exist\n(expected class folders)")

    with pytest.raises(SystemExit) as exit_info:
        main(["/nowhere"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "nasrl-x: error: data folder /nowhere does not exist (expected class folders)\n"
    with pytest.raises(FileNotFoundError):
        main(["/nowhere", "--debug"])
