"""ReinforceAgent's options (issue 14): presets, logit shaping, skip penalty, normalisation, PPO steps.

Each option is checked against an independent calculation where one exists (a from-scratch
reference of the shaped distribution, the exact policy gradient over a whole tiny space, the
KL and the running std by hand), changes behaviour, and resumes exactly from a checkpoint.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any

import numpy as np
import pytest
import torch
from agent_test_utils import actions_of, digits_env, reference_lstm_step, reference_rows, resumed_from, run_agent

from agents import ReinforceAgent, make_agent, reinforce
from agents.base import Episode
from agents.controller import SKIP_TOKEN, Controller
from agents.experiment.runner import parse_args, run_search
from agents.experiment.search import build_agent
from agents.reinforce import (
    ADVANTAGE_EPS,
    PRESETS,
    STUDY_KNOBS,
    ReinforceOptions,
    reinforce_loss,
    skip_kl_to_target,
)
from nas_env.spaces.base import TokenSpec
from nas_env.spaces.cnn import CNNSearchSpace

# One option set per feature; each must change what the agent does and resume exactly.
OPTIONS: dict[str, dict[str, Any]] = {
    "temperature": {"temperature": 2.0},
    "tanh": {"tanh_constant": 1.5, "op_tanh_reduce": 2.5},
    "skip_penalty": {"skip_penalty": 0.8, "skip_target": 0.4},
    "normalize": {"normalize_advantage": True},
    "ppo_clipped": {"ppo_epochs": 3, "clip_ratio": 0.2},
    "ppo_unclipped": {"ppo_epochs": 2},
    "unique": {"unique_children": True},
    "risk_seeking": {"top_fraction": 0.5},
    "queue": {"queue_size": 3, "queue_coef": 0.5},
}
SHAPING = {"temperature": 1.7, "tanh_constant": 1.5, "op_tanh_reduce": 2.5}
# REINFORCE alone (our default adds unique children and a priority queue): the base each option is checked on
PLAIN = {"unique_children": False, "queue_size": 0, "queue_coef": 0.0}


def tiny_specs() -> tuple[TokenSpec, ...]:
    """2 layers with a skip token: fh(2) fw(1) nf(2) | fh(2) fw(1) nf(2) skip(2) -> 32 architectures."""
    return CNNSearchSpace(num_layers=2, filter_heights=(1, 3), filter_widths=(3,), num_filters=(8, 16)).tokens()


def shaped_controller(seed: int = 0, num_actions: int | None = None, **shaping: float) -> Controller:
    ctrl = Controller(tiny_specs(), num_actions, hidden_size=4, num_layers=2, attention_size=3, init_range=0.5,
                      generator=torch.Generator().manual_seed(seed), **shaping)
    return ctrl.double()


def shaped_reference_log_prob(ctrl: Controller, actions: tuple[int, ...], temperature: float,
                              tanh_constant: float, op_tanh_reduce: float) -> torch.Tensor:
    """log P(actions) from the paper's equations plus ENAS's shaping, written without the controller's code."""
    p = dict(ctrl.named_parameters())
    specs = ctrl.token_specs
    rows = reference_rows(specs)
    h = [torch.zeros(ctrl.hidden_size, dtype=torch.float64) for _ in range(ctrl.num_lstm_layers)]
    c = [torch.zeros(ctrl.hidden_size, dtype=torch.float64) for _ in range(ctrl.num_lstm_layers)]
    last_non_skip = {s.layer: t for t, s in enumerate(specs) if s.name != SKIP_TOKEN}
    outputs: list[torch.Tensor] = []
    total = torch.zeros((), dtype=torch.float64)
    for t, s in enumerate(specs):
        x = reference_lstm_step(p, p["embedding.weight"][0 if t == 0 else rows[specs[t - 1].name] + actions[t - 1]],
                                h, c)
        outputs.append(x)
        if s.name == SKIP_TOKEN:  # the only skip bit of layer 2 asks about layer 1
            score = p["v.weight"] @ torch.tanh(p["w_prev.weight"] @ outputs[last_non_skip[1] + 1]
                                               + p["w_curr.weight"] @ x)
            logits = torch.stack([torch.zeros((), dtype=torch.float64), score[0]])
            bound = tanh_constant
        else:
            logits = p[f"heads.{s.name}.weight"] @ x + p[f"heads.{s.name}.bias"]
            bound = tanh_constant / op_tanh_reduce
        total = total + torch.log_softmax(bound * torch.tanh(logits / temperature), 0)[actions[t]]
    return total


