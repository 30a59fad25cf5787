"""Train a word-level language model with truncated backpropagation through time, data resident on the device.

The token streams are moved to the device once and laid out as ``T x B`` columns (Zaremba
et al.'s batching: column b is the b-th contiguous slice of the corpus); a training step is a
slice of ``bptt`` rows, so no DataLoader or per-sample Python runs in the loop. The hidden
state carries across windows (detached), the gradient norm is clipped, and the validation
perplexity is measured after every epoch.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from nas_env.checks import check_fraction, check_in, check_int, check_number
from nas_env.data.ptb import TextData

OPTIMIZERS = ("sgd", "adam")


@dataclass(frozen=True)
class LMTrainConfig:
    """How a child language model is built and trained: every number in one place.

    The defaults are a proxy sized for a few seconds a child on 2 CPU cores (with the env's
    first 20,000 training and 4,000 validation tokens): a small tied model, one epoch, Adam
    at 0.01 (from a sweep of 0.002..0.02 and batch 8..64 on the LSTM-like cell: the best
    validation perplexity after 20,000-60,000 tokens). ``PAPER_LM_CONFIG`` below is the paper's.
    """

    epochs: int = 1
    batch_size: int = 16  # columns the training stream is split into
    bptt: int = 35  # truncated-BPTT window (steps)
    optimizer: str = "adam"  # "sgd" (the paper's / Zaremba's) or "adam"
    lr: float = 1e-2
    lr_decay: float = 1.0  # lr is multiplied by this after every epoch from lr_decay_start on
    lr_decay_start: int = 0  # 0-based epoch after which the decay starts
    weight_decay: float = 0.0
    clip: float = 5.0  # max gradient L2 norm (Zaremba's 5)
    embedding_size: int = 64
    hidden_size: int = 64
    num_layers: int = 2
    dropout: float = 0.0  # a one-epoch proxy underfits: dropout only slows it down
    tie_weights: bool = True  # fewer parameters to learn in a short proxy
    init_range: float = 0.05  # weights uniform in [-init_range, init_range]
    unigram_bias: bool = True  # start the decoder bias at the training stream's log unigram frequencies
    eval_batch_size: int = 16
    loss_chunk: int = 128  # tokens per decoder+softmax chunk, 0: all at once (same gradients; 2x faster on a CPU)
    max_ppl: float = 10_000.0  # a validation perplexity above this counts as diverged (uniform over PTB: 10,000)

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "bptt", "embedding_size", "hidden_size", "num_layers",
                     "eval_batch_size"):
            object.__setattr__(self, name, check_int(name, getattr(self, name), minimum=1))
        for name in ("lr_decay_start", "loss_chunk"):
            object.__setattr__(self, name, check_int(name, getattr(self, name), minimum=0))
        for name in ("lr", "lr_decay", "weight_decay", "clip", "init_range", "max_ppl"):
            check_number(name, getattr(self, name), minimum=0)  # checked, kept as given (configs print as written)
        check_fraction("dropout", self.dropout)
        check_in("optimizer", self.optimizer, OPTIMIZERS)
        if self.tie_weights and self.embedding_size != self.hidden_size:
            raise ValueError(f"tie_weights needs embedding_size == hidden_size, got {self.embedding_size} and "
                             f"{self.hidden_size}")

    def lr_at(self, epoch: int) -> float:
        """Learning rate of 0-based ``epoch``."""
        return self.lr * self.lr_decay ** max(0, epoch - self.lr_decay_start)


# The paper's child setting (section 4.2): two layers of 540 units, about the ~20M parameters of Zaremba et al.'s
# medium LSTM, with their medium recipe for what the paper leaves open: lr 1 for 6 epochs (0-based 0..5), then
# divided by 1.2 every epoch.
PAPER_LM_CONFIG = LMTrainConfig(epochs=35, batch_size=20, bptt=35, optimizer="sgd", lr=1.0, lr_decay=1 / 1.2,
                                lr_decay_start=5, clip=5.0, embedding_size=540, hidden_size=540, dropout=0.5,
                                tie_weights=False, init_range=0.05, unigram_bias=False, eval_batch_size=10,
                                loss_chunk=0)
LM_PRESETS = {"proxy": LMTrainConfig(), "paper": PAPER_LM_CONFIG}


@dataclass
class LMTrainOutcome:
    """What one language model's training produced."""

    status: str  # "ok" or "diverged"
    val_ppl_history: list[float] = field(default_factory=list)
    train_seconds: float = 0.0
    tokens: int = 0  # training tokens processed

    @property
    def best_ppl(self) -> float:
        return min(self.val_ppl_history, default=math.inf)


