"""The weight-sharing evaluator: the supernet computes what build_model computes, and the evaluator's
reward is deterministic, resumable and fingerprinted apart from training from scratch."""

from __future__ import annotations

import importlib
import io
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch

from nas_env.data import load_digits_data
from nas_env.data.base import ImageData
from nas_env.evaluators import TrainingEvaluator
from nas_env.evaluators.shared import SharedConfig, SharedWeightsEvaluator, SuperNet
from nas_env.models.cnn import build_model
from nas_env.spaces.base import random_arch
from nas_env.spaces.cnn import CNNArchitecture, ConvLayer, cnn_space
from nas_env.training.image_trainer import TrainConfig

ROOT = Path(__file__).resolve().parents[3]
SMALL = {"num_filters": (4, 6, 8)}  # small choice lists keep the equivalence checks fast
DIGITS_SPACE = cnn_space("v1", num_layers=3, num_filters=(4, 8))
DIGITS_TRAIN = TrainConfig(batch_size=32)


@pytest.fixture(scope="module")
def digits() -> ImageData:
    return load_digits_data(train_subset=256, val_subset=64)


def seeded_arch(space, seed: int) -> CNNArchitecture:
    return random_arch(space, np.random.default_rng(seed))


def copied_child(net: SuperNet, arch: CNNArchitecture) -> torch.nn.Module:
    """build_model's child with its weights sliced from the supernet here, independently of SuperNet.child_model."""
    model = build_model(arch, net.input_shape, net.num_classes)
    with torch.no_grad():
        for i, layer in enumerate(arch.layers):
            h, w = layer.filter_height, layer.filter_width
            separate = net.kernel_sharing == "separate"
            kh, kw = (h, w) if separate else net.kernel
            top, left = (kh - h) // 2, (kw - w) // 2
            blocks = net.convs[i]
            suffix = f"@{h}x{w}" if separate else ""
            if layer.inputs:
                parts = [blocks[f"{j}{suffix}"][: layer.num_filters, : arch.layers[j - 1].num_filters]
                         for j in layer.inputs]
            else:
                parts = [blocks[f"image{suffix}"][: layer.num_filters]]
            model.convs[i].weight.copy_(torch.cat(parts, dim=1)[:, :, top : top + h, left : left + w])
            model.norms[i].weight.copy_(net.bn_weight[i][: layer.num_filters])
            model.norms[i].bias.copy_(net.bn_bias[i][: layer.num_filters])
        model.classifier.weight.copy_(torch.cat(
            [net.classifier[i - 1][:, : arch.layers[i - 1].num_filters] for i in arch.unused_outputs()], dim=1))
        model.classifier.bias.copy_(net.classifier_bias)
    return model