def all_sequences(specs: tuple[TokenSpec, ...]) -> list[tuple[int, ...]]:
    return list(itertools.product(*[range(s.num_choices) for s in specs]))


def full_masks(specs: tuple[TokenSpec, ...], num_actions: int) -> np.ndarray:
    """Each step's mask: exactly the token's choices."""
    return np.stack([np.arange(num_actions) < s.num_choices for s in specs])


def small_digits_env() -> Any:
    """The instant digits env with one layer of 2 x 2 x 2 choices: 8 architectures."""
    return digits_env(num_layers=1, filter_heights=(1, 3), filter_widths=(1, 3), num_filters=(8, 16))


def digits_specs() -> tuple[tuple[TokenSpec, ...], int]:
    env = digits_env()
    return tuple(env.unwrapped.token_specs), int(env.action_space.n)


def episodes_of(actions: np.ndarray, masks: np.ndarray, rewards: list[float] | np.ndarray) -> list[Episode]:
    return [Episode(i, actions[i].copy(), masks.copy(), float(r), {}) for i, r in enumerate(rewards)]


def params(agent: ReinforceAgent) -> torch.Tensor:
    return torch.nn.utils.parameters_to_vector(agent.controller.parameters()).detach().clone()


def archs(children: list) -> list[str]:
    return [c.info["arch"] for c in children]


# --- presets -------------------------------------------------------------------------------------
def test_paper_preset_is_exactly_the_documented_values() -> None:
    agent = make_agent("reinforce", preset="paper", seed=3)
    config = agent.config()
    paper = {"children_per_update": 5, "lr": 0.0006, "baseline_decay": 0.95, "baseline_init": None,
             "entropy_coef": 0.0, "max_grad_norm": None, "temperature": 1.0, "tanh_constant": None,
             "op_tanh_reduce": 1.0, "skip_penalty": 0.0, "skip_target": 0.4, "normalize_advantage": False,
             "ppo_epochs": 1, "clip_ratio": None, "unique_children": False, "top_fraction": 1.0,
             "queue_size": 0, "queue_coef": 0.0, "controller_kwargs": {}}
    assert dataclasses.asdict(PRESETS["paper"]) == paper and set(STUDY_KNOBS) == set(paper)
    assert config["preset"] == "paper" and {k: config[k] for k in paper} == paper and config["seed"] == 3
    specs, num_actions = digits_specs()
    agent.prepare(specs, num_actions)  # the paper's controller: 2 x 35 LSTM, weights in [-0.08, 0.08]
    ctrl = agent.controller
    assert ctrl.hidden_size == 35 and ctrl.num_lstm_layers == 2
    assert max(float(p.detach().abs().max()) for p in ctrl.parameters()) <= 0.08
    assert ctrl.temperature == 1.0 and ctrl.tanh_constant is None
    # preset=None: our default, whatever ReinforceOptions' defaults say
    default = ReinforceAgent().config()
    assert default["preset"] is None and {k: default[k] for k in STUDY_KNOBS} == dataclasses.asdict(ReinforceOptions())


@pytest.mark.parametrize("knob,value", [("lr", 0.003), ("children_per_update", 8), ("baseline_decay", 0.9),
                                        ("entropy_coef", 0.01), ("temperature", 5.0), ("tanh_constant", 1.5),
                                        ("skip_penalty", 0.8), ("normalize_advantage", True), ("ppo_epochs", 4),
                                        ("clip_ratio", 0.2), ("max_grad_norm", 1.0),
                                        ("controller_kwargs", {"hidden_size": 64})])
