"""The cell module and the language model: every sampled cell runs, the LSTM-like tree is an LSTM and trains."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from shared_data import require_shared

import nas_env  # noqa: F401  (registers the ids)
from nas_env.data.ptb import load_ptb
from nas_env.models.rnn_cell import (
    CellLanguageModel,
    build_cell,
    count_params,
    lm_param_count,
)
from nas_env.spaces.rnn_cell import CellArchitecture, lstm_like_cell

SHARED = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"


def sample_masked_cells(n: int, seed: int) -> list[CellArchitecture]:
    """Cells from token sequences sampled uniformly over each step's action mask of the registered env."""
    env = gym.make("NASRL-PTB-v0", evaluator="synthetic").unwrapped
    rng = np.random.default_rng(seed)
    archs = []
    for _ in range(n):
        env.reset(seed=int(rng.integers(2**31)))
        actions = []
        for _t in range(len(env.token_specs)):
            a = int(rng.choice(np.flatnonzero(env.action_masks())))
            env.step(a)
            actions.append(a)
        archs.append(env.space.decode(actions))
    return archs


def test_every_sampled_cell_runs_forward_and_backward() -> None:
    torch.manual_seed(0)
    archs = sample_masked_cells(300, seed=0)
    assert len(set(archs)) == 300
    x = torch.randn(3, 2, 5)
    for arch in archs:
        cell = build_cell(arch, input_size=5, hidden_size=4)
        out, (h, c) = cell(x)
        assert out.shape == (3, 2, 4) and h.shape == c.shape == (2, 4)
        assert torch.equal(out[-1], h)
        out.square().sum().backward()
        assert cell.x_proj.weight.grad is not None and cell.h_proj.weight.grad is not None


def test_lstm_like_tree_computes_an_lstm() -> None:
    torch.manual_seed(0)
    hidden = 3
    cell = build_cell(lstm_like_cell(), input_size=4, hidden_size=hidden)
    x = torch.randn(5, 2, 4)
    out, (h_end, c_end) = cell(x)
    torch.testing.assert_close(h_end, out[-1])
    wx, bx = cell.x_proj.weight.view(8, hidden, 4), cell.x_proj.bias.view(8, hidden)
    wh, bh = cell.h_proj.weight.view(8, hidden, hidden), cell.h_proj.bias.view(8, hidden)
    h = c = torch.zeros(2, hidden)
    for t in range(5):
        leaf = [x[t] @ wx[i].T + bx[i] + h @ wh[i].T + bh[i] for i in range(8)]
        f = torch.sigmoid(leaf[0] + leaf[1])
        i_g = torch.sigmoid(leaf[2]) * torch.tanh(leaf[3])
        o = torch.sigmoid(leaf[4] + leaf[5] + leaf[6] + leaf[7])
        c = f * c + i_g
        h = torch.tanh(c) * o
        torch.testing.assert_close(out[t], h)
    torch.testing.assert_close(c_end, c)


def test_inject_and_cell_index_semantics() -> None:
    """c_t is the chosen node's pre-activation; the inject replaces a node's output for its parent."""
    n = CellArchitecture.from_dict({
        "nodes": [{"combine": "add", "activation": "identity"}, {"combine": "elem_mult", "activation": "identity"},
                  {"combine": "add", "activation": "tanh"}],
        "inject": {"combine": "add", "activation": "relu", "index": 0}, "cell_index": 2})
    cell = build_cell(n, 2, 2)
    x = torch.randn(1, 3, 2)
    c0 = torch.randn(3, 2)
    h0 = torch.randn(3, 2)
    _out, (h, c) = cell(x, (h0, c0))
    xw = (x[0] @ cell.x_proj.weight.T + cell.x_proj.bias).view(3, 2, 2)
    hu = (h0 @ cell.h_proj.weight.T + cell.h_proj.bias).view(3, 2, 2)
    a0 = torch.relu(xw[:, 0] + hu[:, 0] + c0)
    a1 = xw[:, 1] * hu[:, 1]
    torch.testing.assert_close(c, a0 + a1)
    torch.testing.assert_close(h, torch.tanh(a0 + a1))


def test_lstm_like_tree_trains() -> None:
    require_shared(SHARED / "ptb" / "ptb.train.txt")
    data = load_ptb(SHARED, download=False, train_subset=2000, val_subset=100)
    torch.manual_seed(0)
    model = CellLanguageModel(lstm_like_cell(), data.vocab_size, 16, 16, dropout=0.0, tie_weights=True)
    stream = data.train[: 20 * 8].view(8, 20).t()  # 20 steps x 8 columns
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    losses = []
    for _ in range(15):
        logits, _ = model(stream[:-1])
        loss = F.cross_entropy(logits.reshape(-1, data.vocab_size), stream[1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


def test_language_model_shapes_params_and_lstm_baseline() -> None:
    torch.manual_seed(0)
    for tie in (False, True):
        model = CellLanguageModel(lstm_like_cell(), 50, 8, 8, tie_weights=tie)
        assert count_params(model) == lm_param_count(8, 50, 8, 8, tie_weights=tie)
    model = CellLanguageModel("lstm", 50, 6, 8, dropout=0.2)
    logits, state = model(torch.randint(0, 50, (4, 3)))
    assert logits.shape == (4, 3, 50) and len(state) == 2 and state[1][0].shape == (3, 8)


def test_bad_model_arguments() -> None:
    with pytest.raises(ValueError, match=r"tie_weights needs embedding_size == hidden_size, got embedding_size=8 "
                                         r"and hidden_size=16"):
        CellLanguageModel(lstm_like_cell(), 50, 8, 16, tie_weights=True)
    with pytest.raises(ValueError, match=r"cell must be a CellArchitecture or 'lstm', got 'gru'"):
        CellLanguageModel("gru", 50, 8, 8)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"dropout must be a number in \[0, 1\), got 1\.5"):
        CellLanguageModel("lstm", 50, 8, 8, dropout=1.5)
    with pytest.raises(ValueError, match=r"hidden_size must be an integer >= 1, got 0"):
        build_cell(lstm_like_cell(), 4, 0)
    with pytest.raises(TypeError, match=r"build_cell needs a CellArchitecture, got str"):
        build_cell("lstm", 4, 4)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"expected input T x B x 4, got \(3, 2, 5\)"):
        build_cell(lstm_like_cell(), 4, 4)(torch.zeros(3, 2, 5))
