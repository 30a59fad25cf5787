"""Tests of the child CNN builder: sampled architectures train, the paper's wiring rules, and real training."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nas_env.data import ImageData, load_digits_data
from nas_env.evaluators import SyntheticEvaluator, TrainingEvaluator
from nas_env.models.cnn import ChildCNN, build_model, pad_to
from nas_env.spaces.base import random_arch
from nas_env.spaces.cnn import CNNArchitecture, CNNSearchSpace, ConvLayer, cnn_space
from nas_env.training.image_trainer import TrainConfig

CIFAR = (3, 32, 32)
DIGITS = (1, 8, 8)


def conv(fh: int = 3, fw: int = 3, nf: int = 8, inputs: tuple[int, ...] = (), sh: int = 1, sw: int = 1) -> ConvLayer:
    return ConvLayer(filter_height=fh, filter_width=fw, stride_height=sh, stride_width=sw, num_filters=nf,
                     inputs=inputs)


def sample_arch(space: CNNSearchSpace, seed: int) -> CNNArchitecture:
    """Decode one uniformly drawn valid action per token."""
    return random_arch(space, np.random.default_rng(seed))


def sample_shrinking_arch(space: CNNSearchSpace, seed: int) -> CNNArchitecture:
    """Stride 3 everywhere; layer i always reads layer i-1 and may also read layers 4.. (already 1x1 by then)."""
    rng = np.random.default_rng(seed)
    actions = []
    skips_seen: dict[int, int] = {}
    for spec in space.tokens():
        if spec.name in ("stride_height", "stride_width"):
            actions.append(spec.choices.index(3))
        elif spec.name == "skip":
            j = skips_seen[spec.layer] = skips_seen.get(spec.layer, 0) + 1  # this bit: does layer j feed it?
            actions.append(1 if j == spec.layer - 1 else (int(rng.integers(2)) if j >= 4 else 0))
        else:
            actions.append(int(rng.integers(spec.num_choices)))
    return space.decode(actions)


def check_forward_backward_step(arch: CNNArchitecture, input_shape: tuple[int, int, int], seed: int) -> ChildCNN:
    """Build, run a batch of 2, backpropagate and take one SGD step; return the model."""
    torch.manual_seed(seed)
    model = build_model(arch, input_shape, 10)
    assert isinstance(model, ChildCNN)
    assert len(model.convs) == arch.num_layers and model.classifier.in_features == arch.classifier_features()
    x = torch.randn(2, *input_shape)
    logits = model(x)
    assert logits.shape == (2, 10)
    assert torch.isfinite(logits).all()
    loss = F.cross_entropy(logits, torch.tensor([3, 8]))
    assert torch.isfinite(loss)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    changed = {name for name, p in model.named_parameters() if not torch.equal(p.detach(), before[name])}
    assert {"classifier.weight", "classifier.bias"} <= changed
    assert any(name.startswith("convs.") for name in changed)
    assert any(name.startswith("norms.") for name in changed)
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (2, 10)
    return model


# --- every sampled architecture builds and trains ----------------------------------------------------

CIFAR_CASES = [("v1", k) for k in range(6)] + [("v2", k) for k in range(5)] + [("v3", k) for k in range(4)]


@pytest.mark.parametrize(("variant", "k"), CIFAR_CASES)
def test_sampled_architectures_train_on_cifar_shaped_batches(variant: str, k: int) -> None:
    arch = sample_arch(cnn_space(variant), seed=1000 * (int(variant[1]) + 1) + k)
    check_forward_backward_step(arch, CIFAR, seed=k)


@pytest.mark.parametrize("k", range(2))
def test_v2_with_stride_three_everywhere_shrinks_to_one_pixel_and_trains(k: int) -> None:
    arch = sample_shrinking_arch(cnn_space("v2"), seed=50 + k)
    assert all((layer.stride_height, layer.stride_width) == (3, 3) for layer in arch.layers)
    assert all(layer.inputs[-1] == i - 1 for i, layer in enumerate(arch.layers, start=1) if i > 1)
    assert any(len(layer.inputs) > 1 for layer in arch.layers)
    shapes = arch.shapes(CIFAR)
    assert [s.out_size for s in shapes[:4]] == [(11, 11), (4, 4), (2, 2), (1, 1)]
    assert all(s.out_size == (1, 1) for s in shapes[3:])
    model = check_forward_backward_step(arch, CIFAR, seed=k)
    sizes: list[tuple[int, int]] = []
    handle = model.convs[-1].register_forward_hook(lambda m, a, out: sizes.append(tuple(out.shape[2:])))
    with torch.no_grad():
        model(torch.randn(2, *CIFAR))
    handle.remove()
    assert sizes == [(1, 1)]


DIGIT_SPACES = {
    "v1": cnn_space("v1", num_layers=6),
    "v2": cnn_space("v2", num_layers=6),
    "v3": cnn_space("v3", num_layers=8, pool_after=(3, 6)),
}


@pytest.mark.parametrize("variant", list(DIGIT_SPACES))
def test_sampled_architectures_train_on_digit_shaped_batches(variant: str) -> None:
    for k in range(5):
        arch = sample_arch(DIGIT_SPACES[variant], seed=77 + k)
        check_forward_backward_step(arch, DIGITS, seed=k)


# --- the paper's wiring rules --------------------------------------------------------------------


class Recorder:
    """Forward hooks that keep each hooked module's inputs and outputs, in call order."""

    def __init__(self, modules: dict[str, nn.Module]) -> None:
        self.inputs: dict[str, torch.Tensor] = {}
        self.outputs: dict[str, torch.Tensor] = {}
        self.handles = [m.register_forward_hook(self._hook(name)) for name, m in modules.items()]

    def _hook(self, name: str) -> Callable[[nn.Module, tuple[torch.Tensor, ...], torch.Tensor], None]:
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            self.inputs[name] = args[0].detach().clone()
            self.outputs[name] = out.detach().clone()
        return hook

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def run_recorded(model: ChildCNN, x: torch.Tensor) -> Recorder:
    modules: dict[str, nn.Module] = {f"conv{i}": c for i, c in enumerate(model.convs, start=1)}
    modules.update({f"norm{i}": n for i, n in enumerate(model.norms, start=1)})
    modules["classifier"] = model.classifier
    rec = Recorder(modules)
    with torch.no_grad():
        model(x)
    rec.close()
    return rec


