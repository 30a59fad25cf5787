"""The Gymnasium environment: API conformance, masks, bad input, rewards, info, rendering, seeding."""

from __future__ import annotations

import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from env_test_utils import play
from gymnasium.utils.env_checker import check_env as gym_check_env

import nas_env  # noqa: F401  (registers the ids)
from nas_env.envs.cnn_env import CNNNASEnv
from nas_env.envs.nas_env import NASEnv
from nas_env.evaluators import EvalResult, is_oom
from nas_env.spaces.cnn import CNNArchitecture, cnn_space

FAST = {"evaluator": "synthetic"}


@pytest.mark.parametrize("env_id", ["NASRL-CIFAR10-v0", "NASRL-CIFAR10-Strides-v0", "NASRL-CIFAR10-Pooling-v0",
                                    "NASRL-Digits-v0"])
def test_gymnasium_check_env_with_fast_evaluator(env_id: str) -> None:
    env = gym.make(env_id, **FAST)
    gym_check_env(env.unwrapped, skip_render_check=True)
    gym_check_env(gym.make(env_id, render_mode="ansi", **FAST).unwrapped)


def test_sb3_check_env_both_envs() -> None:
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    for env_id in ("NASRL-CIFAR10-v0", "NASRL-Digits-v0"):
        sb3_check_env(gym.make(env_id, **FAST).unwrapped, warn=False)


def test_check_env_with_real_digits_training() -> None:
    env = gym.make("NASRL-Digits-v0", epochs=1, device="cpu")
    gym_check_env(env.unwrapped, skip_render_check=True)
    reward, info, _ = play(env, np.random.default_rng(0))
    assert info["status"] == "ok" and 0.0 < reward <= 1.0


def test_spaces_and_masks_follow_the_tokens() -> None:
    env = gym.make("NASRL-CIFAR10-Strides-v0", **FAST).unwrapped
    specs = env.token_specs
    assert env.action_space == gym.spaces.Discrete(4)
    assert list(env.observation_space.nvec) == [s.num_choices + 1 for s in specs]
    obs, info = env.reset(seed=1)
    assert not obs.any()
    for t, spec in enumerate(specs):
        mask = env.action_masks()
        assert mask.dtype == bool and info["action_mask"].dtype == np.int8
        np.testing.assert_array_equal(mask, np.arange(4) < spec.num_choices)
        np.testing.assert_array_equal(info["action_mask"], mask.astype(np.int8))
        obs, reward, terminated, _, info = env.step(spec.num_choices - 1)
        assert obs[t] == spec.num_choices and np.count_nonzero(obs) == t + 1
        assert terminated == (t == len(specs) - 1)
    assert reward == pytest.approx(info["val_acc"])


def test_final_info_has_the_documented_keys() -> None:
    env = gym.make("NASRL-Digits-v0", **FAST)
    reward, info, actions = play(env, np.random.default_rng(3))
    for key in ("arch", "val_acc", "val_acc_history", "params", "flops", "train_seconds", "status"):
        assert key in info
    arch = CNNArchitecture.from_json(info["arch"])
    assert env.unwrapped.space.encode(arch) == actions
    assert info["params"] == arch.num_params((1, 8, 8), 10)
    assert info["flops"] == arch.multiply_adds((1, 8, 8), 10)
    assert info["status"] == "ok" and reward == info["val_acc"]


@pytest.mark.parametrize("bad", [-1, 4, 10**6])
def test_action_outside_space_raises_value_error(bad: int) -> None:
    env = gym.make("NASRL-Digits-v0", **FAST)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=rf"action {bad} .*0\.\.3"):
        env.step(bad)


@pytest.mark.parametrize("bad", [1.5, 1.0, None, "1", True, np.array([1, 2]), np.array([1]), np.array(1.0)])
def test_action_of_wrong_type_or_shape_raises_type_error(bad: object) -> None:
    env = gym.make("NASRL-Digits-v0", **FAST).unwrapped
    env.reset(seed=0)
    with pytest.raises(TypeError, match=r"0\.\.3"):
        env.step(bad)


