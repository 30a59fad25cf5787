"""The CNN env on every data source, and ``nasrl-train-final`` rebuilding each source from a run's config.json."""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import nas_env  # noqa: F401  (registers the ids)
from agents.experiment.final import FinalConfig, train_final
from nas_env.data import load_image_folder
from nas_env.envs.cnn_env import CNNNASEnv

ROOT = Path(__file__).resolve().parents[3]
SHARED = ROOT / ".." / "shared" / "data"
TINY_SPACE = {"num_layers": 2, "num_filters": (4, 8), "epochs": 1, "batch_size": 32, "device": "cpu"}
TWO_LAYERS = {"layers": [{"filter_height": 3, "filter_width": 3, "num_filters": 8, "inputs": []},
                         {"filter_height": 3, "filter_width": 1, "num_filters": 12, "inputs": [1]}],
              "pool_after": [1]}
ONE_POINT = {"lr": [0.05], "weight_decay": [1e-4], "bn_eps": [1e-3], "lr_decay_epoch": [1]}


def finish(env: gym.Env, seed: int = 0) -> tuple[float, dict]:
    """Play the first valid action until the episode ends: (last reward, last info)."""
    _, info = env.reset(seed=seed)
    while True:
        _, reward, terminated, truncated, info = env.step(int(info["action_mask"].argmax()))
        if terminated or truncated:
            return float(reward), info


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real CIFAR-10 pictures as an image folder in the split layout: 300 train, 60 val, 60 test."""
    if not (SHARED / "cifar10-png" / "cifar10_labels.js").is_file():
        pytest.skip(f"shared CIFAR-10 PNGs not found at {SHARED.resolve()}")
    out = tmp_path_factory.mktemp("pictures")
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_image_folder.py"), str(out), "--count", "300",
                    "--val", "60", "--test", "60"], check=True, capture_output=True)
    return out


def write_run(folder: Path, env_id: str, env_kwargs: dict) -> Path:
    """A run folder as the search writes it, as far as train-final reads it: config.json and best.json."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"env": env_id, "env_kwargs": env_kwargs}))
    (folder / "best.json").write_text(json.dumps({"arch": json.dumps(TWO_LAYERS), "val_acc": 0.5}))
    return folder


def final(source: Path, **kwargs: object) -> dict:
    return train_final(FinalConfig(source=str(source), epochs=1, grid_epochs=1, grid=ONE_POINT, device="cpu",
                                   progress=False, **kwargs))


def check_export(out: Path, report: dict, test_x: torch.Tensor, test_y: torch.Tensor) -> None:
    """The exported model alone reproduces the reported test accuracy on the test images."""
    model = torch.export.load(str(out / "model.pt2")).module()
    with torch.no_grad():
        acc = (model(test_x.float()).argmax(1) == test_y).float().mean().item()
    assert acc == pytest.approx(report["test_accuracy"]) and report["test_images"] == len(test_y)


# --- the env ----------------------------------------------------------------------------------------------
def test_small_cifar_copy_takes_val_size(tmp_path: Path) -> None:
    script = SHARED / "make_cifar10_batches.py"
    if not script.is_file():
        pytest.skip("shared CIFAR-10 copy not found")
    subprocess.run([sys.executable, str(script), str(tmp_path), "--train", "1000", "--test", "10"], check=True,
                   capture_output=True)
    with pytest.raises(ValueError, match=r"val_size must be an int in 1\.\.999 .* got 5000 \(the default of 5000 is "
                                         r"too large here\); pass val_size=N or val_fraction=F"):
        gym.make("NASRL-CIFAR10-v0", data_root=str(tmp_path), download=False, **TINY_SPACE)
    env = gym.make("NASRL-CIFAR10-v0", data_root=str(tmp_path), download=False, val_size=100, train_subset=300,
                   **TINY_SPACE)
    data = env.unwrapped.evaluator.data.data
    assert (len(data.train_y), len(data.val_y)) == (300, 100)
    reward, info = finish(env)
    assert info["status"] == "ok" and 0 <= reward <= 1 and len(info["val_acc_history"]) == 1
    frac = gym.make("NASRL-CIFAR10-v0", data_root=str(tmp_path), download=False, val_fraction=0.5, **TINY_SPACE)
    assert len(frac.unwrapped.evaluator.data.data.val_y) == 500


def test_image_folder_search(pictures: Path) -> None:
    env = gym.make("NASRL-CIFAR10-v0", dataset="imagefolder", data_root=str(pictures), image_size=16, **TINY_SPACE)
    data = env.unwrapped.evaluator.data.data
    assert data.name == f"imagefolder:{pictures.resolve()}" and data.input_shape == (3, 16, 16)
    assert (len(data.train_y), len(data.val_y)) == (300, 60)  # the val/ folder, test/ untouched
    reward, info = finish(env)
    assert info["status"] == "ok" and 0 <= reward <= 1
    synthetic = gym.make("NASRL-CIFAR10-v0", dataset="imagefolder", data_root=str(pictures), evaluator="synthetic")
    assert finish(synthetic)[1]["params"] > 0


