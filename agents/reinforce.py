"""REINFORCE with an exponential-moving-average baseline, the paper's controller training (section 3.2).

The gradient of one update over m children is exactly

    (1/m) * sum_k sum_t grad log P(a_t^k | a_<t^k) * (R_k - b)

where b is the baseline *before* this update: advantages are computed first, then the EMA takes in
this update's rewards (one child at a time, in index order), so a child never serves as its own
baseline (except in the very first update, whose baseline is its own mean reward unless
``baseline_init`` is given). Log-probabilities are recomputed at update time by re-running the
controller on the stored actions under the stored masks (teacher forcing), so :func:`reinforce_loss`
can be checked against an independent gradient.

Our default (:class:`ReinforceOptions`) is the paper's controller and REINFORCE with four changes (docs/agents.md);
``preset="paper"`` is Zoph & Le's training exactly. The study, the preset's reading and each option's exact
definition: docs/controller_study.md.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections import Counter
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from agents.base import AgentOptions, Episode, EpisodicSearchAgent, UpdateStats, options_from
from agents.controller import Controller, apply_action_mask, gumbel_noise, log_probs_and_entropy
from nas_env.checks import check_bool, check_choice, check_fraction, check_int, check_number, check_optional
from nas_env.spaces.base import TokenSpec

# --- the agent's numbers: our default (the fields' defaults) and the named presets -----------------
ADVANTAGE_EPS = 1e-8  # added to the running reward std under normalize_advantage
# The agent's own arguments beside its options (device and num_threads are free under a preset).
AGENT_ARGUMENTS = ("seed", "options", "preset", "device", "num_threads")
# Controller arguments the agent sets itself (a controller_kwargs entry would clash).
RESERVED_CONTROLLER_KWARGS = ("generator", "temperature", "tanh_constant", "op_tanh_reduce")


@dataclass(frozen=True)
class ReinforceOptions(AgentOptions):
    """The REINFORCE agent's knobs; the defaults are ours, :data:`PRESETS` name other sets (docs/controller_study.md).

    A knob's check runs here, so a bad value is a ValueError naming it wherever the options come from.
    """

    lr: float = 0.05
    """Adam learning rate (the paper: 0.0006, which ties random search on NASRL-Bench-Digits)."""
    baseline_decay: float = 0.95
    """EMA decay of the baseline per child, ``b <- d*b + (1-d)*R``, in [0, 1)."""
    baseline_init: float | None = None
    """The starting baseline; None: the first update's mean reward."""
    entropy_coef: float = 0.02
    """Entropy bonus weight (0: the paper's plain REINFORCE, which collapses onto a near-best child)."""
    max_grad_norm: float | None = None
    """Clip the gradient's global norm to this (None: no clipping)."""
    temperature: float = 1.0
    """The controller's logits are divided by it (1.0: none; ENAS micro: 5)."""
    tanh_constant: float | None = None
    """C in ``C * tanh(logits / temperature)`` (None: no squashing; ENAS macro: 1.5)."""
    op_tanh_reduce: float = 1.0
    """Non-skip tokens squash with ``C / op_tanh_reduce`` (ENAS micro: 2.5)."""
    skip_penalty: float = 0.0
    """Weight of the skip tokens' KL to ``skip_target`` (0: none; ENAS macro: 0.8)."""
    skip_target: float = 0.4
    """The skip probability that KL pulls towards, in (0, 1) (ENAS macro: 0.4)."""
    normalize_advantage: bool = False
    """Divide the advantages by a running reward std (kept in the checkpoint)."""
    ppo_epochs: int = 1
    """Gradient steps per batch: 1 is plain REINFORCE, later steps are PPO's surrogate (local backend only)."""
    clip_ratio: float | None = None
    """PPO's eps for the steps after the first, in (0, 1) (None: the unclipped surrogate; e.g. 0.2)."""
    unique_children: bool = True
    """Never draw a known architecture again: a choice whose every completion was drawn before is masked (unless
    every choice is), and learning uses those masks. Exact where the env's masks do not depend on earlier
    tokens."""
    top_fraction: float = 1.0
    """Risk-seeking policy gradient (Petersen et al. 2021): learn only from the batch's best ``top_fraction``,
    with the batch's ``1 - top_fraction`` reward quantile as their baseline (1.0: every child, the EMA one)."""
    queue_size: int = 10
    """Priority-queue training (Abolafia et al. 2018): keep the best ``queue_size`` distinct architectures (0: off)."""
    queue_coef: float = 0.5
    """Weight of the queue's log-likelihood (maximised beside the policy gradient; 0: off)."""
    controller_kwargs: dict[str, Any] = field(default_factory=dict)
    """Passed to :class:`Controller` (``hidden_size``, ``init_range``...); default: the paper's 2 x 35 LSTM."""

    def __post_init__(self) -> None:
        super().__post_init__()
        positive = {"minimum": 0, "above": True}
        self._check("lr", check_number, **positive)
        self._check("baseline_decay", check_fraction)
        self._check("baseline_init", check_optional, check_number, none="the first update's mean reward")
        self._check("entropy_coef", check_number, minimum=0)
        self._check("max_grad_norm", check_optional, check_number, none="no clipping", **positive)
        self._check("temperature", check_number, **positive)
        self._check("tanh_constant", check_optional, check_number, none="no squashing", **positive)
        self._check("op_tanh_reduce", check_number, **positive)
        self._check("skip_penalty", check_number, minimum=0)
        self._check("skip_target", check_fraction, zero=False)
        self._check("normalize_advantage", check_bool)
        self._check("ppo_epochs", check_int, minimum=1)
        self._check("clip_ratio", check_optional, check_fraction, zero=False, none="the unclipped surrogate")
        self._check("unique_children", check_bool)
        self._check("top_fraction", check_fraction, zero=False, one=True)
        self._check("queue_size", check_int, minimum=0)
        self._check("queue_coef", check_number, minimum=0)
        if not isinstance(self.controller_kwargs, dict):
            raise ValueError(f"controller_kwargs must be a dict of Controller arguments, "
                             f"got {self.controller_kwargs!r}")
        reserved = sorted(set(self.controller_kwargs) & set(RESERVED_CONTROLLER_KWARGS))
        if reserved:
            raise ValueError(f"controller_kwargs may not set {reserved}: the agent sets them (temperature, "
                             f"tanh_constant and op_tanh_reduce are agent arguments)")
        object.__setattr__(self, "controller_kwargs", copy.deepcopy(self.controller_kwargs))


