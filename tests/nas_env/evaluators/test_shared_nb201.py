"""Weight sharing on NAS-Bench-201's cell space: a supernet path is the stand-alone network, ``none`` is zero,
and the shared evaluator plugs into NASRL-NB201-CIFAR10-v0, resumes exactly and names bad options."""

from __future__ import annotations

import io
import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import nas_env  # noqa: F401  (registers the ids)
from nas_env.data import load_digits_data
from nas_env.data.base import ImageData
from nas_env.evaluators import TrainingEvaluator
from nas_env.evaluators.shared import SharedConfig, SharedWeightsEvaluator
from nas_env.evaluators.shared_nb201 import NB201SuperNet, NB201SupernetSpec, is_parameter_free
from nas_env.models.nb201 import NB201Builder
from nas_env.spaces.cnn import CNNArchitecture, ConvLayer, cnn_space
from nas_env.spaces.nb201 import OPS, NB201Architecture
from nas_env.training.image_trainer import TrainConfig

SHAPE = (3, 8, 8)
TRAIN = TrainConfig(batch_size=32)
# hand-made cells: every op, none edges, a node without inputs, an output cut off from the input
CELLS = [NB201Architecture.from_key(k) for k in ("333133", "234120", "101040", "000333", "444444", "012340")]


@pytest.fixture(scope="module")
def digits() -> ImageData:
    return load_digits_data(train_subset=256, val_subset=64)


