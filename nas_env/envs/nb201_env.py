"""NAS-Bench-201's cell space with the child trained for real: the training twin of the NB201 table envs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch

from nas_env.checks import check_choice
from nas_env.data import ImageData
from nas_env.data.sources import MEMORY, SOURCES, TORCHVISION_NAMES, load_image_source
from nas_env.envs.bench201_env import NB201TextMixin
from nas_env.envs.cnn_env import image_data_options, train_config_from
from nas_env.envs.nas_env import MNASNET_COST_EXPONENT, NASEnv
from nas_env.evaluators import EvalResult, TrainingEvaluator
from nas_env.evaluators.cached import with_store
from nas_env.models.nb201 import NB201Builder, check_skeleton
from nas_env.spaces.base import Architecture
from nas_env.spaces.nb201 import NB201Architecture, NB201SearchSpace
from nas_env.store import ResultStore
from nas_env.training.device import resolve_device
from nas_env.training.image_trainer import TrainConfig

# The fidelities, one switch each; every entry can be overridden by its keyword. Both score the last epoch
# (reward_window=1), as NAS-Bench-201 reports its cells.
# "proxy" (default): CPU-affordable, 6-24 s a child on one CPU thread. It ranks cells only coarsely against
#   NAS-Bench-201's own results (Kendall tau 0.35 over 64 cells, scripts/bench_nb201_proxy.py; docs: "NAS-Bench-201,
#   trained"): it tells poor cells from good ones, not the best from the good.
# "nb201": NAS-Bench-201's own training (Dong & Yang 2020, its hyper-parameters "200 epochs"). A GPU's work.
PRESETS: dict[str, dict[str, Any]] = {
    "proxy": {"C": 8, "N": 1, "train_subset": 5000, "val_subset": 2000,
              "train_config": TrainConfig(epochs=2, batch_size=64, reward_window=1)},
    "nb201": {"C": 16, "N": 5, "train_subset": None, "val_subset": None,
              "train_config": TrainConfig(epochs=200, batch_size=256, lr=0.1, momentum=0.9, nesterov=True,
                                          weight_decay=5e-4, lr_schedule="cosine", reward_window=1)},
}
# The preset's subsets apply to these large sets only; a smaller source (digits, a folder, data=...) is used whole.
SUBSET_SOURCES = ("cifar10", *TORCHVISION_NAMES)
EVALUATOR_NAMES = ("train", "shared")


class NB201NASEnv(NB201TextMixin, NASEnv):
    """
    ## Description

    :class:`NASEnv` over NAS-Bench-201's cell (:mod:`nas_env.spaces.nb201`), the same six tokens, action
    sequences, arch strings and ``info["arch_str"]`` as the table envs (``NASRL-Bench201-*-v0``), but the
    child, NAS-Bench-201's network around the chosen cell (:mod:`nas_env.models.nb201`), is trained from
    scratch by the project's trainer (:class:`TrainingEvaluator` with an :class:`NB201Builder`; data on the
    device). Registered as ``NASRL-NB201-CIFAR10-v0``.

    ## Keywords

    | keyword | meaning |
    |---|---|
    | `preset` | `"proxy"` (default: CPU-affordable) or `"nb201"` (NAS-Bench-201's own training); see `PRESETS` |
    | `C`, `N` | the network's width (stem channels; stages at C, 2C, 4C) and cells per stage (None: the preset's) |
    | `epochs`, `batch_size` | training length and batch (None: `train_config`'s, by default the preset's) |
    | `train_subset`, `val_subset` | training and validation images (None: the preset's) |
    | `train_config` | a `TrainConfig`, or a dict of its fields over the preset's, for everything else |
    | `dataset`, `data`, `data_root`, `download` | the image source, as the CNN envs take it (see below) |
    | `image_size`, `val_size`, `val_fraction`, `split_seed` | as the CNN envs: the folder's image size, the split |
    | `device` | `"auto"` (CUDA when present), `"cpu"`, `"cuda"`, ... |
    | `evaluator` | `"train"` (default), `"shared"` (weight sharing, see Rewards) or a callable `(arch, seed) -> ...` |
    | `shared_config` | `evaluator="shared"`: a dict of :class:`~nas_env.evaluators.shared.SharedConfig`'s fields |
    | `store` | a path or `ResultStore`: serve cells already trained under the same fingerprint |
    | `reward_transform`, `invalid_action`, `invalid_action_penalty`, `render_mode`, `cost_*` | as :class:`NASEnv` |

    Sources: `"cifar10"`, `"digits"`, torchvision's `"cifar100"`, `"mnist"`, `"fashion_mnist"`, `"svhn"`,
    `"imagefolder"` with `data_root=DIR`, or images in memory (`data=(train_x, train_y, val_x, val_y)`,
    `(x, y)` or an `ImageData`). Their height and width must be multiples of 4 (the network halves them
    twice). The preset's `train_subset` / `val_subset` apply to the large sets only; a smaller source is
    used whole unless they are given.

    ## Rewards

    The child's validation accuracy after its last epoch, a fraction (0..1); 0 for a diverged child. With
    `evaluator="shared"`: the supernet's accuracy on the cell's path after `shared_steps` minibatches on it
    (train_config's optimiser and batch size; its epochs are not used). The supernet
    (:mod:`nas_env.evaluators.shared_nb201`) holds every op of every edge at this C and N; a cell is a path.

    ## Info

    :class:`NASEnv`'s keys (`params` and `flops` of the built network), plus `arch_str` (NAS-Bench-201's
    notation), `table_index` (the cell's row in a NAS-Bench-201 table) and `model_size` (millions of
    parameters, NAS-Bench-201's "MB"; at C=16, N=5 it is the benchmark's own figure).

    ## Version History

    * v0: initial version.
    """

    metadata: ClassVar[dict[str, Any]] = NASEnv.metadata

    def __init__(
        self,
        dataset: str = "cifar10", preset: str = "proxy", C: int | None = None, N: int | None = None,
        epochs: int | None = None, batch_size: int | None = None,
        train_subset: int | None = None, val_subset: int | None = None,
        train_config: TrainConfig | dict[str, Any] | None = None, data: ImageData | Sequence[Any] | None = None,
        data_root: str | Path | None = None, download: bool = True, image_size: int | Sequence[int] | None = None,
        val_size: int | None = None, val_fraction: float | None = None, split_seed: int = 0,
        device: str | torch.device | None = "auto",
        evaluator: str | Callable[[NB201Architecture, int], EvalResult | float] = "train",
        store: str | Path | ResultStore | None = None, reward_transform: str = "identity",
        invalid_action: str = "penalize", invalid_action_penalty: float = -1.0, render_mode: str | None = None,
        cost_metric: str | None = None, cost_target: float | None = None, cost_exponent: float = MNASNET_COST_EXPONENT,
        shared_config: dict[str, Any] | None = None,
    ) -> None:
        check_choice("dataset", dataset, SOURCES)
        large = (MEMORY if data is not None else dataset) in SUBSET_SOURCES
        chosen_preset = PRESETS[check_choice("preset", preset, tuple(PRESETS))]
        self.data_options = image_data_options(
            dataset, data, data_root=data_root, download=download, image_size=image_size, val_size=val_size,
            val_fraction=val_fraction, split_seed=split_seed,
            train_subset=chosen_preset["train_subset"] if train_subset is None and large else train_subset,
            val_subset=chosen_preset["val_subset"] if val_subset is None and large else val_subset)
        if not callable(evaluator):
            check_choice("evaluator", evaluator, EVALUATOR_NAMES)
        if shared_config is not None and evaluator != "shared":
            raise ValueError(f"shared_config applies to evaluator='shared' only, got evaluator={evaluator!r}")
        self.builder = NB201Builder(C if C is not None else chosen_preset["C"],
                                    N if N is not None else chosen_preset["N"])
        config = train_config_from(train_config, chosen_preset["train_config"], batch_size=batch_size, epochs=epochs)
        if config.channel_multiple != 1 or config.concat_buffer:
            raise ValueError(f"channel_multiple={config.channel_multiple} and concat_buffer={config.concat_buffer} "
                             "apply to the CNN space's children only: leave them at 1 and False here")
        self.train_config = config
        self.preset = preset
        self.device = resolve_device(device)
        self.dataset = self.data_options["dataset"]

        if callable(evaluator):
            chosen: Any = evaluator
        else:
            image_data = load_image_source(**self.data_options)
            check_skeleton(image_data.input_shape, image_data.num_classes, self.builder.C, self.builder.N)
            if evaluator == "shared":  # one supernet trained with train_config's optimiser and batch size
                from nas_env.evaluators.shared import SharedWeightsEvaluator
                from nas_env.evaluators.shared_nb201 import NB201SupernetSpec

                chosen = SharedWeightsEvaluator(image_data, NB201SupernetSpec(self.builder.C, self.builder.N),
                                                shared_config, config, self.device)
            else:
                chosen = TrainingEvaluator(image_data, config, self.device, builder=self.builder)
        chosen = with_store(chosen, store, serve=evaluator != "shared")  # a supernet's reward: recorded, never served
        super().__init__(NB201SearchSpace(), chosen, reward_transform=reward_transform, invalid_action=invalid_action,
                         invalid_action_penalty=invalid_action_penalty, render_mode=render_mode,
                         cost_metric=cost_metric, cost_target=cost_target, cost_exponent=cost_exponent)

    def _result_info(self, arch: Architecture | None, result: EvalResult, reward: float) -> dict[str, Any]:
        """:class:`NASEnv`'s info plus the table envs' cell keys, whatever the evaluator."""
        info = super()._result_info(arch, result, reward)
        if isinstance(arch, NB201Architecture):
            info.setdefault("arch_str", arch.arch_str)
            info.setdefault("table_index", arch.index)
        return info