def test_paper_preset_rejects_a_different_knob(knob: str, value: Any) -> None:
    with pytest.raises(ValueError, match=rf"preset='paper' fixes {knob}=.*got {knob}="):
        ReinforceAgent(preset="paper", **{knob: value})


def test_preset_accepts_its_own_values_and_rejects_unknown_names() -> None:
    agent = ReinforceAgent(preset="paper", lr=0.0006, children_per_update=5, seed=1, num_threads=None)
    assert agent.lr == 0.0006 and agent.num_threads is None  # device and num_threads are free
    with pytest.raises(ValueError, match=r"preset must be one of None, 'paper', got 'ppo'"):
        ReinforceAgent(preset="ppo")


def test_paper_preset_through_the_runner(tmp_path: Any) -> None:
    """`--agent-kwargs '{"preset": "paper"}'`: the agent, its checkpoint config, and a clash with -m."""
    args = parse_args(["--agent-kwargs", '{"preset": "paper"}', "--episodes", "10", "--logdir", str(tmp_path),
                       "--run-name", "paper", "--no-progress", "--env-kwargs", '{"evaluator": "synthetic"}'])
    assert build_agent(args).config()["preset"] == "paper"
    with pytest.raises(ValueError, match=r"preset='paper' fixes children_per_update=5, got children_per_update=8"):
        build_agent(parse_args(["--agent-kwargs", '{"preset": "paper"}', "--children-per-update", "8"]))
    folder = run_search(args)
    state = torch.load(folder / "checkpoints" / "agent.pt", weights_only=True)
    assert state["config"]["preset"] == "paper" and state["children_done"] == 10
    assert ReinforceAgent.load(folder / "checkpoints" / "agent.pt").config() == state["config"]


# --- logit shaping: exact at sampling and at update time -------------------------------------------
def test_shaped_forward_matches_the_reference_on_every_architecture() -> None:
    ctrl = shaped_controller(**SHAPING)
    seqs = all_sequences(ctrl.token_specs)
    ours, _ = ctrl.log_probs(torch.tensor(seqs))
    ref = torch.stack([shaped_reference_log_prob(ctrl, a, **SHAPING) for a in seqs])
    torch.testing.assert_close(ours.sum(1), ref, rtol=1e-10, atol=1e-10)
    assert torch.exp(ref).sum().item() == pytest.approx(1.0, abs=1e-12)
    plain = shaped_controller()  # the same weights unshaped: a different distribution
    assert not torch.allclose(plain.log_probs(torch.tensor(seqs))[0].sum(1), ref, atol=1e-3)


def test_shaped_step_path_matches_teacher_forced_forward() -> None:
    ctrl = shaped_controller(num_actions=3, **SHAPING)
    gen = torch.Generator().manual_seed(0)
    actions = ctrl.sample(16, gen)
    state, prev, logits = ctrl.initial_state(16), None, []
    with torch.no_grad():
        for t in range(ctrl.num_steps):
            out, state = ctrl.step(state, prev)
            logits.append(out)
            prev = actions[:, t]
        torch.testing.assert_close(torch.stack(logits, 1), ctrl(actions), rtol=1e-12, atol=1e-12)
    finite = torch.stack(logits, 1)[torch.isfinite(torch.stack(logits, 1))]
    assert finite.abs().max() <= SHAPING["tanh_constant"]  # squashed into [-C, C]


def test_shaped_loss_gradient_is_the_exact_policy_gradient() -> None:
    """Weighted by P(a) over all 32 architectures, the shaped REINFORCE gradient is -grad E[R]."""
    ctrl = shaped_controller(seed=2, num_actions=3, **SHAPING)
    seqs = all_sequences(ctrl.token_specs)
    rewards = torch.tensor(np.random.default_rng(1).uniform(0, 1, len(seqs)))
    weights = list(ctrl.parameters())

    def expected_reward() -> torch.Tensor:
        return sum(torch.exp(shaped_reference_log_prob(ctrl, a, **SHAPING)) * r for a, r in zip(seqs, rewards,
                                                                                                 strict=True))

    exact = torch.autograd.grad(expected_reward(), weights)
    with torch.no_grad():
        probs = torch.exp(torch.stack([shaped_reference_log_prob(ctrl, a, **SHAPING) for a in seqs]))
    baseline = 0.3
    weighted = baseline + len(seqs) * probs * (rewards - baseline)  # the sample average becomes the expectation
    grads = torch.autograd.grad(reinforce_loss(ctrl, torch.tensor(seqs), weighted, baseline).loss, weights)
    for g, e in zip(grads, exact, strict=True):
        torch.testing.assert_close(g, -e, rtol=1e-8, atol=1e-11)


