"""The registered recurrent-cell environment: the paper's cell space on Penn Treebank (section 3.4 and 4.2)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import torch

from nas_env.checks import check_in
from nas_env.data.ptb import load_ptb
from nas_env.envs.cnn_env import train_config_from
from nas_env.envs.nas_env import NASEnv
from nas_env.evaluators import EvalResult
from nas_env.evaluators.cached import with_store
from nas_env.evaluators.lm import REWARD_C, LMTrainingEvaluator
from nas_env.evaluators.synthetic import SyntheticCellEvaluator
from nas_env.spaces.rnn_cell import ACTIVATIONS, BASE, COMBINATIONS, CellArchitecture, RNNCellSearchSpace
from nas_env.store import ResultStore
from nas_env.training.device import resolve_device
from nas_env.training.lm_trainer import LM_PRESETS, LMTrainConfig

# The proxy's data: the first 20,000 training and 4,000 validation tokens (a child in a few
# seconds on 2 CPU cores). The "paper" preset trains on the full files.
PRESET_SUBSETS: dict[str, tuple[int | None, int | None]] = {"proxy": (20_000, 4_000), "paper": (None, None)}
# The reward transform each preset uses unless one is passed. The paper's reward for a cell is
# c / ppl^2 (section 4.2), which is already the evaluator's raw score: no cube, unlike the CNN's.
PRESET_REWARD_TRANSFORMS: dict[str, str] = {"proxy": "identity", "paper": "identity"}
EVALUATOR_NAMES = ("train", "synthetic")


class PTBNASEnv(NASEnv):
    """:class:`NASEnv` over the paper's recurrent-cell space, rewarded ``c / (validation perplexity)^2``.

    Keywords (all pass through ``gym.make``): the space: ``base`` (leaves of the tree, a power
    of two; the paper's 8), ``combinations``, ``activations``; training: ``preset`` ("proxy":
    a small model, 1 epoch on the first 20,000 tokens; "paper": the paper's setting, see
    :data:`PAPER_LM_CONFIG`), ``epochs``, ``batch_size``, ``hidden_size``, ``train_subset``
    and ``val_subset`` (first N tokens; None: the preset's, or the whole corpus when smaller),
    ``device``, ``train_config`` (an
    :class:`LMTrainConfig` for everything else, replacing the preset's, or a dict of its fields
    from JSON over the preset's); data: ``data_root`` (a folder with train / valid / test files:
    PTB's ``ptb.*.txt``, WikiText-2's ``wiki.*.tokens`` or ``train.txt`` ...; see
    :data:`nas_env.data.ptb.LAYOUTS`), ``download`` (PTB only); reward: ``reward_c`` (the paper's
    c = 80); ``evaluator`` ("train", "synthetic" or any callable ``(arch, seed) -> EvalResult``);
    ``store``; and :class:`NASEnv`'s ``reward_transform`` (default: the preset's, "identity" for
    both: c / ppl^2 is the paper's reward as it is), ``invalid_action``, ``invalid_action_penalty``
    and ``render_mode``.

    The final ``info`` has ``val_ppl`` (the lowest validation perplexity over the epochs; None
    when the child diverged) and ``val_ppl_history`` where the CNN envs have accuracies, and
    ``flops`` counts multiply-adds per token.
    """

    score_key: ClassVar[str] = "val_ppl"
    score_lower_is_better: ClassVar[bool] = True

    def __init__(
        self,
        base: int = BASE, combinations: Sequence[str] = COMBINATIONS, activations: Sequence[str] = ACTIVATIONS,
        preset: str = "proxy", epochs: int | None = None, batch_size: int | None = None,
        hidden_size: int | None = None, train_subset: int | None = None, val_subset: int | None = None,
        data_root: str | Path | None = None, download: bool = True, device: str | torch.device | None = "auto",
        evaluator: str | Callable[[CellArchitecture, int], EvalResult | float] = "train",
        train_config: LMTrainConfig | dict[str, Any] | None = None,
        reward_c: float = REWARD_C, reward_transform: str | None = None,
        invalid_action: str = "penalize", invalid_action_penalty: float = -1.0, render_mode: str | None = None,
        store: str | Path | ResultStore | None = None,
    ) -> None:
        check_in("preset", preset, sorted(LM_PRESETS))
        space = RNNCellSearchSpace(base=base, combinations=tuple(combinations), activations=tuple(activations))
        # a tied model keeps the embedding the size of the hidden state
        config = train_config_from(train_config, LM_PRESETS[preset], epochs=epochs, batch_size=batch_size,
                                   hidden_size=hidden_size, embedding_size=hidden_size)
        self.train_config = config
        self.device = resolve_device(device)  # validated even when the evaluator does not train
        self.preset = preset
        default_train, default_val = PRESET_SUBSETS[preset]
        # the preset's subsets are at most the corpus (a small one is used whole); the caller's must fit it
        subsets = {"train": (train_subset, default_train), "valid": (val_subset, default_val)}
        if reward_transform is None:
            reward_transform = PRESET_REWARD_TRANSFORMS[preset]

        if callable(evaluator):
            chosen = evaluator
        elif evaluator == "train":
            data = load_ptb(data_root, download=download, train_subset=train_subset, val_subset=val_subset)
            cuts = {split: default for split, (given, default) in subsets.items() if given is None and default}
            data = replace(data, **{split: getattr(data, split)[:n] for split, n in cuts.items()})
            chosen = LMTrainingEvaluator(data, config, self.device, reward_c=reward_c)
        elif evaluator == "synthetic":
            chosen = SyntheticCellEvaluator(space, reward_c=reward_c, config=config)
        else:
            raise ValueError(f"evaluator must be one of {EVALUATOR_NAMES} or a callable (arch, seed) -> EvalResult, "
                             f"got {evaluator!r}")
        super().__init__(space, with_store(chosen, store), reward_transform=reward_transform,
                         invalid_action=invalid_action, invalid_action_penalty=invalid_action_penalty,
                         render_mode=render_mode)

    def _default_score(self, result: EvalResult) -> Any:
        return None  # no perplexity without a trained model (invalid action, or a user evaluator without one)