DEFAULTS = ReinforceOptions()  # our default (preset=None)
PRESETS: dict[str, ReinforceOptions] = {
    # Zoph & Le (2017), section 4.1: our default less its changes; m and the decay are the repo's reading.
    "paper": ReinforceOptions(lr=0.0006, entropy_coef=0.0, unique_children=False, queue_size=0, queue_coef=0.0),
}
STUDY_KNOBS: tuple[str, ...] = ReinforceOptions.names()  # what a preset fixes
# unique_children counts drawn architectures only under prefixes with at most this many completions (the last
# tokens' prefixes): a prefix with more is never used up by a search, and counting it would cost memory per token.
TRACKED_COMPLETIONS = 1_000_000
# Knobs added after checkpoints were written, with the value such a checkpoint's run had: a resume keeps it.
ADDED_KNOBS = {"unique_children": False, "top_fraction": 1.0, "queue_size": 0, "queue_coef": 0.0}


def resolve_options(preset: str | None, options: ReinforceOptions | None, knobs: dict[str, Any]) -> ReinforceOptions:
    """The agent's options: ``options`` (else the preset's, else our default) with the keyword ``knobs`` on top.

    Under a preset every given value (a knob, or a field of ``options``) must equal the preset's; otherwise a
    ValueError names the first clash. An unknown knob is a ValueError listing the allowed ones.
    """
    check_choice("preset", preset, (None, *PRESETS))
    resolved = options_from(ReinforceOptions, "reinforce", options, knobs, AGENT_ARGUMENTS)  # unknown, bad values
    if preset is None:
        return resolved
    base = PRESETS[preset]
    given = {**(dataclasses.asdict(options) if options is not None else {}), **knobs}
    for k in STUDY_KNOBS:
        if k in given and given[k] != getattr(base, k):
            raise ValueError(f"preset={preset!r} fixes {k}={getattr(base, k)!r}, got {k}={given[k]!r}: a preset "
                             f"fixes {', '.join(STUDY_KNOBS)}; drop the preset or the {k} argument")
    return base


