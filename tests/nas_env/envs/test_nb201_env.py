"""NASRL-NB201-CIFAR10-v0: NAS-Bench-201's cell space with the child trained for real (tiny data here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest
import torch
from env_test_utils import episode
from gymnasium.utils.env_checker import check_env

import nas_env  # noqa: F401  (registers the environments)
from nas_env.envs.nb201_env import PRESETS
from nas_env.evaluators import EvalResult, TrainingEvaluator
from nas_env.models.nb201 import NB201Builder, build_nb201_model
from nas_env.spaces.nb201 import NB201Architecture, NB201SearchSpace
from nas_env.training.image_trainer import TrainConfig

ENV_ID = "NASRL-NB201-CIFAR10-v0"
BEST_CIFAR100 = [3, 3, 3, 1, 3, 3]
SMALL = {"C": 4, "N": 1, "epochs": 1, "batch_size": 16, "device": "cpu"}


def tiny_data(seed: int = 0) -> tuple[torch.Tensor, ...]:
    """48 training and 16 validation 3x8x8 images of 4 classes, each class a brighter colour channel."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(64) % 4
    x = torch.randint(0, 120, (64, 3, 8, 8), generator=gen, dtype=torch.uint8)
    x[:, 0] += (y * 40).to(torch.uint8).view(-1, 1, 1)
    return x[:48], y[:48], x[48:], y[48:]


def make(**kwargs: Any) -> gym.Env:
    return gym.make(ENV_ID, **{"data": tiny_data(), **SMALL, **kwargs})


def test_gymnasium_and_sb3_check_env() -> None:
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = make()
    check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(env.unwrapped)
    table = gym.make("NASRL-Bench201-CIFAR10-v0").unwrapped
    assert isinstance(env.unwrapped.space, NB201SearchSpace)
    assert env.unwrapped.token_specs == table.token_specs
    assert env.unwrapped.action_space == table.action_space
    assert env.unwrapped.observation_space == table.observation_space


def test_an_episode_trains_a_real_digits_child() -> None:
    env = gym.make(ENV_ID, dataset="digits", **SMALL)
    reward, info = episode(env, BEST_CIFAR100, seed=0)
    arch = NB201Architecture.from_key("333133")
    assert info["status"] == "ok" and 0.0 <= reward <= 1.0 and reward == info["val_acc"]
    assert info["train_seconds"] > 0 and len(info["val_acc_history"]) == 1
    assert info["arch_str"] == arch.to_arch_str() and info["table_index"] == arch.index
    assert NB201Architecture.from_json(info["arch"]) == arch
    model = build_nb201_model(arch, (1, 8, 8), 10, C=4, N=1)
    assert info["params"] == sum(p.numel() for p in model.parameters()) and info["model_size"] == info["params"] / 1e6
    assert episode(env, BEST_CIFAR100, seed=0)[0] == reward  # same seed, same child: the same reward on the CPU


def test_an_agent_written_for_the_table_env_runs_unchanged() -> None:
    from agents import RandomSearchAgent

    def run(env: gym.Env) -> list[Any]:
        children: list[Any] = []
        RandomSearchAgent(seed=3, children_per_update=2).run(env, 2, children.append, lambda _: None)
        return children

    on_table, trained = run(gym.make("NASRL-Bench201-CIFAR10-v0")), run(make())
    assert [c.info["arch_str"] for c in trained] == [c.info["arch_str"] for c in on_table]
    assert all(c.info["status"] == "ok" and 0.0 <= c.reward <= 1.0 for c in trained)


def test_a_store_serves_a_trained_cell(tmp_path: Path) -> None:
    env = make(store=str(tmp_path / "s.sqlite"))
    reward, info = episode(env, BEST_CIFAR100, seed=1)
    again, info_again = episode(env, BEST_CIFAR100, seed=1)
    assert not info["cache_hit"] and info_again["cache_hit"] and again == reward
    assert info_again["arch_str"] == info["arch_str"]


def test_the_fingerprint_holds_the_model_kind_and_its_width_and_depth() -> None:
    data = make().unwrapped.evaluator.data.data

    def fingerprint(builder: Any) -> str:
        return TrainingEvaluator(data, device="cpu", builder=builder).fingerprint()

    prints = [fingerprint(None), fingerprint(NB201Builder(4, 1)), fingerprint(NB201Builder(8, 1)),
              fingerprint(NB201Builder(4, 2))]
    assert len(set(prints)) == 4 and fingerprint(NB201Builder(4, 1)) == prints[1]
    assert make().unwrapped.evaluator.fingerprint() != make(C=5).unwrapped.evaluator.fingerprint()


def test_presets_and_overrides() -> None:
    def never(arch: NB201Architecture, seed: int) -> EvalResult:
        return EvalResult(0.5, "ok", {})

    nb201 = gym.make(ENV_ID, preset="nb201", evaluator=never, device="cpu").unwrapped
    config = nb201.train_config
    assert (nb201.builder.C, nb201.builder.N, config.epochs, config.batch_size) == (16, 5, 200, 256)
    assert config.weight_decay == 5e-4 and config.lr_schedule == "cosine" and config.reward_window == 1
    assert nb201.data_options["train_subset"] is None
    proxy = gym.make(ENV_ID, evaluator=never, device="cpu", epochs=3, C=6).unwrapped
    assert (proxy.builder.C, proxy.builder.N, proxy.train_config.epochs) == (6, PRESETS["proxy"]["N"], 3)
    assert proxy.data_options["train_subset"] == PRESETS["proxy"]["train_subset"]
    assert gym.make(ENV_ID, dataset="digits", evaluator=never).unwrapped.data_options["train_subset"] is None
    # epochs given in train_config are kept (the epochs keyword, when given, wins)
    assert gym.make(ENV_ID, evaluator=never, train_config={"epochs": 7}).unwrapped.train_config.epochs == 7
    assert gym.make(ENV_ID, evaluator=never, train_config=TrainConfig(epochs=9)).unwrapped.train_config.epochs == 9
    assert gym.make(ENV_ID, evaluator=never, train_config={"epochs": 9}, epochs=4).unwrapped.train_config.epochs == 4
    reward, info = episode(gym.make(ENV_ID, evaluator=never, device="cpu"), [0] * 6, seed=0)
    assert reward == 0.5 and info["arch_str"] == NB201Architecture.from_key("000000").to_arch_str()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"dataset": "cifar11"}, r"dataset must be one of .*'cifar10'.*, got 'cifar11'"),
    ({"preset": "paper"}, r"preset must be one of 'proxy', 'nb201', got 'paper'"),
    ({"evaluator": "table"}, r"evaluator must be one of 'train', 'shared', got 'table'"),
    ({"C": 0}, r"C must be an integer >= 1, got 0"),
    ({"N": "5"}, r"N must be an integer >= 1, got '5'"),
    ({"epochs": 0}, r"epochs must be an integer >= 1, got 0"),
    ({"train_config": {"channel_multiple": 8}}, r"channel_multiple=8 .* CNN space's children only"),
    ({"train_config": {"nope": 1}}, r"unknown field\(s\) \['nope'\]"),
    ({"dataset": "memory", "data": None}, r"dataset='memory' needs data="),
])
def test_bad_keywords_are_named(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make(**kwargs)


def test_images_the_network_cannot_halve_twice_are_refused() -> None:
    x = torch.zeros(8, 3, 6, 6, dtype=torch.uint8)
    y = torch.arange(8) % 2
    with pytest.raises(ValueError, match=r"multiples of 4, got input_shape \(3, 6, 6\)"):
        make(data=(x, y, x, y))
