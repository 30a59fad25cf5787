"""``RunFolder``: the one writer of a search's folder, for every backend (local, Ray, SB3 through the runner).

A run folder ``<logdir>/<env>__<agent>__<seed>__<time>/`` holds everything needed to resume:

| file | written |
|---|---|
| ``config.json`` | once, before the first child (the search's arguments) |
| ``results.jsonl`` | one line per child, flushed and fsynced as it finishes |
| ``best.json`` (+ ``best.png`` when a picture can be drawn) | when the incumbent changes (:mod:`.incumbent`) |
| ``checkpoints/*.pt`` | by the backend, atomically (a kill mid-write keeps the previous one) |
| ``events.out.tfevents.*`` | TensorBoard: per child, per update, the arguments and the best architecture |
| ``store.sqlite`` | the result store, unless the search shares one elsewhere |

A torn last line of ``results.jsonl`` (a kill mid-write) is cut off when the folder is reopened.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from agents.base import ChildRecord, UpdateStats
from agents.experiment.incumbent import Incumbent
from nas_env.evaluators import STATUSES

CONFIG = "config.json"
RESULTS = "results.jsonl"
BEST = "best.json"
BEST_PICTURE = "best.png"
CHECKPOINTS = "checkpoints"


# --- records ---------------------------------------------------------------------------------
def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: readers never see half a file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def read_results(path: Path, keep: int | None = None) -> list[dict[str, Any]]:
    """Lines of results.jsonl (at most ``keep``); a torn last line (killed mid-write) is truncated away."""
    if not path.exists():
        return []
    records, good_bytes = [], 0
    with path.open("rb") as f:
        for line in f:
            if keep is not None and len(records) >= keep:
                break
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break
            good_bytes += len(line)
    with path.open("r+b") as f:
        f.truncate(good_bytes)
    return records


def can_be_best(record: dict[str, Any]) -> bool:
    """Only a child that trained (fully, or until stopped early) competes for best.json."""
    return record["arch"] is not None and record["status"] in ("ok", "stopped_early")


def headline_metric(record: dict[str, Any]) -> tuple[str, float | None]:
    """The metric a child is reported by: validation perplexity for language-model children, else accuracy."""
    if "val_ppl" in record:
        return "val_ppl", record["val_ppl"]
    return "val_acc", record["val_acc"]


def score_text(record: dict[str, Any]) -> str:
    """A record's (or final info's) headline metric: the perplexity of a language model, else the accuracy."""
    if record.get("val_ppl") is not None:
        return f"ppl {record['val_ppl']:.1f}"
    return f"{float(record.get('val_acc') or 0.0):.4f}"


def child_record(child: ChildRecord) -> dict[str, Any]:
    """The results.jsonl line of a finished child."""
    info = child.info
    record = {
        "index": child.index,
        "reward": float(child.reward),
        "status": info.get("status"),
        "val_acc": float(info.get("val_acc") or 0.0),
        "val_acc_history": list(info.get("val_acc_history") or []),
        "params": info.get("params"),
        "flops": info.get("flops"),
        "train_seconds": float(info.get("train_seconds") or 0.0),
        "cache_hit": bool(info.get("cache_hit", False)),
        "seed": info.get("seed"),
        "result_seed": info.get("result_seed", info.get("seed")),
        "num_layers": info.get("num_layers"),
        "arch": info.get("arch"),
        "time": time.time(),
    }
    # language-model children; tabulated children's test accuracy and regret
    record.update({k: info[k] for k in ("val_ppl", "val_ppl_history", "test_acc", "regret") if k in info})
    return record


def arch_rows(record: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(layer, filter, stride, filters, inputs) per layer of a results record's CNN architecture."""
    arch = json.loads(record["arch"])
    rows = []
    for i, l in enumerate(arch.get("layers", []), start=1):
        pool = " +pool" if i in arch.get("pool_after", []) else ""
        rows.append((str(i), f"{l['filter_height']}x{l['filter_width']}", f"{l['stride_height']}x{l['stride_width']}",
                     f"{l['num_filters']}{pool}", ",".join(str(j) for j in l["inputs"]) or "image"))
    return rows


def _is_cnn(arch: dict[str, Any]) -> bool:
    return arch.get("type", "cnn") == "cnn" and "layers" in arch


