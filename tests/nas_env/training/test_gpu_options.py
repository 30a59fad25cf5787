"""The GPU speed options compute the same function: padded channels, buffered concatenation, fused SGD,
the per-child format trial and the reward-window validation, each checked against the plain path on the CPU.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from script_modules import load_script

from nas_env.data import load_digits_data
from nas_env.data.base import ImageData
from nas_env.models.cnn import ChildCNN, build_model
from nas_env.spaces.base import random_arch
from nas_env.spaces.cnn import CNNArchitecture, ConvLayer, cnn_space
from nas_env.training.image_trainer import (
    DeviceData,
    TrainConfig,
    describe_format,
    format_candidates,
    make_optimizer,
    train_child,
)

CPU = torch.device("cpu")
ROOT = Path(__file__).resolve().parents[3]
SHARED_PNG = ROOT / ".." / "shared" / "data" / "cifar10-png"


def sampled(variant: str, num_layers: int, seed: int, **overrides: object) -> CNNArchitecture:
    space = cnn_space(variant, num_layers=num_layers, **overrides)
    return random_arch(space, np.random.default_rng(seed))


# v1 (dense skips), v2 (strides: maps of different sizes are padded spatially), v3 (max-pooling)
ARCHS = {
    "v1": sampled("v1", 5, 1, num_filters=(12, 36, 20)),
    "v2": sampled("v2", 5, 2, num_filters=(12, 36, 20)),
    "v3": sampled("v3", 6, 3, num_filters=(12, 36, 20), pool_after=(2, 4)),
}


@pytest.fixture(scope="module")
def digits() -> ImageData:
    return load_digits_data()


@pytest.fixture
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # the comparisons are exact-ish: one thread, one summation order
    yield
    torch.set_num_threads(previous)


def pair(arch: CNNArchitecture, shape: tuple[int, int, int], **options: object) -> tuple[ChildCNN, ChildCNN]:
    """The plain model and the same-seeded one with ``options``."""
    torch.manual_seed(7)
    plain = build_model(arch, shape, 10)
    torch.manual_seed(7)
    return plain, build_model(arch, shape, 10, **options)


def assert_same_real(plain: ChildCNN, other: ChildCNN, what: str = "param", atol: float = 1e-6) -> None:
    """Every parameter (or its gradient) of ``other``, cut to its real channels, equals ``plain``'s."""
    params = dict(other.named_parameters())
    for name, p in plain.named_parameters():
        a = p.grad if what == "grad" else p.detach()
        b = params[name].grad if what == "grad" else params[name].detach()
        torch.testing.assert_close(other.real_part(name, b), a, atol=atol, rtol=1e-5, msg=f"{what} of {name}")


@pytest.mark.parametrize("variant", sorted(ARCHS))
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_padded_and_buffered_model_gives_same_logits_and_gradients(variant: str, memory_format: torch.memory_format,
                                                                   one_thread: None) -> None:
    arch = ARCHS[variant]
    plain, padded = pair(arch, (3, 16, 16), channel_multiple=8, concat_buffer=True)
    assert any(c.out_channels % 8 for c in plain.convs), "the case must need padding"
    assert all(c.out_channels % 8 == 0 for c in padded.convs)
    assert padded.padding_is_zero()
    for m in (plain, padded):
        m.to(memory_format=memory_format)
    x = torch.randn(6, 3, 16, 16).contiguous(memory_format=memory_format)
    y = torch.arange(6)
    logits = [m(x) for m in (plain, padded)]
    torch.testing.assert_close(logits[1], logits[0], atol=1e-5, rtol=1e-5)
    for out in logits:
        F.cross_entropy(out, y).backward()
    assert_same_real(plain, padded, "grad")
    for name, p in padded.named_parameters():  # the padding's gradient is exactly zero
        assert p.grad.count_nonzero() == padded.real_part(name, p.grad).count_nonzero(), name


