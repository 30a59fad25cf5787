"""nasrl-agent-bench: incumbents judged by the table's truth, curves over seeds, significance against random."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from bench_test_utils import made_up_table

from agents.experiment.agent_bench import AgentBenchArgs, at_times, benchmark, incumbent_curves, mann_whitney_less


def test_the_incumbent_is_the_best_reward_seen_judged_by_the_mean() -> None:
    run = {"rows": [3, 1, 2, 0], "rewards": [0.5, 0.9, 0.95, 0.99], "ok": [True, True, False, True]}
    mean_val = np.array([0.6, 0.7, 0.2, 0.4])
    mean_test = np.array([0.61, 0.71, 0.21, 0.41])
    regret, test = incumbent_curves(run, mean_val, mean_test, best_mean=0.7)
    # child 3 (row 2) had the best reward but failed: it never becomes the incumbent
    np.testing.assert_allclose(regret, [0.3, 0.0, 0.0, 0.1])
    np.testing.assert_allclose(test, [0.41, 0.71, 0.71, 0.61])
    np.testing.assert_allclose(at_times(regret, [1.0, 1.0, 1.0, 1.0], np.array([0.5, 1.0, 2.5, 10.0])),
                               [np.nan, 0.3, 0.0, 0.1])


def test_the_mean_rule_judges_a_repeated_architecture_by_its_average() -> None:
    # row 1 is sampled again and again: its lucky first reward (0.9) ties row 0's best seed, its mean does not
    run = {"rows": [1, 1, 0, 1], "rewards": [0.9, 0.5, 0.85, 0.6], "ok": [True] * 4}
    mean_val, mean_test = np.array([0.8, 0.6]), np.array([0.79, 0.59])
    regret, _ = incumbent_curves(run, mean_val, mean_test, best_mean=0.8, rule="mean")
    np.testing.assert_allclose(regret, [0.2, 0.2, 0.0, 0.0])  # row 1's mean fell to 0.7 < 0.85
    regret, _ = incumbent_curves(run, mean_val, mean_test, best_mean=0.8, rule="max")
    np.testing.assert_allclose(regret, [0.2, 0.2, 0.2, 0.2])  # the max rule keeps row 1's 0.9 forever


def test_mann_whitney_is_one_sided() -> None:
    low, high = np.arange(10) / 100, np.arange(10) / 100 + 0.5
    assert mann_whitney_less(low, high) < 0.001 < 0.999 < mann_whitney_less(high, low)


def test_a_small_benchmark_writes_curves_table_and_plot(tmp_path: Path) -> None:
    table_path = tmp_path / "t.json.gz"
    made_up_table().save(table_path)
    out = tmp_path / "bench"
    summary = benchmark(AgentBenchArgs(table=str(table_path), agents=["random", "reinforce", "fast"], seeds=3,
                                       children=60, workers=1, out=str(out),
                                       variants={"fast": {"agent": "reinforce", "kwargs": {"lr": 0.01}}}))
    assert {r["agent"] for r in summary["rows"]} == {"random", "reinforce", "fast"}
    rows = [r for r in summary["rows"] if r["children"] == 50]
    assert len(rows) == 3 and all(r["p_vs_random"] is None or 0 <= r["p_vs_random"] <= 1 for r in rows)
    runs = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert len(runs) == 9
    table = made_up_table()
    mean_val, mean_test = table.mean_val(), table.mean_test()
    for run in runs:  # its regret is a true table regret, and the logged children reproduce it
        regret = np.array(run["regret"], dtype=float)
        assert len(regret) == 60 and (regret >= 0).all()
        again, _ = incumbent_curves(run, mean_val, mean_test, float(mean_val.max()))
        np.testing.assert_allclose(again, regret, atol=1e-5)
    assert summary["rows"][0]["p_vs_evolution"] is None  # no evolution in this run: no p-value against it
    with (out / "curves.csv").open() as f:
        curves = list(csv.DictReader(f))
    assert {c["axis"] for c in curves} == {"children", "simulated_seconds"}
    assert (out / "regret.png").stat().st_size > 10_000 and "p=" in (out / "table.md").read_text()
    with pytest.raises(ValueError, match="--incumbent must be one of mean, max, got 'last'"):
        benchmark(AgentBenchArgs(table=str(table_path), incumbent="last", out=str(out)))
    with pytest.raises(ValueError, match="not known labels"):
        benchmark(AgentBenchArgs(table=str(table_path), agents=["genetic"], out=str(out)))


def test_nas_bench_201_tables_report_points_seconds_and_the_new_baselines(tmp_path: Path) -> None:
    pytest.importorskip("optuna")
    from nas_env.bench.nb201 import load_table

    out = tmp_path / "nb201"
    summary = benchmark(AgentBenchArgs(table="nb201-cifar10", agents=["random", "rea", "tpe-multivariate"], seeds=2,
                                       children=30, workers=1, seconds=[500.0, 1e9], out=str(out)))
    assert summary["table"] == "nb201-cifar10" and summary["unit"].startswith("points")
    mean_val = 100 * load_table("cifar10").mean_val()
    assert summary["table_best_mean_val"] == pytest.approx(91.6067, abs=1e-3)
    for line in (out / "runs.jsonl").read_text().splitlines():  # regrets in points, reproduced from the rows
        run = json.loads(line)
        again, _ = incumbent_curves(run, mean_val, np.full(len(mean_val), np.nan), float(mean_val.max()))
        np.testing.assert_allclose(again, np.array(run["regret"], dtype=float), atol=1e-4)
    row = next(r for r in summary["rows"] if r["agent"] == "tpe-multivariate" and r["children"] == 30)
    assert row["median_test_acc"] is None and 0 <= row["p_vs_rea"] <= 1 and row["p_vs_tpe-multivariate"] is None
    times = {(r["agent"], r["seconds"]): r for r in summary["time_rows"]}
    assert times["rea", 500.0]["reached"] == 1.0 and times["rea", 500.0]["median_regret"] >= 0
    assert times["rea", 1e9]["reached"] == 0.0 and times["rea", 1e9]["median_regret"] is None
    text = (out / "table.md").read_text()
    assert "points of validation accuracy" in text and "| 500 s | 1,000,000,000 s |" in text and "n/a" in text
    with pytest.raises(ValueError, match="only its 200-epoch results"):
        benchmark(AgentBenchArgs(table="nb201-cifar10", epochs=12, out=str(out)))
    with pytest.raises(ValueError, match="NAS-Bench-201 tables are nb201-cifar10"):
        benchmark(AgentBenchArgs(table="nb201-mnist", out=str(out)))
