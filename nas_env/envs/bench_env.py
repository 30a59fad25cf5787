"""NASRL-Bench envs: the training env's token space, with a table lookup as the evaluator."""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym

from nas_env.bench.table import BenchTable
from nas_env.envs.nas_env import NASEnv
from nas_env.evaluators.cached import with_store
from nas_env.evaluators.table import TableEvaluator
from nas_env.store import ResultStore


class BenchNASEnv(NASEnv):
    """
    ## Description

    :class:`NASEnv` over a NASRL-Bench table: the same token space, action masks, observation
    and info keys as the env the table was trained with (its ``env_id`` and keywords), but the
    last step looks the child up instead of training it, in microseconds. Every agent claim of
    this project is measured on these envs, over many seeds.

    ## Keywords

    | keyword | meaning |
    |---|---|
    | `table` | a shipped table's name (`"digits"`) or a `.json.gz` path |
    | `noise` | `"seed"` (default): one trained seed's val accuracy, chosen by the episode seed; `"mean"`: their mean |
    | `epochs` | the fidelity: which epoch of the stored histories is the reward (default: the last) |
    | `reward_transform`, `invalid_action`, `invalid_action_penalty`, `render_mode`, `store` | as :class:`NASEnv` |

    ## Info

    The training env's keys, plus `test_acc` (on a split that never fed the reward), `train_seconds`
    (the stored, simulated time of training this child at this fidelity), `regret` (the table's best
    mean val accuracy minus this child's mean) and `table_index`.

    ## Version History

    * v0: initial version.
    """

    metadata: ClassVar[dict[str, Any]] = NASEnv.metadata

    def __init__(self, table: str | BenchTable = "digits", noise: str = "seed", epochs: int | None = None,
                 reward_transform: str = "identity", invalid_action: str = "penalize",
                 invalid_action_penalty: float = -1.0, render_mode: str | None = None,
                 store: str | ResultStore | None = None) -> None:
        self.table = table if isinstance(table, BenchTable) else BenchTable.load(table)
        # The training env's own space, built without its data (a synthetic evaluator loads nothing).
        space = gym.make(self.table.env_id, **{**self.table.env_kwargs, "evaluator": "synthetic"}).unwrapped.space
        evaluator = with_store(TableEvaluator(self.table, space, noise=noise, epochs=epochs), store)
        super().__init__(space, evaluator, reward_transform=reward_transform, invalid_action=invalid_action,
                         invalid_action_penalty=invalid_action_penalty, render_mode=render_mode)
