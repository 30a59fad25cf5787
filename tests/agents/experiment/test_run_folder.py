"""The run folder every backend writes (old folders too), its closing summary, and the runner's argument rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agents.base import ChildRecord
from agents.experiment.run_folder import RunFolder, read_results, score_of, summary_text
from agents.experiment.run_folder.describe import learning_line, short_arch
from agents.experiment.run_folder.records import format_score
from agents.experiment.runner import main as runner_main
from agents.experiment.runner import parse_args
from agents.experiment.search import SearchArgs, run_search


def arch(num_filters: int) -> str:
    return json.dumps({"type": "cnn", "layers": [{"filter_height": 3, "filter_width": 3, "stride_height": 1,
                                                  "stride_width": 1, "num_filters": num_filters, "inputs": []}],
                       "pool_after": []})


def child(index: int, reward: float, status: str = "ok", num_filters: int | None = None) -> ChildRecord:
    """Child ``index`` (its own architecture unless ``num_filters`` names a shared one)."""
    info = {"status": status, "val_acc": reward, "val_acc_history": [reward], "params": 10, "flops": 20,
            "train_seconds": 0.1, "seed": index, "arch": arch(num_filters or 8 + index)}
    return ChildRecord(index, reward, info)


def test_records_best_and_picture_and_survives_a_torn_line(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path / "run")
    folder.write_config({"env": "x"})
    with pytest.raises(FileExistsError, match="already holds a run"):
        RunFolder(tmp_path / "run").write_config({"env": "y"})
    folder.start({"env": "x"}, total=3, desc="test", progress=False)
    for i, r in enumerate([0.5, 0.7, 0.6]):
        assert folder.record_child(child(i, r))
    assert not folder.record_child(child(1, 0.7))  # already written (a replay after a resume)
    folder.save_checkpoint("agent.pt", {"children_done": 3})
    folder.close()
    best = json.loads((tmp_path / "run" / "best.json").read_text())
    assert best["index"] == 1 and best["reward"] == 0.7
    assert (tmp_path / "run" / "best.png").stat().st_size > 1000
    assert folder.load_checkpoint("agent.pt") == {"children_done": 3}
    assert not list((tmp_path / "run" / "checkpoints").glob("*.tmp"))

    with (tmp_path / "run" / "results.jsonl").open("a") as f:
        f.write('{"index": 3, "rew')  # killed mid-write
    again = RunFolder(tmp_path / "run", pictures=False)
    again.start({"env": "x"}, total=4, desc="test", progress=False)
    assert again.written == 3 and again.best["index"] == 1
    again.record_child(child(3, 0.9))
    again.close()
    assert [r["index"] for r in read_results(tmp_path / "run" / "results.jsonl")] == [0, 1, 2, 3]
    assert "4 children" in again.summary() and "val_acc 0.9000" in again.summary()


def test_an_architecture_trained_again_is_judged_by_its_mean_reward(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path / "run", pictures=False)
    folder.start({}, total=4, desc="test", progress=False)
    folder.record_child(child(0, 0.70, num_filters=16))  # a lucky first seed
    folder.record_child(child(1, 0.65, num_filters=32))
    assert folder.best["index"] == 0
    folder.record_child(child(2, 0.50, num_filters=16))  # trained again: mean 0.60 falls below 0.65
    best = json.loads((tmp_path / "run" / "best.json").read_text())
    assert best["index"] == 1 and best["evaluations"] == 1 and best["mean_reward"] == 0.65
    folder.record_child(child(3, 0.90, num_filters=16))  # mean 0.70 leads again, with 3 evaluations
    folder.close()
    best = json.loads((tmp_path / "run" / "best.json").read_text())
    assert best["index"] == 3 and best["evaluations"] == 3 and best["mean_reward"] == pytest.approx(0.7)
    again = RunFolder(tmp_path / "run", pictures=False)  # reopening rebuilds the same incumbent
    again.start({}, total=4, desc="test", progress=False)
    again.close()
    assert again.best == best
    old_rule = RunFolder(tmp_path / "run", pictures=False, incumbent="max")
    old_rule.start({}, total=4, desc="test", progress=False)
    old_rule.close()
    assert old_rule.best["index"] == 3 and old_rule.best["reward"] == 0.90
    with pytest.raises(ValueError, match=r"incumbent rule must be one of .*'best'"):
        RunFolder(tmp_path / "other", incumbent="best")


def test_a_failed_child_never_becomes_best(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path / "run", pictures=False)
    folder.start({}, total=2, desc="test", progress=False)
    folder.record_child(child(0, 0.9, status="oom"))
    folder.close()
    assert folder.best is None and not (tmp_path / "run" / "best.json").exists()
    assert "no architecture was evaluated successfully" in folder.summary()


def synthetic_run(tmp_path: Path, episodes: int = 10, **kwargs: object) -> Path:
    args = SearchArgs(env="NASRL-Digits-v0", episodes=episodes, logdir=str(tmp_path), run_name="run",
                      env_kwargs={"evaluator": "synthetic"}, progress=False, **kwargs)
    return run_search(args)


def test_an_explicit_flag_on_resume_is_explicit_even_at_its_default(tmp_path: Path) -> None:
    run = synthetic_run(tmp_path, episodes=10)
    assert parse_args(["--resume", str(run)]).episodes == 10  # not given: the run's
    assert parse_args(["--resume", str(run), "--episodes", "200"]).episodes == 200  # given, though the default


def test_resume_refuses_to_change_a_setting(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = synthetic_run(tmp_path, episodes=5)
    with pytest.raises(SystemExit):
        parse_args(["--resume", str(run), "--agent", "random"])
    assert "--agent 'random' differs from the run's 'reinforce'" in capsys.readouterr().err


def test_the_default_m_is_rounded_up_to_fit_num_envs(capsys: pytest.CaptureFixture[str]) -> None:
    args = parse_args(["--num-envs", "2"])
    assert args.children_per_update == 6
    assert "--children-per-update 5 rounded up to 6" in capsys.readouterr().out
    assert parse_args(["--num-envs", "2", "--agent", "ppo"]).children_per_update == 5  # SB3 has no lockstep rule


def test_an_explicit_m_that_does_not_fit_is_an_error_before_any_folder(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--num-envs", "2", "--children-per-update", "5", "--logdir", str(tmp_path)])
    assert "must be a multiple of --num-envs 2" in capsys.readouterr().err
    with pytest.raises(ValueError, match="must be a multiple"):
        synthetic_run(tmp_path, num_envs=2, children_per_update=3)  # API: a value other than the default
    assert list(tmp_path.iterdir()) == []  # nothing was created


def test_a_time_budget_stops_the_search_and_keeps_its_children(tmp_path: Path) -> None:
    run = synthetic_run(tmp_path, episodes=50, time_budget=1e-9)  # spent by the time the first child ends
    assert [r["index"] for r in read_results(run / "results.jsonl")] == [0]
    assert json.loads((run / "best.json").read_text())["index"] == 0
    runner_main(["--resume", str(run), "--time-budget", "0", "--no-progress"])  # the command line, as a user types it
    assert len(read_results(run / "results.jsonl")) == 50  # the budget may change on resume, even to its default
    batched = synthetic_run(tmp_path / "two", episodes=50, time_budget=1e-9, num_envs=2)
    assert len(read_results(batched / "results.jsonl")) == 2  # the whole lockstep batch is kept
    with pytest.raises(ValueError, match=r"--time-budget must be a number of seconds >= 0.*got -1"):
        synthetic_run(tmp_path / "bad", time_budget=-1)


def test_best_json_follows_the_records_a_resume_keeps(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path / "run", pictures=False)
    folder.start({}, total=3, desc="test", progress=False)
    for i, r in enumerate([0.5, 0.6, 0.9]):
        folder.record_child(child(i, r))
    folder.close()
    assert json.loads((tmp_path / "run" / "best.json").read_text())["index"] == 2
    again = RunFolder(tmp_path / "run", pictures=False)  # an agent that cannot replay exactly: child 2 is dropped
    again.start({}, total=3, desc="test", progress=False, resumed_children=2, exact_replay=False)
    again.close()
    assert json.loads((tmp_path / "run" / "best.json").read_text())["index"] == 1
    none_left = RunFolder(tmp_path / "run", pictures=False)
    none_left.start({}, total=3, desc="test", progress=False, resumed_children=0, exact_replay=False)
    none_left.close()
    assert not (tmp_path / "run" / "best.json").exists()


# --- what a record's score is, old folders, the closing summary ----------------------------------------
def old_record(index: int, reward: float, **metric: float) -> dict:
    """A results.jsonl line as written before records named their score (val_acc always; val_ppl for PTB)."""
    return {"index": index, "reward": reward, "status": "ok", "val_acc": metric.get("val_acc", 0.0),
            "val_acc_history": [], **metric, "params": 10, "flops": 20, "train_seconds": 0.1, "cache_hit": False,
            "seed": index, "result_seed": index, "num_layers": 1, "arch": arch(8 + index), "time": 0.0}


@pytest.mark.parametrize(("metric", "new_info", "shown"), [
    ("val_acc", {"val_acc": 0.95, "score_key": "val_acc", "score_lower_is_better": False}, "val_acc 0.9500"),
    ("val_ppl", {"val_ppl": 80.0, "score_key": "val_ppl", "score_lower_is_better": True}, "val_ppl 80.00"),
])
def test_an_old_run_folder_loads_and_resumes(tmp_path: Path, metric: str, new_info: dict, shown: str) -> None:
    run = tmp_path / "old"
    run.mkdir()
    (run / "config.json").write_text('{"env": "x"}')
    scores = {"val_acc": [0.5, 0.8], "val_ppl": [200.0, 120.0]}[metric]
    old = [old_record(i, r, **{metric: s}) for i, (r, s) in enumerate(zip([0.5, 0.8], scores, strict=True))]
    (run / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in old))
    folder = RunFolder(run, pictures=False)
    folder.start({"env": "x"}, total=3, desc="test", progress=False)
    assert folder.written == 2 and folder.best["index"] == 1
    assert f"{metric} {format_score(scores[1])}" in folder.summary()  # the old best, by its own metric
    info = {**child(2, 0.9).info, **new_info}
    if metric == "val_ppl":  # a language-model child: no accuracy
        del info["val_acc"], info["val_acc_history"]
    folder.record_child(ChildRecord(2, 0.9, info))
    folder.close()
    new = read_results(run / "results.jsonl")[-1]
    assert new["score_key"] == metric and new[metric] == new_info[metric]
    assert new["score_lower_is_better"] is new_info["score_lower_is_better"]
    assert (metric == "val_acc") == ("val_acc" in new)  # a perplexity child's record carries no accuracy
    assert json.loads((run / "best.json").read_text())["index"] == 2 and shown in folder.summary()
    events = EventAccumulator(str(run))
    events.Reload()
    assert [e.value for e in events.Scalars(f"search/best_{metric}")] == [pytest.approx(new_info[metric])]
    assert f"child/{metric}" in events.Tags()["scalars"]


@pytest.mark.parametrize(("env", "metric", "lower"), [("NASRL-Digits-v0", "val_acc", False),
                                                      ("NASRL-PTB-v0", "val_ppl", True)])
def test_records_name_the_score_the_env_reports(tmp_path: Path, env: str, metric: str, lower: bool) -> None:
    run = run_search(SearchArgs(env=env, episodes=2, children_per_update=2, logdir=str(tmp_path), run_name="run",
                                env_kwargs={"evaluator": "synthetic"}, progress=False))
    for record in read_results(run / "results.jsonl"):
        assert record["score_key"] == metric and record["score_lower_is_better"] is lower
        assert score_of(record) == (metric, record[metric]) and len(record[f"{metric}_history"]) == 1


def test_the_closing_summary_says_what_was_found_and_whether_the_search_learned(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path / "logs" / "run", pictures=False)
    folder.start({}, total=120, desc="test", progress=False)
    for i in range(120):  # rewards rise: 0.3 for the first 50, 0.6 from child 70 on (and the best, 0.95)
        folder.record_child(child(i, 0.3 if i < 50 else 0.6 if i >= 70 else 0.45, num_filters=8 + i % 7))
    folder.record_child(child(120, 0.95, num_filters=64))  # the best, a single 3x3 layer of 64 filters
    folder.close()
    lines = folder.summary(", 3 updates").splitlines()
    assert lines == [
        "search: 121 children (0 served from the store, 3 updates)",
        "best architecture (best.json): child 120, val_acc 0.9500, params 10",
        "  layers (filter x filters): 3x3x64",
        "mean reward: 0.3000 over the first 50 children, 0.6070 over the last 50 (+0.3070)",
        f"run folder: {tmp_path / 'logs' / 'run'}",
        f"TensorBoard: tensorboard --logdir {tmp_path / 'logs'}",
    ]


def test_a_short_search_compares_its_first_and_last_fifth_and_a_long_arch_is_left_to_best_json(
        tmp_path: Path) -> None:
    rewards = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.2]
    assert learning_line(rewards) == "mean reward: 0.1500 over the first 2 children, 0.5500 over the last 2 (+0.4000)"
    assert learning_line([0.5]) is None
    deep = json.dumps({"type": "cnn", "pool_after": [], "layers": [
        {"filter_height": 3, "filter_width": 3, "stride_height": 1, "stride_width": 1, "num_filters": 36,
         "inputs": list(range(1, i + 1))} for i in range(20)]})
    record = {"index": 0, "reward": 0.5, "val_acc": 0.5, "params": 10, "arch": deep}
    assert short_arch(record) is None
    assert short_arch({**record, "arch": arch(8)}) == "3x3x8"
    text = summary_text(tmp_path / "run", [record], record, 0)
    assert "best architecture (best.json): child 0, val_acc 0.5000" in text and "layers" not in text
    assert "mean reward" not in text  # one child: nothing to compare
    assert format_score(None) == "-" and format_score(0.91234) == "0.9123" and format_score(123.456) == "123.46"