@pytest.mark.parametrize("fused", ["off", "foreach", "fused"])
def test_sgd_steps_keep_the_real_parameters_equal_and_the_padding_zero(fused: str, one_thread: None) -> None:
    """Several Nesterov-momentum steps with weight decay, in train mode (batch statistics), both models."""
    arch = ARCHS["v2"]
    plain, padded = pair(arch, (3, 16, 16), channel_multiple=8)
    config = TrainConfig(lr=0.05, weight_decay=5e-3, fused_optimizer=fused)
    optimizers = [make_optimizer(m.parameters(), config) for m in (plain, padded)]
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        x, y = torch.randn(8, 3, 16, 16, generator=gen), torch.randint(0, 10, (8,), generator=gen)
        for m, opt in zip((plain, padded), optimizers, strict=True):
            loss = F.cross_entropy(m(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert padded.padding_is_zero()  # exactly: zero gradient, zero momentum, zero decay
    assert_same_real(plain, padded, atol=1e-5)
    for name, buf in plain.named_buffers():  # batch-norm running statistics of the real channels too
        torch.testing.assert_close(padded.real_part(name, dict(padded.named_buffers())[name]), buf, atol=1e-5,
                                   rtol=1e-5)
    plain.eval()
    padded.eval()
    x = torch.randn(4, 3, 16, 16)
    torch.testing.assert_close(padded(x), plain(x), atol=1e-4, rtol=1e-4)


def test_unpadding_restores_the_plain_model(one_thread: None) -> None:
    plain, padded = pair(ARCHS["v1"], (3, 16, 16), channel_multiple=8)
    padded.set_channel_multiple(1)
    assert {k: v.shape for k, v in padded.state_dict().items()} == {k: v.shape for k, v in plain.state_dict().items()}
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), padded.state_dict().values(),
                                                 strict=True))


def small_digits_arch() -> CNNArchitecture:
    """Filter counts that are not multiples of 8, and a skip connection (a concatenation)."""
    return CNNArchitecture((ConvLayer(3, 3, 1, 1, 12), ConvLayer(3, 3, 1, 1, 20, (1,)),
                            ConvLayer(1, 3, 1, 1, 10, (1, 2))))


def trained(data: ImageData, config: TrainConfig, arch: CNNArchitecture | None = None, seed: int = 3):
    torch.manual_seed(seed)
    model = build_model(arch or small_digits_arch(), data.input_shape, data.num_classes)
    return model, train_child(model, DeviceData(data, CPU), config, seed)


@pytest.mark.parametrize("options", [{"channel_multiple": 8}, {"concat_buffer": True}, {"fused_optimizer": "fused"},
                                     {"fused_optimizer": "foreach"}, {"fused_optimizer": "off"},
                                     {"channel_multiple": 8, "concat_buffer": True, "fused_optimizer": "fused"}])
def test_training_with_an_option_matches_training_without(options: dict, digits: ImageData, one_thread: None) -> None:
    base = TrainConfig(epochs=2, batch_size=64)
    plain_model, plain = trained(digits, base)
    model, outcome = trained(digits, TrainConfig(epochs=2, batch_size=64, **options))
    assert outcome.status == plain.status == "ok"
    assert outcome.first_loss == pytest.approx(plain.first_loss, rel=1e-5)
    assert outcome.val_acc_history == pytest.approx(plain.val_acc_history, abs=2 / len(digits.val_y))
    # train_child hands the model back as it was given: unpadded, same options
    assert model.channel_multiple == 1 and not model.concat_buffer
    for (name, a), b in zip(plain_model.state_dict().items(), model.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, atol=2e-4, rtol=1e-4, msg=name)


def test_format_trial_picks_a_candidate_and_training_is_deterministic_given_the_choice(digits: ImageData,
                                                                                         one_thread: None) -> None:
    config = TrainConfig(epochs=1, batch_size=64, format_trial=True)
    candidates = {describe_format(*c) for c in format_candidates(config, CPU, digits.input_shape)}
    assert candidates == {"channels_last/bf16", "channels_last/fp32", "contiguous/bf16", "contiguous/fp32"}
    model, outcome = trained(digits, config)
    choice = f"{outcome.memory_format}/{outcome.precision}"
    assert choice in candidates
    assert set(outcome.trial_step_seconds) == candidates and outcome.trial_seconds > 0
    assert min(outcome.trial_step_seconds, key=outcome.trial_step_seconds.get) == choice
    # the trial touched neither the model nor the random stream: forcing its choice trains identically
    forced = TrainConfig(epochs=1, batch_size=64, channels_last=outcome.memory_format == "channels_last",
                         precision=outcome.precision)
    forced_model, again = trained(digits, forced)
    assert again.val_acc_history == outcome.val_acc_history and again.first_loss == outcome.first_loss
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), forced_model.state_dict().values(),
                                                 strict=True))
    # explicit settings narrow the trial
    narrowed = TrainConfig(format_trial=True, precision="fp32", channels_last=False)
    assert format_candidates(narrowed, CPU, (3, 32, 32)) == [(torch.contiguous_format, None)]


