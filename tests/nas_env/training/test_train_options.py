"""TrainConfig's speed and proxy options: learning-rate scaling, memory format rule, early stopping."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import nas_env  # noqa: F401
from nas_env.data import load_digits_data
from nas_env.evaluators import TrainingEvaluator
from nas_env.models.cnn import build_model
from nas_env.spaces.base import random_arch
from nas_env.spaces.cnn import cnn_space
from nas_env.training.image_trainer import DeviceData, TrainConfig, autocast_dtype, train_child, use_channels_last

CPU = torch.device("cpu")


def test_lr_reference_batch_scales_linearly() -> None:
    plain = TrainConfig(lr=0.1, batch_size=512, lr_schedule="constant")
    scaled = TrainConfig(lr=0.1, batch_size=512, lr_reference_batch=128, lr_schedule="constant")
    assert plain.lr_at(10, 100) == pytest.approx(0.1)
    assert scaled.base_lr == pytest.approx(0.4)
    assert scaled.lr_at(10, 100) == pytest.approx(0.4)
    cosine = TrainConfig(lr=0.1, batch_size=256, lr_reference_batch=128, epochs=2)
    assert cosine.lr_at(0, 10) == pytest.approx(0.2)
    assert cosine.lr_at(10, 10) == pytest.approx(0.1)  # half way through the cosine


def test_channels_last_rule() -> None:
    config = TrainConfig()
    assert use_channels_last(config, CPU, (3, 32, 32))
    assert not use_channels_last(config, CPU, (1, 8, 8))
    assert use_channels_last(config, torch.device("cuda"), (1, 8, 8))
    assert not use_channels_last(TrainConfig(channels_last=False), CPU, (3, 32, 32))
    assert use_channels_last(TrainConfig(channels_last=True), CPU, (1, 8, 8))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"lr_reference_batch": 0}, "lr_reference_batch must be None or an integer >= 1, got 0"),
    ({"early_stop_epoch": 9, "epochs": 5}, "early_stop_epoch must be an int in [0, epochs=5)"),
    ({"early_stop_min_acc": 1.5}, "early_stop_min_acc must be a number in [0, 1], got 1.5"),
    ({"early_stop_gap": -0.1}, "early_stop_gap must be None or a number in [0, 1], got -0.1"),
])
def test_bad_options_name_the_value(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError) as info:
        TrainConfig(**kwargs)
    assert message in str(info.value)


def test_should_stop_rule() -> None:
    config = TrainConfig(epochs=4, early_stop_epoch=2, early_stop_min_acc=0.3, early_stop_gap=0.2)
    assert not config.should_stop(1, 0.1, 0.9)  # only judged at early_stop_epoch
    assert config.should_stop(2, 0.25, None)  # below the floor
    assert config.should_stop(2, 0.6, 0.9)  # more than 0.2 below the best so far
    assert not config.should_stop(2, 0.75, 0.9)
    assert not config.should_stop(2, 0.6, None)  # nothing to compare with yet
    assert not TrainConfig().should_stop(1, 0.0, 1.0)  # off by default


def digits_arch(seed: int = 0):
    space = cnn_space("v1", num_layers=2, num_filters=(8,))
    return random_arch(space, np.random.default_rng(seed))


def test_evaluator_stops_hopeless_children_and_keeps_their_accuracy() -> None:
    data = load_digits_data(train_subset=200, val_subset=100)
    config = TrainConfig(epochs=3, batch_size=50, early_stop_epoch=1, early_stop_gap=0.0)
    evaluator = TrainingEvaluator(data, config, device="cpu")
    first = evaluator(digits_arch(), seed=0)  # nothing to compare with: trains in full
    assert first.status == "ok" and len(first.metrics["val_acc_history"]) == 3
    assert evaluator.best_val_acc == first.reward
    evaluator.best_val_acc = 1.0  # pretend a perfect child was found: every later child is hopeless
    stopped = evaluator(digits_arch(), seed=0)
    assert stopped.status == "stopped_early"
    assert stopped.metrics["val_acc_history"] == first.metrics["val_acc_history"][:1]  # same seed, same epoch 1
    assert stopped.reward == stopped.metrics["val_acc"] == first.metrics["val_acc_history"][0]
    assert evaluator.best_val_acc == 1.0  # a stopped child never raises the yardstick


def test_train_config_from_env_kwargs_json() -> None:
    env = gym.make("NASRL-Digits-v0", train_config={"early_stop_epoch": 1, "early_stop_min_acc": 0.5})
    config = env.unwrapped.train_config
    assert config.early_stop_epoch == 1 and config.early_stop_min_acc == 0.5
    assert config.epochs == 5 and config.batch_size == 64  # the digits defaults fill the rest
    env.close()


def test_bf16_autocast_path_runs_on_the_cpu_close_to_fp32() -> None:
    # The CUDA default (bf16 autocast, channels_last) exercised on the CPU: same first loss up to bf16 rounding.
    data = load_digits_data(train_subset=128, val_subset=64)
    arch = digits_arch(1)
    assert autocast_dtype(TrainConfig(), torch.device("cuda")) == torch.bfloat16
    assert autocast_dtype(TrainConfig(), CPU) is None
    losses = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = build_model(arch, data.input_shape, data.num_classes)
        config = TrainConfig(epochs=2, batch_size=64, precision=precision, channels_last=precision == "bf16")
        outcome = train_child(model, DeviceData(data, CPU), config, seed=0)
        assert outcome.status == "ok" and len(outcome.val_acc_history) == 2
        assert next(model.parameters()).dtype == torch.float32  # weights (batch norm's too) stay float32
        losses[precision] = outcome.first_loss
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=2e-2)
    assert losses["bf16"] != losses["fp32"]  # bf16 really ran


def test_out_of_memory_child_is_a_result_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    # Exhausting real memory in CI is not an option: the trainer raises the error PyTorch raises.
    import nas_env.evaluators.train as evaluators

    def out_of_memory(*args: object, **kwargs: object) -> None:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(evaluators, "train_child", out_of_memory)
    evaluator = TrainingEvaluator(load_digits_data(train_subset=50, val_subset=20), TrainConfig(epochs=1), "cpu")
    result = evaluator(digits_arch(), seed=0)
    assert result.status == "oom" and result.reward == 0.0
    assert result.metrics["val_acc"] == 0.0 and result.metrics["params"] > 0
    assert result.metrics["error"].startswith("CUDA out of memory")


def test_lr_scaling_follows_the_batch_actually_used() -> None:
    # 40 training images, batch_size 512 and lr_reference_batch 128: the one real batch has 40 images, so the
    # run must equal a plain run at batch 40 with lr 0.1 * 40 / 128 (not 0.1 * 512 / 128).
    data = load_digits_data(train_subset=40, val_subset=20)
    runs = []
    for config in (TrainConfig(epochs=2, batch_size=512, lr_reference_batch=128),
                   TrainConfig(epochs=2, batch_size=40, lr=0.1 * 40 / 128)):
        torch.manual_seed(0)
        model = build_model(digits_arch(), data.input_shape, data.num_classes)
        train_child(model, DeviceData(data, CPU), config, seed=0)
        runs.append([p.detach() for p in model.parameters()])
    for a, b in zip(*runs, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_checked_values_keep_their_json_and_numpy_ints_become_ints() -> None:
    """A number is checked but kept as written (a config prints as given); a numpy int becomes a Python int."""
    config = TrainConfig(lr=1, epochs=np.int64(3), concat_buffer=np.bool_(True))
    assert type(config.lr) is int and type(config.epochs) is int and config.concat_buffer is True
    with pytest.raises(ValueError, match=r"lr must be a finite number >= 0, got nan"):
        TrainConfig(lr=float("nan"))
