"""Evaluators: every way of turning an architecture into a reward, behind one protocol (:mod:`.base`).

``train`` (the paper's: train the child CNN), ``lm`` (a recurrent cell's language model), ``shared``
(weight sharing, one supernet), ``table`` (a lookup in a table of real results) and ``synthetic``
(instant, known optimum). :class:`~nas_env.evaluators.cached.CachedEvaluator` wraps any of them
over the result store.
"""

from __future__ import annotations

from nas_env.evaluators.base import STATUSES, EvalResult, Evaluator, as_result, is_oom, oom_result
from nas_env.evaluators.synthetic import SyntheticCellEvaluator, SyntheticEvaluator
from nas_env.evaluators.train import TrainingEvaluator, test_accuracy

__all__ = ["STATUSES", "EvalResult", "Evaluator", "SyntheticCellEvaluator", "SyntheticEvaluator",
           "TrainingEvaluator", "as_result", "is_oom", "oom_result", "test_accuracy"]