def test_memory_search_and_registered_ids(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (120, 12, 12), dtype=np.uint8)
    y = np.arange(120) % 3
    x[y == 1, :6] = 255  # a learnable difference between classes
    env = gym.make("NASRL-CIFAR10-v0", data=(x[:90], y[:90], x[90:], y[90:]), **TINY_SPACE).unwrapped
    assert env.dataset == "memory" and env.evaluator.data.data.input_shape == (1, 12, 12)
    reward, info = finish(env)
    assert info["status"] == "ok" and 0 <= reward <= 1
    assert CNNNASEnv(data=(x, y), val_size=30, evaluator="synthetic").dataset == "memory"
    with pytest.raises(ValueError, match="data already has a validation split"):
        CNNNASEnv(data=(x[:90], y[:90], x[90:], y[90:]), val_size=30)
    with pytest.raises(ValueError, match="dataset='memory' needs data="):
        CNNNASEnv(dataset="memory")
    for env_id, dataset in (("NASRL-CIFAR100-v0", "cifar100"), ("NASRL-FashionMNIST-v0", "fashion_mnist")):
        assert gym.spec(env_id).kwargs["dataset"] == dataset
        with pytest.raises(FileNotFoundError, match=f"{dataset} not found: expected .* in {re.escape(str(tmp_path))}"):
            gym.make(env_id, data_root=str(tmp_path), download=False)


# --- train-final on every source ------------------------------------------------------------------------
def test_final_on_an_image_folder_with_test_folder(pictures: Path, tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", "NASRL-CIFAR10-v0",
                    {"dataset": "imagefolder", "data_root": str(pictures), "image_size": 16})
    report = final(run)
    assert report["dataset"] == "imagefolder" and report["test_set"].startswith("imagefolder: the test/ folder")
    assert (report["grid_train_images"], report["grid_val_images"], report["final_train_images"]) == (300, 60, 360)
    test = load_image_folder(pictures / "test", image_size=16, val_size=1)  # the same pictures, read as a pool
    test_x, test_y = torch.cat([test.train_x, test.val_x]), torch.cat([test.train_y, test.val_y])
    check_export(run / "final", report, test_x, test_y)


def test_final_on_a_flat_folder_holds_out_a_test_set(pictures: Path, tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", "NASRL-CIFAR10-v0",
                    {"dataset": "imagefolder", "data_root": str(pictures / "train"), "image_size": 8,
                     "val_size": 50, "split_seed": 1})
    report = final(run, test_size=40)
    assert "no official test set; 40 images held out" in report["test_set"] and report["test_images"] == 40
    assert (report["grid_train_images"], report["grid_val_images"]) == (210, 50)  # 300 - 50 validation - 40 test
    search = load_image_folder(pictures / "train", image_size=8, val_size=50, split_seed=1)
    check_export(run / "final", report, search.train_x[-40:], search.train_y[-40:])


def test_final_on_a_torchvision_set(tmp_path: Path) -> None:
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 200), ("t10k", 40)):
        y = (np.arange(n) % 10).astype(np.uint8)
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        for kind, a in (("images-idx3", x), ("labels-idx1", y)):
            header = bytes([0, 0, 8, a.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in a.shape)
            (raw / f"{prefix}-{kind}-ubyte.gz").write_bytes(gzip.compress(header + a.tobytes()))
    run = write_run(tmp_path / "run", "NASRL-FashionMNIST-v0", {"data_root": str(tmp_path / "data"),
                                                               "download": False, "val_size": 50})
    report = final(run, download=False)
    assert report["dataset"] == "fashion_mnist" and report["test_set"] == "fashion_mnist: the official test split"
    assert (report["grid_train_images"], report["grid_val_images"], report["test_images"]) == (150, 50, 40)
    assert report["exported_model"]["input"].startswith("float32 N x 1 x 28 x 28")


def test_final_on_images_in_memory_needs_the_python_api(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", "NASRL-CIFAR10-v0", {"dataset": "memory"})
    with pytest.raises(ValueError, match=r"images in memory \(data=\.\.\.\), which config.json cannot hold: use the "
                                         r"Python API, train_final\(FinalConfig\(source=\.\.\., data="):
        final(run)
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 256, (100, 10, 10, 3), dtype=np.uint8), np.arange(100) % 4  # N x H x W x C
    with pytest.raises(ValueError, match=r"need their test set too: pass test_data=\(test_x, test_y\)"):
        final(run, data=(x[:60], y[:60], x[60:80], y[60:80]))
    report = final(run, data=(x[:60], y[:60], x[60:80], y[60:80]), test_data=(x[80:], y[80:]), out=str(tmp_path / "o"))
    assert report["dataset"] == "memory" and report["test_images"] == 20
    assert (report["grid_train_images"], report["grid_val_images"]) == (60, 20)
    test_x = torch.from_numpy(x[80:].transpose(0, 3, 1, 2).copy())
    check_export(tmp_path / "o", report, test_x, torch.from_numpy(y[80:]))
