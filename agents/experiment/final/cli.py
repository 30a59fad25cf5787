"""``nasrl-train-final`` (also ``python scripts/train_final.py``): the flags, turned into a :class:`FinalConfig`."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

from agents.experiment.final.config import DATASETS, GRID_KEYS, FinalConfig, FinalSettings
from agents.experiment.final.training import train_final
from nas_env.cli import cli_entry, parse_dataclass
from nas_env.training.image_trainer import PRECISIONS


@dataclass
class FinalArgs(FinalSettings):
    """Flags of ``nasrl-train-final`` (one docstring per field); :func:`parse_args` turns them into a FinalConfig."""

    image_size: list[int] | None = None
    """image folder: H [W] (default: the run's)"""
    grid: str = ""
    """the grid as a JSON object or a JSON file, with keys lr, weight_decay, bn_eps, lr_decay_epoch (lists)"""
    lr: list[float] | None = None
    """grid learning rates (default 0.1 0.05)"""
    weight_decay: list[float] | None = None
    """grid weight decays (default 1e-4 5e-4)"""
    bn_eps: list[float] | None = None
    """grid batch-norm epsilons (default 1e-5 1e-3)"""
    lr_decay_epoch: list[int] | None = None
    """grid epochs (of the final schedule) at which the lr decays (default: 1/2 and 3/4 of it)"""


def parse_args(argv: list[str] | None = None) -> FinalConfig:
    """Command-line flags of ``nasrl-train-final``; a bad value exits with a message naming it."""
    args, _, parser = parse_dataclass(FinalArgs, argv, prog="nasrl-train-final", description=(
        "Final training of a found architecture (Zoph & Le, section 4.1): grid search on the validation split, "
        "training on all training images, one test evaluation, a Table 1 row."))
    if args.dataset is not None and args.dataset not in DATASETS:
        parser.error(f"--dataset {args.dataset!r} is not one of {', '.join(DATASETS)}")
    if args.precision not in PRECISIONS:
        parser.error(f"--precision {args.precision!r} is not one of {', '.join(PRECISIONS)}")
    if args.image_size is not None and len(args.image_size) > 2:
        parser.error(f"--image-size takes H or H W, got {args.image_size}")
    text = Path(args.grid).read_text(encoding="utf-8") if Path(args.grid).is_file() else args.grid
    try:  # a JSON object, or a file holding one
        grid = json.loads(text or "{}")
    except json.JSONDecodeError as e:
        parser.error(f"--grid must be a JSON object or a JSON file, got {args.grid!r}: {e}")
    if not isinstance(grid, dict):
        parser.error(f"--grid must be a JSON object like '{{\"lr\": [0.1, 0.05]}}', got {args.grid!r}")
    grid.update({key: getattr(args, key) for key in GRID_KEYS if getattr(args, key) is not None})  # flags win
    size = args.image_size
    image_size = None if size is None else size[0] if len(size) == 1 else (size[0], size[1])
    shared = {f.name: getattr(args, f.name) for f in fields(FinalSettings)}
    return FinalConfig(**shared, grid=grid, image_size=image_size)


@cli_entry("nasrl-train-final", interrupted="nothing was written to the test report")
def main(argv: list[str] | None = None) -> None:
    """Console entry point ``nasrl-train-final`` (a user's mistake: one line and exit 2, see ``cli_entry``)."""
    train_final(parse_args(argv))