def perturbed(net: SuperNet, seed: int) -> SuperNet:
    """Non-trivial batch-norm affines, so a wrong slice of them shows."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in [*net.bn_weight, *net.bn_bias]:
            p.add_(0.3 * torch.randn(p.shape, generator=gen))
    return net


# Hand-made children: skips, several inputs of different sizes (zero padding), strides, pooling.
V2_HAND = CNNArchitecture((
    ConvLayer(3, 5, 2, 1, 6),
    ConvLayer(7, 1, 1, 3, 4, (1,)),
    ConvLayer(1, 1, 3, 2, 8, ()),
    ConvLayer(5, 3, 1, 1, 6, (1, 2, 3)),
    ConvLayer(3, 3, 2, 2, 4, (2, 4)),
))
V3_HAND = CNNArchitecture((
    ConvLayer(3, 3, 1, 1, 4),
    ConvLayer(5, 7, 1, 1, 8, (1,)),
    ConvLayer(1, 3, 1, 1, 6, (1, 2)),
    ConvLayer(7, 7, 1, 1, 4, (3,)),
), pool_after=(2,))


@pytest.mark.parametrize(("variant", "layers", "arch", "sharing"), [
    ("v1", 5, None, "crop"), ("v2", 5, None, "crop"), ("v2", 5, V2_HAND, "crop"), ("v3", 4, V3_HAND, "crop"),
    ("v1", 5, None, "separate"), ("v2", 5, V2_HAND, "separate"),
])
def test_supernet_restricted_to_a_child_computes_build_models_logits(variant: str, layers: int,
                                                                     arch: CNNArchitecture | None,
                                                                     sharing: str) -> None:
    extra = {"pool_after": (2,)} if variant == "v3" else {}
    space = cnn_space(variant, num_layers=layers, **SMALL, **extra)
    torch.manual_seed(0)
    net = perturbed(SuperNet(space, (3, 13, 11), 10, kernel_sharing=sharing), 1)
    x = torch.randn(6, 3, 13, 11)
    archs = [arch] if arch is not None else [seeded_arch(space, s) for s in range(4)]
    for a in archs:
        plan = net.plan(a)
        model = copied_child(net, a)
        model.train()  # batch statistics, as the supernet trains
        torch.testing.assert_close(net(x, plan), model(x), rtol=1e-5, atol=1e-5)
        stats = []  # evaluation with recalibrated statistics == the child in eval mode with them as running stats
        net(x, plan, collect=stats)
        for norm, (mean, var) in zip(model.norms, stats, strict=True):
            norm.running_mean.copy_(mean)
            norm.running_var.copy_(var)
        model.eval()
        torch.testing.assert_close(net(x[:3], plan, stats=stats), model(x[:3]), rtol=1e-5, atol=1e-5)
        exported = net.child_model(a, stats).eval()  # the library's own export agrees with the slices above
        torch.testing.assert_close(exported(x[:3]), model(x[:3]), rtol=0, atol=0)


def test_supernet_children_share_weights_and_only_used_blocks_get_gradients() -> None:
    space = cnn_space("v1", num_layers=4, **SMALL)
    net = SuperNet(space, (3, 8, 8), 10)
    assert net.kernel == (7, 7) and net.max_filters == 8
    assert sorted(net.convs[3].keys()) == ["1", "2", "3", "image"]  # one block per possible input
    arch = CNNArchitecture((ConvLayer(3, 3, 1, 1, 4), ConvLayer(1, 5, 1, 1, 6, (1,)),
                            ConvLayer(7, 7, 1, 1, 8, ()), ConvLayer(3, 3, 1, 1, 4, (1, 3))))
    net(torch.randn(4, 3, 8, 8), net.plan(arch)).sum().backward()
    assert net.convs[3]["2"].grad is None and net.convs[3]["image"].grad is None  # unused: no decay, no momentum
    assert net.convs[1]["image"].grad is None
    g = net.convs[3]["1"].grad  # layer 1 (4 filters) feeds layer 4 (4 filters, 3x3): only that slice moves
    assert g[:4, :4, 2:5, 2:5].abs().sum() > 0
    assert g[4:].abs().sum() == 0 and g[:, 4:].abs().sum() == 0 and g[:, :, :2].abs().sum() == 0
    no_skip = SuperNet(cnn_space("v1", num_layers=3, skip_connections=False, **SMALL), (3, 8, 8), 10)
    assert [sorted(b.keys()) for b in no_skip.convs] == [["image"], ["1"], ["2"]]


def test_separate_kernels_give_each_filter_size_its_own_weights() -> None:
    space = cnn_space("v1", num_layers=2, **SMALL)
    net = SuperNet(space, (3, 8, 8), 10, kernel_sharing="separate")
    sizes = [(h, w) for h in space.filter_heights for w in space.filter_widths]
    assert sorted(net.convs[1].keys()) == sorted(f"{src}@{h}x{w}" for src in ("image", "1") for h, w in sizes)
    assert net.convs[0]["image@3x5"].shape[2:] == (3, 5)
    arch = CNNArchitecture((ConvLayer(3, 5, 1, 1, 4), ConvLayer(1, 1, 1, 1, 6, (1,))))
    net(torch.randn(4, 3, 8, 8), net.plan(arch)).sum().backward()
    moved = {k for k, p in net.convs[0].items() if p.grad is not None and p.grad.abs().sum() > 0}
    assert moved == {"image@3x5"}  # the 7x7 kernel a crop would have shared is untouched
    assert {k for k, p in net.convs[1].items() if p.grad is not None} == {"1@1x1"}
    with pytest.raises(ValueError, match=r"kernel_sharing must be one of .*'stacked'"):
        SuperNet(space, (3, 8, 8), 10, kernel_sharing="stacked")
    with pytest.raises(ValueError, match="kernel_sharing must be one of"):
        SharedConfig(kernel_sharing="per_size")


def test_supernet_rejects_children_of_another_space() -> None:
    net = SuperNet(cnn_space("v1", num_layers=3, **SMALL), (3, 8, 8), 10)
    wide = CNNArchitecture((ConvLayer(3, 3, 1, 1, 64),))
    with pytest.raises(ValueError, match="num_filters=64 is not one of"):
        net.plan(wide)
    deep = seeded_arch(cnn_space("v1", num_layers=5, **SMALL), 0)
    with pytest.raises(ValueError, match="at most 3"):
        net.plan(deep)
    with pytest.raises(ValueError, match="strides are not searched"):
        net.plan(CNNArchitecture((ConvLayer(3, 3, 2, 1, 4),)))
    with pytest.raises(TypeError, match="CNN architectures"):
        net.plan("not an arch")  # type: ignore[arg-type]
    shallow = seeded_arch(cnn_space("v1", num_layers=2, **SMALL), 0)  # a depth curriculum's child: fine
    assert net(torch.randn(2, 3, 8, 8), net.plan(shallow)).shape == (2, 10)


def evaluator(data: ImageData, **options) -> SharedWeightsEvaluator:
    return SharedWeightsEvaluator(data, DIGITS_SPACE, SharedConfig(**{"shared_steps": 2, **options}), DIGITS_TRAIN,
                                  "cpu")


def test_fingerprint_differs_from_training_and_follows_the_settings(digits: ImageData) -> None:
    ev = evaluator(digits)
    fp = ev.fingerprint()
    assert fp.startswith("shared/") and fp == evaluator(digits).fingerprint()
    assert fp != TrainingEvaluator(digits, DIGITS_TRAIN, "cpu").fingerprint()
    assert fp != evaluator(digits, shared_steps=3).fingerprint()
    assert fp != evaluator(digits, bn_eval="recalibrate").fingerprint()
    other = SharedWeightsEvaluator(digits, DIGITS_SPACE, ev.config, replace(DIGITS_TRAIN, lr=0.05), "cpu")
    assert fp != other.fingerprint()


def test_reward_metrics_warmup_and_determinism(digits: ImageData) -> None:
    ev = evaluator(digits, warmup_steps=3)
    archs = [seeded_arch(DIGITS_SPACE, s) for s in range(3)]
    first = ev(archs[0], seed=123)
    assert first.status == "ok" and 0.0 <= first.reward <= 1.0
    m = first.metrics
    assert m["val_acc"] == first.reward and m["val_acc_history"] == [first.reward]
    assert m["params"] == archs[0].num_params((1, 8, 8), 10) and m["flops"] == archs[0].multiply_adds((1, 8, 8), 10)
    assert m["shared_step"] == 3 + 2 and m["warmup_seconds"] > 0 and m["train_seconds"] >= m["warmup_seconds"]
    assert np.isfinite(m["shared_loss"])
    second = ev(archs[1], seed=123)
    assert second.metrics["shared_step"] == 7 and "warmup_seconds" not in second.metrics  # warm-up happens once
    json.dumps(first.metrics)  # the run folder writes metrics as JSON
    # the same settings on the CPU: the same rewards, whatever the child seeds
    again = evaluator(digits, warmup_steps=3)
    assert [again(a, seed=9).metrics["shared_loss"] for a in archs[:2]] == [first.metrics["shared_loss"],
                                                                            second.metrics["shared_loss"]]
    # a different evaluator seed draws other warm-up children and minibatches
    assert evaluator(digits, warmup_steps=3, seed=1)(archs[0], 0).metrics["shared_loss"] != m["shared_loss"]


def test_shared_training_learns(digits: ImageData) -> None:
    """Shared steps on a child lift its reward well above the untrained supernet's (chance: 0.1)."""
    arch = seeded_arch(DIGITS_SPACE, 0)
    before = evaluator(digits, shared_steps=0)(arch, 0).reward
    after = evaluator(digits, shared_steps=60)(arch, 0).reward
    assert before < 0.3 and after > 0.45


