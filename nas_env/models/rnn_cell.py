"""Recurrent cells built from a :class:`CellArchitecture`, and the word-level language model that uses them.

Speed: every leaf's linear maps of ``x_t`` and ``h_{t-1}`` are two fused matmuls, one per
input. The ``x_t`` part does not depend on the recurrence, so it is computed for the whole
sequence in one matmul before the time loop; inside the loop there is one ``h_{t-1}`` matmul
per step and then only elementwise ops over the tree.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from nas_env.checks import check_fraction, check_int, check_type
from nas_env.spaces.rnn_cell import CellArchitecture

State = tuple[torch.Tensor, torch.Tensor]  # (h, c), each B x H

COMBINE_FNS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "add": torch.add,
    "elem_mult": torch.mul,
}
ACTIVATION_FNS: dict[str, Callable[[torch.Tensor], torch.Tensor] | None] = {
    "identity": None,  # skipped: no op at all
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "relu": torch.relu,
}


class TreeCell(nn.Module):
    """One recurrent layer running a searched cell over a sequence: ``(T x B x in, (h, c)) -> (T x B x H, (h, c))``.

    Leaf ``i`` sees ``W_i x_t + b_i`` and ``U_i h_{t-1} + d_i`` (both biases matter for
    ``elem_mult`` leaves); internal nodes have no parameters, as in the paper.
    """

    def __init__(self, arch: CellArchitecture, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.arch = check_type(arch, CellArchitecture, "build_cell needs a CellArchitecture")
        self.input_size = check_int("input_size", input_size, minimum=1)
        self.hidden_size = check_int("hidden_size", hidden_size, minimum=1)
        self.base = arch.base
        self.x_proj = nn.Linear(input_size, self.base * hidden_size)  # all leaves' W_i stacked
        self.h_proj = nn.Linear(hidden_size, self.base * hidden_size)  # all leaves' U_i stacked
        # The tree as a flat plan in topological (index) order: (combine, activation, left, right);
        # a leaf's inputs are -1 (its own slices of the x and h projections).
        self._plan: list[tuple[Callable, Callable | None, int, int]] = []
        for i, node in enumerate(arch.nodes):
            kids = arch.children(i) or (-1, -1)
            self._plan.append((COMBINE_FNS[node.combine], ACTIVATION_FNS[node.activation], kids[0], kids[1]))
        self._inject = (COMBINE_FNS[arch.inject_combine], ACTIVATION_FNS[arch.inject_activation])

    def initial_state(self, batch_size: int, device: torch.device | None = None) -> State:
        device = device if device is not None else self.x_proj.weight.device
        z = torch.zeros(batch_size, self.hidden_size, device=device)
        return z, z

    def step(self, xw: tuple[torch.Tensor, ...], h: torch.Tensor, c: torch.Tensor) -> State:
        """One time step: ``xw`` holds the leaves' precomputed ``W_i x_t + b_i`` (each B x H)."""
        hu = self.h_proj(h).view(h.shape[0], self.base, self.hidden_size).unbind(1)
        inject_at, cell_at = self.arch.inject_index, self.arch.cell_index
        outs: list[torch.Tensor] = []
        c_new = c
        for i, (combine, act, left, right) in enumerate(self._plan):
            pre = combine(xw[i], hu[i]) if left < 0 else combine(outs[left], outs[right])
            out = pre if act is None else act(pre)
            if i == cell_at:
                c_new = pre  # the node's combination before its activation (and before any inject)
            if i == inject_at:
                inj_combine, inj_act = self._inject
                out = inj_combine(out, c)
                out = out if inj_act is None else inj_act(out)
            outs.append(out)
        return outs[-1], c_new

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        if x.dim() != 3 or x.shape[-1] != self.input_size:
            raise ValueError(f"expected input T x B x {self.input_size}, got {tuple(x.shape)}")
        steps, batch = x.shape[0], x.shape[1]
        h, c = state if state is not None else self.initial_state(batch, x.device)
        xs = self.x_proj(x).view(steps, batch, self.base, self.hidden_size)  # one matmul for the whole sequence
        outputs = []
        for t in range(steps):
            h, c = self.step(xs[t].unbind(1), h, c)
            outputs.append(h)
        return torch.stack(outputs), (h, c)