def test_agent_samples_from_the_shaped_distribution_it_learns_with() -> None:
    """The agent's sampling (Gumbel-max on step logits) follows the teacher-forced shaped softmax."""
    specs, num_actions = digits_specs()
    agent = ReinforceAgent(seed=0, temperature=0.25, tanh_constant=2.0, op_tanh_reduce=1.0,
                           controller_kwargs={"init_range": 0.5})
    agent.prepare(specs, num_actions)
    actions = agent.sample_actions(full_masks(specs, num_actions), 20_000)
    with torch.no_grad():
        step0 = torch.softmax(agent.controller(torch.from_numpy(actions[:1]))[0, 0].double(), 0)
    freq = np.bincount(actions[:, 0], minlength=num_actions) / len(actions)
    np.testing.assert_allclose(freq, step0.numpy(), atol=0.012)
    assert step0.max() > 0.5  # far from uniform: a low temperature with a tanh bound of 2 made a difference


# --- skip penalty --------------------------------------------------------------------------------
def test_skip_kl_is_the_bernoulli_kl_of_the_valid_skip_tokens() -> None:
    ctrl = shaped_controller(seed=4)
    seqs = torch.tensor(all_sequences(ctrl.token_specs)[:6])
    logp_all = torch.log_softmax(ctrl(seqs), -1)
    skip_t = [t for t, s in enumerate(ctrl.token_specs) if s.name == SKIP_TOKEN]
    assert ctrl.skip_steps.tolist() == skip_t
    p = logp_all[:, skip_t, 1].exp()
    target = 0.3
    by_hand = p * torch.log(p / target) + (1 - p) * torch.log((1 - p) / (1 - target))
    torch.testing.assert_close(skip_kl_to_target(logp_all, ctrl.skip_steps, None, target), by_hand.mean())
    # a skip token forced by the mask, or not taken, is left out
    masked = logp_all.clone()
    masked[0, skip_t[0], 0] = float("-inf")
    taken = torch.ones(6, ctrl.num_steps, dtype=torch.bool)
    taken[1, skip_t[0]] = False
    kl = skip_kl_to_target(masked, ctrl.skip_steps, taken, target)
    torch.testing.assert_close(kl, by_hand[2:].mean())
    assert torch.isfinite(kl)


@pytest.mark.parametrize("target", [0.1, 0.85])
def test_skip_penalty_pulls_the_skip_probability_to_the_target(target: float) -> None:
    """With no reward signal (all rewards equal) the KL term alone moves p(skip); without it nothing moves."""
    specs, num_actions = digits_specs()
    masks = full_masks(specs, num_actions)
    skip_t = [t for t, s in enumerate(specs) if s.name == SKIP_TOKEN]

    def skip_prob(agent: ReinforceAgent, actions: np.ndarray) -> float:
        with torch.no_grad():
            logp = torch.log_softmax(agent.controller(torch.from_numpy(actions)), -1)
        return float(logp[:, skip_t, 1].exp().mean())

    # no entropy bonus: the KL term is the only force (the default's bonus would move weights on its own)
    penalised = ReinforceAgent(seed=0, children_per_update=8, lr=0.02, skip_penalty=1.0, skip_target=target, **PLAIN,
                               entropy_coef=0.0)
    control = ReinforceAgent(seed=0, children_per_update=8, lr=0.02, entropy_coef=0.0, **PLAIN)
    for agent in (penalised, control):
        agent.prepare(specs, num_actions)
    start, before = skip_prob(penalised, penalised.sample_actions(masks, 64)), params(control)
    assert abs(start - 0.5) < 0.05
    for _ in range(60):
        for agent in (penalised, control):
            agent.learn(episodes_of(agent.sample_actions(masks, 8), masks, [0.25] * 8))
    assert abs(skip_prob(penalised, penalised.sample_actions(masks, 256)) - target) < 0.03
    assert torch.equal(params(control), before)  # zero advantages and no penalty: not a single weight moved


