"""NASRL-Bench201-*-v0: the generic NASEnv over NB201's cell, rewarded by its published results."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from env_test_utils import episode
from gymnasium.utils.env_checker import check_env

import nas_env  # noqa: F401  (registers the environments)
from nas_env.bench.nb201 import load_table
from nas_env.spaces.nb201 import NB201Architecture, NB201SearchSpace

IDS = {"NASRL-Bench201-CIFAR10-v0": "cifar10", "NASRL-Bench201-CIFAR100-v0": "cifar100",
       "NASRL-Bench201-ImageNet16-v0": "imagenet16"}
BEST_CIFAR100 = [3, 3, 3, 1, 3, 3]


@pytest.mark.parametrize("env_id", list(IDS))
def test_gymnasium_and_sb3_check_env(env_id: str) -> None:
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = gym.make(env_id)
    check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(env.unwrapped)
    assert isinstance(env.unwrapped.space, NB201SearchSpace) and env.unwrapped.action_space.n == 5


def test_the_best_cifar100_cell_and_its_info() -> None:
    env = gym.make("NASRL-Bench201-CIFAR100-v0")
    reward, info = episode(env, BEST_CIFAR100, seed=0)
    table = load_table("cifar100")
    row = NB201Architecture.from_key("333133").index
    assert info["table_index"] == row and info["regret"] == 0.0 and info["status"] == "ok"
    assert reward == info["val_acc"] and reward in table.val_acc[row].tolist()  # one trained seed's accuracy
    assert info["arch_str"] == NB201Architecture.from_key("333133").to_arch_str()
    assert NB201Architecture.from_json(info["arch"]).key == "333133"
    assert info["train_seconds"] == pytest.approx(table.train_time[row] * 12 / 200)
    assert info["latency"] == pytest.approx(table.latency[row]) and info["model_size"] == table.model_size[row]
    assert info["params"] is None and info["flops"] is None  # not in the data (model_size is)


def test_noise_picks_a_seed_by_the_episode_seed_or_the_mean() -> None:
    row = NB201Architecture.from_key("333133").index
    seeds = load_table("cifar10").val_acc[row].tolist()
    env = gym.make("NASRL-Bench201-CIFAR10-v0")
    rewards = {episode(env, BEST_CIFAR100, seed=s)[0] for s in range(30)}
    assert rewards == set(seeds)  # every trained seed shows up, nothing else
    assert episode(env, BEST_CIFAR100, seed=3)[0] == episode(env, BEST_CIFAR100, seed=3)[0]  # reproducible
    mean_env = gym.make("NASRL-Bench201-CIFAR10-v0", noise="mean")
    reward, info = episode(mean_env, BEST_CIFAR100, seed=0)
    assert reward == pytest.approx(np.mean(seeds)) and info["regret"] == pytest.approx(
        load_table("cifar10").mean_val().max() - np.mean(seeds))


def test_the_all_none_cell_scores_chance_and_regret_is_large() -> None:
    _, info = episode(gym.make("NASRL-Bench201-ImageNet16-v0"), [0] * 6, seed=0)
    assert info["val_acc"] == pytest.approx(1 / 120, rel=0.01) and info["regret"] > 0.45


def test_renders_the_cell() -> None:
    env = gym.make("NASRL-Bench201-CIFAR10-v0", render_mode="ansi")
    env.reset(seed=0)
    env.step(3)
    assert "node 1 = conv3x3(n0)" in env.render() and "node 2 = ?(n0) + ?(n1)" in env.render()
    for a in [0, 3, 1, 0, 1]:
        env.step(a)
    text = env.render()
    assert "node 3 = skip(n0) + skip(n2)   (output)" in text and "|skip_connect~0|none~1|skip_connect~2|" in text
    assert "regret=" in text
    picture = gym.make("NASRL-Bench201-CIFAR10-v0", render_mode="rgb_array")
    picture.reset(seed=0)
    picture.step(2)
    assert picture.render().shape[2] == 3


def test_bad_keywords_are_named() -> None:
    with pytest.raises(ValueError, match="dataset must be one of"):
        gym.make("NASRL-Bench201-CIFAR10-v0", dataset="mnist")
    with pytest.raises(ValueError, match="noise must be one of"):
        gym.make("NASRL-Bench201-CIFAR10-v0", noise="loud")


def test_a_store_caches_the_lookups(tmp_path: Path) -> None:
    env = gym.make("NASRL-Bench201-CIFAR10-v0", store=str(tmp_path / "s.sqlite"))
    reward, info = episode(env, BEST_CIFAR100, seed=1)
    again, info_again = episode(env, BEST_CIFAR100, seed=1)
    assert again == reward and info_again["arch_str"] == info["arch_str"] and info_again["regret"] == info["regret"]
