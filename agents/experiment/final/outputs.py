"""What a final training leaves: the model (weights, architecture, ``torch.export`` program) and its report."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from agents.experiment.final.config import FinalConfig, HParams, Plan
from agents.experiment.final.source import FinalData
from nas_env.data.base import ImageData
from nas_env.spaces.cnn import CNNArchitecture
from nas_env.training.image_trainer import TrainOutcome

FILES = {"weights": "model_state_dict.pt", "exported": "model.pt2", "arch": "arch.json", "report": "report.json"}


class NormalisedClassifier(nn.Module):
    """The child with its input normalisation: float images ``N x C x H x W`` on the 0-255 scale in, logits out."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 1000) -> torch.Tensor:
    """Class predictions (int64, on the CPU) of a :class:`NormalisedClassifier` for uint8 or float 0-255 images."""
    model.eval()
    preds = [model(images[s : s + batch_size].to(device, torch.float32)).argmax(dim=1).cpu()
             for s in range(0, len(images), batch_size)]
    return torch.cat(preds)


def export_model(model: NormalisedClassifier, input_shape: Sequence[int], path: Path) -> None:
    """Save ``model`` with :func:`torch.export` (any batch size), loadable by ``torch.export.load`` alone."""
    cpu = copy.deepcopy(model).to("cpu", memory_format=torch.contiguous_format).eval()
    example = torch.zeros(2, *input_shape)  # batch 2: a size-1 example would specialise the batch dimension
    program = torch.export.export(cpu, (example,), dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    torch.export.save(program, str(path))


def save_model(out: Path, model: nn.Module, arch: CNNArchitecture, data: ImageData,
               device: torch.device) -> NormalisedClassifier:
    """Write the weights, the architecture and the exported model; returns the classifier to evaluate."""
    classifier = NormalisedClassifier(model, data.mean, data.std).to(device, memory_format=torch.contiguous_format)
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, out / FILES["weights"])
    (out / FILES["arch"]).write_text(arch.to_json() + "\n", encoding="utf-8")
    export_model(classifier, data.input_shape, out / FILES["exported"])
    return classifier


CIFAR10_OFFICIAL_TEST_IMAGES = 10_000


def format_params(n: int) -> str:
    """Parameters as the paper's Table 1 writes them (4.2M), with K below a million."""
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}K" if n >= 1e3 else str(n)


def table_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """Rows of Table 1's columns as a Markdown table."""
    lines = ["| Model | Depth | Parameters | Error rate (%) |", "|---|---:|---:|---:|"]
    lines += [f"| {r['Model']} | {r['Depth']} | {format_params(r['Parameters'])} | {r['Error rate (%)']:.2f} |"
              for r in rows]
    return "\n".join(lines)


def make_report(plan: Plan, config: FinalConfig, data: FinalData, grid: list[dict[str, Any]], best: HParams,
                final: TrainOutcome, test_correct: torch.Tensor, params: int, device: torch.device,
                seconds: float) -> dict[str, Any]:
    """report.json: the Table 1 row, the test score (``test_correct``: one bool per test image), the chosen and
    every grid point, and how to use the model."""
    arch, shape, n = plan.source.arch, data.full.input_shape, len(test_correct)
    accuracy = float(test_correct.float().mean())
    error, stderr = 100.0 * (1.0 - accuracy), 100.0 * math.sqrt(accuracy * (1.0 - accuracy) / n)  # in points
    note = data.test_note
    if plan.dataset == "cifar10" and n < CIFAR10_OFFICIAL_TEST_IMAGES:
        note = (f"cifar10: only {n:,} of the official {CIFAR10_OFFICIAL_TEST_IMAGES:,} test images (the shared "
                f"copy holds the first 1,000 of the official test batch), so the error rate has a standard error of "
                f"about {stderr:.2f} points")
    return {
        "table": {"Model": plan.name, "Depth": arch.num_layers, "Parameters": params,
                  "Error rate (%)": round(error, 4)},
        "model": plan.name, "depth": arch.num_layers, "parameters": params, "error_rate": error,
        "error_rate_stderr": stderr, "test_accuracy": accuracy, "test_images": n, "test_set": note,
        "dataset": plan.dataset, "source": str(plan.source.path),
        "search_val_acc": (plan.source.record or {}).get("val_acc"), "arch": arch.to_dict(), "hparams": asdict(best),
        "lr_decay_factor": float(config.lr_decay_factor), "epochs": plan.epochs, "grid_epochs": plan.grid_epochs,
        "batch_size": plan.batch_size, "seed": config.seed, "device": str(device), "grid": grid,
        "grid_train_images": len(data.search.train_y), "grid_val_images": len(data.search.val_y),
        "final_train_images": len(data.full.train_y), "final_status": final.status,
        "final_fit_acc_history": final.val_acc_history, "final_train_seconds": final.train_seconds,
        "total_seconds": seconds, "files": FILES,
        "input_mean": list(data.full.mean), "input_std": list(data.full.std),  # build_model's input: (x - mean) / std
        "exported_model": {"format": "torch.export (ExportedProgram)", "load": "torch.export.load(path).module()",
                           "input": f"float32 N x {' x '.join(map(str, shape))}, pixels 0-255 (normalisation built "
                                    "in)", "output": f"logits N x {data.full.num_classes}"},
    }