def batchify(ids: torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
    """Lay a 1-D token stream out as ``T x B`` columns on ``device`` (the tail that does not fill a row is dropped)."""
    rows = len(ids) // batch_size
    if rows < 2:
        raise ValueError(f"{len(ids)} tokens are too few for batch_size={batch_size}: each of the {batch_size} "
                         "columns needs at least 2 tokens")
    return ids[: rows * batch_size].view(batch_size, rows).t().contiguous().to(device)


def _detach(state: list[tuple[torch.Tensor, torch.Tensor]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(h.detach(), c.detach()) for h, c in state]


def _nll_sum(model: nn.Module, features: torch.Tensor, targets: torch.Tensor, chunk: int,
             backward_scale: float | None) -> torch.Tensor:
    """Summed negative log-likelihood of ``targets`` under ``decoder(features)``, computed ``chunk`` tokens at a time.

    With ``backward_scale`` the gradient of ``scale * sum`` is accumulated as it goes: each chunk's
    logits are freed after its backward, and the features' gradient is sent through the network
    once at the end. The gradients equal those of the unchunked loss; on a CPU the 10,000-wide
    logits of a chunk stay in cache, which roughly halves the softmax's time.
    """
    h = features.reshape(-1, features.shape[-1])
    y = targets.reshape(-1)
    n = len(y)
    if chunk <= 0 or n <= chunk:
        nll = F.cross_entropy(model.decoder(h), y, reduction="sum")
        if backward_scale is not None:
            (nll * backward_scale).backward()
        return nll.detach()
    h_in = h.detach().requires_grad_(backward_scale is not None)
    total = torch.zeros((), device=h.device)
    for s in range(0, n, chunk):
        nll = F.cross_entropy(model.decoder(h_in[s : s + chunk]), y[s : s + chunk], reduction="sum")
        if backward_scale is not None:
            (nll * backward_scale).backward()
        total += nll.detach()
    if backward_scale is not None:
        h.backward(h_in.grad)
    return total


@torch.no_grad()
def evaluate_perplexity(model: nn.Module, stream: torch.Tensor, bptt: int, chunk: int = 0) -> float:
    """Perplexity of ``model`` on a ``T x B`` stream, the state carried across windows."""
    model.eval()
    state = model.initial_state(stream.shape[1])
    total = torch.zeros((), dtype=torch.float64, device=stream.device)
    for i in range(0, stream.shape[0] - 1, bptt):
        n = min(bptt, stream.shape[0] - 1 - i)
        features, state = model.features(stream[i : i + n], state)
        total += _nll_sum(model, features, stream[i + 1 : i + 1 + n], chunk, None).double()
    count = (stream.shape[0] - 1) * stream.shape[1]
    mean = total.item() / count
    return math.exp(mean) if mean < 700 else math.inf  # exp overflows past ~709


def train_lm(model: nn.Module, data: TextData, config: LMTrainConfig, device: torch.device) -> LMTrainOutcome:
    """Train ``model`` on ``data.train`` and record the validation perplexity after every epoch.

    ``model`` has :class:`CellLanguageModel`'s interface: ``features``, ``decoder`` and
    ``initial_state`` (the softmax is computed outside the network, in chunks).

    Randomness (dropout) comes from torch's global generator: the caller seeds it (the
    evaluator forks and seeds it per child). A non-finite training loss or a validation
    perplexity above ``config.max_ppl`` ends training with status ``"diverged"``. CUDA
    out-of-memory errors propagate to the caller, which owns the model and can free it.
    """
    model.to(device)
    if config.unigram_bias:  # a short proxy starts at the unigram model instead of spending its tokens learning it
        counts = torch.bincount(data.train, minlength=data.vocab_size).double() + 1.0  # add-one: no -inf
        with torch.no_grad():
            model.decoder.bias.copy_(torch.log(counts / counts.sum()).float())
    train = batchify(data.train, config.batch_size, device)
    valid = batchify(data.valid, config.eval_batch_size, device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer_class = torch.optim.SGD if config.optimizer == "sgd" else torch.optim.Adam
    optimizer = optimizer_class(params, lr=config.lr, weight_decay=config.weight_decay)
    outcome = LMTrainOutcome(status="ok")
    start_time = time.perf_counter()
    for epoch in range(config.epochs):
        for group in optimizer.param_groups:
            group["lr"] = config.lr_at(epoch)
        model.train()
        state = model.initial_state(config.batch_size)
        loss_sum = torch.zeros((), device=device)
        for i in range(0, train.shape[0] - 1, config.bptt):
            n = min(config.bptt, train.shape[0] - 1 - i)
            state = _detach(state)  # truncated BPTT: gradients stop at the window's start
            optimizer.zero_grad(set_to_none=True)
            features, state = model.features(train[i : i + n], state)
            count = n * config.batch_size
            loss = _nll_sum(model, features, train[i + 1 : i + 1 + n], config.loss_chunk, 1.0 / count) / count
            if config.clip > 0:
                torch.nn.utils.clip_grad_norm_(params, config.clip)
            optimizer.step()
            loss_sum += loss.detach()
            outcome.tokens += n * config.batch_size
        finite = math.isfinite(loss_sum.item())  # one host sync per epoch, not per step
        ppl = evaluate_perplexity(model, valid, config.bptt, config.loss_chunk) if finite else math.inf
        if not math.isfinite(ppl) or ppl > config.max_ppl:
            outcome.status = "diverged"
            break
        outcome.val_ppl_history.append(ppl)
    outcome.train_seconds = time.perf_counter() - start_time
    return outcome