# --- advantage normalisation ---------------------------------------------------------------------
def test_normalized_advantages_follow_the_running_std() -> None:
    agent = ReinforceAgent(seed=0, children_per_update=4, baseline_decay=0.5, normalize_advantage=True)
    children, updates = run_agent(agent, digits_env(), 12)
    r = np.array([c.reward for c in children])
    b, v = r[:4].mean(), np.mean((r[:4] - r[:4].mean()) ** 2)  # the first update: its own mean and spread
    for k, u in enumerate(updates):
        batch = r[4 * k: 4 * k + 4]
        assert u.baseline == pytest.approx(b)
        assert u.advantage_mean == pytest.approx((batch.mean() - b) / (math.sqrt(v) + ADVANTAGE_EPS))
        for x in batch:  # exponentially weighted variance, updated with the baseline after the advantages
            v = 0.5 * (v + 0.5 * (x - b) ** 2)
            b = 0.5 * b + 0.5 * x
    assert agent.baseline == pytest.approx(b) and agent.reward_var == pytest.approx(v)
    assert isinstance(agent.state_dict()["reward_var"], float)


def test_normalized_gradient_is_the_plain_one_over_the_std() -> None:
    """Through policy_gradient (the Ray replicas' entry point): the gradient is left in .grad, scaled by 1/s."""
    specs, num_actions = digits_specs()
    masks = full_masks(specs, num_actions)
    # no entropy bonus: only the advantage term is scaled by 1/s
    plain = ReinforceAgent(seed=5, entropy_coef=0.0, **PLAIN)
    normed = ReinforceAgent(seed=5, normalize_advantage=True, entropy_coef=0.0, **PLAIN)
    for agent in (plain, normed):
        agent.prepare(specs, num_actions)
    rewards = np.array([0.2, 0.9, 0.4, 0.6, 0.1])
    episodes = episodes_of(plain.sample_actions(masks, 5), masks, rewards)
    plain.policy_gradient(episodes)
    normed.policy_gradient(episodes)
    scale = rewards.std() + ADVANTAGE_EPS  # the first update: b = the mean, v = the mean squared deviation
    for p, q in zip(plain.controller.parameters(), normed.controller.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad / scale, rtol=1e-5, atol=1e-9)


# --- PPO steps -----------------------------------------------------------------------------------
def test_one_epoch_is_reinforce_exactly() -> None:
    plain = ReinforceAgent(seed=7, children_per_update=4)
    ppo = ReinforceAgent(seed=7, children_per_update=4, ppo_epochs=1, clip_ratio=0.2)
    a, ua = run_agent(plain, digits_env(), 16)
    b, ub = run_agent(ppo, digits_env(), 16)
    assert archs(a) == archs(b) and [u.policy_loss for u in ua] == [u.policy_loss for u in ub]
    assert torch.equal(params(plain), params(ppo))