def test_numpy_integer_actions_are_accepted() -> None:
    env = gym.make("NASRL-Digits-v0", **FAST).unwrapped
    env.reset(seed=0)
    env.step(np.int64(1))
    env.step(np.array(2))
    assert list(env._actions) == [1, 2]


def test_step_after_end_and_before_reset_raise() -> None:
    env = CNNNASEnv(dataset="digits", **FAST)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)
    play(env, np.random.default_rng(0))
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)
    env.reset()
    env.step(0)


def skip_step(env: NASEnv) -> int:
    """Index of the first 2-choice (skip) token."""
    return next(t for t, s in enumerate(env.token_specs) if s.name == "skip")


def test_invalid_action_penalize_ends_episode() -> None:
    env = CNNNASEnv(dataset="digits", invalid_action="penalize", invalid_action_penalty=-0.5, **FAST)
    env.reset(seed=0)
    for _ in range(skip_step(env)):
        env.step(0)
    _obs, reward, terminated, truncated, info = env.step(3)
    assert (reward, terminated, truncated, info["status"]) == (-0.5, True, False, "invalid_action")
    assert info["arch"] is None and "0..1" in info["error"]
    with pytest.raises(RuntimeError):
        env.step(0)


def test_invalid_action_wrap_and_raise() -> None:
    wrap = CNNNASEnv(dataset="digits", invalid_action="wrap", **FAST)
    wrap.reset(seed=0)
    for _ in range(skip_step(wrap)):
        wrap.step(0)
    wrap.step(3)
    assert wrap._actions[-1] == 1  # 3 mod 2
    strict = CNNNASEnv(dataset="digits", invalid_action="raise", **FAST)
    strict.reset(seed=0)
    for _ in range(skip_step(strict)):
        strict.step(0)
    with pytest.raises(ValueError, match=r"skip.*0\.\.1"):
        strict.step(2)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"invalid_action": "ignore"}, "invalid_action"),
    ({"reward_transform": "square"}, "reward_transform"),
    ({"render_mode": "svg"}, "render_mode"),
    ({"evaluator": "fast"}, "evaluator"),
    ({"dataset": "imagenet"}, "dataset"),
    ({"variant": "v4"}, "variant"),
    ({"num_layers": 0}, "num_layers"),
    ({"epochs": 0}, "epochs"),
    ({"batch_size": -2}, "batch_size"),
    ({"device": "tpu"}, "device"),
    ({"train_subset": 0, "evaluator": "train"}, "train_subset"),
    ({"num_filters": ()}, "num_filters"),
])
def test_bad_constructor_keywords_name_the_value(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        gym.make("NASRL-Digits-v0", **{**({"evaluator": "synthetic"} if "evaluator" not in kwargs else {}), **kwargs})


def test_keywords_pass_through_gym_make(cifar10_root) -> None:
    env = gym.make("NASRL-CIFAR10-v0", data_root=cifar10_root, num_layers=2, epochs=1, train_subset=64,
                   val_subset=64, batch_size=32, device="cpu", reward_transform="cube", invalid_action="wrap").unwrapped
    assert env.space.num_layers == 2 and env.train_config.epochs == 1 and env.train_config.batch_size == 32
    assert env.evaluator.data.num_train == 64 and env.invalid_action == "wrap"
    reward, info, _ = play(env, np.random.default_rng(0))
    assert info["status"] == "ok"
    assert reward == pytest.approx(info["val_acc"] ** 3)
    assert len(info["val_acc_history"]) == 1 and info["train_seconds"] > 0


def test_missing_cifar10_offline_names_the_folder(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "cifar-10-batches-py")):
        gym.make("NASRL-CIFAR10-v0", data_root=tmp_path, download=False)


