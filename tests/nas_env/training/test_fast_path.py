"""The fast trainer computes what the plain PyTorch loop computes: same first-step loss, same augmentation."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from script_modules import load_script

from nas_env.data import load_cifar10, load_digits_data
from nas_env.data.base import ImageData
from nas_env.models.cnn import build_model
from nas_env.spaces.base import random_arch
from nas_env.spaces.cnn import cnn_space
from nas_env.training.image_trainer import PAD, DeviceData, TrainConfig, train_child, use_channels_last

_reference = load_script("reference_trainer")  # the plain loop lives beside the benchmarks, not in the package
InMemoryImages, reference_transform, train_reference = (_reference.InMemoryImages, _reference.reference_transform,
                                                        _reference.train_reference)

CPU = torch.device("cpu")


def sampled_arch(variant: str, num_layers: int, seed: int, **overrides):
    space = cnn_space(variant, num_layers=num_layers, **overrides)
    return random_arch(space, np.random.default_rng(seed))


def first_losses(arch, data: ImageData, config: TrainConfig, seed: int) -> tuple[float, float]:
    """First-step loss of the fast trainer and of the reference loop, from identically initialised models."""
    models = []
    for _ in range(2):
        torch.manual_seed(seed)
        models.append(build_model(arch, data.input_shape, data.num_classes))
    fast = train_child(models[0], DeviceData(data, CPU, config.augment), config, seed)
    ref = train_reference(models[1], data, config, seed)
    return fast.first_loss, ref.first_loss


@pytest.fixture(scope="module")
def cifar_small(cifar10_root: Path) -> ImageData:
    return load_cifar10(cifar10_root, download=False, val_size=500, train_subset=64, val_subset=64)


@pytest.mark.parametrize("seed", [0, 1])
def test_first_step_loss_matches_reference_on_cifar10(cifar_small: ImageData, seed: int) -> None:
    # One batch that is the whole training subset: batch norm's statistics and the mean loss do not
    # depend on the order, so the two loops must agree whatever their shuffles. No augmentation here
    # (the crop and flip are checked separately below); the fast path runs channels_last, the reference NCHW.
    arch = sampled_arch("v1", 4, seed)
    config = TrainConfig(epochs=1, batch_size=64, augment=False)
    assert use_channels_last(config, CPU, cifar_small.input_shape)
    fast, ref = first_losses(arch, cifar_small, config, seed)
    assert np.isfinite(fast) and fast > 1.0  # an untrained 10-class net: loss near ln(10)
    assert fast == pytest.approx(ref, rel=1e-4, abs=1e-5)


def test_first_step_loss_matches_reference_on_digits() -> None:
    data = load_digits_data(train_subset=100, val_subset=50)
    arch = sampled_arch("v1", 3, 5, num_filters=(8, 16))
    config = TrainConfig(epochs=1, batch_size=100)
    fast, ref = first_losses(arch, data, config, 3)
    assert fast == pytest.approx(ref, rel=1e-4, abs=1e-5)


def trained_pair(arch, data: ImageData, config: TrainConfig, seed: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    models = []
    for _ in range(2):
        torch.manual_seed(seed)
        models.append(build_model(arch, data.input_shape, data.num_classes))
    train_child(models[0], DeviceData(data, CPU, config.augment), config, seed)
    train_reference(models[1], data, config, seed)
    return models[0], models[1]


@pytest.mark.parametrize("schedule", ["cosine", "step"])
def test_parameters_match_the_reference_after_several_steps(cifar_small: ImageData, schedule: str) -> None:
    # Full-batch steps (each epoch one step over the whole subset, so the shuffles cannot differ), with the
    # learning-rate schedule running, momentum, Nesterov and weight decay: every parameter and batch-norm
    # statistic of the fast path (channels_last) equals the plain loop's (NCHW) after 6 optimizer steps.
    arch = sampled_arch("v1", 4, 1)
    config = TrainConfig(epochs=6, batch_size=64, augment=False, lr_schedule=schedule, lr_decay_epochs=(3, 5))
    fast, ref = trained_pair(arch, cifar_small, config, 0)
    fast_state, ref_state = fast.state_dict(), ref.state_dict()
    torch.manual_seed(0)
    initial = build_model(arch, cifar_small.input_shape, cifar_small.num_classes).state_dict()
    moved = 0
    for name, value in ref_state.items():
        if value.is_floating_point():
            torch.testing.assert_close(fast_state[name], value, rtol=1e-3, atol=1e-4, msg=name)
            moved += not torch.allclose(value, initial[name])
    assert moved > len(ref_state) // 2  # the comparison has teeth: training moved most tensors


def test_first_step_losses_differ_for_different_models(cifar_small: ImageData) -> None:
    # The comparison above has teeth: a different initialisation gives a different loss.
    config = TrainConfig(epochs=1, batch_size=64, augment=False)
    arch = sampled_arch("v1", 4, 0)
    torch.manual_seed(0)
    a = train_child(build_model(arch, cifar_small.input_shape, 10), DeviceData(cifar_small, CPU, False), config, 0)
    torch.manual_seed(1)
    b = train_child(build_model(arch, cifar_small.input_shape, 10), DeviceData(cifar_small, CPU, False), config, 0)
    assert abs(a.first_loss - b.first_loss) > 1e-4


def position_image(height: int = 32, width: int = 32) -> ImageData:
    """One image whose pixels name their own position: channel 0 = row + 1, channel 1 = column + 1, 2 = 255."""
    rows = torch.arange(1, height + 1).view(height, 1).expand(height, width)
    cols = torch.arange(1, width + 1).view(1, width).expand(height, width)
    image = torch.stack([rows, cols, torch.full_like(rows, 255)]).to(torch.uint8)[None]
    label = torch.zeros(1, dtype=torch.long)
    return ImageData("positions", image, label, image, label, 10, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), True)


def decode(crop: torch.Tensor) -> tuple[int, int, bool]:
    """Crop offsets (in padded coordinates) and flip of a crop of :func:`position_image` (C x H x W, 0-255)."""
    h, w = crop.shape[1:]
    r, c = h // 2, w // 2  # the centre is never padding: offsets are at most PAD
    dy = int(crop[0, r, c]) - 1 - r + PAD
    flipped = int(crop[1, r, c + 1]) < int(crop[1, r, c])
    source_col = int(crop[1, r, c]) - 1 + PAD  # padded column the centre pixel came from
    dx = source_col - ((w - 1 - c) if flipped else c)
    return dy, dx, flipped


def fast_crops(n: int, seed: int) -> list[tuple[int, int, bool]]:
    data = DeviceData(position_image(), CPU)
    gen = torch.Generator().manual_seed(seed)
    crops = data.crop_and_flip(data.train_x.expand(n, -1, -1, -1), *data.sample_augmentation(n, gen))
    return [decode(c) for c in crops]


def reference_crops(n: int, seed: int) -> list[tuple[int, int, bool]]:
    data = position_image()
    dataset = InMemoryImages(data.train_x, data.train_y, reference_transform(data, augment=True))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # torchvision's transforms draw from the global generator
        # mean 0 and std 1 on the 0-255 scale: Normalize(0, 1/255) turns ToTensor's 0-1 back into 0-255
        return [decode(dataset[0][0][:2].round().to(torch.int64)) for _ in range(n)]


def test_augmentation_distribution_matches_torchvision() -> None:
    n = 3000
    ours, theirs = np.array(fast_crops(n, 0)), np.array(reference_crops(n, 0))
    for sample in (ours, theirs):
        assert sample[:, :2].min() == 0 and sample[:, :2].max() == 2 * PAD
        for axis in (0, 1):  # offsets uniform over 0..2*PAD: chi-square with 8 dof, p ~ 0.001 at 26.1
            counts = np.bincount(sample[:, axis], minlength=2 * PAD + 1)
            expected = n / (2 * PAD + 1)
            assert ((counts - expected) ** 2 / expected).sum() < 26.1
        assert abs(sample[:, 2].mean() - 0.5) < 0.03  # 3000 fair coins: sd 0.009
    for axis in (0, 1):
        ours_freq = np.bincount(ours[:, axis], minlength=9) / n
        theirs_freq = np.bincount(theirs[:, axis], minlength=9) / n
        assert 0.5 * np.abs(ours_freq - theirs_freq).sum() < 0.05  # total variation distance


def test_crop_and_flip_equal_torchvision_functional_for_the_same_offsets() -> None:
    # Beyond the distribution: for any offsets, the batched gather is exactly torchvision's crop + flip.
    cifar = torch.randint(0, 256, (6, 3, 32, 32), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    label = torch.zeros(6, dtype=torch.long)
    data = DeviceData(ImageData("x", cifar, label, cifar, label, 10, (0.0,) * 3, (1.0,) * 3, True), CPU)
    dy, dx, flip = torch.tensor([0, 8, 3, 4, 8, 0]), torch.tensor([8, 0, 5, 4, 8, 0]), \
        torch.tensor([True, False, True, False, True, False])
    ours = data.crop_and_flip(data.train_x, dy, dx, flip)
    for i in range(6):
        expected = TF.crop(TF.pad(cifar[i], [PAD]), int(dy[i]), int(dx[i]), 32, 32)
        if flip[i]:
            expected = TF.hflip(expected)
        assert torch.equal(ours[i], expected)


def test_same_seed_same_training_on_the_cpu(cifar_small: ImageData) -> None:
    arch = sampled_arch("v1", 3, 2)
    config = replace(TrainConfig(epochs=2, batch_size=32))
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        runs.append(train_child(build_model(arch, cifar_small.input_shape, 10), DeviceData(cifar_small, CPU),
                                config, seed=7))
    assert runs[0].first_loss == runs[1].first_loss
    assert runs[0].val_acc_history == runs[1].val_acc_history