def test_surrogate_at_ratio_one_has_the_reinforce_gradient_and_the_clip_binds() -> None:
    ctrl = shaped_controller(seed=3)
    seqs = torch.tensor(all_sequences(ctrl.token_specs)[::8])  # 4 children
    rewards = torch.tensor([0.9, 0.1, 0.7, 0.3], dtype=torch.float64)
    weights = list(ctrl.parameters())
    plain = reinforce_loss(ctrl, seqs, rewards, 0.5)
    old = plain.log_probs.detach().sum(1)
    g_plain = torch.autograd.grad(plain.loss, weights)
    ppo = reinforce_loss(ctrl, seqs, rewards, 0.5, old_log_probs=old, clip_ratio=0.2)
    torch.testing.assert_close(ppo.ratios, torch.ones(4, dtype=torch.float64))
    for g, h in zip(g_plain, torch.autograd.grad(ppo.loss, weights), strict=True):
        torch.testing.assert_close(h, g, rtol=1e-12, atol=1e-15)
    # ratio 2 for every child: the clip stops the gradient where A > 0 (children 0 and 2) and keeps r*A where A < 0
    shifted = reinforce_loss(ctrl, seqs, rewards, 0.5, old_log_probs=old - math.log(2.0), clip_ratio=0.2)
    torch.testing.assert_close(shifted.ratios, torch.full((4,), 2.0, dtype=torch.float64))
    only_negative = reinforce_loss(ctrl, seqs[[1, 3]], rewards[[1, 3]], 0.5, old_log_probs=old[[1, 3]] - math.log(2.0))
    g_shifted = torch.autograd.grad(shifted.loss, weights)
    g_negative = torch.autograd.grad(only_negative.loss, weights)
    for g, h in zip(g_shifted, g_negative, strict=True):
        torch.testing.assert_close(g, h / 2, rtol=1e-10, atol=1e-14)  # 1/m with m = 4 vs 2


def test_several_epochs_take_several_steps_and_stay_local() -> None:
    specs, num_actions = digits_specs()
    masks = full_masks(specs, num_actions)
    # lr 0.05: steps large enough for the clip to bind
    # no entropy bonus: the hand-made steps below are the clipped surrogate alone
    one = ReinforceAgent(seed=1, lr=0.05, entropy_coef=0.0, **PLAIN)
    three = ReinforceAgent(seed=1, lr=0.05, ppo_epochs=3, clip_ratio=0.2, entropy_coef=0.0, **PLAIN)
    for agent in (one, three):
        agent.prepare(specs, num_actions)
    rewards = [0.2, 0.9, 0.4, 0.6, 0.1]
    episodes = episodes_of(one.sample_actions(masks, 5), masks, rewards)
    actions, mask_t = torch.from_numpy(np.stack([e.actions for e in episodes])), torch.from_numpy(masks)[None]
    with torch.no_grad():
        old = one.controller.log_probs(actions, mask_t)[0].sum(1)  # the sampling policy's episode log-probs
    s1, s3 = one.learn(episodes), three.learn(episodes)
    assert s1.policy_loss == s3.policy_loss and s1.grad_norm == s3.grad_norm  # stats: the first (REINFORCE) step
    assert float(three.optimizer.state_dict()["state"][0]["step"]) == 3
    assert not torch.equal(params(one), params(three))
    # steps 2 and 3 by hand on `one`: the clipped surrogate against the sampling policy, advantages R - mean(R)
    clipped = []
    for _ in range(2):
        out = reinforce_loss(one.controller, actions, torch.tensor(rewards, dtype=torch.float32),
                             float(np.mean(rewards)), mask_t.expand(5, -1, -1), old_log_probs=old, clip_ratio=0.2)
        clipped.append(bool(((out.ratios - 1).abs() > 0.2).any()))
        one.controller.zero_grad()
        out.loss.backward()
        one.optimizer.step()
    assert any(clipped)
    torch.testing.assert_close(params(one), params(three), rtol=1e-6, atol=1e-8)
    with pytest.raises(ValueError, match=r"ppo_epochs=3: .*policy_gradient \(the Ray backend\)"):
        three.policy_gradient(episodes)
    from agents.experiment.distributed.replica import make_agent as replica_agent

    with pytest.raises(ValueError, match=r"not used by the Ray backend"):
        replica_agent(0, 2, {"ppo_epochs": 3})