def perturbed(net: NB201SuperNet, seed: int) -> NB201SuperNet:
    """Non-trivial batch-norm affines, so a wrong copy of them shows."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.add_(0.3 * torch.randn(m.weight.shape, generator=gen))
                m.bias.add_(0.3 * torch.randn(m.bias.shape, generator=gen))
    return net


def test_a_path_computes_the_stand_alone_networks_logits() -> None:
    torch.manual_seed(0)
    net = perturbed(NB201SuperNet(SHAPE, 10, C=4, N=2), 1)
    x = torch.randn(6, *SHAPE)
    rng = np.random.default_rng(0)
    cells = CELLS + [NB201Architecture(tuple(OPS[int(i)] for i in rng.integers(5, size=6))) for _ in range(3)]
    for cell in cells:
        model = net.child_model(cell)
        model.train()  # batch statistics, as the supernet trains
        torch.testing.assert_close(net(x, cell), model(x), rtol=1e-5, atol=1e-5)
        stats: list = []  # recalibrated statistics == the network in eval mode with them as running statistics
        net(x, cell, collect=stats)
        exported = net.child_model(cell, stats).eval()
        torch.testing.assert_close(net(x[:3], cell, stats=stats), exported(x[:3]), rtol=1e-5, atol=1e-5)
        assert sum(p.numel() for p in exported.parameters()) == NB201Builder(4, 2).metrics(cell, SHAPE, 10)["params"]
    with pytest.raises(TypeError, match="NB201 cells"):
        net.plan(CNNArchitecture((ConvLayer(3, 3, 1, 1, 4),)))


def test_none_edges_contribute_nothing_and_only_the_paths_ops_learn() -> None:
    torch.manual_seed(0)
    net = NB201SuperNet(SHAPE, 10, C=4, N=1)
    cell = NB201Architecture(("nor_conv_3x3", "none", "nor_conv_1x1", "none", "skip_connect", "avg_pool_3x3"))
    x = torch.randn(5, *SHAPE)
    before = net(x, cell)
    with torch.no_grad():  # the weights of every op off the path, none edges' included, do not matter
        for block in net.cells:
            for i, ops in getattr(block, "edges", {}).items():
                for op, m in ops.items():
                    if cell.ops[int(i)] != op:
                        m.conv.weight.normal_()
                        m.bn.bias.normal_()
    torch.testing.assert_close(net(x, cell), before, rtol=0, atol=0)
    net(x, cell).sum().backward()
    for i, ops in net.cells[0].edges.items():
        moved = {op for op, m in ops.items() if m.conv.weight.grad is not None}
        assert moved == ({cell.ops[int(i)]} & {"nor_conv_1x1", "nor_conv_3x3"})  # none edges: no gradient
    # all edges into the output none: the cell outputs zeros, so the logits no longer depend on the image
    cut = NB201Architecture(("nor_conv_3x3", "nor_conv_3x3", "nor_conv_3x3", "none", "none", "none"))
    assert not cut.is_connected() and is_parameter_free(NB201Architecture.from_key("104040"))
    logits = net(x, cut)
    torch.testing.assert_close(logits, logits[:1].expand_as(logits), rtol=0, atol=1e-6)


def evaluator(data: ImageData, C: int = 4, N: int = 1, **options) -> SharedWeightsEvaluator:
    return SharedWeightsEvaluator(data, NB201SupernetSpec(C, N), SharedConfig(**{"shared_steps": 2, **options}),
                                  TRAIN, "cpu")


def test_fingerprint_and_metrics(digits: ImageData) -> None:
    ev = evaluator(digits)
    fp = ev.fingerprint()
    assert fp.startswith("shared/") and fp == evaluator(digits).fingerprint()
    assert fp != TrainingEvaluator(digits, TRAIN, "cpu", builder=NB201Builder(4, 1)).fingerprint()
    assert fp != evaluator(digits, C=8).fingerprint() and fp != evaluator(digits, N=2).fingerprint()
    cnn = SharedWeightsEvaluator(digits, cnn_space("v1", num_layers=2, num_filters=(4,)), ev.config, TRAIN, "cpu")
    assert fp != cnn.fingerprint()
    assert ev.settings()["space"] == {"kind": "nb201", "C": 4, "N": 1}
    result = ev(CELLS[0], seed=0)
    assert result.status == "ok" and 0.0 <= result.reward <= 1.0
    assert result.metrics["params"] == NB201Builder(4, 1).metrics(CELLS[0], (1, 8, 8), 10)["params"]
    assert result.metrics["shared_step"] == 2 and np.isfinite(result.metrics["shared_loss"])
    assert isinstance(ev.random_arch(), NB201Architecture)
    with pytest.raises(TypeError, match="NB201 cells"):
        ev(CNNArchitecture((ConvLayer(3, 3, 1, 1, 4),)), 0)


def test_state_round_trip_continues_exactly(digits: ImageData) -> None:
    options = {"warmup_steps": 2, "reward_data": "minibatch", "val_images": 32, "bn_eval": "recalibrate",
               "recalibrate_images": 64}
    ev = evaluator(digits, **options)
    for cell in CELLS[:2]:
        ev(cell, 0)
    buffer = io.BytesIO()
    torch.save(ev.state_dict(), buffer)
    continued = [ev(cell, 0) for cell in CELLS[2:4]]
    fresh = evaluator(digits, **options)
    buffer.seek(0)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    resumed = [fresh(cell, 0) for cell in CELLS[2:4]]
    for c, r in zip(continued, resumed, strict=True):
        assert (c.reward, c.metrics["shared_loss"], c.metrics["shared_step"]) == (
            r.reward, r.metrics["shared_loss"], r.metrics["shared_step"])
    with pytest.raises(ValueError, match=r"other settings \(differing: \['space'\]\)"):
        evaluator(digits, C=8, **options).load_state_dict(ev.state_dict())


def env(tmp_path: Path | None = None, **kwargs) -> gym.Env:
    store = {"store": str(tmp_path / "store.sqlite")} if tmp_path is not None else {}
    return gym.make("NASRL-NB201-CIFAR10-v0", dataset="digits", train_subset=256, val_subset=64, C=4, N=1,
                    device="cpu", evaluator="shared", **store, **kwargs)


def test_an_episode_with_the_shared_evaluator(tmp_path: Path) -> None:
    e = env(tmp_path, shared_config={"shared_steps": 2, "warmup_steps": 2, "val_images": 64})
    inner = e.unwrapped.evaluator.inner
    assert isinstance(inner, SharedWeightsEvaluator) and isinstance(inner.spec, NB201SupernetSpec)
    assert inner.train_config.batch_size == 64 and e.unwrapped.evaluator.fingerprint().startswith("shared/")
    rng = np.random.default_rng(0)
    for episode in range(2):
        _obs, info = e.reset(seed=episode)
        terminated = False
        while not terminated:
            _obs, reward, terminated, _truncated, info = e.step(int(rng.choice(np.flatnonzero(info["action_mask"]))))
        assert info["status"] == "ok" and 0.0 <= reward <= 1.0 and reward == info["val_acc"]
        assert NB201Architecture.from_arch_str(info["arch_str"]).index == info["table_index"]
        assert info["model_size"] > 0
        json.dumps(info["shared_loss"])
    assert inner.step == 2 + 2 * 2 and not e.unwrapped.evaluator.serve  # recorded, never served


@pytest.mark.parametrize(("options", "message"), [
    ({"shared_steps": -1}, "shared_steps must be an integer >= 0, got -1"),
    ({"bn_eval": "running"}, r"bn_eval must be one of \('batch', 'recalibrate'\), got 'running'"),
    ({"val_images": 1}, "val_images must be an int >= 2"),
    ({"kernel_sharing": "separate"}, "kernel_sharing applies to the CNN space only.*got 'separate'"),
    ({"warm_up": 3}, r"unknown shared-weights option\(s\) \['warm_up'\]"),
])
def test_bad_shared_config_names_the_value(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        env(shared_config=options)


def test_shared_config_needs_the_shared_evaluator() -> None:
    with pytest.raises(ValueError, match="shared_config applies to evaluator='shared' only, got evaluator='train'"):
        gym.make("NASRL-NB201-CIFAR10-v0", dataset="digits", device="cpu", shared_config={"shared_steps": 1})
    with pytest.raises(ValueError, match=r"evaluator must be one of .*'shared'"):
        gym.make("NASRL-NB201-CIFAR10-v0", dataset="digits", device="cpu", evaluator="supernet")


def test_a_shared_search_resumes_exactly(tmp_path: Path, search_resumes_exactly) -> None:
    """The runner checkpoints the NB201 supernet with the agent; a resumed search continues as if never stopped."""
    env_kwargs = {"evaluator": "shared", "dataset": "digits", "train_subset": 128, "val_subset": 64, "C": 4, "N": 1,
                  "device": "cpu", "shared_config": {"shared_steps": 1, "warmup_steps": 2, "val_images": 32}}
    search_resumes_exactly("NASRL-NB201-CIFAR10-v0", env_kwargs, 10, 5)
    state = torch.load(tmp_path / "parts" / "checkpoints" / "agent.pt", weights_only=True)
    assert state["evaluators"][0]["settings"]["space"] == {"kind": "nb201", "C": 4, "N": 1}
