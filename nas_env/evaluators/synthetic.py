"""Instant evaluators with a known optimum, for tests and agent checks: they never train anything.

``SyntheticEvaluator`` scores a CNN by the share of its tokens that match a target;
``SyntheticCellEvaluator`` does the same for a recurrent cell, as a perplexity.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from nas_env.evaluators.base import EvalResult
from nas_env.evaluators.lm import REWARD_C, check_reward_c, lm_cost_metrics, ppl_reward
from nas_env.evaluators.train import cnn_cost_metrics
from nas_env.spaces.base import Architecture, random_arch
from nas_env.spaces.cnn import CNNSearchSpace
from nas_env.spaces.rnn_cell import RNNCellSearchSpace
from nas_env.training.lm_trainer import LMTrainConfig


class SyntheticEvaluator:
    """An instant evaluator with a known optimum: the share of tokens that match a target architecture (default:
    drawn from ``target_seed``). A shallower architecture is scored against the target's first tokens."""

    def __init__(self, space: CNNSearchSpace, target: Sequence[int] | None = None, target_seed: int = 0,
                 input_shape: Sequence[int] = (3, 32, 32), num_classes: int = 10) -> None:
        self.space = space
        rng = np.random.default_rng(target_seed)
        self.target_arch = random_arch(space, rng) if target is None else space.decode(list(target))
        self.target = np.asarray(space.encode(self.target_arch))
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes

    def fingerprint(self) -> str:
        return "synthetic/" + hashlib.sha256(self.target.tobytes()).hexdigest()[:12]

    def __call__(self, arch: Architecture, seed: int) -> EvalResult:
        space = self.space if arch.num_layers == self.space.num_layers else self.space.with_layers(arch.num_layers)
        actions = np.asarray(space.encode(arch))
        score = float(np.mean(actions == self.target[: len(actions)]))
        metrics = {**cnn_cost_metrics(arch, self.input_shape, self.num_classes), "val_acc": score,
                   "val_acc_history": [score], "train_seconds": 0.0}
        return EvalResult(score, "ok", metrics)


class SyntheticCellEvaluator:
    """An instant evaluator with a known optimum: perplexity falls geometrically with the tokens matching a target
    (default: drawn from ``target_seed``): ``best_ppl * (worst_ppl / best_ppl) ** (1 - share matching)``."""

    def __init__(self, space: RNNCellSearchSpace, target: Sequence[int] | None = None, target_seed: int = 0,
                 reward_c: float = REWARD_C, best_ppl: float = 60.0, worst_ppl: float = 1000.0,
                 vocab_size: int = 10_000, config: LMTrainConfig | None = None) -> None:
        self.space = space
        rng = np.random.default_rng(target_seed)
        self.target_arch = random_arch(space, rng) if target is None else space.decode(list(target))
        self.target = np.asarray(space.encode(self.target_arch))
        self.reward_c = check_reward_c(reward_c)
        if not 0 < best_ppl <= worst_ppl:
            raise ValueError(f"need 0 < best_ppl <= worst_ppl, got best_ppl={best_ppl!r}, worst_ppl={worst_ppl!r}")
        self.best_ppl, self.worst_ppl = float(best_ppl), float(worst_ppl)
        self._costs = lm_cost_metrics(space.base, vocab_size, config or LMTrainConfig())

    def fingerprint(self) -> str:
        key = f"{self.target.tobytes().hex()}/{self.reward_c}/{self.best_ppl}/{self.worst_ppl}"
        return "synthetic-cell/" + hashlib.sha256(key.encode()).hexdigest()[:12]

    def __call__(self, arch: Architecture, seed: int) -> EvalResult:
        score = float(np.mean(np.asarray(self.space.encode(arch)) == self.target))
        ppl = self.best_ppl * (self.worst_ppl / self.best_ppl) ** (1.0 - score)
        metrics = {**self._costs, "val_ppl": ppl, "val_ppl_history": [ppl], "train_seconds": 0.0}
        return EvalResult(ppl_reward(ppl, self.reward_c), "ok", metrics)