def layer_out(rec: Recorder, i: int) -> torch.Tensor:
    """Layer i's output before any pooling: ReLU of its batch norm."""
    return F.relu(rec.outputs[f"norm{i}"])


def test_a_layer_without_inputs_reads_the_image() -> None:
    arch = CNNArchitecture((conv(nf=5), conv(1, 1, 7), conv(3, 3, 4, (1, 2)), conv(5, 5, 2, ())))
    torch.manual_seed(0)
    model = build_model(arch, (3, 8, 8), 10)
    assert [c.in_channels for c in model.convs] == [3, 3, 5 + 7, 3]
    x = torch.randn(2, 3, 8, 8)
    rec = run_recorded(model, x)
    for i in (1, 2, 4):
        assert torch.equal(rec.inputs[f"conv{i}"], x)


def test_several_inputs_are_concatenated_in_layer_order() -> None:
    arch = CNNArchitecture((conv(nf=3), conv(nf=4, inputs=(1,)), conv(1, 1, 5, ()), conv(3, 3, 6, (1, 2, 3))))
    torch.manual_seed(1)
    model = build_model(arch, DIGITS, 10)
    assert model.convs[3].in_channels == 3 + 4 + 5
    rec = run_recorded(model, torch.randn(2, *DIGITS))
    expected = torch.cat([layer_out(rec, 1), layer_out(rec, 2), layer_out(rec, 3)], dim=1)
    assert torch.equal(rec.inputs["conv4"], expected)


