"""The paper's controller: an LSTM that emits an architecture one token at a time.

Zoph & Le (2017), sections 3.1 and 3.3. A 2-layer LSTM (35 units by default) reads at each step the
embedding of the previous token (a learned start embedding at step 0), and a per-token-type softmax
head turns its output into the distribution of the current token. Skip tokens ("layer j feeds
layer i") use the paper's anchor-point attention instead: P(j -> i) = sigmoid(v^T tanh(W_prev h_j + W_curr h_i)).

Our exact choice of hidden states (the env emits one skip bit per step, so the paper's single
"anchor point" step of layer i is not a separate step here):

* ``h_j`` (the *anchor* of layer j) is the LSTM output of the step right after layer j's last
  non-skip token (``num_filters`` in the CNN space): the first output that has read all of layer
  j's choices. For a layer with skip tokens that is its first skip step, which matches the paper's
  anchor point; for layer 1 (no skips) it is layer 2's first step.
* ``h_i`` is the LSTM output of the current skip step; later bits of the same layer also see the
  earlier bits (fed back as the step inputs), so the whole sequence stays autoregressive.

The k-th skip token of a layer (0-based) refers to the k-th earlier layer, in order of appearance
(the CNN space's bit j of layer i = "layer j feeds layer i").

Two code paths share the same parameters: :meth:`Controller.step` runs one step for a batch of
episodes in lockstep (sampling), and :meth:`Controller.forward` re-runs whole action sequences with
teacher forcing through one fused ``nn.LSTM`` call (training: it recomputes log-probabilities exactly
from the stored actions). Both apply ENAS's logit shaping (Pham et al. 2018; off by default) in
:meth:`Controller._shape`, so sampling and the gradient see the same distribution.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from nas_env.checks import check_int, check_number, check_optional
from nas_env.spaces.base import TokenSpec

SKIP_TOKEN = "skip"


@dataclass
class ControllerState:
    """The recurrent state of a batch of episodes sampled in lockstep."""

    h: tuple[torch.Tensor, ...]  # per LSTM layer: B x H
    c: tuple[torch.Tensor, ...]  # per LSTM layer: B x H
    anchors: dict[int, torch.Tensor] = field(default_factory=dict)  # anchor step -> W_prev @ its output (B x att)
    step: int = 0  # the next step to run


def _pad_to(logits: torch.Tensor, num_actions: int) -> torch.Tensor:
    """Pad the last dim with -inf up to ``num_actions``: actions beyond a head's choices get probability 0."""
    extra = num_actions - logits.shape[-1]
    return F.pad(logits, (0, extra), value=float("-inf")) if extra else logits