def test_make_by_module_string_without_prior_import() -> None:
    code = ("import gymnasium as gym, sys; env = gym.make('nas_env:NASRL-CIFAR10-v0', evaluator='synthetic'); "
            "assert 'nas_env' in sys.modules; print(env.unwrapped.space.num_layers)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "15"


def test_variants_by_keyword() -> None:
    v2 = gym.make("NASRL-CIFAR10-v0", variant="v2", **FAST).unwrapped.space
    v3 = gym.make("NASRL-CIFAR10-v0", variant="v3", **FAST).unwrapped.space
    assert (v2.num_layers, v2.search_strides) == (20, True)
    assert (v3.num_layers, v3.pool_after) == (39, (13, 24))


def test_render_ansi_and_human(capsys: pytest.CaptureFixture[str]) -> None:
    env = gym.make("NASRL-Digits-v0", render_mode="ansi", **FAST)
    env.reset(seed=0)
    for a in (1, 2, 3):  # layer 1: 3x5 conv with 32 filters
        env.step(a)
    text = env.render()
    assert "layer  1" in text and "filter_height=3" in text and "filter_width=5" in text and "num_filters=32" in text
    human = gym.make("NASRL-Digits-v0", render_mode="human", **FAST)
    play(human, np.random.default_rng(0))
    printed = capsys.readouterr().out
    assert "layer  4" in printed and "status=ok" in printed


def test_reset_seed_fixes_child_seed_and_training_on_cpu() -> None:
    env = gym.make("NASRL-Digits-v0", epochs=2, device="cpu")
    r1, i1, a1 = play(env, np.random.default_rng(5), seed=11)
    env2 = gym.make("NASRL-Digits-v0", epochs=2, device="cpu")
    env2.reset(seed=11)
    for a in a1:
        _obs, r2, *_, i2 = env2.step(a)
    assert i1["seed"] == i2["seed"] and r1 == r2 and i1["val_acc_history"] == i2["val_acc_history"]
    env2.reset(seed=12)
    for a in a1:
        *_, i3 = env2.step(a)
    assert i3["seed"] != i1["seed"]


class FixedResult:
    """An evaluator returning a preset result: how a trainer reports a diverged or OOM child."""

    def __init__(self, result: EvalResult | float) -> None:
        self.result = result

    def __call__(self, arch: CNNArchitecture, seed: int) -> EvalResult | float:
        return self.result


@pytest.mark.parametrize("status", ["diverged", "oom", "failed"])
def test_failed_children_end_normally_with_zero_reward(status: str) -> None:
    env = CNNNASEnv(dataset="digits", evaluator=FixedResult(EvalResult(0.7, status, {"val_acc": 0.7})))
    reward, info, _ = play(env, np.random.default_rng(0))
    assert reward == 0.0 and info["status"] == status
    env.reset()  # the env stays usable


def test_a_child_stopped_early_keeps_the_accuracy_it_reached() -> None:
    env = CNNNASEnv(dataset="digits", reward_transform="cube",
                    evaluator=FixedResult(EvalResult(0.4, "stopped_early", {"val_acc": 0.4})))
    reward, info, _ = play(env, np.random.default_rng(0))
    assert reward == pytest.approx(0.4**3) and info["status"] == "stopped_early" and info["val_acc"] == 0.4


def test_plain_number_evaluator_and_non_finite_reward() -> None:
    env = CNNNASEnv(dataset="digits", evaluator=FixedResult(0.25), reward_transform="cube")
    reward, info, _ = play(env, np.random.default_rng(0))
    assert reward == pytest.approx(0.25**3) and info["val_acc"] == 0.25
    env = CNNNASEnv(dataset="digits", evaluator=FixedResult(float("nan")))
    reward, info, _ = play(env, np.random.default_rng(0))
    assert reward == 0.0 and info["status"] == "diverged"


def test_evaluator_returning_garbage_is_a_type_error() -> None:
    env = CNNNASEnv(dataset="digits", evaluator=FixedResult("good"))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="EvalResult or a number"):
        play(env, np.random.default_rng(0))


def test_is_oom_recognises_pytorch_oom_errors() -> None:
    import torch

    assert is_oom(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_oom(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 10 bytes"))
    assert not is_oom(RuntimeError("shape mismatch"))


def test_generic_env_over_any_space() -> None:
    space = cnn_space("v1", num_layers=2, skip_connections=False, filter_heights=(3,), filter_widths=(3, 5))
    env = NASEnv(space, FixedResult(0.5))
    assert [s.name for s in env.token_specs] == ["filter_height", "filter_width", "num_filters"] * 2
    assert env.action_space.n == 4
    reward, _info, _ = play(env, np.random.default_rng(0))
    assert reward == 0.5
