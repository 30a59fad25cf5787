"""The cost-aware reward (MnasNet-style): the formula, its info, the transform, and bad options."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest

import nas_env  # noqa: F401  (registers the ids)
from nas_env.envs.cnn_env import CNNNASEnv
from nas_env.evaluators import EvalResult
from nas_env.spaces.cnn import CNNArchitecture


def finish(env: gym.Env, seed: int = 0) -> tuple[float, dict]:
    """One episode of seeded random valid actions: (final reward, final info)."""
    rng = np.random.default_rng(seed)
    _, info = env.reset(seed=seed)
    while True:
        _, reward, terminated, _, info = env.step(int(rng.choice(np.flatnonzero(info["action_mask"]))))
        if terminated:
            return float(reward), info


@pytest.mark.parametrize(("metric", "exponent"), [("params", -0.07), ("flops", -0.5), ("params", 0.0)])
def test_reward_is_accuracy_times_cost_ratio_to_the_exponent(metric: str, exponent: float) -> None:
    target = 20_000.0
    env = gym.make("NASRL-Digits-v0", evaluator="synthetic", cost_metric=metric, cost_target=target,
                   cost_exponent=exponent)
    for seed in range(4):
        reward, info = finish(env, seed)
        arch = CNNArchitecture.from_json(info["arch"])
        cost = arch.num_params((1, 8, 8), 10) if metric == "params" else arch.multiply_adds((1, 8, 8), 10)
        assert info["cost"] == cost == info[metric]
        assert info["cost_factor"] == pytest.approx((cost / target) ** exponent)
        assert reward == pytest.approx(info["val_acc"] * (cost / target) ** exponent)
        assert info["raw_reward"] == info["val_acc"]  # the unshaped score stays available


def test_costlier_children_lose_reward_and_cheaper_ones_gain() -> None:
    def reward_at(target: float) -> tuple[float, dict]:
        return finish(gym.make("NASRL-Digits-v0", evaluator="synthetic", cost_metric="params", cost_target=target), 7)

    _, info = reward_at(1.0)
    params = info["params"]
    at_target, _ = reward_at(params)
    below, _ = reward_at(params / 2)  # the child costs twice the target
    above, _ = reward_at(params * 2)  # the child costs half the target
    assert at_target == pytest.approx(info["val_acc"])
    assert below == pytest.approx(at_target * 2 ** -0.07) and below < at_target < above
    assert above == pytest.approx(at_target * 2 ** 0.07)


def test_the_transform_applies_to_the_shaped_accuracy() -> None:
    env = gym.make("NASRL-Digits-v0", evaluator="synthetic", reward_transform="cube", cost_metric="flops",
                   cost_target=1e5)
    reward, info = finish(env, 2)
    assert reward == pytest.approx((info["val_acc"] * info["cost_factor"]) ** 3)


def test_without_a_cost_metric_nothing_changes() -> None:
    reward, info = finish(gym.make("NASRL-Digits-v0", evaluator="synthetic"), 1)
    assert reward == info["val_acc"] and "cost" not in info and "cost_factor" not in info


def test_failed_children_still_get_zero() -> None:
    def diverges(arch: CNNArchitecture, seed: int) -> EvalResult:
        return EvalResult(0.0, "diverged", {"val_acc": 0.0, "params": 1000})

    reward, info = finish(CNNNASEnv("digits", evaluator=diverges, cost_metric="params", cost_target=10.0))
    assert reward == 0.0 and info["status"] == "diverged" and info["cost"] == 1000


def test_an_evaluator_without_the_cost_is_a_clear_error() -> None:
    env = CNNNASEnv("digits", evaluator=lambda arch, seed: 0.9, cost_metric="flops", cost_target=1e6)
    with pytest.raises(RuntimeError, match=r"cost_metric='flops' needs the evaluator to report metrics\['flops'\]"):
        finish(env)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"cost_metric": "latency", "cost_target": 1.0}, r"cost_metric must be None or one of \('params', 'flops'\)"),
    ({"cost_metric": "params"}, "cost_target must be a finite number > 0"),
    ({"cost_metric": "params", "cost_target": 0}, "cost_target must be a finite number > 0"),
    ({"cost_metric": "params", "cost_target": -5.0}, "cost_target must be a finite number > 0"),
    ({"cost_metric": "params", "cost_target": math.inf}, "cost_target must be a finite number > 0"),
    ({"cost_metric": "params", "cost_target": "1e6"}, "cost_target must be a finite number > 0"),
    ({"cost_metric": "params", "cost_target": 1e6, "cost_exponent": 0.07}, "cost_exponent must be a finite number <="),
    ({"cost_metric": "params", "cost_target": 1e6, "cost_exponent": math.nan}, "cost_exponent must be a finite"),
    ({"cost_target": 1e6}, "cost_target=1000000.0 is set but cost_metric is None"),
])
def test_bad_cost_options_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        gym.make("NASRL-Digits-v0", evaluator="synthetic", **kwargs)
