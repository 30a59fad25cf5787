"""``RunFolder``: the one writer of a search's folder, for every backend (local, Ray, SB3 through the runner).

A run folder holds ``config.json``, ``results.jsonl`` (:mod:`.records`), ``best.json`` and ``best.png``
(:mod:`.best`), ``checkpoints/*.pt`` (written atomically), TensorBoard events (:mod:`.board`) and usually
``store.sqlite`` (docs/searching.md). A torn last line of ``results.jsonl`` (a kill mid-write) is cut off when
the folder is reopened. Each record names its headline metric (``score_key``), so the folder never asks
which kind of child it holds. :mod:`.describe` turns records into text, the closing summary included.
"""

from __future__ import annotations

from agents.experiment.run_folder.describe import arch_markdown, best_table, print_best_table, summary_text
from agents.experiment.run_folder.folder import RunFolder
from agents.experiment.run_folder.records import atomic_write, can_be_best, read_results, score_of, score_text

__all__ = ["RunFolder", "arch_markdown", "atomic_write", "best_table",
           "can_be_best", "print_best_table", "read_results", "score_of", "score_text", "summary_text"]