def apply_action_mask(logits: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Set the logits of invalid actions (``mask`` False) to -inf; ``mask`` broadcasts against ``logits``."""
    return logits if mask is None else logits.masked_fill(~mask.to(torch.bool), float("-inf"))


def log_probs_and_entropy(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-softmax and entropy of (possibly -inf-masked) logits, without NaNs in values or gradients."""
    logp = torch.log_softmax(logits, dim=-1)
    # masked_fill (not where) so that invalid entries give exact zeros, not 0 * -inf, in both passes
    return logp, -(logp.exp() * logp.masked_fill(~torch.isfinite(logits), 0.0)).sum(-1)


def gumbel_noise(shape: tuple[int, ...], generator: torch.Generator | None = None,
                 device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard Gumbel noise: ``argmax(logits + noise)`` is a draw from ``softmax(logits)`` (the Gumbel-max trick)."""
    u = torch.rand(shape, generator=generator, device=device, dtype=dtype).clamp_(min=torch.finfo(dtype).tiny)
    return -torch.log(-torch.log(u))


def sample_from_logits(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One action per row, drawn from softmax(logits) by the Gumbel-max trick; -inf logits are never drawn.

    Gumbel-max rather than ``multinomial(softmax(...))``: exact, a few elementwise ops (multinomial took
    milliseconds a call on tiny tensors), and noise that can be drawn for a whole episode at once.
    """
    return torch.argmax(logits + gumbel_noise(logits.shape, generator, logits.device, logits.dtype), dim=-1)


class Controller(nn.Module):
    """The NAS controller RNN over a fixed token sequence (see the module docstring).

    Args:
        token_specs: the env's ``token_specs`` (one :class:`TokenSpec` per step).
        num_actions: size of the env's ``Discrete`` action space (logits are padded to it);
            default: the largest number of choices.
        hidden_size: LSTM units (the paper: 35).
        num_layers: stacked LSTM layers (the paper: 2).
        embedding_size: token embedding size; default ``hidden_size``.
        attention_size: size of the anchor attention's hidden layer; default ``hidden_size``.
        init_range: every weight starts uniform in ``[-init_range, init_range]`` (the paper: 0.08).
        generator: the torch generator used for that initialisation (default: seed 0). The
            global RNG is never read: modules are built under ``fork_rng``, then re-initialised.
        temperature: every logit is divided by it (1.0: none; ENAS micro used 5).
        tanh_constant: C in ``C * tanh(logits / temperature)`` (None: no squashing; ENAS macro used 1.5).
        op_tanh_reduce: non-skip tokens use ``C / op_tanh_reduce`` (ENAS micro: 2.5); skip tokens use C.
    """

    def __init__(self, token_specs: Sequence[TokenSpec], num_actions: int | None = None, hidden_size: int = 35,
                 num_layers: int = 2, embedding_size: int | None = None, attention_size: int | None = None,
                 init_range: float = 0.08, generator: torch.Generator | None = None, temperature: float = 1.0,
                 tanh_constant: float | None = None, op_tanh_reduce: float = 1.0) -> None:
        super().__init__()
        positive = {"minimum": 0, "above": True}
        self.temperature = check_number("temperature", temperature, **positive)
        self.tanh_constant = check_optional("tanh_constant", tanh_constant, check_number, none="no squashing",
                                            **positive)
        self.op_tanh_reduce = check_number("op_tanh_reduce", op_tanh_reduce, **positive)
        specs = tuple(token_specs)
        if not specs:
            raise ValueError("token_specs is empty")
        max_choices = max(s.num_choices for s in specs)
        self.num_actions = int(num_actions) if num_actions is not None else max_choices
        if self.num_actions < max_choices:
            raise ValueError(f"num_actions={self.num_actions} < the largest token's {max_choices} choices")
        self.token_specs = specs
        self.hidden_size = check_int("hidden_size", hidden_size, minimum=1)
        self.num_lstm_layers = check_int("num_layers", num_layers, minimum=1)
        self.init_range = check_number("init_range", init_range, minimum=0)
        embedding_size = embedding_size or hidden_size
        attention_size = attention_size or hidden_size

        # Token types in order of first appearance; a type's head has as many outputs as its largest token.
        names = list(dict.fromkeys(s.name for s in specs))
        self.type_names: tuple[str, ...] = tuple(names)
        self.type_choices = {n: max(s.num_choices for s in specs if s.name == n) for n in names}
        self.step_types: tuple[str, ...] = tuple(s.name for s in specs)
        if SKIP_TOKEN in self.type_choices and any(s.num_choices != 2 for s in specs if s.name == SKIP_TOKEN):
            raise ValueError(f"{SKIP_TOKEN!r} tokens must have exactly 2 choices (no / yes)")

        # One embedding table: row 0 = start token, then one block of rows per token type,
        # so action k of "filter_height" and action k of "num_filters" are different inputs.
        offsets, row = {}, 1
        for n in names:
            offsets[n] = row
            row += self.type_choices[n]
        self._input_offsets = [0] + [offsets[s.name] for s in specs[:-1]]  # step t reads token t-1's block
        self._index_buffer("_input_offset_t", self._input_offsets)

        self._anchor_source = self._plan_skips(specs)  # skip step -> anchor step of its source layer
        self._anchor_steps = frozenset(self._anchor_source.values())
        self.steps_by_type = {n: [t for t, s in enumerate(self.step_types) if s == n] for n in names}  # type -> steps

        with torch.random.fork_rng(devices=[]):  # default inits draw from the global RNG: keep it untouched
            self.embedding = nn.Embedding(row, embedding_size)
            self.lstm = nn.LSTM(embedding_size, hidden_size, num_layers=num_layers, batch_first=True)
            self.heads = nn.ModuleDict({n: nn.Linear(hidden_size, self.type_choices[n])
                                        for n in names if n != SKIP_TOKEN})
            if self._anchor_source:
                self.w_prev = nn.Linear(hidden_size, attention_size, bias=False)
                self.w_curr = nn.Linear(hidden_size, attention_size, bias=False)
                self.v = nn.Linear(attention_size, 1, bias=False)
        self.reset_parameters(generator)
        # The fused LSTM's parameters per layer, for the one-cell-at-a-time path. Loading a
        # state dict or moving devices updates these Parameter objects in place.
        weights = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        self._cell_weights = [tuple(getattr(self.lstm, f"{w}_l{k}") for w in weights) for k in range(num_layers)]

        # Teacher-forced forward: pieces are computed per type and put back in step order.
        order = [t for n in names if n != SKIP_TOKEN for t in self.steps_by_type[n]]
        skip_steps = sorted(self._anchor_source)
        self._index_buffer("_inverse_order", torch.argsort(torch.tensor(order + skip_steps)))  # step -> position
        self._index_buffer("skip_steps", skip_steps)  # the steps (sorted) whose token is a skip bit
        self._index_buffer("_skip_sources", [self._anchor_source[t] for t in skip_steps])
        for n in self.heads:
            self._index_buffer(f"_steps_{n}", self.steps_by_type[n])

    def _index_buffer(self, name: str, indices: Sequence[int] | torch.Tensor) -> None:
        """Register step indices (long) that move with the module but stay out of its state dict."""
        self.register_buffer(name, torch.as_tensor(indices, dtype=torch.long), persistent=False)

    @staticmethod
    def _plan_skips(specs: tuple[TokenSpec, ...]) -> dict[int, int]:
        """Map every skip step to the anchor step of the layer it may connect from."""
        last_token = {s.layer: t for t, s in enumerate(specs) if s.name != SKIP_TOKEN}  # layer -> its last token
        layer_order = list(last_token)  # in order of first appearance
        plan: dict[int, int] = {}
        seen: dict[int, int] = {}
        for t, s in enumerate(specs):
            if s.name != SKIP_TOKEN:
                continue
            k = seen.get(s.layer, 0)
            seen[s.layer] = k + 1
            earlier = layer_order[: layer_order.index(s.layer)] if s.layer in layer_order else []
            if k >= len(earlier):
                raise ValueError(f"skip token at step {t} (layer {s.layer}) has no earlier layer number {k + 1}")
            anchor = last_token[earlier[k]] + 1
            if anchor > t:
                raise ValueError(f"skip token at step {t} precedes the anchor (step {anchor}) of layer {earlier[k]}")
            plan[t] = anchor
        return plan

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Every weight uniform in ``[-init_range, init_range]`` (the paper), drawn from ``generator``."""
        if generator is None:
            generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in self.parameters():  # registration order: deterministic for a given space
                p.uniform_(-self.init_range, self.init_range, generator=generator)

    @property
    def num_steps(self) -> int:
        return len(self.token_specs)

    # --- sampling: one step for a batch of episodes in lockstep -------------------------------
    def initial_state(self, batch_size: int) -> ControllerState:
        w = self.embedding.weight
        zeros = tuple(w.new_zeros(batch_size, self.hidden_size) for _ in range(self.num_lstm_layers))
        return ControllerState(zeros, zeros)

    def step(self, state: ControllerState, prev_actions: torch.Tensor | None) -> tuple[torch.Tensor, ControllerState]:
        """Logits (B x num_actions; -inf beyond the token's choices) of step ``state.step``.

        ``prev_actions`` (B, long) are the actions of the previous step (ignored at step 0).
        Returns a new state; the input state is not modified.
        """
        logits, new_state = self.step_logits(state, prev_actions)
        return _pad_to(logits, self.num_actions), new_state

    def step_logits(self, state: ControllerState,
                    prev_actions: torch.Tensor | None) -> tuple[torch.Tensor, ControllerState]:
        """Like :meth:`step`, but only the token's own choices: B x (choices of the token's type).

        Runs the LSTM one cell at a time on the same weights as :meth:`forward`
        (``torch.lstm_cell``: the fused kernel's per-call setup costs more than a cell here).
        """
        t = state.step
        if t >= self.num_steps:
            raise IndexError(f"step {t} is past the last token (the episode has {self.num_steps} steps)")
        if t == 0:
            idx = torch.zeros(state.h[0].shape[0], dtype=torch.long, device=state.h[0].device)
        else:
            if prev_actions is None:
                raise ValueError("prev_actions is required after step 0")
            idx = prev_actions.to(device=state.h[0].device, dtype=torch.long) + self._input_offsets[t]
        x = F.embedding(idx, self.embedding.weight)
        hs, cs = [], []
        for k in range(self.num_lstm_layers):
            x, c = torch.lstm_cell(x, (state.h[k], state.c[k]), *self._cell_weights[k])  # nn.LSTM's own weights
            hs.append(x)
            cs.append(c)
        anchors = state.anchors
        if t in self._anchor_steps:
            anchors = {**anchors, t: self.w_prev(x)}  # projected once, reused by every later skip bit
        name = self.step_types[t]
        if name == SKIP_TOKEN:
            logits = self._skip_logits(anchors[self._anchor_source[t]], x)
        else:
            logits = self.heads[name](x)
        return self._shape(logits, name == SKIP_TOKEN), ControllerState(tuple(hs), tuple(cs), anchors, t + 1)

    def _shape(self, logits: torch.Tensor, skip: bool) -> torch.Tensor:
        """Temperature and tanh squashing of one head's logits (its own choices only, before any -inf padding)."""
        if self.temperature != 1.0:
            logits = logits / self.temperature
        if self.tanh_constant is not None:
            c = self.tanh_constant if skip else self.tanh_constant / self.op_tanh_reduce
            logits = c * torch.tanh(logits)
        return logits

    def _skip_logits(self, anchor: torch.Tensor, h_curr: torch.Tensor) -> torch.Tensor:
        """Two logits (no, yes) whose softmax is (1 - P, P), P = sigmoid(v^T tanh(anchor + W_curr h_i)).

        ``anchor`` is ``W_prev h_j``, the source layer's projected anchor.
        """
        return F.pad(self.v(torch.tanh(anchor + self.w_curr(h_curr))), (1, 0))  # (0, score)

    @torch.inference_mode()
    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample ``batch_size`` action sequences (B x T) without an env: the heads' sizes are the masks."""
        state = self.initial_state(batch_size)
        prev: torch.Tensor | None = None
        actions = []
        for _ in range(self.num_steps):
            logits, state = self.step(state, prev)
            prev = sample_from_logits(logits, generator)
            actions.append(prev)
        return torch.stack(actions, dim=1)

    # --- training: whole sequences with teacher forcing ---------------------------------------
    def forward(self, actions: torch.Tensor) -> torch.Tensor:
        """Logits (B x T x num_actions) of every step given the taken actions (B x T, long).

        Step t's logits depend only on actions before t, as in :meth:`step`.
        """
        if actions.dim() != 2 or actions.shape[1] != self.num_steps:
            raise ValueError(f"actions must be B x {self.num_steps}, got {tuple(actions.shape)}")
        actions = actions.to(self._input_offset_t.device, torch.long)
        idx = torch.cat([torch.zeros_like(actions[:, :1]), actions[:, :-1]], dim=1) + self._input_offset_t
        out, _ = self.lstm(self.embedding(idx))  # B x T x H
        pieces = [_pad_to(self._shape(head(out[:, getattr(self, f"_steps_{n}")]), False), self.num_actions)
                  for n, head in self.heads.items()]
        if self._anchor_source:
            skip_logits = self._skip_logits(self.w_prev(out[:, self._skip_sources]), out[:, self.skip_steps])
            pieces.append(_pad_to(self._shape(skip_logits, True), self.num_actions))
        return torch.cat(pieces, dim=1)[:, self._inverse_order]

    def log_probs(self, actions: torch.Tensor, masks: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-step log-probabilities of ``actions`` and entropies (both B x T), under optional masks (B x T x A)."""
        logits = apply_action_mask(self(actions), masks)
        logp, entropy = log_probs_and_entropy(logits)
        return logp.gather(-1, actions.to(logp.device, torch.long).unsqueeze(-1)).squeeze(-1), entropy
