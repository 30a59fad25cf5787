"""Final training: grid search, full training, one test evaluation, the Table 1 report and the exported model."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import nas_env.data.cifar10 as cifar10_module
from agents.experiment.final import (
    FinalConfig,
    make_grid,
    parse_args,
    scaled_decay_epoch,
    train_final,
)
from agents.experiment.runner import SearchArgs, run_search
from nas_env.data import load_cifar10_test, load_digits_data
from nas_env.models.cnn import build_model
from nas_env.spaces.cnn import CNNArchitecture

TWO_LAYERS = {"layers": [{"filter_height": 3, "filter_width": 3, "num_filters": 8, "inputs": []},
                         {"filter_height": 3, "filter_width": 1, "num_filters": 12, "inputs": [1]}],
              "pool_after": [1]}
TINY_GRID = {"lr": [0.1, 0.05], "weight_decay": [1e-4], "bn_eps": [1e-3], "lr_decay_epoch": [1]}

# Runs in a fresh interpreter that cannot import this project: only torch loads the exported model.
RELOAD = textwrap.dedent("""
    import sys
    from importlib.abc import MetaPathFinder

    class NoProject(MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("nas_env", "agents"):
                raise ImportError(f"the exported model must load without {name}")
            return None

    sys.meta_path.insert(0, NoProject())
    import torch

    model = torch.export.load(sys.argv[1]).module()
    images = torch.load(sys.argv[2], weights_only=True)
    with torch.no_grad():
        logits = model(images.float())
    torch.save(logits, sys.argv[3])
    assert not any(m.split(".")[0] in ("nas_env", "agents") for m in sys.modules)
""")


def check_report_and_export(out: Path, report: dict, test_x: torch.Tensor, test_y: torch.Tensor,
                            tmp_path: Path) -> None:
    """The report's Table 1 row, its files, and the exported model predicting like the saved weights."""
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk == json.loads(json.dumps(report))
    arch = CNNArchitecture.from_dict(report["arch"])
    assert report["table"] == {"Model": report["model"], "Depth": arch.num_layers, "Parameters": report["parameters"],
                               "Error rate (%)": round(report["error_rate"], 4)}
    assert report["parameters"] == arch.num_params(test_x.shape[1:], 10)
    assert report["error_rate"] == pytest.approx(100 * (1 - report["test_accuracy"]))
    assert report["test_images"] == len(test_y)
    best = report["hparams"]
    accs = [g["val_acc"] for g in report["grid"]]
    winner = report["grid"][accs.index(max(accs))]  # the best validation accuracy, the first on ties
    assert best == {k: winner[k] for k in ("lr", "weight_decay", "bn_eps", "lr_decay_epoch")}

    # the saved weights, rebuilt with this project, give the reported test accuracy ...
    model = build_model(arch, test_x.shape[1:], 10, bn_eps=best["bn_eps"])
    model.load_state_dict(torch.load(out / "model_state_dict.pt", weights_only=True))
    model.eval()
    mean = torch.tensor(report["input_mean"]).view(1, -1, 1, 1)
    std = torch.tensor(report["input_std"]).view(1, -1, 1, 1)
    with torch.no_grad():
        expected = model((test_x.float() - mean) / std)
    assert (expected.argmax(1) == test_y).float().mean().item() == pytest.approx(report["test_accuracy"])
    assert model.norms[0].eps == best["bn_eps"]

    # ... and so does the exported model, loaded by torch alone in another process
    torch.save(test_x, tmp_path / "images.pt")
    subprocess.run([sys.executable, "-c", RELOAD, str(out / "model.pt2"), str(tmp_path / "images.pt"),
                    str(tmp_path / "logits.pt")], check=True, cwd=tmp_path, capture_output=True)
    logits = torch.load(tmp_path / "logits.pt", weights_only=True)
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)
    assert torch.equal(logits.argmax(1), expected.argmax(1))


