"""The registered CNN environments: the paper's space on CIFAR-10 and other image data, and a small one on digits."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import fields, replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import torch

from nas_env.checks import check_in
from nas_env.data import ImageData
from nas_env.data.sources import MEMORY, load_image_source
from nas_env.envs.nas_env import MNASNET_COST_EXPONENT, NASEnv
from nas_env.evaluators import EvalResult, SyntheticEvaluator, TrainingEvaluator
from nas_env.evaluators.cached import with_store
from nas_env.spaces.cnn import CNNArchitecture, cnn_space
from nas_env.store import ResultStore
from nas_env.training.device import resolve_device
from nas_env.training.image_trainer import PAPER_TRAIN_CONFIG, TrainConfig

# Per-dataset defaults. CIFAR-10: the paper's v1 space with a 5-epoch proxy (the paper trains
# 50 epochs: preset="paper"). Digits: the same kind of space, 4 layers with filter counts scaled
# to its 8x8x1 images, so a child trains in about a second on 2 CPU cores (the paper's 24..64
# filters take about 2.3 s a child here for the same accuracy). Every other source (torchvision
# sets, an image folder, arrays in memory) takes CIFAR-10's. ``input_shape`` sizes the synthetic
# evaluator without loading data (None: read from the data).
_PAPER_SPACE: dict[str, Any] = {"variant": "v1", "num_layers": None, "num_filters": None, "epochs": 5,
                                "batch_size": 128}
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "cifar10": {**_PAPER_SPACE, "input_shape": (3, 32, 32)},
    "digits": {"variant": "v1", "num_layers": 4, "num_filters": (8, 16, 24, 32), "epochs": 5, "batch_size": 64,
               "input_shape": (1, 8, 8)},
    "cifar100": {**_PAPER_SPACE, "input_shape": (3, 32, 32)},
    "mnist": {**_PAPER_SPACE, "input_shape": (1, 28, 28)},
    "fashion_mnist": {**_PAPER_SPACE, "input_shape": (1, 28, 28)},
    "svhn": {**_PAPER_SPACE, "input_shape": (3, 32, 32)},
    "imagefolder": {**_PAPER_SPACE, "input_shape": None},
    MEMORY: {**_PAPER_SPACE, "input_shape": None},
}
# Protocols, one switch each: what a preset sets unless the caller passes it. "proxy": the dataset's
# short schedule, reward = validation accuracy. "paper" (Zoph & Le 2017, section 4.1): 50 epochs,
# SGD with Nesterov momentum 0.9, lr 0.1, weight decay 1e-4 (PAPER_TRAIN_CONFIG), reward = the
# maximum validation accuracy of the last 5 epochs (reward_window), cubed.
PRESETS: dict[str, dict[str, Any]] = {
    "proxy": {"train_config": None, "reward_transform": "identity"},
    "paper": {"train_config": PAPER_TRAIN_CONFIG, "reward_transform": "cube"},
}
EVALUATOR_NAMES = ("train", "synthetic", "shared")
ConfigT = TypeVar("ConfigT")


def train_config_from(value: Any, base: ConfigT, **overrides: Any) -> ConfigT:
    """A training config of ``base``'s type: given as one, or a dict of its fields (from JSON) over ``base``.

    None gives ``base``; then each of ``overrides`` that is not None (an env's ``epochs=``, ...) replaces its
    field. Shared by the image and PTB envs (``TrainConfig`` / ``LMTrainConfig``).
    """
    kind = type(base)
    if value is None:
        config = base
    elif isinstance(value, kind):
        config = value
    elif not isinstance(value, dict):
        raise ValueError(f"train_config must be a {kind.__name__} or a dict of its fields, got {type(value).__name__}")
    else:
        allowed = [f.name for f in fields(kind)]
        unknown = sorted(set(value) - set(allowed))
        if unknown:
            raise ValueError(f"train_config has unknown field(s) {unknown} for {kind.__name__}; allowed: {allowed}")
        config = replace(base, **value)
    given = {k: v for k, v in overrides.items() if v is not None}
    return replace(config, **given) if given else config


def image_data_options(dataset: str, data: ImageData | Sequence[Any] | None, **options: Any) -> dict[str, Any]:
    """An image env's ``data_options``: :func:`load_image_source`'s keywords (``data`` given: the memory source)."""
    if dataset == MEMORY and data is None:
        raise ValueError("dataset='memory' needs data=(train_x, train_y, val_x, val_y), (x, y) or an ImageData")
    return {"dataset": MEMORY if data is not None else dataset, "data": data, **options}


class CNNNASEnv(NASEnv):
    """:class:`NASEnv` over the paper's CNN space, with the trainer as evaluator.

    Keywords (all pass through ``gym.make``): ``preset`` ("proxy": the dataset's short schedule,
    reward = validation accuracy; "paper": the paper's protocol, see :data:`PRESETS`; explicit
    ``epochs``, ``train_config`` and ``reward_transform`` override it); ``dataset`` ("cifar10",
    "digits", torchvision's "cifar100", "mnist", "fashion_mnist", "svhn", or "imagefolder" with
    ``data_root=DIR`` and optional ``image_size``); ``data`` (images in memory:
    ``(train_x, train_y, val_x, val_y)``, ``(x, y)`` or an :class:`ImageData`; then ``dataset``
    only picks the space's defaults); ``val_size`` / ``val_fraction`` and ``split_seed`` (the
    train / validation split of every source); ``variant`` ("v1", "v2", "v3"), ``num_layers``,
    the choice lists (``filter_heights``, ``filter_widths``, ``stride_heights``, ``stride_widths``, ``num_filters``),
    ``search_strides``, ``skip_connections``, ``pool_after``; training: ``epochs``,
    ``batch_size``, ``train_subset``, ``val_subset``, ``device``, ``train_config``
    (a :class:`TrainConfig`, or a dict of its fields from JSON over the preset's, for everything else:
    precision, learning-rate scaling, augmentation, early stopping of hopeless children); data:
    ``data_root`` (the datasets' root, or the image folder), ``download`` (torchvision sets and
    CIFAR-10: fetch the official files, md5-checked, when absent);
    ``evaluator`` ("train", "synthetic", "shared": weight sharing, ENAS-style, set by ``shared_config``, a dict
    of :class:`~nas_env.evaluators.shared.SharedConfig`'s fields; or any callable ``(arch, seed) -> EvalResult``);
    and :class:`NASEnv`'s ``reward_transform`` (default: the preset's), ``invalid_action``,
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

    ## Version History

    * ``NASRL-Digits-v1``: the digits proxy at 2 epochs on the first 600 training images, so children
      spread (validation accuracy 0.1-0.96 instead of 0.98-1.00 at v0's 5 epochs on all 1,500) and a
      200-child search shows what the controller learned; about 0.3 s a child on 2 CPU cores.
    * v0: initial version of every id.
    """

    def __init__(
        self,
        dataset: str = "cifar10", variant: str | None = None, preset: str = "proxy",
        data: ImageData | Sequence[Any] | None = None, image_size: int | Sequence[int] | None = None,
        val_size: int | None = None, val_fraction: float | None = None, split_seed: int = 0,
        num_layers: int | None = None, epochs: int | None = None, batch_size: int | None = None,
        train_subset: int | None = None, val_subset: int | None = None,
        data_root: str | Path | None = None, download: bool = True, device: str | torch.device | None = "auto",
        evaluator: str | Callable[[CNNArchitecture, int], EvalResult | float] = "train",
        train_config: TrainConfig | dict[str, Any] | None = None, reward_transform: str | None = None,
        invalid_action: str = "penalize", invalid_action_penalty: float = -1.0, render_mode: str | None = None,
        filter_heights: Sequence[int] | None = None, filter_widths: Sequence[int] | None = None,
        stride_heights: Sequence[int] | None = None, stride_widths: Sequence[int] | None = None,
        num_filters: Sequence[int] | None = None, search_strides: bool | None = None,
        skip_connections: bool | None = None, pool_after: Sequence[int] | None = None,
        store: str | Path | ResultStore | None = None, active_layers: int | None = None,
        cost_metric: str | None = None, cost_target: float | None = None, cost_exponent: float = MNASNET_COST_EXPONENT,
        shared_config: dict[str, Any] | None = None,
    ) -> None:
        check_in("dataset", dataset, sorted(DATASET_DEFAULTS))
        self.data_options = image_data_options(dataset, data, data_root=data_root, download=download,
                                               image_size=image_size, val_size=val_size, val_fraction=val_fraction,
                                               split_seed=split_seed, train_subset=train_subset, val_subset=val_subset)
        check_in("preset", preset, sorted(PRESETS))
        defaults = DATASET_DEFAULTS[dataset]
        space = cnn_space(
            variant or defaults["variant"],
            num_layers=num_layers if num_layers is not None else defaults["num_layers"],
            num_filters=num_filters if num_filters is not None else defaults["num_filters"],
            filter_heights=filter_heights, filter_widths=filter_widths, stride_heights=stride_heights,
            stride_widths=stride_widths, search_strides=search_strides, skip_connections=skip_connections,
            pool_after=pool_after,
        )
        chosen_preset = PRESETS[preset]
        base = replace(chosen_preset["train_config"] or TrainConfig(epochs=defaults["epochs"]),
                       batch_size=defaults["batch_size"])
        # a dict (from JSON, --env-kwargs): unset fields take the preset's and the dataset's values
        self.train_config = config = train_config_from(train_config, base, epochs=epochs, batch_size=batch_size)
        self.device = resolve_device(device)  # validated even when the evaluator does not train
        self.dataset = self.data_options["dataset"]
        self.preset = preset
        if reward_transform is None:
            reward_transform = chosen_preset["reward_transform"]
        load_data = partial(load_image_source, **self.data_options)

        if callable(evaluator):
            chosen = evaluator
        elif evaluator == "train":
            chosen = TrainingEvaluator(load_data(), config, self.device)
        elif evaluator == "shared":  # one supernet trained with train_config's optimiser and batch size
            from nas_env.evaluators.shared import SharedWeightsEvaluator

            chosen = SharedWeightsEvaluator(load_data(), space, shared_config, config, self.device)
        elif evaluator == "synthetic":
            shape = defaults["input_shape"] if data is None else None
            chosen = SyntheticEvaluator(space, input_shape=shape or load_data().input_shape)
        else:
            raise ValueError(f"evaluator must be one of {EVALUATOR_NAMES} or a callable (arch, seed) -> EvalResult, "
                             f"got {evaluator!r}")
        chosen = with_store(chosen, store, serve=evaluator != "shared")  # a supernet's reward: recorded, never served
        super().__init__(space, chosen, reward_transform=reward_transform, invalid_action=invalid_action,
                         invalid_action_penalty=invalid_action_penalty, render_mode=render_mode,
                         active_layers=active_layers, cost_metric=cost_metric, cost_target=cost_target,
                         cost_exponent=cost_exponent)
