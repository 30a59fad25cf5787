"""REINFORCE with an exponential-moving-average baseline, the paper's controller training (section 3.2).

The gradient of one update over m children is exactly

    (1/m) * sum_k sum_t grad log P(a_t^k | a_<t^k) * (R_k - b)

where b is the baseline *before* this update: advantages are computed first, then the
EMA takes in this update's rewards (one child at a time, in index order), so a child
never serves as its own baseline (except in the very first update, whose baseline is its
own mean reward unless ``baseline_init`` is given). Log-probabilities are recomputed at update time by
re-running the controller on the stored actions under the stored masks (teacher
forcing): sampling needs no autograd graph, and :func:`reinforce_loss` can be checked
against an independent gradient.

Our default differs from the paper's in two numbers: lr 0.01 (Adam) and an entropy bonus of 0.02.
On NASRL-Bench-Digits (real trained children, 10 + 20 + 20 seeds, ``docs/controller_study.md``) the
paper's 0.0006 does no better than random search within 200 children, while 0.01 reaches a regret
of 0.009 (the table's second-best architecture) within 50-100 children. Without an entropy bonus the
policy then collapses onto that architecture (46-65 distinct children in 1,000) and rarely meets
the best one, a token away; 0.02 keeps it sampling the neighbourhood (59-108 distinct; 15 of 20 runs
met the best one), so the median run reports the optimum by 500 children. The other knobs of the
study (m, baseline decay, ENAS's temperature and tanh, the skip KL, advantage normalisation, PPO
steps) changed nothing measurable at lr 0.01 and stay off.

Earlier sweeps on the digits space with the synthetic evaluator (3 layers, 12 tokens; mean reward
of the last 200 children after 3,000-4,000, lr 0.0006, 3-6 seeds; "noisy": the evaluator's score
plus N(0, 0.1) noise, as a stand-in for noisy child accuracies):

* ``children_per_update`` m = 5. At a fixed lr, fewer children per update means more updates
  per child: noise-free 0.88 (m=4) / 0.85 (m=5) / 0.80 (m=8); noisy 0.73 / 0.69 / 0.59.
  m = 5 keeps a little more averaging than 4 for noisy accuracies. (With a 5x larger lr,
  m = 5 stalled on 3 of 8 seeds while m = 8 did not: raise m with the lr.)
* EMA decay 0.95 per child (a memory of about 20 children): noise-free, 0.8 to 0.99 all
  reach 0.80-0.81; noisy (m=5, 6 seeds) 0.69 (0.95), 0.68 (0.9), 0.65 (0.99, one seed stalled
  at 0.44). Longer memories average noisy accuracies; shorter ones track the improving policy.
* ``entropy_coef``: 0.001 and 0.01 changed nothing beyond seed noise here (noisy, m=8: 0.61 and
  0.60 vs 0.59); the table study above, at lr 0.01, is what set 0.02.

Every number lives in :data:`DEFAULTS` ("our default", ``preset=None``) and :data:`PRESETS`.
``preset="paper"`` is Zoph & Le's controller training exactly: Adam at lr 0.0006, an EMA
baseline, no entropy bonus, no logit shaping, no skip penalty, no normalisation, one plain
REINFORCE step per batch, no gradient clipping, the paper's controller (2 x 35 LSTM, init
+-0.08). Two values are this repo's reading, not printed in the paper: m = 5 children per update
(the paper's distributed runs had m = 8 per replica across 100 asynchronous replicas; 5 is what
the repo has called the paper's setting since issue 4) and the baseline decay 0.95 (the paper
gives none). A preset fixes all of :data:`STUDY_KNOBS`: passing one with a different value
is a ValueError naming the clash (the same value is accepted, so a checkpoint's config and the
runner's ``children_per_update`` rebuild it).

Options beyond the paper (issue 14's study), all off in the paper preset:

* ``temperature`` / ``tanh_constant`` / ``op_tanh_reduce``: logit shaping inside the
  :class:`Controller` (see agents/controller.py), applied identically when sampling and when
  the log-probabilities are recomputed, so the gradient stays exact.
* ``skip_penalty`` w and ``skip_target`` t: ``loss += w * mean KL(Bern(p) || Bern(t))`` over
  the skip tokens taken (where both choices were valid), p the policy's skip probability at the
  visited state. The direction is ENAS macro's (``p log(p/t) + (1-p) log((1-p)/(1-t))``, the
  policy's distribution first), but ENAS took p as sigmoid of its logit pair (-q, q) while it
  sampled from their softmax (P = sigmoid(2q)); we use the sampling probability itself. ENAS
  summed the KL over a layer's skip bits and averaged over layers; we average over all skip
  tokens (a scale change only). As in ENAS the penalty's gradient is the pathwise one at the
  visited states (no score-function term for how the states were reached).
* ``normalize_advantage``: advantages ``(R - b) / (s + 1e-8)``, s the square root of an
  exponentially weighted variance of the rewards with the baseline's decay d, taken in with
  the baseline one child at a time after the advantages (``delta = R - b``,
  ``v <- d * (v + (1 - d) * delta^2)``); the first update's v is the batch's mean squared
  deviation from its baseline. v is in the checkpoint.
* ``ppo_epochs`` K and ``clip_ratio`` eps: K gradient steps per batch. The first is the plain
  REINFORCE step (its importance ratio is exactly 1, where PPO's clip never binds); each later
  one minimises ``-(1/m) sum_k min(r_k A_k, clip(r_k, 1-eps, 1+eps) A_k)`` with the episode's
  ratio ``r_k = exp(log P_new(a^k) - log P_old(a^k))`` over all of its tokens (the reward
  belongs to the whole sequence; a per-token ratio would be a biased shortcut), the advantages
  and the baseline fixed at the batch's, and the entropy and skip terms recomputed. K = 1 is
  REINFORCE exactly, clip or not; eps None is the unclipped importance-weighted surrogate.
  K > 1 is local only: :meth:`ReinforceAgent.policy_gradient` (the Ray replicas' one
  gradient per batch) refuses it.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from agents.base import Episode, EpisodicSearchAgent, UpdateStats
from agents.controller import (
    Controller,
    apply_action_mask,
    check_logit_shaping,
    gumbel_noise,
    log_probs_and_entropy,
)
from nas_env.spaces.base import TokenSpec

# --- the agent's numbers: our default (preset=None) and the named presets ------------------------
DEFAULTS: dict[str, Any] = {
    "children_per_update": 5,  # m (see the module docstring's sweeps)
    "lr": 0.01,  # Adam; the study on NASRL-Bench-Digits (docs/controller_study.md): the paper's 0.0006 ties random
    "baseline_decay": 0.95,  # EMA decay per child
    "baseline_init": None,  # None: the first update's mean reward
    "entropy_coef": 0.02,  # keeps sampling near the incumbent: 0 collapses onto a near-best child (the study)
    "max_grad_norm": None,  # None: no gradient clipping
    "temperature": 1.0,  # logits / T
    "tanh_constant": None,  # C * tanh(logits / T) (ENAS macro: 1.5)
    "op_tanh_reduce": 1.0,  # non-skip tokens use C / reduce (ENAS micro: 2.5)
    "skip_penalty": 0.0,  # weight of the skip KL (ENAS macro: 0.8)
    "skip_target": 0.4,  # its target skip probability (ENAS macro: 0.4)
    "normalize_advantage": False,
    "ppo_epochs": 1,  # gradient steps per batch
    "clip_ratio": None,  # PPO's eps for steps after the first (e.g. 0.2)
    "controller_kwargs": {},  # Controller's defaults: the paper's 2 x 35 LSTM, init +-0.08
}
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {  # Zoph & Le (2017), section 4.1; m and the decay are the repo's reading (module docstring)
        "children_per_update": 5, "lr": 0.0006, "baseline_decay": 0.95, "baseline_init": None, "entropy_coef": 0.0,
        "max_grad_norm": None, "temperature": 1.0, "tanh_constant": None, "op_tanh_reduce": 1.0, "skip_penalty": 0.0,
        "skip_target": 0.4, "normalize_advantage": False, "ppo_epochs": 1, "clip_ratio": None,
        "controller_kwargs": {},
    },
}
STUDY_KNOBS: tuple[str, ...] = tuple(DEFAULTS)  # what a preset fixes
ADVANTAGE_EPS = 1e-8  # added to the running reward std under normalize_advantage
# Controller arguments the agent sets itself (a controller_kwargs entry would clash).
_RESERVED_CONTROLLER_KWARGS = ("generator", "temperature", "tanh_constant", "op_tanh_reduce")


class _Unset:
    """The default of a study knob: not given, so the preset (or :data:`DEFAULTS`) decides."""

    def __repr__(self) -> str:
        return "<preset or default>"


UNSET: Any = _Unset()


def resolve_knobs(preset: str | None, given: dict[str, Any]) -> dict[str, Any]:
    """Every study knob's value: the preset's (or :data:`DEFAULTS`), with ``given`` ones (not UNSET) on top.

    Under a preset a given knob must equal the preset's value; otherwise a ValueError names the clash.
    """
    if preset is not None and (not isinstance(preset, str) or preset not in PRESETS):
        raise ValueError(f"preset {preset!r} is not one of {', '.join(map(repr, PRESETS))} (or None: our default)")
    base = PRESETS[preset] if preset is not None else DEFAULTS
    given = {k: v for k, v in given.items() if v is not UNSET}
    if preset is not None:
        clashes = [k for k, v in given.items() if v != base[k]]
        if clashes:
            k = clashes[0]
            raise ValueError(f"preset={preset!r} fixes {k}={base[k]!r}, got {k}={given[k]!r}: a preset fixes "
                             f"{', '.join(STUDY_KNOBS)}; drop the preset or the {k} argument")
    return {**copy.deepcopy(base), **given}


@contextmanager
def torch_threads(num_threads: int | None) -> Iterator[None]:
    """Run a block with ``num_threads`` torch intra-op threads, then restore the previous setting."""
    previous = torch.get_num_threads()
    if num_threads is None or num_threads == previous:
        yield
        return
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@dataclass
class ReinforceLoss:
    """The loss to minimise and its parts (all tensors; ``log_probs``/``entropies`` are m x T, 0 past an episode)."""

    loss: torch.Tensor
    policy_loss: torch.Tensor
    entropy: torch.Tensor  # mean per-token entropy over the steps taken
    log_probs: torch.Tensor
    entropies: torch.Tensor
    skip_kl: torch.Tensor | None = None  # mean skip KL to the target (only computed with a skip penalty)
    ratios: torch.Tensor | None = None  # per-episode importance ratios (only with old_log_probs)


def reinforce_loss(
    controller: Controller,
    actions: torch.Tensor,
    rewards: torch.Tensor,
    baseline: float | torch.Tensor,
    masks: torch.Tensor | None = None,
    step_mask: torch.Tensor | None = None,
    entropy_coef: float = 0.0,
    *,
    advantage_scale: float = 1.0,
    skip_penalty: float = 0.0,
    skip_target: float = 0.4,
    old_log_probs: torch.Tensor | None = None,
    clip_ratio: float | None = None,
) -> ReinforceLoss:
    """The REINFORCE loss of m children, whose gradient is minus the paper's policy-gradient estimate.

    ``loss = -(1/m) sum_k A_k sum_t log P(a_t^k | a_<t^k) - entropy_coef * (1/m) sum_k sum_t H_t^k
    + skip_penalty * mean_skip_tokens KL(Bern(p) || Bern(skip_target))``, with ``A_k = (R_k - b) / advantage_scale``.

    Args:
        actions: m x T (long) actions taken; steps past an episode's end may hold anything valid.
        rewards: m rewards R_k.
        baseline: b (no gradient flows through it).
        masks: m x T x A (bool) action masks the actions were sampled under (None: heads only).
        step_mask: m x T (bool) steps actually taken (None: all).
        entropy_coef: weight of the entropy bonus (summed over steps like the log-probabilities).
        advantage_scale: the advantages' divisor (the running reward std under normalisation).
        skip_penalty: weight of the mean KL of the skip tokens taken (with both choices valid) to the target.
        skip_target: the target skip probability, in (0, 1).
        old_log_probs: m episode log-probabilities under the policy that sampled them: the policy term
            becomes PPO's surrogate ``-(1/m) sum_k min(r_k A_k, clip(r_k) A_k)``, ``r_k = exp(log P - old)``.
        clip_ratio: PPO's eps (None: the unclipped surrogate ``r_k A_k``); used only with ``old_log_probs``.
    """
    logp_all, entropies = log_probs_and_entropy(apply_action_mask(controller(actions), masks))
    logp = logp_all.gather(-1, actions.to(logp_all.device, torch.long).unsqueeze(-1)).squeeze(-1)
    keep: torch.Tensor | None = None
    if step_mask is not None:
        keep = step_mask.to(logp.device, torch.bool)
        logp = logp.masked_fill(~keep, 0.0)  # masked_fill: a padded -inf never turns into NaN
        entropies = entropies.masked_fill(~keep, 0.0)
        num_tokens = keep.sum().clamp_min(1)
    else:
        num_tokens = torch.tensor(logp.numel())
    rewards = torch.as_tensor(rewards, dtype=logp.dtype, device=logp.device)
    advantages = rewards - torch.as_tensor(baseline, dtype=logp.dtype, device=logp.device).detach()
    if advantage_scale != 1.0:
        advantages = advantages / advantage_scale
    m = actions.shape[0]
    ratios: torch.Tensor | None = None
    if old_log_probs is None:
        policy_loss = -(advantages * logp.sum(1)).sum() / m
    else:
        old = torch.as_tensor(old_log_probs, dtype=logp.dtype, device=logp.device).detach()
        ratios = torch.exp(logp.sum(1) - old)
        surrogate = ratios * advantages
        if clip_ratio is not None:
            surrogate = torch.minimum(surrogate, ratios.clamp(1.0 - clip_ratio, 1.0 + clip_ratio) * advantages)
        policy_loss = -surrogate.sum() / m
    loss = policy_loss - entropy_coef * entropies.sum() / m if entropy_coef else policy_loss
    skip_kl: torch.Tensor | None = None
    if skip_penalty:
        skip_kl = skip_kl_to_target(logp_all, controller.skip_steps, keep, skip_target)
        loss = loss + skip_penalty * skip_kl
    return ReinforceLoss(loss, policy_loss, entropies.sum() / num_tokens, logp, entropies, skip_kl, ratios)


def skip_kl_to_target(logp_all: torch.Tensor, skip_steps: torch.Tensor, step_mask: torch.Tensor | None,
                      target: float) -> torch.Tensor:
    """Mean of KL(Bern(p) || Bern(target)) over the skip tokens taken whose two choices were both valid.

    ``logp_all`` is m x T x A (log-softmax of the masked logits; column 0 "no", 1 "yes"); a skip
    token the mask forced to one choice has no probability to move and is left out. 0 without any.
    """
    if skip_steps.numel() == 0:
        return logp_all.new_zeros(())
    lp = logp_all[:, skip_steps, :2]  # m x S x (no, yes)
    ok = torch.isfinite(lp).all(-1)
    if step_mask is not None:
        ok = ok & step_mask[:, skip_steps]
    lp = lp.masked_fill(~ok.unsqueeze(-1), 0.0)  # masked_fill: no -inf, so no NaN gradient, from left-out tokens
    log_target = torch.log(torch.tensor([1.0 - target, target], dtype=lp.dtype, device=lp.device))
    kl = (lp.exp() * (lp - log_target)).sum(-1).masked_fill(~ok, 0.0)
    return kl.sum() / ok.sum().clamp_min(1)


@dataclass
class _Batch:
    """One update's children as tensors, with what every gradient step on them shares."""

    actions: torch.Tensor  # m x T
    masks: torch.Tensor  # m x T x A
    taken: torch.Tensor  # m x T
    rewards: torch.Tensor  # m
    baseline: float
    advantage_scale: float
    old_log_probs: torch.Tensor  # m: the episodes' log-probabilities before the update


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float | np.integer | np.floating) and not isinstance(x, bool) and math.isfinite(x)


