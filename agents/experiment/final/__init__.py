"""Final training of a found architecture: grid search on validation, full training, one test evaluation.

The paper's protocol after a search (Zoph & Le 2017, section 4.1; docs/final-training.md) for a run's
``best.json``, any results record or an architecture JSON: every point of a small grid (learning rate,
weight decay, batch-norm epsilon, lr decay epoch) trains on the search's split and is scored on validation;
the best retrains on train + validation; the test set is read once, at the end; the result is a row of
Table 1 in ``report.json``, with the weights and a self-contained ``torch.export`` model (``model.pt2``).

Modules: :mod:`.config` (the settings and their checks), :mod:`.source` (the search's architecture, config and
data), :mod:`.training` (the procedure), :mod:`.outputs` (the model files and the report), :mod:`.cli`.
"""

from __future__ import annotations

from agents.experiment.final.cli import FinalArgs, main, parse_args
from agents.experiment.final.config import GRID_KEYS, PRESETS, FinalConfig, HParams, make_grid, scaled_decay_epoch
from agents.experiment.final.outputs import NormalisedClassifier, export_model, predict, table_markdown
from agents.experiment.final.source import FinalData, Source, load_source, prepare_data
from agents.experiment.final.training import train_final

__all__ = ["GRID_KEYS", "PRESETS", "FinalArgs", "FinalConfig", "FinalData", "HParams", "NormalisedClassifier",
           "Source", "export_model", "load_source", "main", "make_grid", "parse_args", "predict", "prepare_data",
           "scaled_decay_epoch", "table_markdown", "train_final"]