# --- every option: changes behaviour, resumes exactly ----------------------------------------------
@pytest.mark.parametrize("option", list(OPTIONS))
def test_option_changes_behaviour_and_resumes_exactly(option: str, tmp_path: Any) -> None:
    kwargs = {"seed": 11, "children_per_update": 4, **PLAIN, **OPTIONS[option]}
    # unique children: a space of 8 architectures, where 24 children must repeat some
    make_env = small_digits_env if option == "unique" else digits_env
    full_agent = ReinforceAgent(**kwargs)
    full, full_updates = run_agent(full_agent, make_env(), 24)
    plain_agent = ReinforceAgent(seed=11, children_per_update=4, **PLAIN)
    run_agent(plain_agent, make_env(), 24)
    assert not torch.equal(params(full_agent), params(plain_agent)), option

    resumed = resumed_from(ReinforceAgent(**kwargs), make_env(), 16, 12, tmp_path / "agent.pt")  # after update 3
    assert resumed.config() == full_agent.config() and resumed.children_done == 12
    rest, rest_updates = run_agent(resumed, make_env(), 24)
    assert archs(rest) == archs(full[12:]) and [c.reward for c in rest] == [c.reward for c in full[12:]]
    assert [u.policy_loss for u in rest_updates] == [u.policy_loss for u in full_updates[3:]]
    assert torch.equal(params(resumed), params(full_agent))
    if option == "normalize":
        assert resumed.reward_var == full_agent.reward_var
    if option == "unique":
        assert resumed.drawn == full_agent.drawn
    if option == "queue":
        assert [tuple(ep.actions) for ep in resumed.queue] == [tuple(ep.actions) for ep in full_agent.queue]


# --- unique children, risk-seeking, priority queue ------------------------------------------------
def test_unique_children_draws_every_architecture_once_before_any_repeat() -> None:
    env = small_digits_env()
    assert len(all_sequences(env.unwrapped.token_specs)) == 8
    plain, _ = run_agent(ReinforceAgent(seed=0, children_per_update=4, lr=0.3, **PLAIN), env, 8)
    assert len(set(archs(plain))) < 8  # without the option, repeats come early in a space of 8
    agent = ReinforceAgent(seed=0, children_per_update=4, lr=0.3, unique_children=True)
    unique, _ = run_agent(agent, env, 12)
    assert len(set(archs(unique[:8]))) == 8 and set(archs(unique[8:])) <= set(archs(unique[:8]))
    assert agent.drawn == {tuple(actions_of(env, c)) for c in unique}


