"""results.jsonl: one line per finished child, written atomically or appended, read back, and its headline score.

A record names its own headline metric (``score_key``, from the env's final info), so nothing here knows
what an accuracy or a perplexity is. Records written before they named it are read by the one rule
:data:`LEGACY_SCORE_KEYS` (and :data:`LEGACY_LOWER_IS_BETTER`).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from agents.base import ChildRecord

CONFIG, RESULTS, BEST, CHECKPOINTS = "config.json", "results.jsonl", "best.json", "checkpoints"  # in a run folder
# Records written before records named their score: the language-model envs' val_ppl where present (those records
# also carried a val_acc of 0), else val_acc.
LEGACY_SCORE_KEYS = ("val_ppl", "val_acc")
LEGACY_LOWER_IS_BETTER = ("val_ppl",)  # of those, the one where lower is better (a perplexity)
PASSED_THROUGH = ("test_acc", "regret")  # what a tabulated child reports besides its score


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


def score_of(record: dict[str, Any]) -> tuple[str, float | None]:
    """The headline metric of a record (or of a final info): its name and value (None: the child has none)."""
    key = record.get("score_key") or next((k for k in LEGACY_SCORE_KEYS if k in record), LEGACY_SCORE_KEYS[-1])
    return key, record.get(key)


def score_lower_is_better(record: dict[str, Any]) -> bool:
    """Whether a lower headline score is better: as the record says, else by :data:`LEGACY_LOWER_IS_BETTER`."""
    lower = record.get("score_lower_is_better")
    return bool(lower) if lower is not None else score_of(record)[0] in LEGACY_LOWER_IS_BETTER


def format_score(value: float | None) -> str:
    """A score for people: four decimals for a share (an accuracy), two for anything larger (a perplexity)."""
    if value is None:
        return "-"
    return f"{value:.4f}" if abs(value) <= 1 else f"{value:.2f}"


def score_text(record: dict[str, Any]) -> str:
    """A record's (or final info's) headline metric as ``name value``, e.g. ``val_acc 0.9123``."""
    key, value = score_of(record)
    return f"{key} {format_score(value)}"


def child_record(child: ChildRecord) -> dict[str, Any]:
    """The results.jsonl line of a finished child."""
    info = child.info
    key, score = score_of(info)
    record = {
        "index": child.index,
        "reward": float(child.reward),
        "status": info.get("status"),
        "score_key": key,
        "score_lower_is_better": info.get("score_lower_is_better"),
        key: float(score) if score is not None else None,
        f"{key}_history": list(info.get(f"{key}_history") or []),
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
    record.update({k: info[k] for k in PASSED_THROUGH if k in info})
    return record