def test_unused_outputs_are_padded_concatenated_and_averaged_for_the_classifier() -> None:
    # L2 (stride 2, 4x4) and L3 (8x8) feed nothing; L1 feeds both
    arch = CNNArchitecture((conv(nf=4), conv(nf=6, inputs=(1,), sh=2, sw=2), conv(1, 1, 5, (1,))))
    assert arch.unused_outputs() == [2, 3]
    torch.manual_seed(2)
    model = build_model(arch, DIGITS, 10)
    assert model.classifier.in_features == 6 + 5
    rec = run_recorded(model, torch.randn(2, *DIGITS))
    o2, o3 = layer_out(rec, 2), layer_out(rec, 3)
    assert o2.shape[2:] == (4, 4) and o3.shape[2:] == (8, 8)
    feats = rec.inputs["classifier"]
    assert feats.shape == (2, 11)
    # the 4x4 map is zero-padded to 8x8 before global average pooling: its sum over 64 pixels, not 16
    torch.testing.assert_close(feats[:, :6], o2.sum(dim=(2, 3)) / 64)
    torch.testing.assert_close(feats[:, 6:], o3.mean(dim=(2, 3)))


def test_a_used_layer_does_not_reach_the_classifier() -> None:
    arch = CNNArchitecture((conv(nf=4), conv(nf=6, inputs=(1,)), conv(nf=5, inputs=(2,))))
    assert arch.unused_outputs() == [3]
    assert build_model(arch, DIGITS, 7).classifier.in_features == 5
    assert build_model(arch, DIGITS, 7).classifier.out_features == 7


def test_smaller_inputs_are_zero_padded_around_the_centre() -> None:
    # L1: stride 3x2 on 8x8 -> 3x4; L2: stride 1 -> 8x8; L3 reads both at 8x8
    arch = CNNArchitecture((conv(nf=3, sh=3, sw=2), conv(nf=2), conv(nf=4, inputs=(1, 2))))
    shapes = arch.shapes(DIGITS)
    assert shapes[0].out_size == (3, 4) and shapes[2].in_size == (8, 8)
    torch.manual_seed(3)
    model = build_model(arch, DIGITS, 10)
    rec = run_recorded(model, torch.randn(2, *DIGITS))
    h = rec.inputs["conv3"]
    assert h.shape == (2, 5, 8, 8)
    o1, o2 = layer_out(rec, 1), layer_out(rec, 2)
    assert o1.shape[2:] == (3, 4)
    # dh = 5 -> 2 rows above, 3 below; dw = 4 -> 2 columns each side
    assert torch.equal(h[:, :3, 2:5, 2:6], o1)
    border = torch.ones(8, 8, dtype=torch.bool)
    border[2:5, 2:6] = False
    assert (h[:, :3][:, :, border] == 0).all()
    assert torch.equal(h[:, 3:], o2)


def test_pad_to_keeps_values_and_surrounds_them_with_zeros() -> None:
    x = torch.arange(1, 2 * 3 * 3 * 3 + 1, dtype=torch.float32).view(2, 3, 3, 3)  # no zeros of its own
    out = pad_to(x, (6, 7))
    assert out.shape == (2, 3, 6, 7)
    # dh = 3 -> 1 above, 2 below; dw = 4 -> 2 left, 2 right (extra row/column at the end)
    assert torch.equal(out[:, :, 1:4, 2:5], x)
    assert int((out != 0).sum()) == x.numel()
    assert out.sum() == x.sum()
    assert pad_to(x, (3, 3)) is x
    odd = pad_to(torch.ones(1, 1, 1, 2), (2, 5))
    assert odd[0, 0].tolist() == [[0, 1, 1, 0, 0], [0, 0, 0, 0, 0]]


def test_max_pooling_is_2x2_ceil_mode_and_a_one_pixel_map_stays_one_pixel() -> None:
    arch = CNNArchitecture((conv(nf=4, sh=3, sw=3), conv(1, 1, 3, (1,)), conv(1, 1, 2, (2,))), pool_after=(1, 2))
    assert [s.out_size for s in arch.shapes((1, 3, 3))] == [(1, 1), (1, 1), (1, 1)]
    torch.manual_seed(4)
    model = build_model(arch, (1, 3, 3), 10)
    rec = run_recorded(model, torch.randn(2, 1, 3, 3))
    assert rec.inputs["conv2"].shape == (2, 4, 1, 1) and rec.inputs["conv3"].shape == (2, 3, 1, 1)
    assert torch.equal(rec.inputs["conv2"], layer_out(rec, 1))  # pooling a 1x1 map changes nothing
    # a 5x5 map pools to 3x3, the last row/column pooled on their own
    arch5 = CNNArchitecture((conv(nf=4), conv(1, 1, 3, (1,))), pool_after=(1,))
    torch.manual_seed(5)
    rec5 = run_recorded(build_model(arch5, (2, 5, 5), 10), torch.randn(2, 2, 5, 5))
    o1, pooled = layer_out(rec5, 1), rec5.inputs["conv2"]
    assert pooled.shape == (2, 4, 3, 3)
    assert torch.equal(pooled[:, :, 2, 2], o1[:, :, 4, 4])
    assert torch.equal(pooled[:, :, 0, 0], o1[:, :, :2, :2].amax(dim=(2, 3)))
    assert torch.equal(pooled[:, :, 1, 2], o1[:, :, 2:4, 4].amax(dim=2))