def test_unique_children_counts_only_prefixes_that_can_be_used_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """Prefixes with more completions than TRACKED_COMPLETIONS are not counted (memory on 150-token spaces)."""
    monkeypatch.setattr(reinforce, "TRACKED_COMPLETIONS", 2)  # of the 3 tokens, only the last two's prefixes
    env = small_digits_env()
    agent = ReinforceAgent(seed=0, children_per_update=4, lr=0.3, unique_children=True)
    children, _ = run_agent(agent, env, 8)
    assert {len(key) // 4 for key in agent._prefix_counts} == {2, 3}  # int32 keys of 2 and 3 actions
    drawn = [tuple(actions_of(env, c)) for c in children]
    for k, a in enumerate(drawn):  # a repeat only once both completions of its two-token prefix were drawn
        if a in drawn[:k]:
            assert {b[-1] for b in drawn[:k] if b[:-1] == a[:-1]} == {0, 1}


def test_unique_children_learns_under_the_masks_it_sampled_with() -> None:
    """The narrowed masks are what the episode records, so the gradient is that of the draw."""
    agent = ReinforceAgent(seed=1, children_per_update=8, unique_children=True)
    seen: list[Episode] = []
    update = agent._reinforce_update
    agent._reinforce_update = lambda episodes: (seen.extend(episodes), update(episodes))[1]  # type: ignore[method-assign]
    run_agent(agent, small_digits_env(), 8)
    choices = [int(ep.masks[t].sum()) for ep in seen for t in range(3)]
    assert choices[:3] == [2, 2, 2] and choices[-3:] == [1, 1, 1]  # the last of 8 had one way left at each token


def test_risk_seeking_learns_only_from_the_top_children() -> None:
    specs, num_actions = tiny_specs(), 2
    masks = full_masks(specs, num_actions)
    actions = np.array(all_sequences(specs)[:4])
    rewards = [0.1, 0.9, 0.5, 0.7]
    agent = ReinforceAgent(seed=0, children_per_update=4, top_fraction=0.5, **PLAIN)
    agent.prepare(specs, num_actions)
    before = params(agent)
    stats = agent.policy_gradient(episodes_of(actions, masks, rewards))
    assert stats.baseline == pytest.approx(np.quantile(rewards, 0.5))
    top = ReinforceAgent(seed=0, children_per_update=2)  # plain REINFORCE on the top two, that baseline
    top.prepare(specs, num_actions)
    out = reinforce_loss(top.controller, torch.from_numpy(actions[[1, 3]]), torch.tensor([0.9, 0.7]),
                         stats.baseline, torch.from_numpy(np.stack([masks, masks])), None, top.entropy_coef)
    out.loss.backward()
    for a, b in zip(agent.controller.parameters(), top.controller.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad)
    assert torch.equal(params(agent), before)  # policy_gradient leaves the step to the caller


def test_the_queue_keeps_the_best_distinct_architectures_and_raises_their_likelihood() -> None:
    specs, num_actions = tiny_specs(), 2
    masks = full_masks(specs, num_actions)
    seqs = np.array(all_sequences(specs)[:6])
    agent = ReinforceAgent(seed=0, children_per_update=6, queue_size=2, queue_coef=5.0, lr=0.05)
    agent.prepare(specs, num_actions)
    best = [tuple(seqs[1]), tuple(seqs[4])]
    logp_before = agent.controller.log_probs(torch.from_numpy(seqs[[1, 4]]))[0].sum()
    for _ in range(5):  # the same children again: a repeat keeps its best reward, the queue stays distinct
        agent.learn(episodes_of(seqs, masks, [0.1, 0.9, 0.2, 0.3, 0.8, 0.4]))
    assert [tuple(ep.actions) for ep in agent.queue] == best and [ep.reward for ep in agent.queue] == [0.9, 0.8]
    assert agent.controller.log_probs(torch.from_numpy(seqs[[1, 4]]))[0].sum() > logp_before + 1.0


# --- bad values ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name,value,match", [
    ("temperature", 0.0, r"temperature must be a finite number > 0.*got 0.0"),
    ("temperature", float("inf"), r"temperature must be"),
    ("tanh_constant", -1.5, r"tanh_constant must be None .* got -1.5"),
    ("op_tanh_reduce", 0, r"op_tanh_reduce must be a finite number > 0.*got 0"),
    ("skip_penalty", -0.1, r"skip_penalty must be a finite number >= 0.*got -0.1"),
    ("skip_target", 1.0, r"skip_target must be a number in \(0, 1\), got 1.0"),
    ("skip_target", 0.0, r"skip_target must be"),
    ("normalize_advantage", 1, r"normalize_advantage must be true or false, got 1"),
    ("ppo_epochs", 0, r"ppo_epochs must be an integer >= 1, got 0"),
    ("ppo_epochs", 2.0, r"ppo_epochs must be an integer >= 1, got 2.0"),
    ("ppo_epochs", True, r"ppo_epochs must be an integer >= 1, got True"),
    ("clip_ratio", 1.5, r"clip_ratio must be None .* got 1.5"),
    ("clip_ratio", 0.0, r"clip_ratio must be"),
    ("lr", 0.0, r"lr must be a finite number > 0, got 0.0"),
    ("lr", "0.1", r"lr must be a finite number > 0, got '0.1'"),
    ("entropy_coef", -1.0, r"entropy_coef must be a finite number >= 0, got -1.0"),
    ("max_grad_norm", 0.0, r"max_grad_norm must be None .* got 0.0"),
    ("baseline_decay", 1.0, r"baseline_decay must be a number in \[0, 1\), got 1.0"),
    ("controller_kwargs", {"temperature": 2.0}, r"controller_kwargs may not set \['temperature'\]"),
    ("preset", ["paper"], r"preset must be one of None, 'paper', got \['paper'\]"),
    ("unique_children", "yes", r"unique_children must be true or false, got 'yes'"),
    ("top_fraction", 0.0, r"top_fraction must be a number in \(0, 1\], got 0.0"),
    ("queue_size", -1, r"queue_size must be an integer >= 0, got -1"),
    ("queue_coef", -0.5, r"queue_coef must be a finite number >= 0, got -0.5"),
])
def test_bad_values_are_rejected(name: str, value: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ReinforceAgent(**{name: value})
