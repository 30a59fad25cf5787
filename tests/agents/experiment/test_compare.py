"""A real short compare.py run: the CSV, the two PNG plots and the summary."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agents.experiment.compare import CompareArgs, best_so_far, compare, main, score_of_best_so_far, top_k_mean

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
    for agent in ("reinforce", "random"):  # a picture of each agent's best architecture
        assert summary["agents"][agent]["best_picture"] == f"best_{agent}.png"
        assert Image.open(out / f"best_{agent}.png").size[1] > 200
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


def test_ptb_comparison_reports_perplexities_ranked_by_reward(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ptb"
    summary = compare(CompareArgs(env="NASRL-PTB-v0", agents=["reinforce", "random"], seeds=[0, 1], episodes=6,
                                  children_per_update=3, checkpoint_every=3, top_k=[1, 5], out=str(out),
                                  env_kwargs={"evaluator": "synthetic"}, progress=False))
    assert summary["metric"] == "val_ppl" and summary["lower_is_better"] is True
    with (out / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["agent", "seed", "child", "reward", "best_so_far", "val_ppl", "best_val_ppl_so_far"]
    assert len(rows) == 2 * 2 * 6
    for agent in ("reinforce", "random"):
        for seed in (0, 1):
            run = [r for r in rows if r["agent"] == agent and r["seed"] == str(seed)]
            results = [json.loads(x) for x in (out / f"{agent}__{seed}" / "results.jsonl").read_text().splitlines()]
            rewards = [float(r["reward"]) for r in run]
            ppls = [float(r["val_ppl"]) for r in run]
            assert rewards == pytest.approx([r["reward"] for r in results], rel=1e-6)
            assert ppls == pytest.approx([r["val_ppl"] for r in results], rel=1e-6)
            assert all(p > 1 for p in ppls)  # perplexities, not accuracies
            # the reward c / ppl^2 ranks the children: the best so far is the lowest perplexity so far
            assert [float(r["best_val_ppl_so_far"]) for r in run] == pytest.approx(
                list(np.minimum.accumulate(ppls)), rel=1e-6)
            s = summary["agents"][agent]
            assert s["best"][seed] == pytest.approx(min(ppls), rel=1e-6)
            assert s["best_reward"][seed] == pytest.approx(max(rewards), rel=1e-6)
            assert min(ppls) <= s["top5_mean"][seed] <= max(ppls)
            assert s["mean_all"][seed] == pytest.approx(np.mean(ppls), rel=1e-6)
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["metric"] == "val_ppl"
    assert on_disk["agents"]["random"]["best"]["0"] == summary["agents"]["random"]["best"][0]
    for png in ("best_so_far.png", "top_k.png"):
        assert has_colour(out / png, C0) and has_colour(out / png, C1)
    printed = capsys.readouterr().out
    assert "validation perplexity (lower is better)" in printed


def test_top_k_ranks_by_reward_and_averages_scores() -> None:
    rewards, ppls = [0.1, 0.4, 0.2, 0.0], [200.0, 100.0, 150.0, float("nan")]  # the last one diverged
    assert top_k_mean(rewards, 2, scores=ppls) == pytest.approx(125.0)
    assert top_k_mean(rewards, 9, scores=ppls) == pytest.approx(150.0)  # no perplexity: left out
    assert top_k_mean(rewards, 2, ["a", "b", "b", "c"], ppls) == pytest.approx(150.0)  # distinct archs
    assert score_of_best_so_far(rewards, ppls) == [200.0, 100.0, 100.0, 100.0]
    assert np.isnan(score_of_best_so_far([0.0, 0.5], [float("nan"), 90.0])[0])


def test_variants_compare_one_agent_under_several_settings(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    variants = {"reinforce-paper": {"agent": "reinforce", "kwargs": {"preset": "paper"}},
                "reinforce-fast": {"agent": "reinforce", "kwargs": {"lr": 0.01}}}
    summary = compare(CompareArgs(agents=["reinforce-paper", "reinforce-fast"], seeds=[0], episodes=5,
                                  children_per_update=5, out=str(out), variants=variants,
                                  env_kwargs={"evaluator": "synthetic", "num_layers": 2}, progress=False))
    assert set(summary["agents"]) == {"reinforce-paper", "reinforce-fast"}
    configs = {label: json.loads((out / f"{label}__0" / "config.json").read_text()) for label in variants}
    assert configs["reinforce-paper"]["agent_kwargs"] == {"preset": "paper"}
    assert configs["reinforce-fast"]["agent_kwargs"] == {"lr": 0.01}
    with pytest.raises(ValueError, match="--variants 'x' must be"):
        compare(CompareArgs(agents=["x"], variants={"x": {"agent": "genetic"}}, out=str(out)))