def prefix_key(actions: tuple[int, ...]) -> bytes:
    """A compact dictionary key for an action prefix (tuples of 150 ints would cost a kilobyte each)."""
    return np.asarray(actions, dtype=np.int32).tobytes()


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


def reinforce_loss(controller: Controller, actions: torch.Tensor, rewards: torch.Tensor, baseline: float | torch.Tensor,
                   masks: torch.Tensor | None = None, step_mask: torch.Tensor | None = None, entropy_coef: float = 0.0,
                   *, advantage_scale: float = 1.0, skip_penalty: float = 0.0, skip_target: float = 0.4,
                   old_log_probs: torch.Tensor | None = None, clip_ratio: float | None = None) -> ReinforceLoss:
    """The REINFORCE loss of m children, whose gradient is minus the paper's policy-gradient estimate.

    ``loss = -(1/m) sum_k A_k sum_t log P(a_t^k | a_<t^k) - entropy_coef * (1/m) sum_k sum_t H_t^k
    + skip_penalty * mean_skip_tokens KL(Bern(p) || Bern(skip_target))``, with ``A_k = (R_k - b) / advantage_scale``.

    Args:
        actions: m x T (long) actions taken; steps past an episode's end may hold anything valid.
        rewards: m rewards R_k.
        baseline: b (no gradient flows through it).
        masks: m x T x A (bool) action masks the actions were sampled under (None: heads only).
        step_mask: m x T (bool) steps actually taken (None: all).
        skip_penalty: weight of the mean KL of the skip tokens taken (with both choices valid) to the target
            skip probability ``skip_target``, in (0, 1).
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
    queue: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # the queue's actions, masks, steps taken


class ReinforceAgent(EpisodicSearchAgent):
    """The paper's controller trained with REINFORCE and an EMA baseline, with the options of :class:`ReinforceOptions`.

    Args:
        seed: search seed (child env seeds, the controller's initialisation and its sampling generator).
        options: a :class:`ReinforceOptions` (None: our default, or the preset's values).
        preset: None (our default) or a name in :data:`PRESETS` (``"paper"``), which fixes every option;
            a given option must then equal the preset's value.
        device: torch device of the controller (it is tiny: "cpu" is fastest).
        num_threads: torch intra-op threads for the agent's own work (sampling and updates; None:
            leave torch's setting). The caller's setting is restored after each batch and around
            the env steps that evaluate a child, so a child's training keeps it. 1 by default: on tensors
            this small, extra threads only add synchronisation (2 threads on 2 busy cores: an LSTM cell
            3x, an update 18x slower).
        **knobs: any field of :class:`ReinforceOptions` (``lr=0.003``), on top of ``options`` or the preset.
    """

    name: ClassVar[str] = "reinforce"
    options_type = ReinforceOptions
    options: ReinforceOptions

    def __init__(self, seed: int = 0, *, options: ReinforceOptions | None = None, preset: str | None = None,
                 device: str | torch.device = "cpu", num_threads: int | None = 1, **knobs: Any) -> None:
        super().__init__(seed, options=resolve_options(preset, options, knobs))
        self.preset = preset
        self.device = torch.device(device)
        self.num_threads = check_optional("num_threads", num_threads, check_int, minimum=1, none="torch's setting")
        self.baseline: float | None = self.options.baseline_init
        self.reward_var: float | None = None  # running reward variance (normalize_advantage only)
        self.controller: Controller | None = None
        self.optimizer: torch.optim.Adam | None = None
        # Sampling draws only from this generator; the controller's init has its own stream.
        self.generator = torch.Generator(device=self.device).manual_seed(self._stream_seed(1))
        self._state = None
        self._prev: torch.Tensor | None = None
        self._noise: torch.Tensor | None = None
        self._taken: list[np.ndarray] = []  # this batch's actions so far, per step
        # unique_children: the architectures drawn, and per prefix how many of them start with it; children of
        # the update in progress are counted at once but committed at the update, so a resume replays them exactly
        self.drawn: set[tuple[int, ...]] = set()
        self._drawing: list[tuple[int, ...]] = []
        self._prefix_counts: Counter[bytes] = Counter()  # prefix (as prefix_key) -> architectures drawn under it
        self._remembering = True  # False in sample_actions: the policy's own draws, neither narrowed nor counted
        self.queue: list[Episode] = []  # queue_size > 0: the best distinct architectures seen, best first
        self._outer_threads = torch.get_num_threads()

    def config(self) -> dict[str, Any]:
        return {**super().config(), "preset": self.preset, "device": str(self.device), "num_threads": self.num_threads}

    # --- the sampling state a driver keeps (the Ray replicas) -------------------------------------
    def sampling_state(self) -> dict[str, Any]:
        """What a replica's next batch depends on: the sampling generator, the counters and the baseline."""
        return {"rng": self.generator.get_state(), "children_done": self.children_done,
                "updates_done": self.updates_done, "baseline": self.baseline}

    def load_sampling_state(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`sampling_state` (the policy's weights are set apart, from the parameter servers)."""
        self.generator.set_state(state["rng"])
        self.set_progress(int(state["children_done"]), int(state["updates_done"]))
        self.baseline = None if state["baseline"] is None else float(state["baseline"])

    # --- hooks ---------------------------------------------------------------------------
    def _setup(self, token_specs: tuple[TokenSpec, ...], num_actions: int) -> None:
        super()._setup(token_specs, num_actions)
        init = torch.Generator().manual_seed(self._stream_seed(0))
        o = self.options
        self.controller = Controller(token_specs, num_actions, generator=init, temperature=o.temperature,
                                     tanh_constant=o.tanh_constant, op_tanh_reduce=o.op_tanh_reduce,
                                     **o.controller_kwargs).to(self.device)
        self.optimizer = torch.optim.Adam(self.controller.parameters(), lr=o.lr)
        # the most architectures that can follow each prefix length (the product of the later tokens' choices)
        self._completions = [math.prod(s.num_choices for s in token_specs[k:]) for k in range(len(token_specs) + 1)]

    def _begin_batch(self, batch_size: int) -> None:
        self._state = self.controller.initial_state(batch_size)
        self._prev = None
        self._taken = []
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
        if self.options.unique_children and self._remembering:
            self._draw_unique(step, actions, scores, masks, live)
        self._prev = actions
        self._taken.append(actions.cpu().numpy())
        return self._taken[-1]

    def _draw_unique(self, step: int, actions: torch.Tensor, scores: torch.Tensor, masks: np.ndarray,
                     live: np.ndarray) -> None:
        """Redraw (in ``actions``) each live row's token that enters a prefix whose every completion was drawn.

        Narrows ``masks`` in place (the loop records them, so the gradient is that of what was sampled). A row
        whose every valid choice is used up keeps its masks (and draws a repeat). Rows go one by one at the last
        token, so one batch never draws an architecture twice either.
        """
        last = step == self.controller.num_steps - 1
        capacity = self._completions[step + 1]
        if capacity > TRACKED_COMPLETIONS and not last:  # no search draws that many children: nothing is used up
            return
        width = scores.shape[1]
        for i in np.flatnonzero(live):
            prefix = tuple(int(a[i]) for a in self._taken)
            used = [a for a in np.flatnonzero(masks[i, :width])
                    if self._prefix_counts[prefix_key((*prefix, int(a)))] >= capacity]
            if used and len(used) < masks[i, :width].sum():
                masks[i, used] = False
                actions[i] = torch.argmax(scores[i].masked_fill(~torch.from_numpy(masks[i, :width]), -np.inf))
            if last:
                self._count((*prefix, int(actions[i])))
                self._drawing.append((*prefix, int(actions[i])))

    def _count(self, actions: tuple[int, ...]) -> None:
        """Count a newly drawn architecture under each prefix that could be used up (a repeat counts once)."""
        if actions not in self.drawn and actions not in self._drawing:
            for k in range(len(actions), 0, -1):
                if self._completions[k] > TRACKED_COMPLETIONS:
                    break  # shorter prefixes have even more completions
                self._prefix_counts[prefix_key(actions[:k])] += 1

    def sample_actions(self, masks: np.ndarray, batch_size: int) -> np.ndarray:
        """Draws of the policy itself (see the base class): ``unique_children`` neither narrows nor counts them."""
        self._remembering = False
        try:
            return super().sample_actions(masks, batch_size)
        finally:
            self._remembering = True

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
        for _ in range(1, self.options.ppo_epochs):  # PPO's further steps on the same batch (docs/controller_study.md)
            self._backward(self._loss(batch, old_log_probs=batch.old_log_probs).loss)
            self.optimizer.step()
        return stats

    def policy_gradient(self, episodes: list[Episode]) -> UpdateStats:
        """The REINFORCE gradient of ``episodes``, left (clipped) in the controller's ``.grad``; no optimizer step.

        Also moves the baseline (and the running reward variance) on. For a distributed replica, which pushes
        the gradient to parameter servers: one gradient per batch, so ``ppo_epochs > 1`` is refused.
        """
        if self.options.ppo_epochs > 1:
            raise ValueError(f"ppo_epochs={self.options.ppo_epochs}: several gradient steps per batch run only in the "
                             f"local agent's update; policy_gradient (the Ray backend) takes one (ppo_epochs=1)")
        return self._first_gradient(episodes)[0]

    def _loss(self, batch: _Batch, old_log_probs: torch.Tensor | None = None) -> ReinforceLoss:
        out = reinforce_loss(self.controller, batch.actions, batch.rewards, batch.baseline, batch.masks, batch.taken,
                             self.options.entropy_coef, advantage_scale=batch.advantage_scale,
                             skip_penalty=self.options.skip_penalty, skip_target=self.options.skip_target,
                             old_log_probs=old_log_probs, clip_ratio=self.options.clip_ratio)
        if batch.queue is not None:  # priority-queue training: maximise the best architectures' log-likelihood
            actions, masks, taken = batch.queue
            logp, _ = self.controller.log_probs(actions, masks)
            out.loss = out.loss - self.options.queue_coef * logp.masked_fill(~taken, 0.0).sum(1).mean()
        return out

    def _tensors(self, episodes: list[Episode]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Episodes as padded tensors: actions (m x T), masks (m x T x A), steps taken (m x T)."""
        m, length = len(episodes), self.controller.num_steps
        actions = np.zeros((m, length), dtype=np.int64)
        masks = np.ones((m, length, self.num_actions), dtype=bool)
        taken = np.zeros((m, length), dtype=bool)
        for k, ep in enumerate(episodes):
            t = len(ep.actions)
            actions[k, :t], masks[k, :t], taken[k, :t] = ep.actions, ep.masks, True
        dev = self.device
        return torch.from_numpy(actions).to(dev), torch.from_numpy(masks).to(dev), torch.from_numpy(taken).to(dev)

    def _remember(self, episodes: list[Episode]) -> None:
        """Take this update's children into the drawn architectures and the priority queue."""
        self.drawn.update(self._drawing)
        self._drawing = []
        if self.options.queue_size and self.options.queue_coef:
            best = {tuple(ep.actions.tolist()): ep for ep in self.queue}
            for ep in episodes:  # a repeat keeps its best reward
                key = tuple(ep.actions.tolist())
                if key not in best or ep.reward > best[key].reward:
                    best[key] = Episode(-1, ep.actions.copy(), ep.masks.copy(), float(ep.reward), {})
            self.queue = sorted(best.values(), key=lambda ep: -ep.reward)[: self.options.queue_size]

    def _backward(self, loss: torch.Tensor) -> float:
        """The gradient of ``loss`` in ``.grad``, clipped; returns its norm before clipping."""
        self.controller.zero_grad(set_to_none=True)
        loss.backward()
        max_norm = self.options.max_grad_norm if self.options.max_grad_norm is not None else float("inf")
        return float(torch.nn.utils.clip_grad_norm_(self.controller.parameters(), max_norm))

    def _first_gradient(self, episodes: list[Episode]) -> tuple[UpdateStats, _Batch]:
        """The plain REINFORCE gradient in ``.grad``, the update's stats and its batch; moves the baseline on."""
        self._remember(episodes)
        rewards = np.array([ep.reward for ep in episodes], dtype=np.float64)
        baseline = ema = float(rewards.mean()) if self.baseline is None else self.baseline
        learn_from = episodes
        if self.options.top_fraction < 1.0:  # risk-seeking: the top children, their quantile as the baseline
            baseline = float(np.quantile(rewards, 1.0 - self.options.top_fraction))
            learn_from = [ep for ep in episodes if ep.reward >= baseline]
        scale, var = 1.0, None
        if self.options.normalize_advantage:  # the std before this update's rewards, like the baseline
            var = float(np.mean((rewards - baseline) ** 2)) if self.reward_var is None else self.reward_var
            scale = math.sqrt(var) + ADVANTAGE_EPS
        learn_rewards = torch.tensor([ep.reward for ep in learn_from], dtype=torch.float32, device=self.device)
        batch = _Batch(*self._tensors(learn_from), learn_rewards, baseline, scale, torch.empty(0),
                       self._tensors(self.queue) if self.queue else None)
        taken = batch.taken.cpu().numpy()
        out = self._loss(batch)
        batch.old_log_probs = out.log_probs.detach().sum(1)
        grad_norm = self._backward(out.loss)

        # The baseline (and variance) take in this update's rewards only after the advantages used the old values.
        b, d = ema, self.options.baseline_decay
        for r in rewards:
            if var is not None:
                delta = float(r) - b
                var = d * (var + (1.0 - d) * delta * delta)
            b = d * b + (1.0 - d) * float(r)
        self.baseline, self.reward_var = b, var

        ent = out.entropies.detach().cpu().numpy()
        per_type = {name: float(ent[:, steps][taken[:, steps]].mean())
                    for name, steps in self.controller.steps_by_type.items() if taken[:, steps].any()}
        stats = dataclasses.replace(
            self._reward_stats(episodes), baseline=baseline, advantage_mean=float((rewards.mean() - baseline) / scale),
            policy_loss=float(out.policy_loss.detach()), entropy=float(out.entropy.detach()),
            entropy_per_type=per_type, grad_norm=grad_norm)
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
            "baseline": self.baseline, "reward_var": self.reward_var, "drawn": sorted(self.drawn),
            "queue": [(torch.from_numpy(ep.actions.copy()), torch.from_numpy(ep.masks.copy()), ep.reward)
                      for ep in self.queue],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a snapshot; a checkpoint older than a knob runs on with the value that knob had then."""
        older = {k: v for k, v in ADDED_KNOBS.items() if k not in state.get("config", {})}
        if older:
            self.options = dataclasses.replace(self.options, **older)
        super().load_state_dict(state)

    def _load_policy_state(self, state: dict[str, Any]) -> None:
        if state.get("controller") is not None:
            self.controller.load_state_dict(state["controller"])
            self.optimizer.load_state_dict(state["optimizer"])
        self.baseline = None if state.get("baseline") is None else float(state["baseline"])
        self.reward_var = None if state.get("reward_var") is None else float(state["reward_var"])
        self.drawn, self._drawing, self._prefix_counts = set(), [], Counter()
        for actions in state.get("drawn", []):
            self._count(tuple(int(a) for a in actions))
            self.drawn.add(tuple(int(a) for a in actions))
        self.queue = [Episode(-1, a.numpy().copy(), mk.numpy().copy(), float(r), {})
                      for a, mk, r in state.get("queue", [])]
