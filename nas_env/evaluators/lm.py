"""The recurrent-cell evaluator: train the cell's language model on Penn Treebank, reward c / perplexity^2.

``LMTrainingEvaluator`` builds a :class:`CellLanguageModel` around the cell, trains it with
:func:`train_lm` and rewards it with the paper's ``c / (validation perplexity)^2`` (section
4.2, c = 80). It and its instant stand-in (:class:`~nas_env.evaluators.synthetic.SyntheticCellEvaluator`)
report ``val_ppl``, ``val_ppl_history``, ``params``, ``flops`` (multiply-adds per token) and ``train_seconds``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import torch

from nas_env.checks import check_type, is_number
from nas_env.data.ptb import TextData
from nas_env.evaluators.base import EvalResult, is_oom, oom_result
from nas_env.fingerprint import make_fingerprint, tensor_digest
from nas_env.models.rnn_cell import CellLanguageModel, lm_multiply_adds, lm_param_count
from nas_env.spaces.base import Architecture
from nas_env.spaces.rnn_cell import CellArchitecture
from nas_env.training.device import resolve_device
from nas_env.training.lm_trainer import LMTrainConfig, train_lm

REWARD_C = 80.0  # the paper's c in reward = c / ppl^2


def ppl_reward(ppl: float, c: float = REWARD_C) -> float:
    """The paper's reward for a validation perplexity: ``c / ppl^2``."""
    return c / ppl**2


def check_reward_c(c: Any) -> float:
    if not is_number(c) or not math.isfinite(c) or c <= 0:
        raise ValueError(f"reward_c must be a finite number > 0 (the paper's: 80), got {c!r}")
    return float(c)


def lm_cost_metrics(base: int, vocab_size: int, config: LMTrainConfig) -> dict[str, int]:
    sizes = (vocab_size, config.embedding_size, config.hidden_size, config.num_layers)
    return {"params": lm_param_count(base, *sizes, tie_weights=config.tie_weights),
            "flops": lm_multiply_adds(base, *sizes)}


class LMTrainingEvaluator:
    """Train a two-layer language model around the cell; reward ``c / val_ppl^2``, 0 when it diverges.

    ``data``: a :class:`TextData` or a zero-argument factory (loaded on first use). ``val_ppl`` is the lowest
    validation perplexity over the epochs."""

    def __init__(self, data: TextData | Callable[[], TextData], config: LMTrainConfig | None = None,
                 device: str | torch.device | None = "auto", reward_c: float = REWARD_C) -> None:
        self.config = check_type(config or LMTrainConfig(), LMTrainConfig, "config must be an LMTrainConfig")
        self.device = resolve_device(device)
        self.reward_c = check_reward_c(reward_c)
        self._source = data
        self._data: TextData | None = None
        self._fingerprint: str | None = None

    @property
    def data(self) -> TextData:
        if self._data is None:
            self._data = self._source if isinstance(self._source, TextData) else self._source()
        return self._data

    def fingerprint(self) -> str:
        """A hash of all that decides a child's result but its architecture and seed (:mod:`nas_env.fingerprint`)."""
        if self._fingerprint is None:
            d = self.data
            settings = {"data": [d.name, d.vocab_size], "config": asdict(self.config), "reward_c": self.reward_c,
                        "device": self.device.type}
            self._fingerprint = make_fingerprint("lm", tensor_digest([d.train, d.valid]), settings)
        return self._fingerprint

    def __call__(self, arch: Architecture, seed: int) -> EvalResult:
        check_type(arch, CellArchitecture, "LMTrainingEvaluator trains recurrent cells (CellArchitecture)")
        data, cfg = self.data, self.config
        metrics: dict[str, Any] = lm_cost_metrics(arch.base, data.vocab_size, cfg)
        devices = [self.device] if self.device.type == "cuda" else []
        model = None
        try:
            # Seeded init and dropout without touching the caller's global generators.
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(int(seed))
                model = CellLanguageModel(arch, data.vocab_size, cfg.embedding_size, cfg.hidden_size,
                                          cfg.num_layers, cfg.dropout, cfg.tie_weights, cfg.init_range)
                outcome = train_lm(model, data, cfg, self.device)
        except Exception as e:  # only OOM is turned into a result; everything else propagates
            if not is_oom(e):
                raise
            del model
            return oom_result(e, self.device, {**metrics, "val_ppl": None, "val_ppl_history": []})
        metrics.update(val_ppl_history=outcome.val_ppl_history, train_seconds=outcome.train_seconds,
                       train_tokens=outcome.tokens)
        if outcome.status != "ok":
            return EvalResult(0.0, "diverged", {**metrics, "val_ppl": None})
        val_ppl = outcome.best_ppl
        return EvalResult(ppl_reward(val_ppl, self.reward_c), "ok", {**metrics, "val_ppl": val_ppl})
