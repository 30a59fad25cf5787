"""``NASEnv``: a Gymnasium environment that walks any search space one decision per step."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from nas_env.evaluators import EvalResult, Evaluator, as_result
from nas_env.spaces.base import Architecture, SearchSpace

INVALID_ACTION_POLICIES = ("penalize", "wrap", "raise")
REWARD_TRANSFORMS: dict[str, Callable[[float], float]] = {
    "identity": lambda r: r,
    "cube": lambda r: r**3,  # the paper's: sharpens differences between good children
}


class NASEnv(gym.Env[np.ndarray, np.int64]):
    """
    ## Description

    Neural architecture search as an episodic environment (Zoph & Le, "Neural Architecture
    Search with Reinforcement Learning", ICLR 2017). Each step emits one architecture token;
    the last step hands the finished architecture to an evaluator (by default: train the
    child and measure its validation accuracy) and returns the result as the only reward.
    The env is generic: the search space defines the tokens, the evaluator the reward.

    ## Action Space

    `Discrete(A)`, where `A` is the largest number of choices of any token. At step `t`
    only actions `0 .. n_t - 1` are valid (`n_t` = choices of token `t`); see *Action Masks*.

    | Token (CNN space, per layer i) | Choices                       |
    |--------------------------------|-------------------------------|
    | `filter_height`                | 1, 3, 5, 7                    |
    | `filter_width`                 | 1, 3, 5, 7                    |
    | `stride_height` (if searched)  | 1, 2, 3                       |
    | `stride_width` (if searched)   | 1, 2, 3                       |
    | `num_filters`                  | 24, 36, 48, 64                |
    | `skip` x (i - 1), for i >= 2   | 0, 1 (layer j feeds layer i)  |

    ## Observation Space

    `MultiDiscrete(nvec)` with `nvec[t] = n_t + 1`, one entry per token of the episode:

    | Value at index t | Meaning                                  |
    |------------------|------------------------------------------|
    | 0                | token t not emitted yet                  |
    | k + 1            | token t was emitted with action k        |

    The current step index is the number of non-zero entries.

    ## Action Masks

    `env.action_masks()` (bool, sb3-contrib MaskablePPO's convention) and
    `info["action_mask"]` (int8, Gymnasium's) mark the valid actions of the current step.
    An action inside the action space that is invalid at this step follows `invalid_action`:

    | `invalid_action` | Effect                                                                 |
    |------------------|------------------------------------------------------------------------|
    | `"penalize"`     | episode ends, reward `invalid_action_penalty` (-1), status `"invalid_action"` |
    | `"wrap"`         | the action is taken modulo `n_t`                                        |
    | `"raise"`        | `ValueError`                                                            |

    Actions outside the action space (negative, too large, floats, None, arrays of the wrong
    shape) always raise `ValueError`/`TypeError`.

    ## Rewards

    0 on every step but the last. The last step's reward is `reward_transform(val_acc)`
    (`"identity"` or the paper's `"cube"`), where `val_acc` is the evaluator's raw score
    (for the trainer: the maximum validation accuracy over the last 5 epochs). A child whose
    training diverges (status `"diverged"`) or runs out of memory (`"oom"`) gets 0.

    ## Episode End

    Terminates after the last token (or at an invalid action under `"penalize"`). Never
    truncates. `step` after the end raises `RuntimeError` until `reset`.

    ## Info

    Every step: `action_mask`, `step`. The last step adds `arch` (canonical JSON, or None),
    `val_acc`, `val_acc_history`, `params`, `flops`, `train_seconds`, `status`, `seed`
    and `raw_reward`.

    ## Seeding

    `reset(seed=s)` seeds `self.np_random`, from which each episode draws its child seed:
    the child's initialisation, data order and augmentation. On the CPU the same seed and
    actions give the same reward.

    ## Version History

    * v0: initial version.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi", "human"], "render_fps": 4}

    def __init__(
        self,
        space: SearchSpace,
        evaluator: Evaluator | Callable[[Architecture, int], EvalResult | float],
        reward_transform: str = "identity",
        invalid_action: str = "penalize",
        invalid_action_penalty: float = -1.0,
        render_mode: str | None = None,
    ) -> None:
        if reward_transform not in REWARD_TRANSFORMS:
            raise ValueError(f"reward_transform must be one of {list(REWARD_TRANSFORMS)}, got {reward_transform!r}")
        if invalid_action not in INVALID_ACTION_POLICIES:
            raise ValueError(f"invalid_action must be one of {INVALID_ACTION_POLICIES}, got {invalid_action!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or one of {self.metadata['render_modes']}, got {render_mode!r}")
        if not callable(evaluator):
            raise TypeError(f"evaluator must be callable (arch, seed) -> EvalResult, got {evaluator!r}")
        if not isinstance(invalid_action_penalty, int | float) or not math.isfinite(invalid_action_penalty):
            raise ValueError(f"invalid_action_penalty must be a finite number, got {invalid_action_penalty!r}")
        self.space = space
        self.evaluator = evaluator
        self.reward_transform = reward_transform
        self._transform = REWARD_TRANSFORMS[reward_transform]
        self.invalid_action = invalid_action
        self.invalid_action_penalty = float(invalid_action_penalty)
        self.render_mode = render_mode

        self.token_specs = tuple(space.tokens())
        if not self.token_specs:
            raise ValueError("the search space has no tokens")
        self.num_choices = np.array([spec.num_choices for spec in self.token_specs], dtype=np.int64)
        self.action_space = spaces.Discrete(int(self.num_choices.max()))
        self.observation_space = spaces.MultiDiscrete(self.num_choices + 1)
        n_actions = int(self.action_space.n)
        self._masks = np.arange(n_actions)[None, :] < self.num_choices[:, None]  # T x A, precomputed once
        self._masks_int8 = self._masks.astype(np.int8)

        self._obs = np.zeros(len(self.token_specs), dtype=np.int64)
        self._actions: list[int] = []
        self._done = True
        self._started = False
        self._child_seed = 0
        self._last_info: dict[str, Any] = {}

    # --- Gymnasium API ---------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._child_seed = int(self.np_random.integers(0, 2**31 - 1))
        self._obs[:] = 0
        self._actions = []
        self._done = False
        self._started = True
        if self.render_mode == "human":
            self.render()
        return self._obs.copy(), {"action_mask": self._masks_int8[0].copy(), "step": 0}

    def step(self, action: Any) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        if self._done:
            raise RuntimeError("step() called on a finished episode (or before reset()); call reset() first")
        a = self._check_action(action)
        t = len(self._actions)
        n_t = int(self.num_choices[t])
        if a >= n_t:
            if self.invalid_action == "wrap":
                a %= n_t
            elif self.invalid_action == "raise":
                raise ValueError(self._invalid_message(a, t))
            else:
                return self._end_invalid(a, t)
        self._actions.append(a)
        self._obs[t] = a + 1
        if t + 1 < len(self.token_specs):
            if self.render_mode == "human":
                self.render()
            return self._obs.copy(), 0.0, False, False, {"action_mask": self._masks_int8[t + 1].copy(), "step": t + 1}
        return self._finish()

    def action_masks(self) -> np.ndarray:
        """Valid actions of the current step (bool). After the episode ends: the first step's mask."""
        t = len(self._actions) if not self._done else 0
        return self._masks[t].copy()

    def render(self) -> str | None:
        text = self._render_text()
        if self.render_mode == "human":
            print(text)
            return None
        return text

    # --- helpers ---------------------------------------------------------------------------
    def _check_action(self, action: Any) -> int:
        if isinstance(action, np.ndarray):
            if action.shape != () or not np.issubdtype(action.dtype, np.integer):
                raise TypeError(
                    f"action must be a scalar int in 0..{self.action_space.n - 1}, got an array of shape "
                    f"{action.shape} and dtype {action.dtype}"
                )
            action = action.item()
        if isinstance(action, bool) or not isinstance(action, int | np.integer):
            raise TypeError(f"action must be an int in 0..{self.action_space.n - 1}, got {action!r} "
                            f"({type(action).__name__})")
        a = int(action)
        if not 0 <= a < self.action_space.n:
            raise ValueError(f"action {a} is outside the action space Discrete({self.action_space.n}): "
                             f"allowed 0..{self.action_space.n - 1}")
        return a

    def _invalid_message(self, a: int, t: int) -> str:
        spec = self.token_specs[t]
        return (f"action {a} is invalid at step {t} ({spec.name}, layer {spec.layer}): allowed "
                f"0..{spec.num_choices - 1} for choices {spec.choices}")

    def _result_info(self, arch: Architecture | None, result: EvalResult, reward: float) -> dict[str, Any]:
        m = result.metrics
        info = {
            "arch": arch.to_json() if arch is not None else None,
            "val_acc": m.get("val_acc", result.reward if result.status == "ok" else 0.0),
            "val_acc_history": list(m.get("val_acc_history", [])),
            "params": m.get("params"),
            "flops": m.get("flops"),
            "train_seconds": m.get("train_seconds", 0.0),
            "status": result.status,
            "seed": self._child_seed,
            "raw_reward": result.reward,
        }
        info.update({k: v for k, v in m.items() if k not in info})
        return info

    def _end_invalid(self, a: int, t: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self._done = True
        result = EvalResult(0.0, "invalid_action", {"val_acc": 0.0, "error": self._invalid_message(a, t)})
        info = {"action_mask": self._masks_int8[t].copy(), "step": t,
                **self._result_info(None, result, self.invalid_action_penalty)}
        self._last_info = info
        return self._obs.copy(), self.invalid_action_penalty, True, False, info

    def _finish(self) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self._done = True
        arch = self.space.decode(self._actions)
        result = as_result(self.evaluator(arch, self._child_seed))
        reward = float(self._transform(result.reward)) if result.status == "ok" else 0.0
        if not math.isfinite(reward):
            result, reward = EvalResult(0.0, "diverged", result.metrics), 0.0
        t = len(self.token_specs)
        info = {"action_mask": self._masks_int8[0].copy(), "step": t, **self._result_info(arch, result, reward)}
        self._last_info = info
        if self.render_mode == "human":
            self.render()
        return self._obs.copy(), reward, True, False, info

    def _render_text(self) -> str:
        rows: dict[int, list[str]] = {}
        skips: dict[int, list[int]] = {}
        for spec, a in zip(self.token_specs, self._actions, strict=False):
            if spec.name == "skip":
                skips.setdefault(spec.layer, []).append(int(spec.choices[a]))
            else:
                rows.setdefault(spec.layer, []).append(f"{spec.name}={spec.choices[a]}")
        lines = [f"step {len(self._actions)}/{len(self.token_specs)}"]
        for layer in sorted(set(rows) | set(skips)):
            cells = list(rows.get(layer, []))
            if layer in skips:
                srcs = [str(j + 1) for j, bit in enumerate(skips[layer]) if bit]
                cells.append("inputs=" + (",".join(srcs) or "image"))
            lines.append(f"layer {layer:>2} | " + " | ".join(cells))
        if self._done and self._last_info:
            i = self._last_info
            lines.append(f"status={i['status']} val_acc={i['val_acc']:.4f} params={i['params']}")
        return "\n".join(lines)