def test_state_round_trip_continues_exactly(digits: ImageData) -> None:
    archs = [seeded_arch(DIGITS_SPACE, s) for s in range(5)]
    ev = evaluator(digits, warmup_steps=2, reward_data="minibatch", val_images=32)
    for a in archs[:3]:
        ev(a, 0)
    buffer = io.BytesIO()  # the run checkpoint saves it with torch.save; plain tensors and Python values only
    torch.save(ev.state_dict(), buffer)
    continued = [ev(a, 0) for a in archs[3:]]
    fresh = evaluator(digits, warmup_steps=2, reward_data="minibatch", val_images=32)
    buffer.seek(0)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    resumed = [fresh(a, 0) for a in archs[3:]]
    for c, r in zip(continued, resumed, strict=True):
        assert (c.reward, c.metrics["shared_loss"], c.metrics["shared_step"]) == (
            r.reward, r.metrics["shared_loss"], r.metrics["shared_step"])
    assert "warmup_seconds" not in resumed[0].metrics  # the warm-up is part of the state
    with pytest.raises(ValueError, match=r"other settings \(differing: \['shared'\]\)"):
        evaluator(digits, warmup_steps=2).load_state_dict(ev.state_dict())
    with pytest.raises(ValueError, match="not a shared-weights state"):
        fresh.load_state_dict({"supernet": {}})