def arch_markdown(record: dict[str, Any]) -> str:
    """A record's architecture as Markdown: a layer table for a CNN, the formulas of a recurrent cell."""
    arch = json.loads(record["arch"])
    score = f"val_ppl {record['val_ppl']:.2f}" if record.get("val_ppl") is not None else \
        f"val_acc {record['val_acc']:.4f}"
    head = f"{score}, params {record['params']}, child {record['index']}"
    if not _is_cnn(arch):  # another space (a recurrent cell): its readable form where known, else its JSON
        from nas_env.spaces.rnn_cell import CellArchitecture

        try:
            text = str(CellArchitecture.from_dict(arch)) if arch.get("type") == "rnn_cell" else ""
        except ValueError:
            text = ""
        return "\n".join([head, "", "```", text or json.dumps(arch, indent=2), "```"])
    lines = [head, "", "| layer | filter | stride | filters | inputs |", "|---|---|---|---|---|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in arch_rows(record)])


def best_table(record: dict[str, Any] | None) -> str:
    """The best child as plain text: its scores and a layer table (or the JSON of another space)."""
    if record is None:
        return "no architecture was evaluated successfully"
    score = f"val_ppl {record['val_ppl']:.2f}" if record.get("val_ppl") is not None else \
        f"val_acc {record['val_acc']:.4f}"
    params, flops = (f"{record[k]:,}" if record.get(k) is not None else "-" for k in ("params", "flops"))
    lines = [f"best architecture: child {record['index']}, {score}, params {params}, multiply-adds {flops}"]
    if not _is_cnn(json.loads(record["arch"])):
        return "\n".join([*lines, record["arch"]])
    lines.append(f"{'layer':>5}  {'filter':<6}  {'stride':<6}  {'filters':>7}  inputs")
    lines += [f"{layer:>5}  {filt:<6}  {stride:<6}  {filters:>7}  {inputs}"
              for layer, filt, stride, filters, inputs in arch_rows(record)]
    return "\n".join(lines)


def print_best_table(record: dict[str, Any] | None) -> None:
    print("\n" + best_table(record))


def flat_hparams(config: dict[str, Any]) -> dict[str, Any]:
    """Arguments as TensorBoard hparams: dicts and lists become JSON text."""
    return {k: json.dumps(v, sort_keys=True) if isinstance(v, dict | list) else v for k, v in config.items()}


def hparams_markdown(config: dict[str, Any]) -> str:
    rows = ["| argument | value |", "|---|---|"]
    return "\n".join(rows + [f"| {k} | {json.dumps(v) if isinstance(v, dict | list) else v} |"
                             for k, v in config.items()])


# --- the folder ------------------------------------------------------------------------------
class RunFolder:
    """A search's folder: config, results, best, checkpoints, TensorBoard, progress bar and summary.

    ``RunFolder(path)`` only names it; :meth:`write_config` creates it, :meth:`start` opens the
    recorders (results.jsonl, TensorBoard, progress bar) and :meth:`close` ends them.
    """

    def __init__(self, path: str | os.PathLike[str], pictures: bool = True, incumbent: str = "mean") -> None:
        self.path = Path(path)
        self.pictures = pictures  # draw best.png (and its TensorBoard image) at each new best
        self.incumbent_rule = incumbent  # agents/experiment/incumbent.py: how a repeated architecture's rewards count
        self._incumbent = Incumbent(incumbent)  # validates the rule now, before any folder exists
        self.records: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self._top_record: dict[str, dict[str, Any]] = {}  # architecture key -> its highest-reward record
        self.written = 0
        self.cache_hits = 0
        self.writer: SummaryWriter | None = None
        self.bar: tqdm | None = None
        self._file: Any = None

    # --- paths and config ----------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / CONFIG

    @property
    def results_path(self) -> Path:
        return self.path / RESULTS

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
        self.records = read_results(self.results_path, None if exact_replay else resumed_children)
        self.written = len(self.records)
        # Best = highest reward: the same order as val_acc for accuracies, and as lowest val_ppl for c / ppl^2;
        # an architecture trained several times counts by its mean reward (agents/experiment/incumbent.py)
        self._incumbent, self._top_record = Incumbent(self.incumbent_rule), {}
        for record in self.records:
            self._track(record)
        self.best = self._best_record()
        best_path = self.path / BEST  # a resume may have dropped children: best.json follows the records kept
        if self.best is None:
            best_path.unlink(missing_ok=True)
        elif not best_path.is_file() or json.loads(best_path.read_text(encoding="utf-8")) != self.best:
            atomic_write(best_path, json.dumps(self.best, indent=2))
        self.cache_hits = sum(bool(r.get("cache_hit")) for r in self.records)
        self._file = self.results_path.open("a", encoding="utf-8")
        self.writer = SummaryWriter(log_dir=str(self.path))
        if not self.written:
            self.writer.add_text("hparams", hparams_markdown(config), 0)
        self._hparams = flat_hparams(config)
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
        step, w = child.index, self.writer
        w.add_scalar("child/reward", record["reward"], step)
        name, value = headline_metric(record)
        if value is not None:
            w.add_scalar(f"child/{name}", value, step)
        if record["params"] is not None:
            w.add_scalar("child/params", record["params"], step)
            w.add_scalar("child/flops", record["flops"], step)
        w.add_scalar("child/train_seconds", record["train_seconds"], step)
        w.add_scalar("child/status", STATUSES.index(record["status"]) if record["status"] in STATUSES else -1, step)
        w.add_scalar("search/cache_hit_share", self.cache_hits / self.written, step)
        for key in ("shared_loss",):  # evaluator scalars worth a curve (the weight-sharing supernet's loss)
            if child.info.get(key) is not None:
                w.add_scalar(f"evaluator/{key}", float(child.info[key]), step)
        previous = self._incumbent.key
        if self._track(record):
            self.best = self._best_record()
            atomic_write(self.path / BEST, json.dumps(self.best, indent=2))
            if self._incumbent.key != previous:
                w.add_text("search/best_architecture", arch_markdown(self.best), step)
                if self.pictures:
                    self._draw_best(self.best, step)
        if self.best is not None and (best := headline_metric(self.best))[1] is not None:
            w.add_scalar(f"search/best_{best[0]}", best[1], step)
        self.bar.update(1)
        self.bar.set_postfix(best=score_text(self.best) if self.best else "-", last=score_text(child.info),
                             status=child.info.get("status"), refresh=False)
        return True

    def _track(self, record: dict[str, Any]) -> bool:
        """Count a record towards the incumbent; True when the incumbent or its score changed."""
        if not can_be_best(record):
            return False
        key = record["arch"] if isinstance(record["arch"], str) else json.dumps(record["arch"], sort_keys=True)
        if key not in self._top_record or record["reward"] > self._top_record[key]["reward"]:
            self._top_record[key] = record
        return self._incumbent.add(key, record["reward"])

    def _best_record(self) -> dict[str, Any] | None:
        """The incumbent architecture's highest-reward record, with its mean reward and number of evaluations."""
        key = self._incumbent.key
        if key is None:
            return None
        return {**self._top_record[key], "mean_reward": self._incumbent.mean_reward(key),
                "evaluations": self._incumbent.evaluations(key)}

    def _draw_best(self, record: dict[str, Any], step: int) -> None:
        """best.png and a TensorBoard image of the new best architecture."""
        from nas_env.draw import draw_architecture  # matplotlib is imported only when a picture is drawn

        caption = f"child {record['index']}, {score_text(record)}, params {record['params']}"
        image = draw_architecture(record["arch"], self.path / BEST_PICTURE, caption=caption)
        self.writer.add_image("search/best_architecture", image, step, dataformats="HWC")

    def record_update(self, stats: UpdateStats) -> None:
        for name, value in stats.scalars().items():
            if name != "children_done":
                self.writer.add_scalar(f"update/{name}", value, stats.children_done)

    def add_scalar(self, name: str, value: float, step: int) -> None:
        self.writer.add_scalar(name, value, step)

    def close(self) -> None:
        """Flush and close everything :meth:`start` opened (safe to call twice, or without start)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.writer is not None:
            name, best = headline_metric(self.best) if self.best else ("val_acc", None)
            self.writer.add_hparams(self._hparams, {f"hparam/best_{name}": best or 0.0,
                                                    "hparam/children": self.written}, run_name="hparams")
            self.writer.flush()
            self.writer.close()
            self.writer = None
        if self._file is not None:
            self._file.close()
            self._file = None

    def summary(self, extra: str = "") -> str:
        """The closing lines a search prints: the folder, counts, and the best architecture."""
        head = f"run folder: {self.path}  ({self.written} children, {self.cache_hits} served from the store{extra})"
        return head + "\n\n" + best_table(self.best)
