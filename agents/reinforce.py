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

Defaults, from quick sweeps on the digits space with the synthetic evaluator (3 layers,
12 tokens; mean reward of the last 200 children after 3,000-4,000, lr 0.0006, 3-6 seeds;
"noisy": the evaluator's score plus N(0, 0.1) noise, as a stand-in for noisy child accuracies):

* lr 0.0006 with Adam: the paper's.
* ``children_per_update`` m = 5. At a fixed lr, fewer children per update means more updates
  per child: noise-free 0.88 (m=4) / 0.85 (m=5) / 0.80 (m=8); noisy 0.73 / 0.69 / 0.59.
  m = 5 keeps a little more averaging than 4 for noisy accuracies. (With a 5x larger lr,
  m = 5 stalled on 3 of 8 seeds while m = 8 did not: raise m with the lr.)
* EMA decay 0.95 per child (a memory of about 20 children): noise-free, 0.8 to 0.99 all
  reach 0.80-0.81; noisy (m=5, 6 seeds) 0.69 (0.95), 0.68 (0.9), 0.65 (0.99, one seed stalled
  at 0.44). Longer memories average noisy accuracies; shorter ones track the improving policy.
* ``entropy_coef`` 0 (the paper has none): 0.001 and 0.01 changed nothing beyond seed noise
  (noisy, m=8: 0.61 and 0.60 vs 0.59).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from agents.base import Episode, EpisodicSearchAgent, UpdateStats
from agents.controller import Controller, apply_action_mask, gumbel_noise, log_probs_and_entropy
from nas_env.spaces.base import TokenSpec


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


def reinforce_loss(
    controller: Controller,
    actions: torch.Tensor,
    rewards: torch.Tensor,
    baseline: float | torch.Tensor,
    masks: torch.Tensor | None = None,
    step_mask: torch.Tensor | None = None,
    entropy_coef: float = 0.0,
) -> ReinforceLoss:
    """The REINFORCE loss of m children, whose gradient is minus the paper's policy-gradient estimate.

    ``loss = -(1/m) sum_k (R_k - b) sum_t log P(a_t^k | a_<t^k) - entropy_coef * (1/m) sum_k sum_t H_t^k``

    Args:
        actions: m x T (long) actions taken; steps past an episode's end may hold anything valid.
        rewards: m rewards R_k.
        baseline: b (no gradient flows through it).
        masks: m x T x A (bool) action masks the actions were sampled under (None: heads only).
        step_mask: m x T (bool) steps actually taken (None: all).
        entropy_coef: weight of the entropy bonus (summed over steps like the log-probabilities).
    """
    logp_all, entropies = log_probs_and_entropy(apply_action_mask(controller(actions), masks))
    logp = logp_all.gather(-1, actions.to(logp_all.device, torch.long).unsqueeze(-1)).squeeze(-1)
    if step_mask is not None:
        keep = step_mask.to(logp.device, torch.bool)
        logp = logp.masked_fill(~keep, 0.0)  # masked_fill: a padded -inf never turns into NaN
        entropies = entropies.masked_fill(~keep, 0.0)
        num_tokens = keep.sum().clamp_min(1)
    else:
        num_tokens = torch.tensor(logp.numel())
    rewards = torch.as_tensor(rewards, dtype=logp.dtype, device=logp.device)
    advantages = rewards - torch.as_tensor(baseline, dtype=logp.dtype, device=logp.device).detach()
    m = actions.shape[0]
    policy_loss = -(advantages * logp.sum(1)).sum() / m
    loss = policy_loss - entropy_coef * entropies.sum() / m if entropy_coef else policy_loss
    return ReinforceLoss(loss, policy_loss, entropies.sum() / num_tokens, logp, entropies)


class ReinforceAgent(EpisodicSearchAgent):
    """The paper's controller trained with REINFORCE and an EMA baseline.

    Args:
        seed: search seed (child env seeds, the controller's initialisation and its sampling generator).
        children_per_update: m, children per policy update (a multiple of the vector env's ``num_envs``).
        lr: Adam learning rate (the paper: 0.0006).
        baseline_decay: EMA decay per child, ``b <- d*b + (1-d)*R``.
        baseline_init: the starting baseline; None: the first update's mean reward.
        entropy_coef: entropy bonus weight (0: the paper's plain REINFORCE).
        max_grad_norm: clip the gradient's global norm (None: no clipping).
        device: torch device of the controller (it is tiny: "cpu" is fastest).
        num_threads: torch intra-op threads for the agent's own work (sampling and updates; None:
            leave torch's setting). The caller's setting is restored after each batch and around
            the env steps that evaluate a child (the last token), so a child's training keeps it.
            1 by default: on tensors this small, extra threads only add synchronisation (on 2
            busy cores, an 8-row LSTM cell took 92 us at 2 threads vs 28 us at 1; an update of
            8 x 150 tokens 126 ms vs 7 ms).
        controller_kwargs: passed to :class:`Controller` (``hidden_size``, ``num_layers``, ``init_range``...).
    """

    name: ClassVar[str] = "reinforce"

    def __init__(
        self,
        seed: int = 0,
        children_per_update: int = 5,
        lr: float = 0.0006,
        baseline_decay: float = 0.95,
        baseline_init: float | None = None,
        entropy_coef: float = 0.0,
        max_grad_norm: float | None = None,
        device: str | torch.device = "cpu",
        num_threads: int | None = 1,
        controller_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(seed, children_per_update)
        if not 0.0 <= baseline_decay < 1.0:
            raise ValueError(f"baseline_decay must be in [0, 1), got {baseline_decay!r}")
        if lr <= 0 or entropy_coef < 0 or (max_grad_norm is not None and max_grad_norm <= 0):
            raise ValueError("lr and max_grad_norm must be > 0 and entropy_coef >= 0")
        self.lr = float(lr)
        self.baseline_decay = float(baseline_decay)
        self.baseline_init = baseline_init
        self.entropy_coef = float(entropy_coef)
        self.max_grad_norm = max_grad_norm
        self.device = torch.device(device)
        self.num_threads = num_threads
        self.controller_kwargs = dict(controller_kwargs or {})
        self.baseline: float | None = None if baseline_init is None else float(baseline_init)
        self.controller: Controller | None = None
        self.optimizer: torch.optim.Adam | None = None
        # Sampling draws only from this generator; the controller's init has its own stream.
        self.generator = torch.Generator(device=self.device).manual_seed(self._stream_seed(1))
        self._state = None
        self._prev: torch.Tensor | None = None
        self._noise: torch.Tensor | None = None
        self._outer_threads = torch.get_num_threads()

    def config(self) -> dict[str, Any]:
        return {**super().config(), "lr": self.lr, "baseline_decay": self.baseline_decay,
                "baseline_init": self.baseline_init, "entropy_coef": self.entropy_coef,
                "max_grad_norm": self.max_grad_norm, "device": str(self.device), "num_threads": self.num_threads,
                "controller_kwargs": copy.deepcopy(self.controller_kwargs)}

    # --- hooks ---------------------------------------------------------------------------
    def _setup(self, token_specs: tuple[TokenSpec, ...], num_actions: int) -> None:
        super()._setup(token_specs, num_actions)
        init = torch.Generator().manual_seed(self._stream_seed(0))
        self.controller = Controller(token_specs, num_actions, generator=init, **self.controller_kwargs).to(self.device)
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
        stats = self.policy_gradient(episodes)
        self.optimizer.step()
        return stats

    def policy_gradient(self, episodes: list[Episode]) -> UpdateStats:
        """The REINFORCE gradient of ``episodes``, left (clipped) in the controller's ``.grad``; no optimizer step.

        Also moves the baseline on by these children's rewards. Split from the step so that a
        distributed replica can push the gradient to parameter servers instead of applying it.
        """
        m, length = len(episodes), self.controller.num_steps
        actions = np.zeros((m, length), dtype=np.int64)
        masks = np.ones((m, length, self.num_actions), dtype=bool)
        taken = np.zeros((m, length), dtype=bool)
        for k, ep in enumerate(episodes):
            t = len(ep.actions)
            actions[k, :t], masks[k, :t], taken[k, :t] = ep.actions, ep.masks, True
        rewards = np.array([ep.reward for ep in episodes], dtype=np.float64)
        baseline = float(rewards.mean()) if self.baseline is None else self.baseline
        dev = self.device
        out = reinforce_loss(self.controller, torch.from_numpy(actions).to(dev),
                             torch.tensor(rewards, dtype=torch.float32, device=dev), baseline,
                             torch.from_numpy(masks).to(dev), torch.from_numpy(taken).to(dev), self.entropy_coef)
        self.controller.zero_grad(set_to_none=True)
        out.loss.backward()
        max_norm = self.max_grad_norm if self.max_grad_norm is not None else float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.controller.parameters(), max_norm))

        # The baseline takes in this update's rewards only after the advantages used the old value.
        b = baseline
        for r in rewards:
            b = self.baseline_decay * b + (1.0 - self.baseline_decay) * float(r)
        self.baseline = b

        ent = out.entropies.detach().cpu().numpy()
        per_type = {name: float(ent[:, steps][taken[:, steps]].mean())
                    for name, steps in self._steps_by_type.items() if taken[:, steps].any()}
        return UpdateStats(
            update=self.updates_done, children_done=self.children_done, num_children=m,
            reward_mean=float(rewards.mean()), reward_max=float(rewards.max()), baseline=baseline,
            advantage_mean=float(rewards.mean() - baseline), policy_loss=float(out.policy_loss.detach()),
            entropy=float(out.entropy.detach()), entropy_per_type=per_type, grad_norm=grad_norm,
        )

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
        }

    def _load_policy_state(self, state: dict[str, Any]) -> None:
        if state.get("controller") is not None:
            self.controller.load_state_dict(state["controller"])
            self.optimizer.load_state_dict(state["optimizer"])
        self.baseline = None if state.get("baseline") is None else float(state["baseline"])
