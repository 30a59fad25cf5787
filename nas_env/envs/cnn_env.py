"""The registered CNN environments: the paper's space on CIFAR-10, and the same kind of space on digits."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from nas_env.data import ImageData, load_cifar10, load_digits_data
from nas_env.envs.nas_env import MNASNET_COST_EXPONENT, NASEnv
from nas_env.evaluators import EvalResult, SyntheticEvaluator, TrainingEvaluator
from nas_env.spaces.cnn import CNNArchitecture, cnn_space
from nas_env.store import CachedEvaluator, ResultStore
from nas_env.training.device import resolve_device
from nas_env.training.image_trainer import TrainConfig

# Per-dataset defaults. CIFAR-10: the paper's v1 space with a 5-epoch proxy (the paper trains
# 50 epochs: pass epochs=50, or train_config=PAPER_TRAIN_CONFIG). Digits: the same kind of space,
# 4 layers with filter counts scaled to its 8x8x1 images, so a child trains in about a second
# on 2 CPU cores (the paper's 24..64 filters take about 2.3 s a child here for the same accuracy).
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "cifar10": {"variant": "v1", "num_layers": None, "num_filters": None, "epochs": 5, "batch_size": 128},
    "digits": {"variant": "v1", "num_layers": 4, "num_filters": (8, 16, 24, 32), "epochs": 5, "batch_size": 64},
}
EVALUATOR_NAMES = ("train", "synthetic")


class CNNNASEnv(NASEnv):
    """:class:`NASEnv` over the paper's CNN space, with the trainer as evaluator.

    Keywords (all pass through ``gym.make``): ``dataset`` ("cifar10" or "digits"),
    ``variant`` ("v1", "v2", "v3"), ``num_layers``, the choice lists (``filter_heights``,
    ``filter_widths``, ``stride_heights``, ``stride_widths``, ``num_filters``),
    ``search_strides``, ``skip_connections``, ``pool_after``; training: ``epochs``,
    ``batch_size``, ``train_subset``, ``val_subset``, ``device``, ``train_config``
    (a :class:`TrainConfig`, or a dict of its fields from JSON, for everything else: precision,
    learning-rate scaling, early stopping of hopeless children); data: ``data_root``, ``download``;
    ``evaluator`` ("train", "synthetic", or any callable ``(arch, seed) -> EvalResult``);
    and :class:`NASEnv`'s ``reward_transform``, ``invalid_action``,
    ``invalid_action_penalty`` and ``render_mode``; ``store`` (a path or :class:`ResultStore`):
    serve architectures already evaluated under the same fingerprint from that SQLite store
    and commit every new child to it (``info["cache_hit"]`` tells which).

    Depth curriculum: ``active_layers`` (default None: all ``num_layers``) is the depth episodes
    start at; ``env.set_num_layers(k)`` or ``reset(options={"num_layers": k})`` changes it, while
    ``num_layers`` stays the maximum that sizes the spaces (see :class:`NASEnv`, *Depth*).

    Cost-aware reward (MnasNet-style, beyond the paper): ``cost_metric`` ("params" or "flops",
    default None: off), ``cost_target`` (the cost at which the factor is 1) and ``cost_exponent``
    (<= 0, default -0.07): ``reward = reward_transform(val_acc * (cost / cost_target) ** cost_exponent)``;
    ``info["cost"]`` and ``info["cost_factor"]`` report it (see :class:`NASEnv`, *Rewards*).
    """

    def __init__(
        self,
        dataset: str = "cifar10",
        variant: str | None = None,
        num_layers: int | None = None,
        epochs: int | None = None,
        batch_size: int | None = None,
        train_subset: int | None = None,
        val_subset: int | None = None,
        data_root: str | Path | None = None,
        download: bool = True,
        device: str | torch.device | None = "auto",
        evaluator: str | Callable[[CNNArchitecture, int], EvalResult | float] = "train",
        train_config: TrainConfig | dict[str, Any] | None = None,
        reward_transform: str = "identity",
        invalid_action: str = "penalize",
        invalid_action_penalty: float = -1.0,
        render_mode: str | None = None,
        filter_heights: Sequence[int] | None = None,
        filter_widths: Sequence[int] | None = None,
        stride_heights: Sequence[int] | None = None,
        stride_widths: Sequence[int] | None = None,
        num_filters: Sequence[int] | None = None,
        search_strides: bool | None = None,
        skip_connections: bool | None = None,
        pool_after: Sequence[int] | None = None,
        store: str | Path | ResultStore | None = None,
        active_layers: int | None = None,
        cost_metric: str | None = None,
        cost_target: float | None = None,
        cost_exponent: float = MNASNET_COST_EXPONENT,
    ) -> None:
        if dataset not in DATASET_DEFAULTS:
            raise ValueError(f"dataset must be one of {sorted(DATASET_DEFAULTS)}, got {dataset!r}")
        defaults = DATASET_DEFAULTS[dataset]
        if num_filters is None:
            num_filters = defaults["num_filters"]
        space = cnn_space(
            variant or defaults["variant"],
            num_layers=num_layers if num_layers is not None else defaults["num_layers"],
            filter_heights=filter_heights, filter_widths=filter_widths, stride_heights=stride_heights,
            stride_widths=stride_widths, num_filters=num_filters, search_strides=search_strides,
            skip_connections=skip_connections, pool_after=pool_after,
        )
        if isinstance(train_config, dict):  # from JSON (--env-kwargs): unset fields take the dataset's defaults
            train_config = TrainConfig(**{"epochs": defaults["epochs"], "batch_size": defaults["batch_size"],
                                          **train_config})
        config = train_config or TrainConfig(epochs=defaults["epochs"], batch_size=defaults["batch_size"])
        overrides = {k: v for k, v in (("epochs", epochs), ("batch_size", batch_size)) if v is not None}
        config = replace(config, **overrides)
        self.train_config = config
        self.device = resolve_device(device)  # validated even when the evaluator does not train
        self.dataset = dataset

        if callable(evaluator):
            chosen = evaluator
        elif evaluator == "train":
            data = self._load_data(dataset, data_root, download, train_subset, val_subset)
            chosen = TrainingEvaluator(data, config, self.device)
        elif evaluator == "synthetic":
            shape = (1, 8, 8) if dataset == "digits" else (3, 32, 32)
            chosen = SyntheticEvaluator(space, input_shape=shape)
        else:
            raise ValueError(f"evaluator must be one of {EVALUATOR_NAMES} or a callable (arch, seed) -> EvalResult, "
                             f"got {evaluator!r}")
        if store is not None:
            chosen = CachedEvaluator(chosen, store)
        super().__init__(space, chosen, reward_transform=reward_transform, invalid_action=invalid_action,
                         invalid_action_penalty=invalid_action_penalty, render_mode=render_mode,
                         active_layers=active_layers, cost_metric=cost_metric, cost_target=cost_target,
                         cost_exponent=cost_exponent)

    @staticmethod
    def _load_data(dataset: str, data_root: str | Path | None, download: bool, train_subset: int | None,
                   val_subset: int | None) -> ImageData:
        if dataset == "digits":
            return load_digits_data(train_subset=train_subset, val_subset=val_subset)
        return load_cifar10(data_root, download=download, train_subset=train_subset, val_subset=val_subset)