def test_build_model_rejects_bad_arguments() -> None:
    arch = CNNArchitecture((conv(),))
    with pytest.raises(TypeError, match="CNNArchitecture"):
        build_model(arch.to_dict(), DIGITS, 10)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="str"):
        build_model(arch.to_json(), DIGITS, 10)  # type: ignore[arg-type]
    for shape in [(8, 8), (1, 8, 8, 1), (1, 0, 8), (0, 8, 8), (1, 8, -8), ()]:
        with pytest.raises(ValueError, match="input_shape"):
            build_model(arch, shape, 10)
    for classes in (1, 0, -3):
        with pytest.raises(ValueError, match=f"num_classes must be an int of at least 2, got {classes}"):
            build_model(arch, DIGITS, classes)
    assert build_model(arch, DIGITS, 2).classifier.out_features == 2


# --- real training through the evaluators ----------------------------------------------------------


@pytest.fixture(scope="module")
def digits() -> ImageData:
    return load_digits_data()


def digits_chain() -> CNNArchitecture:
    return CNNArchitecture(tuple(conv(3, 3, 32, (i - 1,) if i > 1 else ()) for i in range(1, 5)))


def test_a_sensible_digits_child_learns_and_training_is_deterministic(digits: ImageData) -> None:
    arch = digits_chain()
    evaluator = TrainingEvaluator(digits, TrainConfig(epochs=5, batch_size=64), device="cpu")
    first = evaluator(arch, seed=0)
    assert first.status == "ok"
    assert first.reward >= 0.9
    history = first.metrics["val_acc_history"]
    assert len(history) == 5 and all(0.0 <= a <= 1.0 for a in history)
    assert first.reward == max(history) == first.metrics["val_acc"]
    model = build_model(arch, DIGITS, 10)
    assert first.metrics["params"] == sum(p.numel() for p in model.parameters())
    assert first.metrics["flops"] == arch.multiply_adds(DIGITS, 10)
    second = evaluator(arch, seed=0)
    assert second.reward == first.reward
    assert second.metrics["val_acc_history"] == history


def test_a_huge_learning_rate_diverges_to_zero_reward(digits: ImageData) -> None:
    evaluator = TrainingEvaluator(digits, TrainConfig(epochs=3, batch_size=64, lr=1e6), device="cpu")
    for seed in range(3):
        result = evaluator(digits_chain(), seed=seed)
        assert result.status == "diverged", seed
        assert result.reward == 0.0 and result.metrics["val_acc"] == 0.0
        assert len(result.metrics["val_acc_history"]) < 3  # training stopped at the first non-finite epoch


def test_training_evaluator_rejects_non_cnn_architectures(digits: ImageData) -> None:
    evaluator = TrainingEvaluator(digits, TrainConfig(epochs=1), device="cpu")
    with pytest.raises(TypeError, match="CNN"):
        evaluator(digits_chain().to_json(), seed=0)  # type: ignore[arg-type]


def test_synthetic_evaluator_scores_its_target_highest_and_reports_built_model_costs() -> None:
    space = cnn_space("v1", num_layers=5)
    evaluator = SyntheticEvaluator(space, target_seed=3, input_shape=DIGITS, num_classes=10)
    best = evaluator(evaluator.target_arch, seed=0)
    assert best.reward == 1.0 and best.status == "ok"
    assert best.metrics["params"] == sum(p.numel() for p in build_model(evaluator.target_arch, DIGITS, 10).parameters())
    other = evaluator(sample_arch(space, seed=9), seed=0)
    assert 0.0 <= other.reward < 1.0
