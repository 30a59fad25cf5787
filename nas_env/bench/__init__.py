"""NASRL-Bench: tabulated spaces of real trained children, served as Gymnasium envs that answer in microseconds.

:mod:`nas_env.bench.table` is the file format, :mod:`nas_env.evaluators.table` the lookup evaluator,
:mod:`nas_env.bench.tabulate` the tool (``nasrl-tabulate``) that trains a space into a table.
"""

from __future__ import annotations

from nas_env.bench.table import SHIPPED, BenchTable, describe
from nas_env.evaluators.table import NOISE_MODES, TableEvaluator

__all__ = ["NOISE_MODES", "SHIPPED", "BenchTable", "TableEvaluator", "describe"]
