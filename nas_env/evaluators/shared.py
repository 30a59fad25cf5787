"""Weight sharing (ENAS-style, Pham et al. 2018): one supernet holds every child's weights.

A child is not trained from scratch: the shared weights are trained on it for a few minibatches and
its reward is their accuracy, restricted to it, on validation images (``docs/weight-sharing.md``;
``scripts/shared_ranking.py`` measures the ranking against stand-alone training). One evaluator
(:class:`SharedWeightsEvaluator`) serves every space whose :class:`SupernetSpec` builds a supernet:
the CNN space's is here (:class:`CNNSupernetSpec`), NAS-Bench-201's in :mod:`nas_env.evaluators.shared_nb201`.

The CNN supernet (:class:`SuperNet`) holds per layer and per possible input ``j`` one ``F x C_j x KH x KW``
block, of which a child layer uses the slice its filter size (centre crop; ``kernel_sharing="separate"``: one
block per size), filter count and input widths select, as the doc describes; ``SuperNet.child_model`` copies
the slices into a :func:`nas_env.models.cnn.build_model` child computing the same logits. Batch norm keeps no
running statistics (they would mix children): training uses each minibatch's, scoring (``bn_eval``) the
validation batch's (``"batch"``, ENAS) or statistics recomputed for the child on fixed training images
(``"recalibrate"``, Yu et al. 2020).
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nas_env.checks import check_image_shape, check_in, check_int, check_number, check_optional, check_type, is_int
from nas_env.data.base import ImageData, image_data_from
from nas_env.evaluators.base import EvalResult, is_oom, oom_result
from nas_env.evaluators.train import cnn_cost_metrics
from nas_env.fingerprint import make_fingerprint, tensor_digest
from nas_env.models.cnn import BN_EPS, ChildCNN, build_model, concat_padded
from nas_env.spaces.base import Architecture, SearchSpace, random_arch
from nas_env.spaces.cnn import CNNArchitecture, CNNSearchSpace
from nas_env.training.device import resolve_device
from nas_env.training.image_trainer import (
    PAD,
    DeviceData,
    TrainConfig,
    autocast,
    autocast_dtype,
    make_optimizer,
    use_channels_last,
)

REWARD_DATA = ("subset", "minibatch")
BN_EVAL = ("batch", "recalibrate")
KERNEL_SHARING = ("crop", "separate")
STATE_FORMAT = 1


@dataclass(frozen=True)
class SharedConfig:
    """How the shared weights are trained and a child is scored; the optimiser is the :class:`TrainConfig`'s at a
    constant learning rate (a search's length is not known in advance)."""

    # 10 minibatches of 128: 1,280 images a child, 1/175 of a 5-epoch CIFAR-10 proxy child (the >= 100x budget)
    shared_steps: int = 10  # minibatches of shared training on each child before its reward (0: score only)
    warmup_steps: int = 0  # minibatches on uniformly random children (one step each) before the first reward
    reward_data: str = "subset"  # "subset": the first val_images validation images; "minibatch": a random draw
    val_images: int = 512  # fixed validation subset / random validation minibatch size (capped at the split's)
    bn_eval: str = "batch"  # "batch": the validation batch's statistics; "recalibrate": per-child statistics
    recalibrate_images: int = 512  # bn_eval="recalibrate": the first this-many training images (capped; no augment)
    grad_clip: float | None = 5.0  # global gradient-norm clip of each shared step (ENAS's 5); None: off
    # "crop": every filter size is the centre crop of one KH x KW kernel; "separate": each filter size has its
    # own kernel (fewer choices share one weight, a known remedy for weak rankings; more memory, fewer updates each)
    kernel_sharing: str = "crop"
    seed: int = 0  # supernet initialisation, minibatch order, augmentation and warm-up children

    def __post_init__(self) -> None:
        for name in ("shared_steps", "warmup_steps", "seed"):
            check_int(name, getattr(self, name), minimum=0)
        for name in ("val_images", "recalibrate_images"):
            v = getattr(self, name)
            if not is_int(v) or v < 2:
                raise ValueError(f"{name} must be an int >= 2 (batch norm needs 2+ images), got {v!r}")
        for name, choices in (("reward_data", REWARD_DATA), ("bn_eval", BN_EVAL), ("kernel_sharing", KERNEL_SHARING)):
            check_in(name, getattr(self, name), choices)
        check_optional("grad_clip", self.grad_clip, check_number, minimum=0, above=True)

    @classmethod
    def from_dict(cls, options: dict[str, Any]) -> SharedConfig:
        """From JSON (``--env-kwargs``): unknown keys are an error naming the allowed ones."""
        allowed = [f.name for f in fields(cls)]
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise ValueError(f"unknown shared-weights option(s) {unknown}; allowed: {allowed}")
        return cls(**options)


@dataclass(frozen=True)
class _LayerPlan:
    kernel: tuple[int, int]
    stride: tuple[int, int]
    filters: int
    inputs: tuple[int, ...]  # 1-based earlier layers; () is the image
    in_size: tuple[int, int]
    pooled: bool


@dataclass(frozen=True)
class ChildPlan:
    """What the supernet needs to run one child: per-layer choices and shapes (computed once per child)."""

    layers: tuple[_LayerPlan, ...]
    unused: tuple[int, ...]  # 1-based layers feeding the classifier
    final_size: tuple[int, int]


BNStats = list[tuple[torch.Tensor, torch.Tensor]]  # per batch norm, in forward order: (mean, unbiased var)


class BatchNorms:
    """Batch norm for one forward pass of a child: ``stats`` in forward order when given, else the batch's own
    (appended to ``collect`` when given, for recalibration)."""

    def __init__(self, stats: BNStats | None, collect: BNStats | None) -> None:
        self.stats, self.collect, self.used = stats, collect, 0

    def __call__(self, h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
        if self.stats is not None:
            if self.used >= len(self.stats):
                raise ValueError(f"stats holds {len(self.stats)} batch norms' statistics; this child has more")
            mean, var = self.stats[self.used]
            self.used += 1
            return F.batch_norm(h, mean, var, weight, bias, training=False, eps=eps)
        if self.collect is not None:
            hf = h.detach().float()
            self.collect.append((hf.mean(dim=(0, 2, 3)), hf.var(dim=(0, 2, 3), unbiased=True)))
        return F.batch_norm(h, None, None, weight, bias, training=True, eps=eps)


class Supernet(Protocol):
    """What the evaluator needs of a supernet (an ``nn.Module``): lay out a child, run it, export it.

    ``plan(arch)`` checks that ``arch`` is one of its children (TypeError / ValueError) and returns what
    ``forward(x, plan, stats, collect)`` needs to give its logits (batch norms as :class:`BatchNorms` says);
    ``child_model(arch, stats)`` is a stand-alone model with copies of the child's weights.
    """

    def plan(self, arch: Any) -> Any: ...

    def __call__(self, x: torch.Tensor, plan: Any, stats: BNStats | None = None,
                 collect: BNStats | None = None) -> torch.Tensor: ...

    def child_model(self, arch: Any, stats: BNStats | None = None) -> nn.Module: ...

    def parameters(self) -> Any: ...  # nn.Module's


@runtime_checkable
class SupernetSpec(Protocol):
    """A space's part of weight sharing: what :class:`SharedWeightsEvaluator` needs beyond images and a config.

    ``space`` draws random children; ``settings()`` (JSON-friendly) enter the fingerprint and the checkpoint,
    ``fingerprint_kind`` is a key of :data:`nas_env.fingerprint.RESULT_SOURCES`; ``check_config`` refuses
    options that do not apply to the space (ValueError); ``build`` makes the supernet for the data's image
    shape and classes; ``metrics`` are a child's cost metrics (``params``, ``flops``, ...).
    """

    space: SearchSpace
    fingerprint_kind: str

    def settings(self) -> dict[str, Any]: ...

    def check_config(self, config: SharedConfig) -> None: ...

    def build(self, input_shape: tuple[int, ...], num_classes: int, config: SharedConfig) -> Supernet: ...

    def metrics(self, arch: Any, input_shape: tuple[int, ...], num_classes: int) -> dict[str, Any]: ...


class SuperNet(nn.Module):
    """Every child of ``space`` as slices of one set of weights (see the module docstring)."""

    def __init__(self, space: CNNSearchSpace, input_shape: Sequence[int], num_classes: int,
                 bn_eps: float = BN_EPS, kernel_sharing: str = "crop") -> None:
        super().__init__()
        check_in("kernel_sharing", kernel_sharing, KERNEL_SHARING)
        check_type(space, CNNSearchSpace, "SuperNet needs a CNNSearchSpace")
        self.input_shape = check_image_shape(input_shape)
        if not is_int(num_classes) or num_classes < 2:
            raise ValueError(f"num_classes must be an int of at least 2, got {num_classes!r}")
        self.space = space
        self.num_classes = num_classes
        self.bn_eps = float(bn_eps)
        self.kernel = (max(space.filter_heights), max(space.filter_widths))
        self.kernel_sharing = kernel_sharing
        # the kernel shapes held per block: one KH x KW kernel cropped for every size, or one per size
        sizes = [self.kernel] if kernel_sharing == "crop" else [
            (h, w) for h in space.filter_heights for w in space.filter_widths]
        self.max_filters = max(space.num_filters)
        channels = self.input_shape[0]
        self.convs = nn.ModuleList()  # per layer: a ParameterDict of blocks "image", "1", ... (+ "@HxW": separate)
        for i in range(1, space.num_layers + 1):
            sources = range(i) if space.skip_connections else [i - 1]  # 0 stands for the image
            blocks = nn.ParameterDict()
            for j in sources:
                c_in = channels if j == 0 else self.max_filters
                for size in sizes:
                    w = torch.empty(self.max_filters, c_in, *size)
                    nn.init.kaiming_normal_(w, mode="fan_in", nonlinearity="relu")
                    blocks[self._key(j, size)] = nn.Parameter(w)
            self.convs.append(blocks)
        self.bn_weight = nn.ParameterList(nn.Parameter(torch.ones(self.max_filters)) for _ in range(space.num_layers))
        self.bn_bias = nn.ParameterList(nn.Parameter(torch.zeros(self.max_filters)) for _ in range(space.num_layers))
        bound = 1.0 / math.sqrt(self.max_filters)
        self.classifier = nn.ParameterList(
            nn.Parameter(torch.empty(num_classes, self.max_filters).uniform_(-bound, bound))
            for _ in range(space.num_layers))
        self.classifier_bias = nn.Parameter(torch.empty(num_classes).uniform_(-bound, bound))

    def _key(self, source: int, size: tuple[int, int]) -> str:
        """The block of input ``source`` (0: the image) for an ``h x w`` filter."""
        name = "image" if source == 0 else str(source)
        return name if self.kernel_sharing == "crop" else f"{name}@{size[0]}x{size[1]}"

    def plan(self, arch: CNNArchitecture) -> ChildPlan:
        """Check that ``arch`` is a child of this supernet's space and lay out its layers."""
        check_type(arch, CNNArchitecture, "the supernet runs CNN architectures")
        if arch.num_layers > self.space.num_layers:
            raise ValueError(f"architecture has {arch.num_layers} layers; this supernet holds at most "
                             f"{self.space.num_layers}")
        self.space.with_layers(arch.num_layers).encode(arch)  # ValueError for any choice the space cannot emit
        shapes = arch.shapes(self.input_shape)
        layers = tuple(
            _LayerPlan((l.filter_height, l.filter_width), (l.stride_height, l.stride_width), l.num_filters,
                       l.inputs, s.in_size, i in arch.pool_after)
            for i, (l, s) in enumerate(zip(arch.layers, shapes, strict=True), start=1))
        unused = tuple(arch.unused_outputs())
        final = (max(shapes[i - 1].out_size[0] for i in unused), max(shapes[i - 1].out_size[1] for i in unused))
        return ChildPlan(layers, unused, final)

    def conv_weight(self, plan: ChildPlan, layer: int) -> torch.Tensor:
        """Layer ``layer``'s (0-based) child conv weight: its input blocks' slices, concatenated in input order."""
        lp = plan.layers[layer]
        (h, w) = lp.kernel
        (kh, kw) = self.kernel if self.kernel_sharing == "crop" else lp.kernel
        top, left = (kh - h) // 2, (kw - w) // 2
        blocks = self.convs[layer]
        parts = [blocks[self._key(j, lp.kernel)][: lp.filters, : plan.layers[j - 1].filters if j else None,
                                                 top : top + h, left : left + w]
                 for j in lp.inputs or (0,)]  # 0: the image, all of its channels
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def classifier_weight(self, plan: ChildPlan) -> torch.Tensor:
        parts = [self.classifier[i - 1][:, : plan.layers[i - 1].filters] for i in plan.unused]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def forward(self, x: torch.Tensor, plan: ChildPlan, stats: BNStats | None = None,
                collect: BNStats | None = None) -> torch.Tensor:
        """The child's logits, its batch norms as :class:`BatchNorms` says."""
        norm = BatchNorms(stats, collect)
        outs: list[torch.Tensor] = []
        for i, lp in enumerate(plan.layers):
            h = concat_padded([outs[j - 1] for j in lp.inputs], lp.in_size) if lp.inputs else x
            weight = self.conv_weight(plan, i)
            if h.is_contiguous(memory_format=torch.channels_last):
                weight = weight.contiguous(memory_format=torch.channels_last)
            h = F.conv2d(h, weight, stride=lp.stride, padding=(lp.kernel[0] // 2, lp.kernel[1] // 2))
            h = F.relu(norm(h, self.bn_weight[i][: lp.filters], self.bn_bias[i][: lp.filters], self.bn_eps))
            if lp.pooled:
                h = F.max_pool2d(h, kernel_size=2, stride=2, ceil_mode=True)
            outs.append(h)
        feats = concat_padded([outs[i - 1] for i in plan.unused], plan.final_size).mean(dim=(2, 3))
        return F.linear(feats, self.classifier_weight(plan), self.classifier_bias)

    @torch.no_grad()
    def child_model(self, arch: CNNArchitecture, stats: BNStats | None = None) -> ChildCNN:
        """A stand-alone :func:`build_model` child holding copies of ``arch``'s slices (and ``stats`` as its
        batch norms' running statistics, when given): it computes what the supernet computes for ``arch``."""
        plan = self.plan(arch)
        model = build_model(arch, self.input_shape, self.num_classes, bn_eps=self.bn_eps)
        for i, lp in enumerate(plan.layers):
            model.convs[i].weight.copy_(self.conv_weight(plan, i))
            model.norms[i].weight.copy_(self.bn_weight[i][: lp.filters])
            model.norms[i].bias.copy_(self.bn_bias[i][: lp.filters])
            if stats is not None:
                model.norms[i].running_mean.copy_(stats[i][0])
                model.norms[i].running_var.copy_(stats[i][1])
        model.classifier.weight.copy_(self.classifier_weight(plan))
        model.classifier.bias.copy_(self.classifier_bias)
        return model.to(self.classifier_bias.device)


@dataclass(frozen=True)
class CNNSupernetSpec:
    """The CNN space's weight sharing: :class:`SuperNet` over ``space`` (``kernel_sharing`` from the config)."""

    space: CNNSearchSpace
    fingerprint_kind: str = "shared"

    def __post_init__(self) -> None:
        check_type(self.space, CNNSearchSpace, "CNNSupernetSpec needs a CNNSearchSpace")

    def settings(self) -> dict[str, Any]:
        """The space's fields (as the CNN evaluator has always recorded them)."""
        return {f.name: getattr(self.space, f.name) for f in fields(self.space) if f.init}

    def check_config(self, config: SharedConfig) -> None:
        """Every option applies to the CNN space."""

    def build(self, input_shape: tuple[int, ...], num_classes: int, config: SharedConfig) -> SuperNet:
        return SuperNet(self.space, input_shape, num_classes, kernel_sharing=config.kernel_sharing)

    def metrics(self, arch: CNNArchitecture, input_shape: tuple[int, ...], num_classes: int) -> dict[str, Any]:
        return cnn_cost_metrics(arch, input_shape, num_classes)


def _cpu_copy(obj: Any) -> Any:
    """A deep copy with every tensor cloned to the CPU: a snapshot that later training cannot change."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_cpu_copy(v) for v in obj)
    return copy.deepcopy(obj)


class SharedWeightsEvaluator:
    """``(arch, seed) -> EvalResult`` by weight sharing: train the supernet on ``arch`` for ``shared_steps``
    minibatches, then score ``arch`` with the shared weights on validation images, all on ``device``.

    Stateful: the supernet, its optimiser, the random stream and the step counter carry over from child to
    child (``state_dict`` / ``load_state_dict`` checkpoint them). The per-child ``seed`` is recorded but
    steers nothing: the evaluator's own stream (``config.seed``) draws minibatches, augmentation and
    warm-up children.

    ``data``: an :class:`ImageData` or a zero-argument factory; ``space``: a :class:`CNNSearchSpace` or any
    space's :class:`SupernetSpec`; ``config``: a :class:`SharedConfig` or a dict of its fields;
    ``train_config``: optimiser, batch size, augmentation, precision and memory format (its epochs and
    schedule are not used).
    """

    def __init__(self, data: ImageData | Callable[[], ImageData], space: CNNSearchSpace | SupernetSpec,
                 config: SharedConfig | dict[str, Any] | None = None, train_config: TrainConfig | None = None,
                 device: str | torch.device | None = "auto") -> None:
        if isinstance(space, CNNSearchSpace):
            space = CNNSupernetSpec(space)
        self.spec: SupernetSpec = check_type(space, SupernetSpec,
                                             "SharedWeightsEvaluator needs a CNNSearchSpace or a SupernetSpec")
        if isinstance(config, dict):
            config = SharedConfig.from_dict(config)
        self.config = SharedConfig() if config is None else check_type(
            config, SharedConfig, "config must be a SharedConfig, a dict of its fields or None")
        self.train_config = TrainConfig() if train_config is None else check_type(
            train_config, TrainConfig, "train_config must be a TrainConfig or None")
        self.space = space.space
        self.spec.check_config(self.config)
        self.device = resolve_device(device)
        self._data_source = data
        self._device_data: DeviceData | None = None
        self._net: Supernet | None = None
        self._fingerprint: str | None = None

    # --- lazy set-up -------------------------------------------------------------------------------
    @property
    def data(self) -> DeviceData:
        if self._device_data is None:
            image_data = image_data_from(self._data_source)
            if len(image_data.train_y) < 2:
                raise ValueError("shared training needs at least 2 training images (batch norm)")
            self._device_data = DeviceData(image_data, self.device, self.train_config.augment)
        return self._device_data

    @property
    def supernet(self) -> Supernet:
        self._setup()
        assert self._net is not None
        return self._net

    def _setup(self) -> None:
        if self._net is not None:
            return
        data, cfg, tc = self.data, self.config, self.train_config
        d = data.data
        with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's global RNG
            torch.manual_seed(cfg.seed)
            net = self.spec.build(d.input_shape, d.num_classes, cfg)
        self._memory_format = (torch.channels_last if use_channels_last(tc, self.device, d.input_shape)
                               else torch.contiguous_format)
        self._dtype = autocast_dtype(tc, self.device)
        self._net = net.to(self.device)  # type: ignore[attr-defined]
        self._batch = min(tc.batch_size, data.num_train)
        # the project's SGD at TrainConfig's lr, linearly scaled to the batch actually used; a parameter block
        # without a gradient is skipped
        lr = replace(tc, batch_size=self._batch).base_lr
        self._optimizer = make_optimizer(net.parameters(), replace(tc, lr=lr, lr_reference_batch=None))
        self._gen = torch.Generator(device=self.device).manual_seed(cfg.seed)
        self._arch_rng = np.random.default_rng(cfg.seed)
        self._perm = torch.randperm(data.num_train, device=self.device, generator=self._gen)
        self._cursor = 0
        self.step = 0  # shared training steps so far, warm-up included
        self.children = 0  # children scored so far
        self.warmed_up = cfg.warmup_steps == 0
        self._recal_x: torch.Tensor | None = None

    # --- identity ----------------------------------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        """Everything besides the code and the data content that decides a reward (JSON-friendly)."""
        d = self.data.data
        return {"evaluator": "shared_weights/1", "space": self.spec.settings(), "shared": asdict(self.config),
                "train": asdict(self.train_config), "data": [d.name, list(d.input_shape), d.num_classes],
                "device": self.device.type}

    def fingerprint(self) -> str:
        """``shared/<hash>``: never equal to a training evaluator's, so a store never serves one for the other."""
        if self._fingerprint is None:
            d = self.data.data
            data_digest = tensor_digest([d.train_x, d.train_y, d.val_x, d.val_y])
            self._fingerprint = f"shared/{make_fingerprint(self.spec.fingerprint_kind, data_digest, self.settings())}"
        return self._fingerprint

    # --- training ----------------------------------------------------------------------------------
    def _next_indices(self) -> torch.Tensor:
        n, bs = self.data.num_train, self._batch
        if self._cursor + bs > n:  # a new epoch: reshuffle (the remainder is dropped)
            self._perm = torch.randperm(n, device=self.device, generator=self._gen)
            self._cursor = 0
        idx = self._perm[self._cursor : self._cursor + bs]
        self._cursor += bs
        return idx

    def _train_steps(self, plan: Any, steps: int) -> tuple[list[float], int]:
        """``steps`` shared SGD steps on one child: the finite losses, and how many steps were skipped as non-finite."""
        net, opt, data = self.supernet, self._optimizer, self.data
        net.train()
        losses, skipped = [], 0
        for _ in range(steps):
            x, y = data.train_batch(self._next_indices(), self._gen)
            x = x.contiguous(memory_format=self._memory_format)
            with autocast(self.device, self._dtype):
                loss = F.cross_entropy(net(x, plan).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            value = loss.detach()
            if self.config.grad_clip is not None:
                params = [p for p in net.parameters() if p.grad is not None]
                value = value + 0.0 * torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip)  # NaN norm: NaN
            loss_value = value.item()  # the step's one host sync
            self.step += 1
            if not math.isfinite(loss_value):  # keep the shared weights intact: one bad child must not poison the rest
                opt.zero_grad(set_to_none=True)
                skipped += 1
                continue
            opt.step()
            losses.append(loss_value)
        return losses, skipped

    def random_arch(self) -> Architecture:
        """A uniformly random child of the space (every token uniform), from the evaluator's seeded stream."""
        self._setup()
        return random_arch(self.space, self._arch_rng)

    def warmup(self) -> float:
        """Train on ``warmup_steps`` random children, one step each (done before the first reward); seconds taken."""
        self._setup()
        if self.warmed_up:
            return 0.0
        seconds = self.train_random(self.config.warmup_steps)
        self.warmed_up = True
        return seconds

    def train_random(self, steps: int) -> float:
        """Train on ``steps`` uniformly random children, one minibatch each (the warm-up's way); seconds taken."""
        self._setup()
        start = time.perf_counter()
        for _ in range(steps):
            self._train_steps(self.supernet.plan(self.random_arch()), 1)
        return time.perf_counter() - start

    # --- scoring -----------------------------------------------------------------------------------
    def _forward(self, x: torch.Tensor, plan: Any, **norms: BNStats | None) -> torch.Tensor:
        """The child's logits for un-normalised images, in the run's precision and memory format."""
        with autocast(self.device, self._dtype):
            return self.supernet(self.data.normalise(x).contiguous(memory_format=self._memory_format), plan, **norms)

    @torch.no_grad()
    def recalibrate(self, plan: Any) -> BNStats:
        """Per-batch-norm statistics of this child over the first ``recalibrate_images`` training images
        (un-augmented, as validation images are), averaged over ``eval_batch_size`` chunks."""
        data = self.data
        if self._recal_x is None:
            x = data.train_x[: self.config.recalibrate_images]
            if data.augment:  # the stored training images carry the crop padding
                x = x[:, :, PAD : PAD + data.height, PAD : PAD + data.width]
            self._recal_x = x
        per_chunk: list[BNStats] = []
        bs = self.train_config.eval_batch_size
        for s in range(0, len(self._recal_x), bs):
            if len(chunk := self._recal_x[s : s + bs]) >= 2:
                per_chunk.append([])
                self._forward(chunk, plan, collect=per_chunk[-1])
        n = len(per_chunk)
        assert n
        by_norm = zip(*per_chunk, strict=True)  # per batch norm: its (mean, var) in each chunk
        return [(sum(m for m, _ in bn) / n, sum(v for _, v in bn) / n) for bn in by_norm]

    @torch.no_grad()
    def score(self, plan: Any, bn_eval: str | None = None) -> float:
        """Accuracy of the shared weights restricted to the child on the validation images of ``reward_data``,
        with batch norm as ``bn_eval`` says (default: the config's; the ranking script compares both)."""
        data, cfg = self.data, self.config
        bn_eval = cfg.bn_eval if bn_eval is None else bn_eval
        check_in("bn_eval", bn_eval, BN_EVAL)
        self.supernet.eval()
        if cfg.reward_data == "subset":
            xs, ys = data.val_x[: cfg.val_images], data.val_y[: cfg.val_images]
        else:
            idx = torch.randperm(len(data.val_y), device=self.device, generator=self._gen)[: cfg.val_images]
            xs, ys = data.val_x[idx], data.val_y[idx]
        stats = self.recalibrate(plan) if bn_eval == "recalibrate" else None
        # chunks of eval_batch_size to 2 x eval_batch_size - 1 images, so no batch statistic comes from 1 image
        chunks = torch.arange(len(ys), device=self.device).tensor_split(
            max(1, len(ys) // max(2, self.train_config.eval_batch_size)))
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        for idx in chunks:
            correct += (self._forward(xs[idx], plan, stats=stats).argmax(dim=1) == ys[idx]).sum()
        return correct.item() / len(ys)

    def __call__(self, arch: Architecture, seed: int) -> EvalResult:
        data = self.data
        plan = self.supernet.plan(arch)  # TypeError / ValueError for anything but a child of the space
        metrics: dict[str, Any] = self.spec.metrics(arch, data.data.input_shape, data.data.num_classes)
        start = time.perf_counter()
        try:
            warmup_seconds = self.warmup()
            losses, skipped = self._train_steps(plan, self.config.shared_steps)
            val_acc = self.score(plan)
        except Exception as e:  # only OOM is turned into a result; everything else propagates
            if not is_oom(e):
                raise
            self._optimizer.zero_grad(set_to_none=True)
            return oom_result(e, self.device, {**metrics, "val_acc": 0.0, "val_acc_history": []})
        self.children += 1
        if skipped:
            val_acc = 0.0
        metrics.update(val_acc=val_acc, val_acc_history=[val_acc], train_seconds=time.perf_counter() - start,
                       shared_loss=float(np.mean(losses)) if losses else None, shared_step=self.step,
                       skipped_steps=skipped)
        if warmup_seconds:
            metrics["warmup_seconds"] = warmup_seconds
        return EvalResult(val_acc, "diverged" if skipped else "ok", metrics)

    # --- checkpointing -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """A CPU snapshot of everything a resumed run needs to continue exactly: supernet weights, optimiser
        state, random streams, data order and counters (plus the settings, checked on load)."""
        self._setup()
        return _cpu_copy({
            "format": STATE_FORMAT, "settings": self.settings(), "supernet": self.supernet.state_dict(),
            "optimizer": self._optimizer.state_dict(), "generator": self._gen.get_state(),
            "arch_rng": self._arch_rng.bit_generator.state, "perm": self._perm, "cursor": self._cursor,
            "step": self.step, "children": self.children, "warmed_up": self.warmed_up,
        })

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; ``ValueError`` when it was saved under other settings."""
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise ValueError(f"not a shared-weights state (format {STATE_FORMAT}); got keys "
                             f"{sorted(state) if isinstance(state, dict) else type(state).__name__}")
        self._setup()
        mine = json.loads(json.dumps(self.settings(), default=str))
        theirs = json.loads(json.dumps(state["settings"], default=str))
        theirs.get("shared", {}).setdefault("kernel_sharing", "crop")  # saved before the option: crops
        if mine != theirs:
            diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
            raise ValueError(f"shared-weights state was saved under other settings (differing: {diff})")
        self.supernet.load_state_dict(state["supernet"])
        self._optimizer.load_state_dict(state["optimizer"])
        self._gen.set_state(state["generator"])
        self._arch_rng.bit_generator.state = state["arch_rng"]
        self._perm = state["perm"].to(self.device)
        self._cursor, self.step, self.children = (int(state[k]) for k in ("cursor", "step", "children"))
        self.warmed_up = bool(state["warmed_up"])
