"""The controller's distribution and the REINFORCE gradient, checked against independent calculations.

A from-scratch reference (plain tensor ops, the paper's equations and the documented
anchor rule) recomputes the controller's log-probabilities; the REINFORCE gradient is
compared with a closed form, with the exact policy gradient of the expected reward
(enumerating every architecture of a tiny space) and with finite differences.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from agent_test_utils import reference_lstm_step, reference_rows

from agents.controller import SKIP_TOKEN, Controller, apply_action_mask, sample_from_logits
from agents.reinforce import reinforce_loss
from nas_env.spaces.base import TokenSpec
from nas_env.spaces.cnn import CNNSearchSpace


def tiny_specs() -> tuple[TokenSpec, ...]:
    """2 layers with a skip token: fh(2) fw(1) nf(2) | fh(2) fw(1) nf(2) skip(2) -> 32 architectures."""
    return CNNSearchSpace(num_layers=2, filter_heights=(1, 3), filter_widths=(3,), num_filters=(8, 16)).tokens()


def make_controller(specs: tuple[TokenSpec, ...], num_actions: int | None = None, seed: int = 0) -> Controller:
    # init_range 0.5: far from uniform, so the checks are not trivially satisfied
    ctrl = Controller(specs, num_actions, hidden_size=4, num_layers=2, attention_size=3, init_range=0.5,
                      generator=torch.Generator().manual_seed(seed))
    return ctrl.double()


def reference_log_prob(ctrl: Controller, actions: tuple[int, ...]) -> torch.Tensor:
    """log P(actions), written from the paper's equations, not from the controller's code."""
    p = dict(ctrl.named_parameters())
    specs = ctrl.token_specs
    rows = reference_rows(specs)
    layers = ctrl.num_lstm_layers
    h = [torch.zeros(ctrl.hidden_size, dtype=torch.float64) for _ in range(layers)]
    c = [torch.zeros(ctrl.hidden_size, dtype=torch.float64) for _ in range(layers)]
    last_non_skip: dict[int, int] = {}
    for t, s in enumerate(specs):
        if s.name != SKIP_TOKEN:
            last_non_skip[s.layer] = t
    outputs: list[torch.Tensor] = []
    total = torch.zeros((), dtype=torch.float64)
    skips_seen: dict[int, int] = {}
    for t, s in enumerate(specs):
        x = reference_lstm_step(p, p["embedding.weight"][0 if t == 0 else rows[specs[t - 1].name] + actions[t - 1]],
                                h, c)
        outputs.append(x)
        if s.name == SKIP_TOKEN:
            j = skips_seen.get(s.layer, 0) + 1  # the k-th skip bit of layer i asks about layer k (1-based)
            skips_seen[s.layer] = j
            h_j = outputs[last_non_skip[j] + 1]  # layer j's anchor: the output after its last non-skip token
            score = p["v.weight"] @ torch.tanh(p["w_prev.weight"] @ h_j + p["w_curr.weight"] @ x)
            prob_yes = torch.sigmoid(score[0])
            total = total + torch.log(prob_yes if actions[t] == 1 else 1 - prob_yes)
        else:
            logits = p[f"heads.{s.name}.weight"] @ x + p[f"heads.{s.name}.bias"]
            total = total + torch.log_softmax(logits, 0)[actions[t]]
    return total


def all_sequences(specs: tuple[TokenSpec, ...]) -> list[tuple[int, ...]]:
    return list(itertools.product(*[range(s.num_choices) for s in specs]))


def test_forward_matches_the_reference_on_every_architecture() -> None:
    specs = tiny_specs()
    ctrl = make_controller(specs)
    seqs = all_sequences(specs)
    actions = torch.tensor(seqs)
    ours, _ = ctrl.log_probs(actions)
    ref = torch.stack([reference_log_prob(ctrl, a) for a in seqs])
    torch.testing.assert_close(ours.sum(1), ref, rtol=1e-10, atol=1e-10)
    assert torch.exp(ref).sum().item() == pytest.approx(1.0, abs=1e-12)  # a distribution over the 32 children


def test_step_path_matches_teacher_forced_forward() -> None:
    """Sampling (one cell at a time, with lockstep state) and training (fused LSTM) see the same logits."""
    specs = CNNSearchSpace(num_layers=4, filter_heights=(1, 3, 5), num_filters=(8, 16)).tokens()
    ctrl = Controller(specs, 4, generator=torch.Generator().manual_seed(3))
    gen = torch.Generator().manual_seed(0)
    state, prev, step_logits, actions = ctrl.initial_state(6), None, [], []
    with torch.no_grad():
        for _ in range(ctrl.num_steps):
            logits, state = ctrl.step(state, prev)
            prev = sample_from_logits(logits, gen)
            step_logits.append(logits)
            actions.append(prev)
        forward = ctrl(torch.stack(actions, 1))
    torch.testing.assert_close(torch.stack(step_logits, 1), forward, rtol=1e-5, atol=1e-6)
    # -inf exactly beyond each token's choices
    for t, s in enumerate(specs):
        assert torch.isinf(forward[:, t, s.num_choices:]).all() and torch.isfinite(forward[:, t, :s.num_choices]).all()


def test_gradient_of_one_token_has_the_closed_form() -> None:
    """One softmax token: d log p(a) / d bias = onehot(a) - p, so the loss gradient is known by hand."""
    specs = (TokenSpec("filter_height", (1, 3, 5, 7), 1), TokenSpec("num_filters", (24, 36, 48), 1))
    ctrl = make_controller(specs)
    actions = torch.tensor([[0, 1], [2, 2], [2, 0], [3, 1]])
    rewards = torch.tensor([0.9, 0.1, 0.5, 0.7], dtype=torch.float64)
    baseline = 0.4
    reinforce_loss(ctrl, actions, rewards, baseline).loss.backward()
    with torch.no_grad():  # step 0's distribution does not depend on any action: the same p for every child
        logits0, _ = ctrl.step(ctrl.initial_state(1), None)
        p0 = torch.softmax(logits0[0], 0)
    onehot = torch.nn.functional.one_hot(actions[:, 0], 4).double()
    expected = -((rewards - baseline)[:, None] * (onehot - p0)).mean(0)
    torch.testing.assert_close(ctrl.heads["filter_height"].bias.grad, expected, rtol=1e-10, atol=1e-12)


def test_loss_gradient_is_the_exact_policy_gradient() -> None:
    """Weighted by P(a) over all 32 architectures, the REINFORCE loss gradient is -grad E[R]."""
    specs = tiny_specs()
    ctrl = make_controller(specs, num_actions=3)  # logits padded beyond the heads, as in a larger action space
    seqs = all_sequences(specs)
    rewards = torch.tensor(np.random.default_rng(0).uniform(0, 1, len(seqs)))
    params = list(ctrl.parameters())

    def expected_reward() -> torch.Tensor:
        return sum(torch.exp(reference_log_prob(ctrl, a)) * r for a, r in zip(seqs, rewards, strict=True))

    grad_j = torch.autograd.grad(expected_reward(), params)

    with torch.no_grad():
        probs = torch.exp(torch.stack([reference_log_prob(ctrl, a) for a in seqs]))
    baseline, m = 0.3, len(seqs)
    # (R'_k - b) = m * P_k * (R_k - b) turns the sample average into the exact expectation
    weighted = baseline + m * probs * (rewards - baseline)
    loss = reinforce_loss(ctrl, torch.tensor(seqs), weighted, baseline).loss
    grads = torch.autograd.grad(loss, params)
    for g, gj in zip(grads, grad_j, strict=True):
        torch.testing.assert_close(g, -gj, rtol=1e-8, atol=1e-11)

    # and the reference's own autograd against central finite differences, along random directions
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        direction = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params]
        eps = 1e-6
        with torch.no_grad():
            for p, d in zip(params, direction, strict=True):
                p.add_(eps * d)
            plus = expected_reward()
            for p, d in zip(params, direction, strict=True):
                p.sub_(2 * eps * d)
            minus = expected_reward()
            for p, d in zip(params, direction, strict=True):
                p.add_(eps * d)
        numeric = (plus - minus) / (2 * eps)
        analytic = sum((gj * d).sum() for gj, d in zip(grad_j, direction, strict=True))
        assert float(numeric) == pytest.approx(float(analytic), rel=1e-5, abs=1e-9)


def test_sample_average_gradient_matches_finite_differences() -> None:
    """-(1/m) sum_k (R_k - b) grad log P(a_k), with grad log P by finite differences of the reference."""
    specs = tiny_specs()
    ctrl = make_controller(specs, seed=5)
    seqs = [(0, 0, 1, 1, 0, 0, 1), (1, 0, 0, 0, 0, 1, 0), (1, 0, 1, 1, 0, 1, 1)]
    rewards = torch.tensor([0.8, 0.2, 0.55], dtype=torch.float64)
    baseline = 0.5
    loss = reinforce_loss(ctrl, torch.tensor(seqs), rewards, baseline).loss
    w_curr = ctrl.w_curr.weight  # the attention's own weights: only skip tokens reach them
    head = ctrl.heads["num_filters"].weight
    grads = torch.autograd.grad(loss, [w_curr, head])

    def objective() -> torch.Tensor:
        return -sum((r - baseline) * reference_log_prob(ctrl, a) for a, r in zip(seqs, rewards, strict=True)) / 3

    eps = 1e-6
    for param, grad in zip([w_curr, head], grads, strict=True):
        assert grad.abs().sum() > 0
        for idx in itertools.product(*[range(n) for n in param.shape]):
            with torch.no_grad():
                param[idx] += eps
                plus = objective()
                param[idx] -= 2 * eps
                minus = objective()
                param[idx] += eps
            assert float(grad[idx]) == pytest.approx(float((plus - minus) / (2 * eps)), rel=1e-5, abs=1e-9)


def test_masks_zero_invalid_actions_and_keep_gradients_finite() -> None:
    specs = tiny_specs()
    ctrl = make_controller(specs, num_actions=4)
    masks = torch.ones(2, len(specs), 4, dtype=torch.bool)
    masks[:, 0, 1] = False  # only action 0 valid at step 0
    actions = torch.zeros(2, len(specs), dtype=torch.long)
    logits = apply_action_mask(ctrl(actions), masks)
    assert torch.isinf(logits[:, 0, 1:]).all()
    out = reinforce_loss(ctrl, actions, torch.tensor([1.0, 0.0]), 0.2, masks, entropy_coef=0.1)
    assert torch.allclose(out.log_probs[:, 0], torch.zeros(2, dtype=torch.float64))  # the only valid action
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in ctrl.parameters() if p.grad is not None)
    assert torch.isfinite(out.entropies).all() and out.entropies[:, 0].abs().max() < 1e-12


def test_gumbel_sampling_follows_the_softmax_and_never_picks_masked_actions() -> None:
    logits = torch.tensor([[0.5, -1.0, 2.0, float("-inf")]]).expand(40_000, 4)
    draws = sample_from_logits(logits, torch.Generator().manual_seed(0))
    freq = torch.bincount(draws, minlength=4).double() / len(draws)
    expected = torch.softmax(logits[0].double(), 0)
    assert freq[3] == 0
    torch.testing.assert_close(freq, expected, atol=0.01, rtol=0)


def test_construction_uses_no_global_rng_and_initialises_in_range() -> None:
    specs = tiny_specs()
    before = torch.random.get_rng_state()
    a = Controller(specs, generator=torch.Generator().manual_seed(7))
    b = Controller(specs, generator=torch.Generator().manual_seed(7))
    assert torch.equal(torch.random.get_rng_state(), before)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb) and pa.abs().max() <= 0.08
    assert a.hidden_size == 35 and a.num_lstm_layers == 2
