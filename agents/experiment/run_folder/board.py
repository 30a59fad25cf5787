"""A search's TensorBoard events: per child, per update, the arguments, and the best architecture (text and picture)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch.utils.tensorboard import SummaryWriter

from agents.base import UpdateStats
from agents.experiment.run_folder.describe import arch_markdown
from agents.experiment.run_folder.records import score_of, score_text
from nas_env.evaluators import STATUSES

BEST_PICTURE = "best.png"
EVALUATOR_CURVES = ("shared_loss",)  # evaluator scalars worth a curve (the weight-sharing supernet's loss)


class SearchBoard:
    """The TensorBoard writer of a run folder; a reopened folder appends to the same curves."""

    def __init__(self, path: Path, config: dict[str, Any], first_open: bool, pictures: bool) -> None:
        self.path = path
        self.pictures = pictures  # draw best.png (and its TensorBoard image) at each new best
        self.writer = SummaryWriter(log_dir=str(path))
        if first_open:
            rows = [f"| {k} | {json.dumps(v) if isinstance(v, dict | list) else v} |" for k, v in config.items()]
            self.writer.add_text("hparams", "\n".join(["| argument | value |", "|---|---|", *rows]), 0)
        # the hparams view takes plain values: dicts and lists become JSON text
        self._hparams = {k: json.dumps(v, sort_keys=True) if isinstance(v, dict | list) else v
                         for k, v in config.items()}

    def child(self, record: dict[str, Any], info: dict[str, Any], cache_hit_share: float) -> None:
        """One finished child's curves, at step = its index."""
        step, w = record["index"], self.writer
        w.add_scalar("child/reward", record["reward"], step)
        name, value = score_of(record)
        if value is not None:
            w.add_scalar(f"child/{name}", value, step)
        if record["params"] is not None:
            w.add_scalar("child/params", record["params"], step)
            w.add_scalar("child/flops", record["flops"], step)
        w.add_scalar("child/train_seconds", record["train_seconds"], step)
        w.add_scalar("child/status", STATUSES.index(record["status"]) if record["status"] in STATUSES else -1, step)
        w.add_scalar("search/cache_hit_share", cache_hit_share, step)
        for key in EVALUATOR_CURVES:
            if info.get(key) is not None:
                w.add_scalar(f"evaluator/{key}", float(info[key]), step)

    def new_best(self, best: dict[str, Any], step: int) -> None:
        """A new incumbent architecture: its table as text and, with pictures, best.png and its image."""
        self.writer.add_text("search/best_architecture", arch_markdown(best), step)
        if self.pictures:
            from nas_env.draw import draw_architecture  # matplotlib is imported only when a picture is drawn

            caption = f"child {best['index']}, {score_text(best)}, params {best['params']}"
            image = draw_architecture(best["arch"], self.path / BEST_PICTURE, caption=caption)
            self.writer.add_image("search/best_architecture", image, step, dataformats="HWC")

    def best_score(self, best: dict[str, Any], step: int) -> None:
        name, value = score_of(best)
        if value is not None:
            self.writer.add_scalar(f"search/best_{name}", value, step)

    def update(self, stats: UpdateStats) -> None:
        for name, value in stats.scalars().items():
            if name != "children_done":
                self.writer.add_scalar(f"update/{name}", value, stats.children_done)

    def close(self, best: dict[str, Any] | None, children: int) -> None:
        """The run's arguments against its outcome (the hparams view), then flush and close."""
        metrics: dict[str, float] = {"hparam/children": children}
        if best is not None:
            name, value = score_of(best)
            metrics[f"hparam/best_{name}"] = value or 0.0
        self.writer.add_hparams(self._hparams, metrics, run_name="hparams")
        self.writer.flush()
        self.writer.close()