def _check_knobs(k: dict[str, Any]) -> None:
    """Raise a ValueError naming the first bad study knob and what is allowed."""
    def bad(name: str, allowed: str) -> ValueError:
        return ValueError(f"{name} must be {allowed}, got {k[name]!r}")

    if not _is_number(k["lr"]) or k["lr"] <= 0:
        raise bad("lr", "a finite number > 0")
    if not _is_number(k["baseline_decay"]) or not 0.0 <= k["baseline_decay"] < 1.0:
        raise bad("baseline_decay", "a number in [0, 1)")
    if k["baseline_init"] is not None and not _is_number(k["baseline_init"]):
        raise bad("baseline_init", "None (the first update's mean reward) or a finite number")
    if not _is_number(k["entropy_coef"]) or k["entropy_coef"] < 0:
        raise bad("entropy_coef", "a finite number >= 0")
    if k["max_grad_norm"] is not None and (not _is_number(k["max_grad_norm"]) or k["max_grad_norm"] <= 0):
        raise bad("max_grad_norm", "None (no clipping) or a finite number > 0")
    check_logit_shaping(k["temperature"], k["tanh_constant"], k["op_tanh_reduce"])
    if not _is_number(k["skip_penalty"]) or k["skip_penalty"] < 0:
        raise bad("skip_penalty", "a finite number >= 0 (0: no penalty)")
    if not _is_number(k["skip_target"]) or not 0.0 < k["skip_target"] < 1.0:
        raise bad("skip_target", "a probability strictly between 0 and 1")
    if not isinstance(k["normalize_advantage"], bool | np.bool_):
        raise bad("normalize_advantage", "True or False")
    if isinstance(k["ppo_epochs"], bool) or not isinstance(k["ppo_epochs"], int | np.integer) or k["ppo_epochs"] < 1:
        raise bad("ppo_epochs", "an int >= 1 (1: plain REINFORCE)")
    if k["clip_ratio"] is not None and (not _is_number(k["clip_ratio"]) or not 0.0 < k["clip_ratio"] < 1.0):
        raise bad("clip_ratio", "None (no clipping) or a number strictly between 0 and 1")
    if not isinstance(k["controller_kwargs"], dict):
        raise bad("controller_kwargs", "a dict of Controller arguments")
    reserved = sorted(set(k["controller_kwargs"]) & set(_RESERVED_CONTROLLER_KWARGS))
    if reserved:
        raise ValueError(f"controller_kwargs may not set {reserved}: the agent sets them (temperature, "
                         f"tanh_constant and op_tanh_reduce are agent arguments)")