def test_digits_from_a_run_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = run_search(SearchArgs(env="NASRL-Digits-v0", episodes=4, children_per_update=2, logdir=str(tmp_path),
                                    run_name="search", env_kwargs={"evaluator": "synthetic"}, progress=False))
    report = train_final(FinalConfig(source=str(run_dir), epochs=2, grid_epochs=1, grid=TINY_GRID, device="cpu",
                                     progress=False))
    out = run_dir / "final"
    printed = capsys.readouterr().out
    assert "| Model | Depth | Parameters | Error rate (%) |" in printed and "| search | 4 |" in printed
    assert "no official test set" in report["test_set"] and report["dataset"] == "digits"
    assert (report["grid_train_images"], report["grid_val_images"], report["final_train_images"]) == (
        1500 - 297, 297, 1500)
    assert len(report["grid"]) == 2 and all(g["status"] == "ok" and len(g["val_acc_history"]) == 1
                                             for g in report["grid"])
    assert len(report["final_fit_acc_history"]) == 2 and report["test_accuracy"] > 0.3
    best_json = json.loads((run_dir / "best.json").read_text())
    assert report["arch"] == json.loads(best_json["arch"]) and report["search_val_acc"] == best_json["val_acc"]

    digits = load_digits_data(val_size=297)
    test_x, test_y = digits.train_x[-297:], digits.train_y[-297:]
    check_report_and_export(out, report, test_x, test_y, tmp_path)

    acc = EventAccumulator(str(out))
    acc.Reload()
    scalars = set(acc.Tags()["scalars"])
    assert {"grid/00/val_acc", "grid/01/train_loss", "final/full/fit_acc", "final/test_acc"} <= scalars
    assert len(acc.Scalars("final/test_acc")) == 1

    with pytest.raises(FileExistsError, match="already holds a final report"):
        train_final(FinalConfig(source=str(run_dir), epochs=2, grid_epochs=1, grid=TINY_GRID, progress=False))
    # A run that read the test set and then died (no report) blocks a rerun from reading it again.
    (run_dir / "final" / "report.json").unlink()
    assert (run_dir / "final" / "TEST_SET_READ").is_file()
    with pytest.raises(FileExistsError, match="already evaluated on the test set"):
        train_final(FinalConfig(source=str(run_dir), epochs=2, grid_epochs=1, grid=TINY_GRID, progress=False))