def test_reward_options(digits: ImageData) -> None:
    arch = seeded_arch(DIGITS_SPACE, 0)
    for options in ({"bn_eval": "recalibrate", "recalibrate_images": 100}, {"reward_data": "minibatch"},
                    {"shared_steps": 0, "val_images": 10_000}, {"grad_clip": None}):
        result = evaluator(digits, **options)(arch, 0)
        assert result.status == "ok" and 0.0 <= result.reward <= 1.0, options
    ev = evaluator(digits, shared_steps=0)
    assert ev(arch, 0).metrics["shared_loss"] is None and ev.step == 0  # scoring alone trains nothing
    plan = ev.supernet.plan(arch)
    assert ev.score(plan) == ev.score(plan)  # the fixed subset: the same weights give the same reward
    with pytest.raises(ValueError, match="bn_eval must be one of"):
        ev.score(plan, bn_eval="running")


@pytest.mark.parametrize(("options", "message"), [
    ({"shared_steps": -1}, "shared_steps must be an integer >= 0, got -1"),
    ({"warmup_steps": 1.5}, "warmup_steps must be an integer >= 0, got 1.5"),
    ({"val_images": 1}, "val_images must be an int >= 2"),
    ({"reward_data": "test"}, "reward_data must be one of"),
    ({"bn_eval": "running"}, "bn_eval must be one of"),
    ({"grad_clip": 0}, "grad_clip must be None or a finite number > 0"),
    ({"warm_up": 3}, r"unknown shared-weights option\(s\) \['warm_up'\]"),
])
def test_bad_options_name_the_value_and_what_is_allowed(digits: ImageData, options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SharedWeightsEvaluator(digits, DIGITS_SPACE, options, device="cpu")


def test_bad_arguments(digits: ImageData) -> None:
    with pytest.raises(TypeError, match="CNNSearchSpace"):
        SharedWeightsEvaluator(digits, "v1", device="cpu")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="train_config"):
        SharedWeightsEvaluator(digits, DIGITS_SPACE, train_config={"lr": 0.1}, device="cpu")  # type: ignore[arg-type]
    ev = evaluator(digits)
    with pytest.raises(TypeError, match="CNN architectures"):
        ev(object(), 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_filters=64 is not one of"):
        ev(CNNArchitecture((ConvLayer(3, 3, 1, 1, 64),)), 0)


def test_shared_ranking_script_on_a_tiny_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    shared_ranking = importlib.import_module("shared_ranking")
    space = cnn_space("v1", num_layers=4, num_filters=(8, 16, 24, 32))  # NASRL-Digits-v0's space
    lines = []
    for k in range(5):  # a results.jsonl-like file: arch as JSON text, a stand-alone accuracy, one failed child
        lines.append(json.dumps({"arch": seeded_arch(space, k).to_json(), "val_acc": 0.5 + 0.1 * k, "status": "ok"}))
    lines.append(json.dumps({"arch": seeded_arch(space, 9).to_json(), "val_acc": 0.0, "status": "oom"}))
    lines.append(json.dumps({"arch": seeded_arch(space, 0).to_dict(), "val_acc": 0.7}))  # seen again: mean 0.6
    src = tmp_path / "results.jsonl"
    src.write_text("\n".join(lines) + "\n")
    out = tmp_path / "ranking.json"
    report = shared_ranking.main([str(src), "--env", "NASRL-Digits-v0", "--env-kwargs", '{"train_subset": 256}',
                                  "--warmup-steps", "2", "3", "--device", "cpu", "--out", str(out)])
    assert report == json.loads(out.read_text()) == json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["n"] == 5 and set(report["bn_eval"]) == {"batch", "recalibrate"}
    assert [s["warmup_steps"] for s in report["stages"]] == [2, 3]  # scored after 2 steps, trained on to 3
    assert report["stages"][-1]["bn_eval"] == report["bn_eval"]
    assert report["stages"][0]["bn_eval"]["batch"]["shared_acc"] != report["bn_eval"]["batch"]["shared_acc"]
    with pytest.raises(SystemExit):
        shared_ranking.main([str(src), "--env", "NASRL-Digits-v0", "--warmup-steps", "5", "3"])
    assert report["standalone_acc"] == pytest.approx([0.6, 0.6, 0.7, 0.8, 0.9])
    for mode in ("batch", "recalibrate"):
        r = report["bn_eval"][mode]
        assert len(r["shared_acc"]) == 5 and all(0.0 <= a <= 1.0 for a in r["shared_acc"])
        tau = scipy.stats.kendalltau(r["shared_acc"], report["standalone_acc"]).statistic
        assert r["kendall_tau"] == pytest.approx(tau, abs=1e-4)
    assert shared_ranking.rank_correlation([1, 2, 3, 4], [0.1, 0.2, 0.3, 0.4])["kendall_tau"] == 1.0
    assert shared_ranking.rank_correlation([4, 3, 2, 1], [0.1, 0.2, 0.3, 0.4])["spearman"] == -1.0
    assert shared_ranking.rank_correlation([1, 1, 1], [0.1, 0.2, 0.3])["kendall_tau"] is None  # undefined: None
    with pytest.raises(SystemExit):  # fewer than 3 architectures: no correlation to speak of
        src.write_text(lines[0] + "\n")
        shared_ranking.main([str(src), "--env", "NASRL-Digits-v0", "--device", "cpu"])


def test_env_with_the_shared_evaluator(tmp_path: Path) -> None:
    """evaluator="shared" through gym.make: episodes end in a shared-weights reward, stored under its own key."""
    import gymnasium as gym

    import nas_env  # noqa: F401  (registers the ids)

    env = gym.make("NASRL-Digits-v0", evaluator="shared", train_subset=256, device="cpu",
                   shared_config={"shared_steps": 2, "warmup_steps": 2}, store=str(tmp_path / "store.sqlite"))
    inner = env.unwrapped.evaluator.inner
    assert isinstance(inner, SharedWeightsEvaluator) and inner.train_config.batch_size == 64  # the env's batch
    assert env.unwrapped.evaluator.fingerprint().startswith("shared/")
    rng = np.random.default_rng(0)
    for episode in range(2):
        _obs, info = env.reset(seed=episode)
        terminated = False
        while not terminated:
            action = int(rng.choice(np.flatnonzero(info["action_mask"])))
            _obs, reward, terminated, _truncated, info = env.step(action)
        assert info["status"] == "ok" and 0.0 <= reward <= 1.0 and reward == info["val_acc"]
    assert inner.step == 2 + 2 * 2
    with pytest.raises(ValueError, match=r"unknown shared-weights option\(s\) \['steps'\]"):
        gym.make("NASRL-Digits-v0", evaluator="shared", device="cpu", shared_config={"steps": 3})


def test_a_non_finite_step_is_skipped_and_reported(digits: ImageData) -> None:
    ev = evaluator(digits)
    arch = seeded_arch(DIGITS_SPACE, 0)
    ev(arch, 0)
    with torch.no_grad():
        ev.supernet.classifier_bias[0] = float("nan")  # every loss is now NaN
    before = [p.detach().clone() for p in ev.supernet.parameters()]
    result = ev(arch, 0)
    assert result.status == "diverged" and result.reward == 0.0 and result.metrics["skipped_steps"] == 2
    assert result.metrics["shared_loss"] is None
    after = list(ev.supernet.parameters())  # no update went through: the weights are as they were
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True) if not a.isnan().any())