class ReinforceAgent(EpisodicSearchAgent):
    """The paper's controller trained with REINFORCE and an EMA baseline (plus issue 14's options; see DEFAULTS).

    Args:
        seed: search seed (child env seeds, the controller's initialisation and its sampling generator).
        preset: None (our default, :data:`DEFAULTS`) or a name in :data:`PRESETS` (``"paper"``), which
            fixes every other argument below except ``device`` and ``num_threads``.
        children_per_update: m, children per policy update (a multiple of the vector env's ``num_envs``).
        lr: Adam learning rate (the paper: 0.0006).
        baseline_decay: EMA decay per child, ``b <- d*b + (1-d)*R``.
        baseline_init: the starting baseline; None: the first update's mean reward.
        entropy_coef: entropy bonus weight (0: the paper's plain REINFORCE).
        max_grad_norm: clip the gradient's global norm (None: no clipping).
        temperature, tanh_constant, op_tanh_reduce: the controller's logit shaping (see the module docstring).
        skip_penalty, skip_target: weight and target of the skip-density KL term.
        normalize_advantage: divide the advantages by a running reward std.
        ppo_epochs, clip_ratio: gradient steps per batch and PPO's clip for the steps after the first.
        device: torch device of the controller (it is tiny: "cpu" is fastest).
        num_threads: torch intra-op threads for the agent's own work (sampling and updates; None:
            leave torch's setting). The caller's setting is restored after each batch and around
            the env steps that evaluate a child (the last token), so a child's training keeps it.
            1 by default: on tensors this small, extra threads only add synchronisation (on 2
            busy cores, an 8-row LSTM cell took 92 us at 2 threads vs 28 us at 1; an update of
            8 x 150 tokens 126 ms vs 7 ms).
        controller_kwargs: passed to :class:`Controller` (``hidden_size``, ``num_layers``, ``init_range``...).

    Study knobs left out take the preset's value (or :data:`DEFAULTS`'); :meth:`config` records all of them.
    """

    name: ClassVar[str] = "reinforce"

    def __init__(
        self,
        seed: int = 0,
        children_per_update: int = UNSET,
        lr: float = UNSET,
        baseline_decay: float = UNSET,
        baseline_init: float | None = UNSET,
        entropy_coef: float = UNSET,
        max_grad_norm: float | None = UNSET,
        device: str | torch.device = "cpu",
        num_threads: int | None = 1,
        controller_kwargs: dict[str, Any] | None = UNSET,
        preset: str | None = None,
        temperature: float = UNSET,
        tanh_constant: float | None = UNSET,
        op_tanh_reduce: float = UNSET,
        skip_penalty: float = UNSET,
        skip_target: float = UNSET,
        normalize_advantage: bool = UNSET,
        ppo_epochs: int = UNSET,
        clip_ratio: float | None = UNSET,
    ) -> None:
        k = resolve_knobs(preset, {
            "children_per_update": children_per_update, "lr": lr, "baseline_decay": baseline_decay,
            "baseline_init": baseline_init, "entropy_coef": entropy_coef, "max_grad_norm": max_grad_norm,
            "temperature": temperature, "tanh_constant": tanh_constant, "op_tanh_reduce": op_tanh_reduce,
            "skip_penalty": skip_penalty, "skip_target": skip_target, "normalize_advantage": normalize_advantage,
            "ppo_epochs": ppo_epochs, "clip_ratio": clip_ratio,
            "controller_kwargs": controller_kwargs if controller_kwargs is not None else {},
        })
        super().__init__(seed, k["children_per_update"])
        _check_knobs(k)
        self.preset = preset
        self.lr = float(k["lr"])
        self.baseline_decay = float(k["baseline_decay"])
        self.baseline_init = None if k["baseline_init"] is None else float(k["baseline_init"])
        self.entropy_coef = float(k["entropy_coef"])
        self.max_grad_norm = None if k["max_grad_norm"] is None else float(k["max_grad_norm"])
        self.temperature = float(k["temperature"])
        self.tanh_constant = None if k["tanh_constant"] is None else float(k["tanh_constant"])
        self.op_tanh_reduce = float(k["op_tanh_reduce"])
        self.skip_penalty = float(k["skip_penalty"])
        self.skip_target = float(k["skip_target"])
        self.normalize_advantage = bool(k["normalize_advantage"])
        self.ppo_epochs = int(k["ppo_epochs"])
        self.clip_ratio = None if k["clip_ratio"] is None else float(k["clip_ratio"])
        self.device = torch.device(device)
        self.num_threads = num_threads
        self.controller_kwargs = dict(k["controller_kwargs"])
        self.baseline: float | None = self.baseline_init
        self.reward_var: float | None = None  # running reward variance (normalize_advantage only)
        self.controller: Controller | None = None
        self.optimizer: torch.optim.Adam | None = None
        # Sampling draws only from this generator; the controller's init has its own stream.
        self.generator = torch.Generator(device=self.device).manual_seed(self._stream_seed(1))
        self._state = None
        self._prev: torch.Tensor | None = None
        self._noise: torch.Tensor | None = None
        self._outer_threads = torch.get_num_threads()

    def config(self) -> dict[str, Any]:
        return {**super().config(), "preset": self.preset, "lr": self.lr, "baseline_decay": self.baseline_decay,
                "baseline_init": self.baseline_init, "entropy_coef": self.entropy_coef,
                "max_grad_norm": self.max_grad_norm, "temperature": self.temperature,
                "tanh_constant": self.tanh_constant, "op_tanh_reduce": self.op_tanh_reduce,
                "skip_penalty": self.skip_penalty, "skip_target": self.skip_target,
                "normalize_advantage": self.normalize_advantage, "ppo_epochs": self.ppo_epochs,
                "clip_ratio": self.clip_ratio, "device": str(self.device), "num_threads": self.num_threads,
                "controller_kwargs": copy.deepcopy(self.controller_kwargs)}

    # --- hooks ---------------------------------------------------------------------------
    def _setup(self, token_specs: tuple[TokenSpec, ...], num_actions: int) -> None:
        super()._setup(token_specs, num_actions)
        init = torch.Generator().manual_seed(self._stream_seed(0))
        self.controller = Controller(token_specs, num_actions, generator=init, temperature=self.temperature,
                                     tanh_constant=self.tanh_constant, op_tanh_reduce=self.op_tanh_reduce,
                                     **self.controller_kwargs).to(self.device)
        self.optimizer = torch.optim.Adam(self.controller.parameters(), lr=self.lr)
        types = self.controller.step_types
        self._steps_by_type = {n: np.array([t for t, s in enumerate(types) if s == n])
                               for n in self.controller.type_names}

    def _begin_batch(self, batch_size: int) -> None:
        self._state = self.controller.initial_state(batch_size)
        self._prev = None
        # The whole batch's sampling noise in one draw: argmax(logits + Gumbel noise) samples softmax(logits).
        self._noise = gumbel_noise((self.controller.num_steps, batch_size, self.num_actions), self.generator,
                                   self.device, self.controller.embedding.weight.dtype)

    @torch.inference_mode()
    def _act(self, step: int, masks: np.ndarray, live: np.ndarray) -> np.ndarray:
        logits, self._state = self.controller.step_logits(self._state, self._prev)  # B x choices of this token
        valid = masks[:, : logits.shape[1]]  # the head has no logits beyond the token's choices
        if not live.all():  # ended rows only need some action of the head: never let them block
            valid = valid | ~live[:, None]
        if not valid.any(axis=1).all():
            raise RuntimeError(f"no valid action at step {step}: the env's mask and the controller's heads disagree")
        scores = logits + self._noise[step, :, : logits.shape[1]]
        if not valid.all():  # usually the mask is exactly the token's choices: nothing to add
            scores = scores + torch.from_numpy(np.where(valid, 0.0, -np.inf)).to(self.device, scores.dtype)
        actions = torch.argmax(scores, dim=1)
        self._prev = actions
        return actions.cpu().numpy()

    def _compute_scope(self) -> AbstractContextManager[None]:
        self._outer_threads = torch.get_num_threads()
        return torch_threads(self.num_threads)

    def _evaluation_scope(self) -> AbstractContextManager[None]:
        return torch_threads(self._outer_threads)  # the child's training gets the caller's setting back

    def _update(self, episodes: list[Episode]) -> UpdateStats:
        with torch_threads(self.num_threads):
            return self._reinforce_update(episodes)

    def _reinforce_update(self, episodes: list[Episode]) -> UpdateStats:
        stats, batch = self._first_gradient(episodes)
        self.optimizer.step()
        for _ in range(1, self.ppo_epochs):  # PPO's further steps on the same batch (module docstring)
            out = self._loss(batch, old_log_probs=batch.old_log_probs)
            self.controller.zero_grad(set_to_none=True)
            out.loss.backward()
            self._clip_gradient()
            self.optimizer.step()
        return stats

    def policy_gradient(self, episodes: list[Episode]) -> UpdateStats:
        """The REINFORCE gradient of ``episodes``, left (clipped) in the controller's ``.grad``; no optimizer step.

        Also moves the baseline (and the running reward variance) on by these children's rewards.
        Split from the step so that a distributed replica can push the gradient to parameter
        servers instead of applying it; that is one gradient per batch, so ``ppo_epochs > 1`` is refused.
        """
        if self.ppo_epochs > 1:
            raise ValueError(f"ppo_epochs={self.ppo_epochs}: several gradient steps per batch run only in the "
                             f"local agent's update; policy_gradient (the Ray backend) takes one (ppo_epochs=1)")
        return self._first_gradient(episodes)[0]

    def _loss(self, batch: _Batch, old_log_probs: torch.Tensor | None = None) -> ReinforceLoss:
        return reinforce_loss(self.controller, batch.actions, batch.rewards, batch.baseline, batch.masks, batch.taken,
                              self.entropy_coef, advantage_scale=batch.advantage_scale,
                              skip_penalty=self.skip_penalty, skip_target=self.skip_target,
                              old_log_probs=old_log_probs, clip_ratio=self.clip_ratio)

    def _clip_gradient(self) -> float:
        max_norm = self.max_grad_norm if self.max_grad_norm is not None else float("inf")
        return float(torch.nn.utils.clip_grad_norm_(self.controller.parameters(), max_norm))

    def _first_gradient(self, episodes: list[Episode]) -> tuple[UpdateStats, _Batch]:
        """The plain REINFORCE gradient in ``.grad``, the update's stats and its batch; moves the baseline on."""
        m, length = len(episodes), self.controller.num_steps
        actions = np.zeros((m, length), dtype=np.int64)
        masks = np.ones((m, length, self.num_actions), dtype=bool)
        taken = np.zeros((m, length), dtype=bool)
        for k, ep in enumerate(episodes):
            t = len(ep.actions)
            actions[k, :t], masks[k, :t], taken[k, :t] = ep.actions, ep.masks, True
        rewards = np.array([ep.reward for ep in episodes], dtype=np.float64)
        baseline = float(rewards.mean()) if self.baseline is None else self.baseline
        scale, var = 1.0, None
        if self.normalize_advantage:  # the std before this update's rewards, like the baseline
            var = float(np.mean((rewards - baseline) ** 2)) if self.reward_var is None else self.reward_var
            scale = math.sqrt(var) + ADVANTAGE_EPS
        dev = self.device
        batch = _Batch(torch.from_numpy(actions).to(dev), torch.from_numpy(masks).to(dev),
                       torch.from_numpy(taken).to(dev), torch.tensor(rewards, dtype=torch.float32, device=dev),
                       baseline, scale, torch.empty(0))
        out = self._loss(batch)
        batch.old_log_probs = out.log_probs.detach().sum(1)
        self.controller.zero_grad(set_to_none=True)
        out.loss.backward()
        grad_norm = self._clip_gradient()

        # The baseline (and variance) take in this update's rewards only after the advantages used the old values.
        b = baseline
        for r in rewards:
            if var is not None:
                delta = float(r) - b
                var = self.baseline_decay * (var + (1.0 - self.baseline_decay) * delta * delta)
            b = self.baseline_decay * b + (1.0 - self.baseline_decay) * float(r)
        self.baseline = b
        self.reward_var = var

        ent = out.entropies.detach().cpu().numpy()
        per_type = {name: float(ent[:, steps][taken[:, steps]].mean())
                    for name, steps in self._steps_by_type.items() if taken[:, steps].any()}
        stats = UpdateStats(
            update=self.updates_done, children_done=self.children_done, num_children=m,
            reward_mean=float(rewards.mean()), reward_max=float(rewards.max()), baseline=baseline,
            advantage_mean=float((rewards.mean() - baseline) / scale), policy_loss=float(out.policy_loss.detach()),
            entropy=float(out.entropy.detach()), entropy_per_type=per_type, grad_norm=grad_norm,
        )
        return stats, batch

    # --- state ---------------------------------------------------------------------------
    def _rng_state(self) -> dict[str, torch.Tensor]:
        return {"sample": self.generator.get_state()}

    def _set_rng_state(self, state: dict[str, torch.Tensor]) -> None:
        self.generator.set_state(state["sample"])

    def _policy_state(self) -> dict[str, Any]:
        return {
            "controller": copy.deepcopy(self.controller.state_dict()) if self.controller is not None else None,
            "optimizer": copy.deepcopy(self.optimizer.state_dict()) if self.optimizer is not None else None,
            "baseline": self.baseline,
            "reward_var": self.reward_var,
        }

    def _load_policy_state(self, state: dict[str, Any]) -> None:
        if state.get("controller") is not None:
            self.controller.load_state_dict(state["controller"])
            self.optimizer.load_state_dict(state["optimizer"])
        self.baseline = None if state.get("baseline") is None else float(state["baseline"])
        self.reward_var = None if state.get("reward_var") is None else float(state["reward_var"])