@pytest.mark.parametrize("early_stop", [{}, {"early_stop_epoch": 2, "early_stop_min_acc": 0.99}])
def test_reward_window_validation_keeps_the_reward(early_stop: dict, digits: ImageData, one_thread: None) -> None:
    kwargs = {"epochs": 4, "batch_size": 64, "reward_window": 2, **early_stop}
    _, every = trained(digits, TrainConfig(**kwargs))
    seen: list[tuple[int, float]] = []
    torch.manual_seed(3)
    model = build_model(small_digits_arch(), digits.input_shape, digits.num_classes)
    window = train_child(model, DeviceData(digits, CPU), TrainConfig(validate="reward_window", **kwargs), 3,
                         on_epoch=lambda e, acc, _loss: seen.append((e, acc)))
    assert window.status == every.status
    assert window.best_recent(2) == every.best_recent(2)  # exactly: the same training, the same validations
    if early_stop:  # stopped after epoch 2: epochs 1 and 2 are the window before it
        assert window.status == "stopped_early" and window.val_epochs == [1, 2]
    else:
        assert window.val_epochs == [3, 4] and len(every.val_acc_history) == 4
        assert window.val_acc_history == every.val_acc_history[2:]
        assert [e for e, _ in seen] == [0, 1, 2, 3] and np.isnan(seen[0][1]) and not np.isnan(seen[3][1])
    assert TrainConfig(validate="reward_window", epochs=5, reward_window=2, early_stop_epoch=1).validation_epochs() \
        == (1, 4, 5)


def test_defaults_are_off_and_bad_values_name_themselves() -> None:
    config = TrainConfig()
    assert (config.channel_multiple, config.concat_buffer, config.fused_optimizer, config.format_trial,
            config.validate) == (1, False, "auto", False, "every_epoch")
    assert TrainConfig(channel_multiple=None).channel_multiple == 1
    for kwargs, message in [({"channel_multiple": 0}, "channel_multiple must be None or a positive int (1: off), "
                                                      "got 0"),
                            ({"channel_multiple": 8.0}, "got 8.0"),
                            ({"concat_buffer": "yes"}, "concat_buffer must be true or false, got 'yes'"),
                            ({"fused_optimizer": "apex"}, "fused_optimizer must be one of"),
                            ({"format_trial": 1}, "format_trial must be true or false, got 1"),
                            ({"validate": "sometimes"}, "validate must be one of ('every_epoch', 'reward_window')")]:
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            TrainConfig(**kwargs)
    with pytest.raises(ValueError, match="channel_multiple must be a positive int"):
        build_model(ARCHS["v1"], (3, 16, 16), 10, channel_multiple=-8)
    with pytest.raises(ValueError, match="need a ChildCNN"):
        train_child(torch.nn.Linear(64, 10), DeviceData(load_digits_data(), CPU), TrainConfig(channel_multiple=8), 0)


def load_gpu_check():
    load_script("reference_trainer")  # gpu_check imports its siblings, as it does when run as a script
    load_script("bench_common")
    load_script("make_image_folder")
    return load_script("gpu_check")


def check_quick_report(out: Path, sections: set[str]) -> dict:
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["quick"] and report["device"].startswith("CPU")
    text = (out / "gpu_check.txt").read_text()
    assert "kernel profile" in text and "variants" in text and "targets" in text
    assert report["profiles"] and all(p["sort_by"] == "self_cpu_time_total" for p in report["profiles"])
    profile = (out / "profile.txt").read_text()
    assert "Self CPU" in profile and "aten::convolution" in profile
    rows = [r for r in report["variants"] if r["status"] == "ok"]
    assert {r["child"] for r in rows} == {"v1 sample 0", "v1, 36 filters"}
    assert {r["variant"] for r in rows} == {"reference", "none", "all"} and all(r["images_per_s"] > 0 for r in rows)
    assert report["targets"]["as built"]["speedup_vs_reference"] > 0
    assert set(report["section_seconds"]) == sections
    return report


@pytest.mark.skipif(not (SHARED_PNG / "cifar10_labels.js").is_file(), reason="shared CIFAR-10 PNG copy not found")
def test_gpu_check_quick_profiles_and_times_real_cifar10(tmp_path: Path, one_thread: None) -> None:
    """``scripts/gpu_check.py --quick`` on the CPU, in this process: real images, the profile and variants tables."""
    load_gpu_check().main(["--quick", "--png-dir", str(SHARED_PNG), "--out", str(tmp_path),
                           "--sections", "profile,variants"])
    check_quick_report(tmp_path, {"profile", "variants"})


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_PNG / "cifar10_labels.js").is_file(), reason="shared CIFAR-10 PNG copy not found")
def test_gpu_check_quick_command_with_children_at_once(tmp_path: Path) -> None:
    """The whole ``--quick`` command as a user runs it, with 1 and 2 trainer processes at once (spawn: slow here)."""
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--quick", "--png-dir",
                          str(SHARED_PNG), "--out", str(tmp_path)], capture_output=True, text=True, env=env,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    report = check_quick_report(tmp_path, {"profile", "variants", "concurrency"})
    assert [c["children"] for c in report["concurrency"]] == [1, 2]
    assert all(c["status"] == "ok" and c["total_images_per_s"] > 0 for c in report["concurrency"])
    assert "children at once" in (tmp_path / "gpu_check.txt").read_text()