def test_a_search_with_shared_weights_resumes_exactly_and_is_never_served_from_the_store(
        tmp_path: Path, search_resumes_exactly) -> None:
    """The runner checkpoints the supernet with the agent; a resumed search continues as if never stopped."""
    from nas_env.store import ResultStore

    env_kwargs = {"evaluator": "shared", "num_layers": 3, "train_subset": 256,
                  "shared_config": {"shared_steps": 2, "val_images": 64}}
    straight = search_resumes_exactly("NASRL-Digits-v0", env_kwargs, 15, 10)
    assert not any(r["cache_hit"] for r in straight)  # recorded in the store, never served
    assert len(ResultStore(tmp_path / "straight" / "store.sqlite")) > 0
    state = torch.load(tmp_path / "parts" / "checkpoints" / "agent.pt", weights_only=True)
    assert state["evaluators"][0] is not None  # the supernet rides in the run's checkpoint


def test_shared_vs_random_script_compares_at_equal_wall_clock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    shared_vs_random = importlib.import_module("shared_vs_random")
    report = shared_vs_random.main([
        "--env", "NASRL-Digits-v0", "--episodes", "6", "--env-kwargs", '{"train_subset": 128, "val_subset": 64}',
        "--shared-config", '{"shared_steps": 1, "warmup_steps": 2}', "--random-env-kwargs", '{"epochs": 1}',
        "--retrain-env-kwargs", '{"epochs": 1}', "--retrain-seeds", "2", "--logdir", str(tmp_path)])
    out = tmp_path / "shared_vs_random"
    assert report == json.loads((out / "report.json").read_text())
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == report
    shared, random = report["searches"]["shared"], report["searches"]["random"]
    assert shared["children"] == 6 and random["children"] >= 1
    assert random["seconds"] >= shared["seconds"] * 0.9  # random search ran until the shared search's wall-clock
    for search, folder in ((shared, out / "shared"), (random, out / "random")):
        assert search["best_arch"] == json.loads((folder / "best.json").read_text())["arch"]
        runs = search["retrained"]["runs"]
        assert [r["seed"] for r in runs] == [0, 1] and all(r["status"] == "ok" for r in runs)
        assert search["retrained"]["mean_val_acc"] == pytest.approx(sum(r["val_acc"] for r in runs) / 2)
    assert json.loads((out / "shared" / "config.json").read_text())["env_kwargs"]["evaluator"] == "shared"
    assert json.loads((out / "random" / "config.json").read_text())["time_budget"] == pytest.approx(
        shared["seconds"], abs=0.1)
