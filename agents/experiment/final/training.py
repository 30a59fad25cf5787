"""The procedure: every grid point on the search's split, the best one on all training images, one test evaluation."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import torch
from torch import nn
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from agents.experiment.final.config import TEST_READ_MARKER, FinalConfig, HParams, Plan, resolve, scaled_decay_epoch
from agents.experiment.final.outputs import FILES, make_report, predict, save_model, table_markdown
from agents.experiment.final.source import prepare_data, search_split
from nas_env.models.cnn import build_model
from nas_env.training.device import resolve_device
from nas_env.training.image_trainer import DeviceData, TrainConfig, TrainOutcome, train_child


def _epoch_log(writer: SummaryWriter, bar: tqdm, tag: str, run: str) -> Callable[[int, float, float], None]:
    """The per-epoch callback of one run: ``tag`` "grid" (validation accuracy) or "final" (fit accuracy)."""
    def log(epoch: int, acc: float, loss: float) -> None:
        writer.add_scalar(f"{tag}/{run}/{'val_acc' if tag == 'grid' else 'fit_acc'}", acc, epoch + 1)
        writer.add_scalar(f"{tag}/{run}/train_loss", loss, epoch + 1)
        bar.set_postfix(run=run, acc=f"{acc:.4f}", loss=f"{loss:.3f}", refresh=False)  # shown by the update
        bar.update(1)

    return log


def _train(plan: Plan, config: FinalConfig, h: HParams, data: DeviceData, epochs: int, decay_epoch: int,
           on_epoch: Callable[[int, float, float], None]) -> tuple[nn.Module, TrainOutcome]:
    """One run of the architecture with grid point ``h``: the lr drops by ``lr_decay_factor`` at ``decay_epoch``."""
    with torch.random.fork_rng(devices=[]):  # a seeded initialisation that leaves the caller's global RNG alone
        torch.manual_seed(int(config.seed))
        model = build_model(plan.source.arch, data.data.input_shape, data.data.num_classes, bn_eps=h.bn_eps)
    train_config = TrainConfig(epochs=epochs, batch_size=plan.batch_size, lr=h.lr, weight_decay=h.weight_decay,
                               lr_schedule="step", lr_decay_epochs=(decay_epoch,),
                               lr_decay_factor=float(config.lr_decay_factor), precision=config.precision)
    return model, train_child(model, data, train_config, config.seed, on_epoch)


def _run_grid(plan: Plan, config: FinalConfig, data: DeviceData, writer: SummaryWriter,
              bar: tqdm) -> list[dict[str, Any]]:
    """Every grid point, scored by its validation accuracy after the last epoch (0 when it failed)."""
    results = []
    for i, h in enumerate(plan.grid):
        decay = scaled_decay_epoch(h.lr_decay_epoch, plan.epochs, plan.grid_epochs)
        bar.set_description(f"grid {i + 1}/{len(plan.grid)}")
        _, outcome = _train(plan, config, h, data, plan.grid_epochs, decay, _epoch_log(writer, bar, "grid", f"{i:02d}"))
        val_acc = outcome.val_acc_history[-1] if outcome.status == "ok" and outcome.val_acc_history else 0.0
        results.append({**asdict(h), "grid_lr_decay_epoch": decay, "val_acc": val_acc, "status": outcome.status,
                        "val_acc_history": outcome.val_acc_history, "train_seconds": outcome.train_seconds})
        writer.add_hparams({**asdict(h), "run": i}, {"hparam/val_acc": val_acc}, run_name=f"hparams/grid_{i:02d}")
        bar.update(plan.grid_epochs - len(outcome.val_acc_history))  # a diverged run stops early
    return results


def train_final(config: FinalConfig) -> dict[str, Any]:
    """Grid search, final training and the one test evaluation; returns (and writes) the report."""
    start = time.perf_counter()
    plan = resolve(config)
    device = resolve_device(config.device)
    data = prepare_data(config, plan.dataset, plan.data_root, search_split(config, plan.source.run_config))
    plan.out.mkdir(parents=True, exist_ok=True)
    writer = SummaryWriter(log_dir=str(plan.out))
    bar = tqdm(total=len(plan.grid) * plan.grid_epochs + plan.epochs, unit="epoch", disable=not config.progress,
               dynamic_ncols=True, desc="grid")

    # 1. the grid, on the search's train / validation split
    search_data = DeviceData(data.search, device)
    try:
        grid = _run_grid(plan, config, search_data, writer, bar)
    finally:
        del search_data
        if device.type == "cuda":
            torch.cuda.empty_cache()
    best_index = max(range(len(grid)), key=lambda k: (grid[k]["val_acc"], -k))  # ties: the first
    best = plan.grid[best_index]

    # 2. the final run on train + validation, full schedule
    bar.set_description("final")
    model, final = _train(plan, config, best, DeviceData(data.full, device), plan.epochs, best.lr_decay_epoch,
                          _epoch_log(writer, bar, "final", "full"))
    bar.update(plan.epochs - len(final.val_acc_history))
    bar.close()
    classifier = save_model(plan.out, model, plan.source.arch, data.full, device)  # saved before the test set is read

    # 3. the test set: read and evaluated exactly once, here (the marker keeps a rerun from reading it again)
    (plan.out / TEST_READ_MARKER).write_text(f"test set read at {time.strftime('%Y-%m-%d %H:%M:%S')}\n",
                                             encoding="utf-8")
    test_x, test_y = data.load_test()
    correct = predict(classifier, test_x, device) == test_y

    # 4. report, table
    params = sum(p.numel() for p in model.parameters())
    report = make_report(plan, config, data, grid, best, final, correct, params, device, time.perf_counter() - start)
    (plan.out / FILES["report"]).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    table = table_markdown([report["table"]])
    writer.add_scalar("final/test_acc", report["test_accuracy"], plan.epochs)
    writer.add_scalar("final/test_error", report["error_rate"], plan.epochs)
    writer.add_text("final/table", f"{table}\n\n{report['test_set']}", 0)
    writer.close()
    print(f"\n{table}\n\n{report['test_set']}\ntest accuracy {report['test_accuracy']:.4f} on {report['test_images']} "
          "images; best grid point "
          f"{asdict(best)} (val acc {grid[best_index]['val_acc']:.4f}); final status {final.status}\n"
          f"report: {plan.out / FILES['report']}")
    return report
