"""``RunFolder``: the one writer of a search's folder, for every backend (local, Ray, SB3 through the runner).

A run folder ``<logdir>/<env>__<agent>__<seed>__<time>/`` holds everything needed to resume:

| file | written |
|---|---|
| ``config.json`` | once, before the first child (the search's arguments) |
| ``results.jsonl`` | one line per child, flushed and fsynced as it finishes (:mod:`.records`) |
| ``best.json`` (+ ``best.png`` when a picture can be drawn) | when the incumbent changes (:mod:`.best`) |
| ``checkpoints/*.pt`` | by the backend, atomically (a kill mid-write keeps the previous one) |
| ``events.out.tfevents.*`` | TensorBoard: per child, per update, the arguments, the best architecture (:mod:`.board`) |
| ``store.sqlite`` | the result store, unless the search shares one elsewhere |

A torn last line of ``results.jsonl`` (a kill mid-write) is cut off when the folder is reopened. Each
record names its headline metric (``score_key``, as the env's final info does), so the folder never
asks which kind of child it holds. :mod:`.describe` turns records into text, the closing summary included.
"""

from __future__ import annotations

from agents.experiment.run_folder.describe import arch_markdown, best_table, print_best_table, summary_text
from agents.experiment.run_folder.folder import RunFolder
from agents.experiment.run_folder.records import atomic_write, can_be_best, read_results, score_of, score_text

__all__ = ["RunFolder", "arch_markdown", "atomic_write", "best_table",
           "can_be_best", "print_best_table", "read_results", "score_of", "score_text", "summary_text"]