def test_cifar10_subset_reads_the_test_set_once(cifar10_root: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[int] = []
    real = cifar10_module.load_cifar10_test

    def counting(*args: object, **kwargs: object) -> tuple[torch.Tensor, torch.Tensor]:
        reads.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(cifar10_module, "load_cifar10_test", counting)
    arch_path = tmp_path / "arch.json"
    arch_path.write_text(json.dumps(TWO_LAYERS))
    report = train_final(FinalConfig(source=str(arch_path), dataset="cifar10", data_root=str(cifar10_root),
                                     download=False, epochs=2, grid_epochs=1, train_subset=256, val_subset=128,
                                     grid=TINY_GRID, device="cpu", name="tiny", progress=False))
    assert reads == [1]
    out = tmp_path / "final_arch"
    assert report["test_images"] == 100 and "only 100 of the official 10,000 test images" in report["test_set"]
    assert (report["grid_train_images"], report["grid_val_images"], report["final_train_images"]) == (256, 128, 384)
    assert report["table"]["Model"] == "tiny" and report["depth"] == 2
    test_x, test_y = load_cifar10_test(cifar10_root, download=False)
    check_report_and_export(out, report, test_x, test_y, tmp_path)


# --- the grid and the inputs ----------------------------------------------------------------------
def test_default_grid_is_sixteen_paper_like_points() -> None:
    grid = make_grid("cifar10", epochs=100)
    assert len(grid) == 16
    assert {g.lr for g in grid} == {0.1, 0.05} and {g.weight_decay for g in grid} == {1e-4, 5e-4}
    assert {g.bn_eps for g in grid} == {1e-5, 1e-3} and {g.lr_decay_epoch for g in grid} == {50, 75}
    assert {g.lr_decay_epoch for g in make_grid("digits", epochs=30, overrides={"lr": [0.2]})} == {15, 22}
    assert scaled_decay_epoch(50, 100, 25) == 12 and scaled_decay_epoch(1, 100, 10) == 1


@pytest.mark.parametrize(("overrides", "message"), [
    ({"momentum": [0.9]}, r"unknown grid key\(s\) \['momentum'\]"),
    ({"lr": []}, "grid 'lr' is empty"),
    ({"lr": [0.1, -0.1]}, "each grid lr value must be a finite number > 0, got -0.1"),
    ({"bn_eps": [0]}, "each grid bn_eps value must be a finite number > 0, got 0"),
    ({"weight_decay": [-1e-4]}, "each grid weight_decay value must be a finite number >= 0"),
    ({"lr_decay_epoch": [11]}, r"each grid lr_decay_epoch value .* must be an integer >= 1 and <= 10, got 11"),
    ({"lr_decay_epoch": [2.5]}, r"each grid lr_decay_epoch value .* must be an integer >= 1 and <= 10, got 2\.5"),
    ({"lr": ["fast"]}, "each grid lr value must be a finite number > 0, got 'fast'"),
])
def test_bad_grids_are_named(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_grid("digits", epochs=10, overrides=overrides)


def test_bad_inputs_are_named_before_any_training(tmp_path: Path) -> None:
    arch_path = tmp_path / "arch.json"
    arch_path.write_text(json.dumps(TWO_LAYERS))
    with pytest.raises(ValueError, match=r"cannot tell the dataset .* pass --dataset"):
        train_final(FinalConfig(source=str(arch_path), progress=False))
    with pytest.raises(FileNotFoundError, match="neither a run folder nor a JSON file"):
        train_final(FinalConfig(source=str(tmp_path / "missing.json"), dataset="digits", progress=False))
    with pytest.raises(FileNotFoundError, match=r"has no best\.json"):
        train_final(FinalConfig(source=str(tmp_path), dataset="digits", progress=False))
    (tmp_path / "junk.json").write_text('{"val_acc": 0.9}')
    with pytest.raises(ValueError, match="neither a results record"):
        train_final(FinalConfig(source=str(tmp_path / "junk.json"), dataset="digits", progress=False))
    with pytest.raises(ValueError, match="grid_epochs=5 exceeds epochs=2"):
        train_final(FinalConfig(source=str(arch_path), dataset="digits", epochs=2, grid_epochs=5, progress=False))
    with pytest.raises(ValueError, match="dataset must be one of"):
        train_final(FinalConfig(source=str(arch_path), dataset="imagenet", progress=False))
    held_out = r"test_size \(images held out of the search's 1500 training images\) must be an integer >= 1 and <= 1498"
    with pytest.raises(ValueError, match=held_out + ", got 0"):
        train_final(FinalConfig(source=str(arch_path), dataset="digits", test_size=0, epochs=1, progress=False,
                                out=str(tmp_path / "o")))


def test_flags_build_the_grid_over_a_json_one(tmp_path: Path) -> None:
    grid_file = tmp_path / "grid.json"
    grid_file.write_text('{"bn_eps": [1e-3], "lr": [0.3]}')
    config = parse_args(["runs/x", "--grid", str(grid_file), "--lr", "0.1", "0.02", "--lr-decay-epoch", "3",
                         "--epochs", "4", "--dataset", "digits", "--no-progress"])
    assert config.grid == {"bn_eps": [1e-3], "lr": [0.1, 0.02], "lr_decay_epoch": [3]}
    assert (config.epochs, config.dataset, config.progress) == (4, "digits", False)
    with pytest.raises(SystemExit):
        parse_args(["runs/x", "--grid", "[1, 2]"])


def test_build_model_takes_a_batch_norm_epsilon() -> None:
    arch = CNNArchitecture.from_dict(TWO_LAYERS)
    assert all(n.eps == 1e-5 for n in build_model(arch, (3, 32, 32), 10).norms)  # the default is unchanged
    assert all(n.eps == 1e-3 for n in build_model(arch, (3, 32, 32), 10, bn_eps=1e-3).norms)
    for bad in (0, -1e-3, float("nan"), "1e-3"):
        with pytest.raises(ValueError, match="bn_eps must be a finite number > 0"):
            build_model(arch, (3, 32, 32), 10, bn_eps=bad)
