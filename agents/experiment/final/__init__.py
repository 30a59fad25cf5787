"""Final training of a found architecture: grid search on validation, full training, one test evaluation.

The paper's protocol after a search (Zoph & Le 2017, section 4.1), for one architecture (a run's
``best.json``, any results record, or an architecture JSON):

1. every point of a small grid over the learning rate, the weight decay, the batch-norm epsilon and
   the epoch at which the learning rate drops (``lr * lr_decay_factor``) trains on the search's
   training split and is scored by its validation accuracy after its last epoch; when the grid
   runs are shorter (``grid_epochs < epochs``), each decay epoch moves to the same fraction of them;
2. the best point retrains from scratch on train + validation for the full schedule;
3. the test set is read and evaluated once, at the very end (:mod:`.source` says which it is);
4. the result is printed as a row of Table 1 (Model, Depth, Parameters, Error rate (%)) and written
   to ``report.json``, with the weights, a self-contained ``torch.export`` model (``model.pt2``:
   ``torch.export.load(path).module()`` predicts from float 0-255 images without this project) and
   TensorBoard events.

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
