"""Records as text for people: the best architecture's tables and the closing summary of a search."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from agents.experiment.run_folder.records import BEST, score_text

SHORT_ARCH_CHARS = 100  # a best architecture's one-line form is shown in the summary up to this length
FIRST_LAST = 50  # the summary compares the mean reward of the first and the last this many children ...
FIFTH_BELOW = 100  # ... or, with fewer children than this, of the first and the last fifth


def _is_cnn(arch: dict[str, Any]) -> bool:
    return arch.get("type", "cnn") == "cnn" and "layers" in arch


def arch_rows(record: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(layer, filter, stride, filters, inputs) per layer of a results record's CNN architecture."""
    arch = json.loads(record["arch"])
    rows = []
    for i, l in enumerate(arch.get("layers", []), start=1):
        pool = " +pool" if i in arch.get("pool_after", []) else ""
        rows.append((str(i), f"{l['filter_height']}x{l['filter_width']}", f"{l['stride_height']}x{l['stride_width']}",
                     f"{l['num_filters']}{pool}", ",".join(str(j) for j in l["inputs"]) or "image"))
    return rows


def short_arch(record: dict[str, Any]) -> str | None:
    """A CNN record's layers on one line (``3x3x36 5x5x48+pool``: filter and filters, stride when not 1, pooling),
    or None for another space or when the line would be longer than :data:`SHORT_ARCH_CHARS`."""
    if not _is_cnn(json.loads(record["arch"])):
        return None
    layers = [f"{filt}x{filters.replace(' +', '+')}" + ("" if stride == "1x1" else f"/s{stride}")
              for _, filt, stride, filters, _ in arch_rows(record)]
    text = " ".join(layers)
    return text if len(text) <= SHORT_ARCH_CHARS else None


def arch_markdown(record: dict[str, Any]) -> str:
    """A record's architecture as Markdown: a layer table for a CNN, the formulas of a recurrent cell."""
    arch = json.loads(record["arch"])
    head = f"{score_text(record)}, params {record['params']}, child {record['index']}"
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
    params, flops = (f"{record[k]:,}" if record.get(k) is not None else "-" for k in ("params", "flops"))
    lines = [f"best architecture: child {record['index']}, {score_text(record)}, params {params}, "
             f"multiply-adds {flops}"]
    if not _is_cnn(json.loads(record["arch"])):
        return "\n".join([*lines, record["arch"]])
    lines.append(f"{'layer':>5}  {'filter':<6}  {'stride':<6}  {'filters':>7}  inputs")
    lines += [f"{layer:>5}  {filt:<6}  {stride:<6}  {filters:>7}  {inputs}"
              for layer, filt, stride, filters, inputs in arch_rows(record)]
    return "\n".join(lines)


def print_best_table(record: dict[str, Any] | None) -> None:
    print("\n" + best_table(record))


def learning_line(rewards: list[float]) -> str | None:
    """Whether the search learned: the mean reward of its first children against its last (None below 2)."""
    n = len(rewards)
    if n < 2:
        return None
    k = FIRST_LAST if n >= FIFTH_BELOW else max(1, n // 5)
    first, last = sum(rewards[:k]) / k, sum(rewards[-k:]) / k
    return (f"mean reward: {first:.4f} over the first {k} children, {last:.4f} over the last {k} "
            f"({last - first:+.4f})")


def summary_text(path: Path, records: list[dict[str, Any]], best: dict[str, Any] | None, cache_hits: int,
                 extra: str = "") -> str:
    """The closing lines of a search: its children, the best one, whether it learned, where to look next."""
    lines = [f"search: {len(records)} children ({cache_hits} served from the store{extra})"]
    if best is None:
        lines.append("no architecture was evaluated successfully")
    else:
        repeats = f", mean reward {best['mean_reward']:.4f} over {best['evaluations']} evaluations" \
            if best.get("evaluations", 1) > 1 else ""
        params = f", params {best['params']:,}" if best.get("params") is not None else ""
        lines.append(f"best architecture ({BEST}): child {best['index']}, {score_text(best)}{params}{repeats}")
        if (arch := short_arch(best)) is not None:
            lines.append(f"  layers (filter x filters): {arch}")
    if (learned := learning_line([float(r["reward"]) for r in records])) is not None:
        lines.append(learned)
    lines += [f"run folder: {path}", f"TensorBoard: tensorboard --logdir {shlex.quote(str(path.parent))}"]
    return "\n".join(lines)
