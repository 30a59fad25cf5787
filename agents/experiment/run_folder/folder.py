"""``RunFolder``: the files of a search's folder, and the one place that records a finished child."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from agents.base import ChildRecord, UpdateStats
from agents.experiment.run_folder.best import BestRecord
from agents.experiment.run_folder.board import SearchBoard
from agents.experiment.run_folder.describe import summary_text
from agents.experiment.run_folder.records import (
    BEST,
    CHECKPOINTS,
    CONFIG,
    RESULTS,
    atomic_write,
    child_record,
    read_results,
    score_text,
)


class RunFolder:
    """A search's folder: config, results, best, checkpoints, TensorBoard, progress bar and summary.

    ``RunFolder(path)`` only names it; :meth:`write_config` creates it, :meth:`start` opens the
    recorders (results.jsonl, TensorBoard, progress bar) and :meth:`close` ends them.
    """

    def __init__(self, path: str | os.PathLike[str], pictures: bool = True, incumbent: str = "mean") -> None:
        self.path = Path(path)
        self.pictures = pictures  # draw best.png (and its TensorBoard image) at each new best
        self.incumbent_rule = incumbent  # agents/experiment/incumbent.py: how a repeated architecture's rewards count
        self.records: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self.written = 0
        self.cache_hits = 0
        self.board: SearchBoard | None = None
        self.bar: tqdm | None = None
        self._tracker = BestRecord(incumbent)  # validates the rule now, before any folder exists
        self._file: Any = None

    # --- paths, config and checkpoints ---------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / CONFIG

    def exists(self) -> bool:
        """Whether a run was started here (its config.json is written)."""
        return self.config_path.is_file()

    def write_config(self, config: dict[str, Any]) -> None:
        """Create the folder and write config.json; refuses a folder that already holds a run."""
        if self.exists():
            raise FileExistsError(f"run folder {self.path} already holds a run; use --resume {self.path} to continue")
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write(self.config_path, json.dumps(config, indent=2))

    def read_config(self) -> dict[str, Any]:
        if not self.exists():
            raise ValueError(f"{self.path} is not a run folder (no {CONFIG} in it)")
        try:
            config = json.loads(self.config_path.read_text(encoding="utf-8"))
        except ValueError as e:  # not JSON, or not UTF-8: a damaged file
            raise ValueError(f"{self.config_path} is damaged (not a JSON object): {e}") from e
        if not isinstance(config, dict):
            raise ValueError(f"{self.config_path} is damaged: expected a JSON object, got {type(config).__name__}")
        return config

    def checkpoint_path(self, name: str) -> Path:
        return self.path / CHECKPOINTS / name

    def save_checkpoint(self, name: str, state: dict[str, Any]) -> None:
        """Write ``checkpoints/<name>`` atomically: a kill mid-write leaves the previous one intact."""
        path = self.checkpoint_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)

    def load_checkpoint(self, name: str) -> dict[str, Any] | None:
        path = self.checkpoint_path(name)
        return torch.load(path, weights_only=True) if path.exists() else None

    # --- recording -----------------------------------------------------------------------------
    def start(self, config: dict[str, Any], total: int, desc: str, progress: bool = True,
              resumed_children: int = 0, exact_replay: bool = True) -> None:
        """Open results.jsonl, TensorBoard and the progress bar, continuing what the folder already holds.

        After a resume, an agent that replays exactly re-evaluates the children since its checkpoint
        identically (served from the store), so those are skipped; otherwise they are dropped from
        results.jsonl (they stay in the store) and the agent's new children take their indices.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        self.records = read_results(self.path / RESULTS, None if exact_replay else resumed_children)
        self.written = len(self.records)
        self._tracker = BestRecord(self.incumbent_rule)
        for record in self.records:
            self._tracker.add(record)
        self.best = self._tracker.record
        best_path = self.path / BEST  # a resume may have dropped children: best.json follows the records kept
        if self.best is None:
            best_path.unlink(missing_ok=True)
        elif not best_path.is_file() or json.loads(best_path.read_text(encoding="utf-8")) != self.best:
            atomic_write(best_path, json.dumps(self.best, indent=2))
        self.cache_hits = sum(bool(r.get("cache_hit")) for r in self.records)
        self._file = (self.path / RESULTS).open("a", encoding="utf-8")
        self.board = SearchBoard(self.path, config, first_open=not self.written, pictures=self.pictures)
        self.bar = tqdm(total=total, initial=min(self.written, total), unit="child", disable=not progress,
                        dynamic_ncols=True, desc=desc)

    def record_child(self, child: ChildRecord) -> bool:
        """Write one finished child (results.jsonl, TensorBoard, best.json, progress); False if already written."""
        if child.index < self.written:  # replayed after a resume (served from the store): already recorded
            return False
        record = child_record(child)
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self.records.append(record)
        self.written += 1
        self.cache_hits += record["cache_hit"]
        self.board.child(record, child.info, self.cache_hits / self.written)
        previous = self._tracker.key
        if self._tracker.add(record):
            self.best = self._tracker.record
            atomic_write(self.path / BEST, json.dumps(self.best, indent=2))
            if self._tracker.key != previous:
                self.board.new_best(self.best, child.index)
        if self.best is not None:
            self.board.best_score(self.best, child.index)
        self.bar.update(1)
        self.bar.set_postfix(best=score_text(self.best) if self.best else "-", last=score_text(child.info),
                             status=child.info.get("status"), refresh=False)
        return True

    def record_update(self, stats: UpdateStats) -> None:
        self.board.update(stats)

    def add_scalar(self, name: str, value: float, step: int) -> None:
        self.board.writer.add_scalar(name, value, step)

    def close(self) -> None:
        """Flush and close everything :meth:`start` opened (safe to call twice, or without start)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.board is not None:
            self.board.close(self.best, self.written)
            self.board = None
        if self._file is not None:
            self._file.close()
            self._file = None

    def summary(self, extra: str = "") -> str:
        """The closing lines a search prints (``extra`` is added to its count of children): see
        :func:`~agents.experiment.run_folder.describe.summary_text`."""
        return summary_text(self.path, self.records, self.best, self.cache_hits, extra)
