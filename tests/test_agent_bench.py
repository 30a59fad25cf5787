"""nasrl-agent-bench: incumbents judged by the table's truth, curves over seeds, significance against random."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from test_bench import made_up_table

from agents.agent_bench import AgentBenchArgs, at_times, benchmark, incumbent_curves, mann_whitney_less


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
    for run in runs:  # the incumbent only ever improves in reward; its regret is a true table regret
        regret = np.array(run["regret"], dtype=float)
        assert len(regret) == 60 and (regret >= 0).all()
    with (out / "curves.csv").open() as f:
        curves = list(csv.DictReader(f))
    assert {c["axis"] for c in curves} == {"children", "simulated_seconds"}
    assert (out / "regret.png").stat().st_size > 10_000 and "p=" in (out / "table.md").read_text()
    with pytest.raises(ValueError, match="not known labels"):
        benchmark(AgentBenchArgs(table=str(table_path), agents=["genetic"], out=str(out)))