class LSTMLayer(nn.Module):
    """``torch.nn.LSTM`` behind :class:`TreeCell`'s interface (states B x H): the baseline the cells are compared to."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.hidden_size = check_int("hidden_size", hidden_size, minimum=1)
        self.lstm = nn.LSTM(check_int("input_size", input_size, minimum=1), hidden_size)

    def initial_state(self, batch_size: int, device: torch.device | None = None) -> State:
        z = torch.zeros(batch_size, self.hidden_size, device=device if device is not None else
                        self.lstm.weight_ih_l0.device)
        return z, z

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        h, c = state if state is not None else self.initial_state(x.shape[1], x.device)
        out, (h_n, c_n) = self.lstm(x, (h.unsqueeze(0), c.unsqueeze(0)))
        return out, (h_n[0], c_n[0])


def build_cell(arch: CellArchitecture, input_size: int, hidden_size: int) -> TreeCell:
    """The searched cell as a torch module running over whole sequences (see :class:`TreeCell`)."""
    return TreeCell(arch, input_size, hidden_size)


class CellLanguageModel(nn.Module):
    """Word-level language model: embedding, dropout, stacked recurrent layers, dropout, linear decoder.

    ``cell`` is a :class:`CellArchitecture` (every layer runs that cell) or ``"lstm"`` (torch's
    LSTM, for baselines). Dropout follows Zaremba et al. (2014): on the embedding, between
    layers and before the decoder, never on the recurrent connections. ``tie_weights`` shares
    the embedding and decoder matrices (Inan et al.; Press & Wolf), which needs
    ``embedding_size == hidden_size``.
    """

    def __init__(self, cell: CellArchitecture | Literal["lstm"], vocab_size: int, embedding_size: int,
                 hidden_size: int, num_layers: int = 2, dropout: float = 0.5, tie_weights: bool = False,
                 init_range: float = 0.05) -> None:
        super().__init__()
        for name, v in (("vocab_size", vocab_size), ("embedding_size", embedding_size), ("hidden_size", hidden_size),
                        ("num_layers", num_layers)):
            check_int(name, v, minimum=1)
        check_fraction("dropout", dropout)
        if tie_weights and embedding_size != hidden_size:
            raise ValueError(f"tie_weights needs embedding_size == hidden_size, got embedding_size={embedding_size} "
                             f"and hidden_size={hidden_size}")
        if cell != "lstm" and not isinstance(cell, CellArchitecture):
            raise ValueError(f"cell must be a CellArchitecture or 'lstm', got {cell!r}")
        self.dropout = float(dropout)
        self.embedding = nn.Embedding(vocab_size, embedding_size)
        sizes = [embedding_size] + [hidden_size] * num_layers
        self.layers = nn.ModuleList(
            LSTMLayer(sizes[k], hidden_size) if cell == "lstm" else build_cell(cell, sizes[k], hidden_size)
            for k in range(num_layers)
        )
        self.decoder = nn.Linear(hidden_size, vocab_size)
        for p in self.parameters():
            nn.init.uniform_(p, -init_range, init_range)
        if tie_weights:
            self.decoder.weight = self.embedding.weight

    def initial_state(self, batch_size: int) -> list[State]:
        device = self.decoder.weight.device
        return [layer.initial_state(batch_size, device) for layer in self.layers]

    def forward(self, tokens: torch.Tensor, state: list[State] | None = None) -> tuple[torch.Tensor, list[State]]:
        """``tokens`` T x B (int64) -> logits T x B x V and the new per-layer states."""
        features, new_state = self.features(tokens, state)
        return self.decoder(features), new_state

    def features(self, tokens: torch.Tensor, state: list[State] | None = None) -> tuple[torch.Tensor, list[State]]:
        """The decoder's input (T x B x H, after dropout) and the new states: lets a trainer chunk the softmax."""
        if state is None:
            state = self.initial_state(tokens.shape[1])
        x = F.dropout(self.embedding(tokens), self.dropout, self.training)
        new_state: list[State] = []
        for layer, s in zip(self.layers, state, strict=True):
            x, s_new = layer(x, s)
            new_state.append(s_new)
            x = F.dropout(x, self.dropout, self.training)
        return x, new_state


def count_params(model: nn.Module) -> int:
    """Distinct trainable parameters (a tied matrix counts once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def lm_param_count(base: int, vocab_size: int, embedding_size: int, hidden_size: int, num_layers: int = 2,
                   tie_weights: bool = False) -> int:
    """Parameters of a :class:`CellLanguageModel` over a base-``base`` cell, without building it.

    Every cell of one base has the same parameters (the leaves' maps); only the tree's ops differ.
    """
    sizes = [embedding_size] + [hidden_size] * num_layers
    cells = sum((sizes[k] + 1 + hidden_size + 1) * base * hidden_size for k in range(num_layers))
    decoder = hidden_size * vocab_size + vocab_size
    return vocab_size * embedding_size + cells + decoder - (vocab_size * embedding_size if tie_weights else 0)


def lm_multiply_adds(base: int, vocab_size: int, embedding_size: int, hidden_size: int, num_layers: int = 2) -> int:
    """Multiply-accumulates of one token through a :class:`CellLanguageModel` (the leaf matmuls and the decoder)."""
    sizes = [embedding_size] + [hidden_size] * num_layers
    return sum((sizes[k] + hidden_size) * base * hidden_size for k in range(num_layers)) + hidden_size * vocab_size
