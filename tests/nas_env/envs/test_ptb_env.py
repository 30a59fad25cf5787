"""NASRL-PTB-v0: API conformance, info keys, the c / ppl^2 reward, divergence, a real proxy child, the search runner."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from env_test_utils import play
from gymnasium.utils.env_checker import check_env as gym_check_env
from shared_data import require_shared

import nas_env  # noqa: F401  (registers the ids)
from nas_env.data.ptb import load_ptb, unigram_perplexity
from nas_env.envs.ptb_env import PTBNASEnv
from nas_env.evaluators import EvalResult
from nas_env.evaluators.lm import LMTrainingEvaluator
from nas_env.models.rnn_cell import CellLanguageModel
from nas_env.spaces.rnn_cell import CellArchitecture, lstm_like_cell
from nas_env.training.lm_trainer import LMTrainConfig, train_lm

SHARED = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"
TINY = {"data_root": str(SHARED), "device": "cpu", "train_subset": 2000, "val_subset": 500, "hidden_size": 8,
        "batch_size": 8}


def needs_ptb() -> None:
    require_shared(SHARED / "ptb" / "ptb.train.txt")


def test_gymnasium_and_sb3_check_env() -> None:
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    gym_check_env(gym.make("NASRL-PTB-v0", evaluator="synthetic").unwrapped, skip_render_check=True)
    gym_check_env(gym.make("NASRL-PTB-v0", evaluator="synthetic", render_mode="ansi").unwrapped)
    sb3_check_env(gym.make("NASRL-PTB-v0", evaluator="synthetic").unwrapped, warn=False)


def test_spaces_masks_and_synthetic_reward() -> None:
    env = gym.make("NASRL-PTB-v0", evaluator="synthetic").unwrapped
    assert env.action_space == gym.spaces.Discrete(15)  # the cell-index tokens choose among 15 nodes
    assert list(env.observation_space.nvec[:2]) == [3, 5]
    env.reset(seed=0)
    assert env.action_masks().tolist() == [True, True] + [False] * 13
    target = env.evaluator.target.tolist()
    for a in target:
        _, reward, terminated, _, info = env.step(a)
    assert terminated and info["val_ppl"] == pytest.approx(60.0) and reward == pytest.approx(80 / 60**2)
    assert CellArchitecture.from_json(info["arch"]) == env.evaluator.target_arch
    assert "val_acc" not in info and info["val_ppl_history"] == [info["val_ppl"]]


def test_invalid_action_info_has_no_perplexity() -> None:
    env = gym.make("NASRL-PTB-v0", evaluator="synthetic")
    env.reset(seed=0)
    _, reward, terminated, _, info = env.step(14)  # only 0..1 are valid for the first combine token
    assert terminated and reward == -1.0 and info["status"] == "invalid_action" and info["val_ppl"] is None


def test_real_proxy_child_reward_is_c_over_ppl_squared() -> None:
    needs_ptb()
    env = gym.make("NASRL-PTB-v0", reward_c=100.0, render_mode="ansi", **TINY)
    reward, info, actions = play(env, np.random.default_rng(0))
    assert info["status"] == "ok" and len(info["val_ppl_history"]) == 1
    assert reward == pytest.approx(100.0 / info["val_ppl"] ** 2)
    assert info["params"] > 0 and info["flops"] > 0 and info["train_seconds"] > 0
    assert "status=ok val_ppl=" in env.render()
    again = gym.make("NASRL-PTB-v0", reward_c=100.0, **TINY)  # same seed and actions: same child on the CPU
    again.reset(seed=0)
    for a in actions:
        *_, info2 = again.step(a)
    assert info2["val_ppl"] == info["val_ppl"]


def test_diverged_child_gets_zero_reward() -> None:
    needs_ptb()
    env = PTBNASEnv(**TINY, train_config=LMTrainConfig(hidden_size=8, embedding_size=8, max_ppl=10.0))
    reward, info, _ = play(env, np.random.default_rng(1))
    assert info["status"] == "diverged" and reward == 0.0 and info["val_ppl"] is None
    data = load_ptb(SHARED, download=False, train_subset=2000, val_subset=500)
    nan = LMTrainingEvaluator(data, LMTrainConfig(hidden_size=8, embedding_size=8, optimizer="sgd", lr=1e6, clip=0,
                                                  init_range=10.0), device="cpu")
    result = nan(CellArchitecture.from_json(info["arch"]), seed=0)
    assert result.status == "diverged" and result.reward == 0.0


def test_store_serves_a_cell_again(tmp_path: Path) -> None:
    env = gym.make("NASRL-PTB-v0", evaluator="synthetic", store=tmp_path / "s.sqlite")
    _, info, actions = play(env, np.random.default_rng(0))
    env.reset(seed=1)
    for a in actions:
        *_, info2 = env.step(a)
    assert not info["cache_hit"] and info2["cache_hit"] and info2["val_ppl"] == info["val_ppl"]


def test_callable_evaluator_and_bad_keywords() -> None:
    env = gym.make("NASRL-PTB-v0", evaluator=lambda arch, seed: EvalResult(0.5, "ok", {"val_ppl": 4.0}))
    reward, info, _ = play(env, np.random.default_rng(0))
    assert reward == 0.5 and info["val_ppl"] == 4.0
    with pytest.raises(ValueError, match=r"preset must be one of \['paper', 'proxy'\], got 'huge'"):
        PTBNASEnv(preset="huge", evaluator="synthetic")
    with pytest.raises(ValueError, match=r"evaluator must be one of \('train', 'synthetic'\).*got 'fast'"):
        PTBNASEnv(evaluator="fast")
    with pytest.raises(ValueError, match=r"base must be a power of two >= 2 .*got 3"):
        PTBNASEnv(base=3, evaluator="synthetic")
    with pytest.raises(ValueError, match=r"reward_c must be a finite number > 0 .*got -1"):
        PTBNASEnv(reward_c=-1, evaluator="synthetic")
    with pytest.raises(ValueError, match=r"batch_size must be an integer >= 1, got 0"):
        PTBNASEnv(batch_size=0, evaluator="synthetic")


def test_absent_data_error_names_the_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path / 'ptb'}"):
        gym.make("NASRL-PTB-v0", data_root=str(tmp_path), download=False)


def test_short_training_beats_the_unigram_model() -> None:
    """The LSTM-like cell after 30,000 tokens: validation perplexity well below the unigram model of the same data."""
    needs_ptb()
    data = load_ptb(SHARED, download=False, train_subset=30_000, val_subset=4000)
    unigram = unigram_perplexity(data.train, data.valid, data.vocab_size)
    config = LMTrainConfig(batch_size=8, bptt=20, hidden_size=32, embedding_size=32, lr=0.01)
    torch.manual_seed(0)
    model = CellLanguageModel(lstm_like_cell(), data.vocab_size, 32, 32, dropout=0.0, tie_weights=True)
    outcome = train_lm(model, data, config, torch.device("cpu"))
    assert outcome.status == "ok"
    assert outcome.val_ppl_history[0] < 0.9 * unigram, (outcome.val_ppl_history, unigram)


@pytest.mark.slow
def test_longer_training_is_far_below_the_unigram_model() -> None:
    needs_ptb()
    data = load_ptb(SHARED, download=False, train_subset=100_000, val_subset=4000)
    unigram = unigram_perplexity(data.train, data.valid, data.vocab_size)
    config = replace(LMTrainConfig(), batch_size=8, bptt=20, epochs=1)
    torch.manual_seed(0)
    model = CellLanguageModel(lstm_like_cell(), data.vocab_size, 64, 64, dropout=0.0, tie_weights=True)
    outcome = train_lm(model, data, config, torch.device("cpu"))
    assert outcome.val_ppl_history[0] < 0.75 * unigram, (outcome.val_ppl_history, unigram)


@pytest.mark.parametrize("agent", ["random", "reinforce"])
def test_search_runner_on_ptb(agent: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from agents.experiment.runner import main

    main(["--env", "NASRL-PTB-v0", "--agent", agent, "--episodes", "6", "--children-per-update", "3",
          "--logdir", str(tmp_path), "--run-name", "r", "--no-progress", "--env-kwargs", '{"evaluator": "synthetic"}'])
    records = [json.loads(line) for line in (tmp_path / "r" / "results.jsonl").read_text().splitlines()]
    assert len(records) == 6 and all(r["val_ppl"] > 0 and len(r["val_ppl_history"]) == 1 for r in records)
    best = json.loads((tmp_path / "r" / "best.json").read_text())
    assert best["val_ppl"] == min(r["val_ppl"] for r in records)
    out = capsys.readouterr().out
    # the closing summary names the best cell's score and where it is (its JSON is too long for the summary)
    assert f"best architecture (best.json): child {best['index']}, val_ppl {best['val_ppl']:.2f}" in out
