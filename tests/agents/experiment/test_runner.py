"""The search runner end to end: run folder contents, TensorBoard tags, resume after an exception and kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agents.experiment.runner import SearchArgs, main, make_envs, parse_args, run_search
from nas_env.store import ResultStore

REPO = Path(__file__).resolve().parents[3]


def read_results(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]


def test_short_real_search_writes_results_best_and_events(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["--env", "NASRL-Digits-v0", "--episodes", "6", "--children-per-update", "3", "--logdir", str(tmp_path),
          "--run-name", "r", "--env-kwargs", '{"epochs": 1, "device": "cpu"}', "--no-progress"])
    run_dir = tmp_path / "r"
    records = read_results(run_dir)
    assert [r["index"] for r in records] == list(range(6))
    assert all(r["status"] == "ok" and 0 < r["val_acc"] <= 1 and r["params"] > 0 for r in records)
    best = json.loads((run_dir / "best.json").read_text())
    assert best["val_acc"] == max(r["val_acc"] for r in records)
    assert (run_dir / "checkpoints" / "agent.pt").is_file()
    assert len(ResultStore(run_dir / "store.sqlite")) == len({r["arch"] for r in records})
    out = capsys.readouterr().out
    assert "best architecture" in out and "filters" in out

    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    scalars = set(acc.Tags()["scalars"])
    for tag in ("child/reward", "child/val_acc", "child/params", "child/flops", "child/train_seconds",
                "child/status", "search/best_val_acc", "search/cache_hit_share", "update/reward_mean",
                "update/baseline", "update/advantage_mean", "update/policy_loss", "update/entropy",
                "update/entropy/filter_height", "update/entropy/skip"):
        assert tag in scalars, tag
    assert [e.value for e in acc.Scalars("search/best_val_acc")][-1] == pytest.approx(best["val_acc"])
    assert len(acc.Scalars("update/policy_loss")) == 2
    texts = set(acc.Tags()["tensors"])
    assert any("best_architecture" in t for t in texts) and any("hparams" in t for t in texts)
    assert any((run_dir / "hparams").iterdir())  # the hparams plugin's run


def synthetic_args(tmp_path: Path, name: str, episodes: int) -> SearchArgs:
    return SearchArgs(env="NASRL-Digits-v0", agent="reinforce", episodes=episodes, children_per_update=4, seed=3,
                      logdir=str(tmp_path), run_name=name, env_kwargs={"evaluator": "synthetic"}, progress=False)


def test_resume_evaluates_the_same_sequence_as_an_uninterrupted_run(tmp_path: Path) -> None:
    full = read_results(run_search(synthetic_args(tmp_path, "full", 20)))
    part = run_search(synthetic_args(tmp_path, "part", 10))  # stops mid-update (10 is not a multiple of 4)
    resumed = read_results(run_search(SearchArgs(resume=str(part), episodes=20, progress=False)))
    assert [r["arch"] for r in resumed] == [r["arch"] for r in full]
    assert [r["index"] for r in resumed] == list(range(20))


def test_resume_after_kill_minus_9_loses_nothing(tmp_path: Path) -> None:
    # Launched for many more children than the resume asks for, so a fast machine cannot finish before the kill.
    cmd = [sys.executable, "-m", "agents.experiment.runner", "--env", "NASRL-Digits-v0", "--episodes", "500",
           "--children-per-update", "3", "--logdir", str(tmp_path), "--run-name", "killed", "--no-progress",
           "--env-kwargs", '{"epochs": 1, "device": "cpu"}']
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    results = tmp_path / "killed" / "results.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not results.exists() or len(results.read_text().splitlines()) < 5):
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = read_results(tmp_path / "killed")
    assert 5 <= len(before) < 12

    run_search(SearchArgs(resume=str(tmp_path / "killed"), episodes=12, progress=False))
    after = read_results(tmp_path / "killed")
    assert [r["index"] for r in after] == list(range(12))
    assert after[: len(before)] == before  # nothing finished was rewritten
    reference = read_results(run_search(SearchArgs(
        env="NASRL-Digits-v0", episodes=12, children_per_update=3, logdir=str(tmp_path), run_name="ref",
        env_kwargs={"epochs": 1, "device": "cpu"}, progress=False)))
    assert [r["arch"] for r in after] == [r["arch"] for r in reference]
    assert [r["val_acc"] for r in after] == [r["val_acc"] for r in reference]


@pytest.mark.parametrize(("argv", "message"), [
    (["--agent", "genetic"], "--agent 'genetic' is not one of"),
    (["--episodes", "0"], "--episodes must be an integer of at least 1"),
    (["--children-per-update", "-1"], "--children-per-update must be an integer of at least 1"),
    (["--env", "CartPole-v2"], "not a registered environment"),
    (["--env-kwargs", "[1]"], "must be a JSON object"),
    (["--env-kwargs", "{epochs: 3}"], "must be a JSON object"),
    (["--resume", "/nonexistent/run"], "is not a run folder"),
    (["--agent", "ppo", "--num-envs", "2", "--vectorization", "async"],
     "--vectorization async does not work with --agent 'ppo'"),
])
def test_bad_flags_are_named(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(argv)
    assert message in capsys.readouterr().err


def test_existing_run_folder_is_not_overwritten(tmp_path: Path) -> None:
    run_search(synthetic_args(tmp_path, "once", 4))
    with pytest.raises(FileExistsError, match="--resume"):
        run_search(synthetic_args(tmp_path, "once", 4))


def test_bad_agent_or_env_kwargs_fail_before_a_run_folder_exists(tmp_path: Path) -> None:
    bad_agent = synthetic_args(tmp_path, "bad_agent", 4)
    bad_agent.agent_kwargs = {"learning_rate_typo": 1}
    with pytest.raises(ValueError, match="learning_rate_typo"):
        run_search(bad_agent)
    bad_env = synthetic_args(tmp_path, "bad_env", 4)
    bad_env.env_kwargs = {"evaluator": "synthetic", "num_layers": 0}
    with pytest.raises(ValueError, match="num_layers"):
        run_search(bad_env)
    assert not (tmp_path / "bad_agent" / "config.json").exists()
    assert not (tmp_path / "bad_env" / "config.json").exists()
    run_search(bad_env.__class__(**{**bad_env.__dict__, "env_kwargs": {"evaluator": "synthetic"}}))  # name reusable


def test_ptb_search_writes_the_best_cell_as_tensorboard_text(tmp_path: Path) -> None:
    run_dir = run_search(SearchArgs(env="NASRL-PTB-v0", agent="reinforce", episodes=4, children_per_update=2, seed=1,
                                    logdir=str(tmp_path), run_name="ptb", env_kwargs={"evaluator": "synthetic"},
                                    progress=False))
    best = json.loads((run_dir / "best.json").read_text())
    assert best["val_ppl"] == min(r["val_ppl"] for r in read_results(run_dir))
    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    tags = [t for t in acc.Tags()["tensors"] if "best_architecture" in t]
    assert tags
    text = acc.Tensors(tags[0])[-1].tensor_proto.string_val[0].decode()
    assert f"val_ppl {best['val_ppl']:.2f}" in text and f"child {best['index']}" in text
    assert "RNN cell" in text and "cell inject" in text  # the cell's readable form, not an empty layer table
    assert "| layer |" not in text
    scalars = acc.Tags()["scalars"]
    assert "child/val_ppl" in scalars and "child/val_acc" not in scalars  # perplexity children: no accuracy curve
    assert [e.value for e in acc.Scalars("search/best_val_ppl")][-1] == pytest.approx(best["val_ppl"])


def test_auto_vectorization_is_async_for_our_agents_and_sync_for_sb3(tmp_path: Path) -> None:
    kwargs = {"evaluator": "synthetic"}
    sb3 = make_envs(SearchArgs(agent="ppo", num_envs=2, env_kwargs=kwargs), tmp_path / "a.sqlite")
    ours = make_envs(SearchArgs(agent="reinforce", num_envs=2, env_kwargs=kwargs), tmp_path / "b.sqlite")
    try:
        assert isinstance(sb3, gym.vector.SyncVectorEnv) and isinstance(ours, gym.vector.AsyncVectorEnv)
    finally:
        sb3.close()
        ours.close()


def test_only_trained_children_compete_for_best(capsys: pytest.CaptureFixture[str]) -> None:
    from agents.experiment.run_folder import can_be_best, print_best_table

    failed = {"arch": '{"type": "cnn", "layers": []}', "status": "failed", "reward": 0.0}
    assert not can_be_best(failed) and not can_be_best({**failed, "status": "ok", "arch": None})
    assert can_be_best({**failed, "status": "ok"}) and can_be_best({**failed, "status": "stopped_early"})
    print_best_table({"index": 3, "val_acc": 0.5, "params": None, "flops": None, "arch": '{"type": "rnn_cell"}'})
    assert "params -, multiply-adds -" in capsys.readouterr().out
