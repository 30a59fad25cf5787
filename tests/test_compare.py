"""A real short compare.py run: the CSV, the two PNG plots and the summary."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agents.compare import CompareArgs, best_so_far, compare, main, top_k_mean

C0 = (0x1F, 0x77, 0xB4)  # matplotlib's first line colour
C1 = (0xFF, 0x7F, 0x0E)  # its second


def has_colour(path: Path, rgb: tuple[int, int, int]) -> bool:
    pixels = np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3).astype(int)
    return bool((np.abs(pixels - np.array(rgb)).sum(axis=1) < 30).sum() > 50)


def test_short_comparison_writes_csv_plots_and_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cmp"
    summary = compare(CompareArgs(agents=["reinforce", "random"], seeds=[0, 1], episodes=8, children_per_update=4,
                                  checkpoint_every=4, top_k=[1, 5], out=str(out),
                                  env_kwargs={"evaluator": "synthetic", "num_layers": 2}, progress=False))
    with (out / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["agent", "seed", "child", "reward", "best_so_far"]
    assert len(rows) == 2 * 2 * 8
    for agent in ("reinforce", "random"):
        for seed in ("0", "1"):
            run = [r for r in rows if r["agent"] == agent and r["seed"] == seed]
            assert [int(r["child"]) for r in run] == list(range(8))
            rewards = [float(r["reward"]) for r in run]
            assert [float(r["best_so_far"]) for r in run] == pytest.approx(best_so_far(rewards), abs=1e-6)
            results = [json.loads(x) for x in (out / f"{agent}__{seed}" / "results.jsonl").read_text().splitlines()]
            assert rewards == pytest.approx([r["val_acc"] for r in results], abs=1e-6)
            assert summary["agents"][agent]["best"][int(seed)] == pytest.approx(max(rewards), abs=1e-6)
    for png in ("best_so_far.png", "top_k.png"):
        image = Image.open(out / png)
        assert image.size[0] > 400 and image.size[1] > 300
        assert has_colour(out / png, C0) and has_colour(out / png, C1)  # one curve per agent (or per k)
    assert json.loads((out / "summary.json").read_text())["episodes"] == 8
    printed = capsys.readouterr().out
    assert "reinforce" in printed and "top-5 mean" in printed
    assert all(1 <= n <= 8 for n in summary["agents"]["random"]["distinct_architectures"].values())


def test_top_k_and_best_so_far() -> None:
    assert best_so_far([0.2, 0.1, 0.5, 0.4]) == [0.2, 0.2, 0.5, 0.5]
    assert top_k_mean([0.2, 0.1, 0.5, 0.4], 2) == pytest.approx(0.45)
    assert top_k_mean([0.3], 5) == pytest.approx(0.3)
    assert top_k_mean([0.9, 0.9, 0.5, 0.1], 2, ["a", "a", "b", "c"]) == pytest.approx(0.7)  # distinct archs


def test_bad_agent_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--agents", "genetic"])
    assert "genetic" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown agent 'genetic'"):
        compare(CompareArgs(agents=["genetic"]))
