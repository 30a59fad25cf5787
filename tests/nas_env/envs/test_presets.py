"""The paper's protocol as one switch: ``preset="paper"`` for the CNN env (and its id) and for the PTB env."""

from __future__ import annotations

import gymnasium as gym
import pytest

import nas_env  # noqa: F401  (registers the ids)
from nas_env.envs.cnn_env import CNNNASEnv
from nas_env.envs.ptb_env import PTBNASEnv
from nas_env.evaluators import EvalResult
from nas_env.training.image_trainer import TrainConfig
from nas_env.training.lm_trainer import PAPER_LM_CONFIG, LMTrainConfig


class Fixed:
    """A user evaluator with one known validation accuracy (the paper's transform must cube it)."""

    def __init__(self, acc: float) -> None:
        self.acc = acc

    def __call__(self, arch: object, seed: int) -> EvalResult:
        return EvalResult(self.acc, "ok", {"val_acc": self.acc})


def finish(env: gym.Env) -> tuple[float, dict]:
    """Play the first valid action until the episode ends: (last reward, last info)."""
    _, info = env.reset(seed=0)
    while True:
        action = int(info["action_mask"].argmax())
        _, reward, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            return float(reward), info


def test_paper_preset_is_section_4_1() -> None:
    env = gym.make("NASRL-CIFAR10-Paper-v0", evaluator=Fixed(0.8)).unwrapped
    c = env.train_config
    # 50 epochs; SGD, Nesterov momentum 0.9, lr 0.1, weight decay 1e-4; reward window 5; the 45,000 / 5,000 split
    assert (c.epochs, c.lr, c.momentum, c.nesterov, c.weight_decay, c.reward_window) == (50, 0.1, 0.9, True, 1e-4, 5)
    assert c.batch_size == 128 and env.preset == "paper" and env.reward_transform == "cube"
    assert env.space.num_layers == 15 and env.data_options["val_size"] is None  # the default 5,000 images
    reward, info = finish(env)
    assert reward == pytest.approx(0.8**3) and info["val_acc"] == pytest.approx(0.8)
    same = CNNNASEnv(preset="paper", evaluator=Fixed(0.8))
    assert same.train_config == c and same.reward_transform == "cube"


def test_proxy_stays_the_default_and_explicit_keywords_win() -> None:
    proxy = CNNNASEnv(evaluator=Fixed(0.5))
    assert proxy.preset == "proxy" and proxy.train_config.epochs == 5 and proxy.reward_transform == "identity"
    assert finish(proxy)[0] == pytest.approx(0.5)
    env = CNNNASEnv(preset="paper", epochs=3, reward_transform="identity", evaluator=Fixed(0.5),
                    train_config={"lr": 0.05, "early_stop_epoch": 1})
    c = env.train_config
    assert (c.epochs, c.lr, c.weight_decay, c.early_stop_epoch) == (3, 0.05, 1e-4, 1)
    assert env.reward_transform == "identity"
    own = CNNNASEnv(preset="paper", train_config=TrainConfig(epochs=7, lr=0.2), evaluator=Fixed(0.5))
    assert own.train_config == TrainConfig(epochs=7, lr=0.2) and own.reward_transform == "cube"
    digits = CNNNASEnv(dataset="digits", preset="paper", evaluator="synthetic")
    assert digits.train_config.epochs == 50 and digits.train_config.batch_size == 64


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"preset": "fast"}, r"preset must be one of \['paper', 'proxy'\], got 'fast'"),
    ({"train_config": {"learning_rate": 0.1}}, r"unknown field\(s\) \['learning_rate'\] for TrainConfig"),
    ({"train_config": [1]}, "train_config must be a TrainConfig or a dict of its fields, got list"),
])
def test_bad_presets_and_configs_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CNNNASEnv(evaluator="synthetic", **kwargs)


def test_ptb_paper_preset_matches_section_4_2() -> None:
    env = PTBNASEnv(preset="paper", evaluator="synthetic")
    c = env.train_config
    assert c == PAPER_LM_CONFIG
    # two layers of the medium LSTM's size, Zaremba's medium recipe, 35 epochs; reward c / ppl^2 as it is
    assert (c.num_layers, c.epochs, c.optimizer, c.lr, c.dropout, c.bptt, c.batch_size) == (2, 35, "sgd", 1.0, 0.5,
                                                                                             35, 20)
    assert env.reward_transform == "identity" and env.preset == "paper"


def test_ptb_train_config_accepts_a_dict_over_the_preset() -> None:
    env = PTBNASEnv(evaluator="synthetic", train_config={"hidden_size": 16, "embedding_size": 16, "epochs": 2})
    assert env.train_config == LMTrainConfig(hidden_size=16, embedding_size=16, epochs=2)
    paper = PTBNASEnv(preset="paper", evaluator="synthetic", train_config={"epochs": 3})
    assert paper.train_config.epochs == 3 and paper.train_config.hidden_size == PAPER_LM_CONFIG.hidden_size
    made = gym.make("NASRL-PTB-v0", evaluator="synthetic", train_config={"lr": 0.002}).unwrapped
    assert made.train_config.lr == 0.002
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['hidden'\] for LMTrainConfig"):
        PTBNASEnv(evaluator="synthetic", train_config={"hidden": 16})
    with pytest.raises(ValueError, match="train_config must be a LMTrainConfig or a dict"):
        PTBNASEnv(evaluator="synthetic", train_config=TrainConfig())


def test_digits_v1_is_the_spread_out_proxy_and_v0_keeps_its_settings() -> None:
    v1, v0 = gym.make("NASRL-Digits-v1").unwrapped, gym.make("NASRL-Digits-v0").unwrapped
    assert v1.space == v0.space  # same tokens: an agent or a table made for one fits the other
    assert (v1.evaluator.config.epochs, len(v1.evaluator.data.data.train_y)) == (2, 600)
    assert (v0.evaluator.config.epochs, len(v0.evaluator.data.data.train_y)) == (5, 1500)
    assert v1.evaluator.fingerprint() != v0.evaluator.fingerprint()  # their results never mix in a store
    assert gym.make("NASRL-Digits-v1", epochs=3).unwrapped.evaluator.config.epochs == 3  # keywords still win
