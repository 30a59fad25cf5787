"""``NASEnv``: a Gymnasium environment that walks any search space one decision per step."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from nas_env.checks import check_choice, check_in, check_number, check_optional, is_int, is_number
from nas_env.evaluators import EvalResult, Evaluator, as_result
from nas_env.spaces.base import Architecture, SearchSpace

INVALID_ACTION_POLICIES = ("penalize", "wrap", "raise")
COST_METRICS = ("params", "flops")
DECODE_CACHE_SIZE = 100_000  # decoded architectures kept per env (immutable; a table env meets each many times)
MNASNET_COST_EXPONENT = -0.07  # MnasNet's soft-constraint exponent (Tan et al. 2019)
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

    The current step index is the number of non-zero entries. Under a depth curriculum
    (see *Depth*) the spaces stay those of the full depth and the entries past the current
    depth's tokens stay 0.

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

    **Cost-aware reward** (beyond the paper; MnasNet's soft constraint, Tan et al. 2019):
    with `cost_metric="params"` (trainable parameters) or `"flops"` (multiply-adds of one
    image), the accuracy is multiplied by `(cost / cost_target) ** cost_exponent` before
    the transform:

        reward = reward_transform(val_acc * (cost / cost_target) ** cost_exponent)

    Sign convention: `cost_exponent` must be <= 0. A negative exponent lowers the reward of
    children costlier than `cost_target` and raises that of cheaper ones (MnasNet's
    -0.07: twice the target costs about 5% of the reward, half of it gains about 5%); 0
    turns the factor off. Under `"cube"` the factor is cubed with the accuracy, so the
    effective exponent is 3x. The cost comes from the evaluator's metrics (`params` /
    `flops`, which both built-in evaluators report). `info` carries `cost` and
    `cost_factor`; `raw_reward` stays the unshaped score.

    ## Depth

    For a space with a depth (one that has `num_layers` and `with_layers(k)`, like the CNN
    space), `set_num_layers(k)` (also through `envs.call("set_num_layers", k)` on a vector
    env) or `reset(options={"num_layers": k})` makes episodes emit only the first `k`
    layers' tokens, from the next reset on: the paper's depth curriculum (6 layers, +2
    every 1,600 children). The action and observation spaces stay those of the full
    depth; the child is decoded by `space.with_layers(k)`. `active_layers` sets the
    starting depth (None: the full depth); `env.num_layers` reads the setting.

    ## Episode End

    Terminates after the last token of the current depth (or at an invalid action under
    `"penalize"`). Never truncates. `step` after the end raises `RuntimeError` until `reset`.

    ## Info

    Every step: `action_mask`, `step`. The last step adds `arch` (canonical JSON, or None),
    `val_acc`, `val_acc_history`, `params`, `flops`, `train_seconds`, `status`, `seed`,
    `raw_reward`, and `score_key` / `score_lower_is_better` (which entry is the headline
    metric, and its direction); `num_layers` for spaces with a depth; `cost` and
    `cost_factor` with a cost-aware reward. Every other metric the evaluator reports passes through. The
    headline metric is the class's `score_key` (`val_acc`; the PTB env's is `val_ppl`, with
    `val_ppl_history`).

    ## Seeding

    `reset(seed=s)` seeds `self.np_random`, from which each episode draws its child seed:
    the child's initialisation, data order and augmentation. On the CPU the same seed and
    actions give the same reward.

    ## Rendering

    `render_mode="ansi"` returns the layers so far as a text table; `"human"` prints it on
    every step; `"rgb_array"` returns a picture (`H x W x 3` uint8, drawn by
    `nas_env.draw.draw_episode`): after the last step the finished architecture with its
    status and score, during an episode the layers (or cell nodes) decided so far.

    ## Version History

    * v0: initial version (the depth and the cost-aware reward are options whose defaults keep it).
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi", "human", "rgb_array"], "render_fps": 4}
    # The evaluator's headline metric: the final info always has it and its "<score_key>_history", and names it
    # (info["score_key"], info["score_lower_is_better"]) so a recorder need not know what an accuracy is.
    score_key: ClassVar[str] = "val_acc"
    score_lower_is_better: ClassVar[bool] = False

    def __init__(
        self,
        space: SearchSpace,
        evaluator: Evaluator | Callable[[Architecture, int], EvalResult | float],
        reward_transform: str = "identity", invalid_action: str = "penalize", invalid_action_penalty: float = -1.0,
        render_mode: str | None = None, active_layers: int | None = None,
        cost_metric: str | None = None, cost_target: float | None = None, cost_exponent: float = MNASNET_COST_EXPONENT,
    ) -> None:
        if not callable(evaluator):
            raise TypeError(f"evaluator must be callable (arch, seed) -> EvalResult, got {evaluator!r}")
        self.space = space
        self.evaluator = evaluator
        self.reward_transform = check_choice("reward_transform", reward_transform, tuple(REWARD_TRANSFORMS))
        self._transform = REWARD_TRANSFORMS[reward_transform]
        self.invalid_action = check_choice("invalid_action", invalid_action, INVALID_ACTION_POLICIES)
        self.invalid_action_penalty = check_number("invalid_action_penalty", invalid_action_penalty)
        self.render_mode = check_optional("render_mode", render_mode, check_choice, self.metadata["render_modes"])
        self.cost_metric, self.cost_target, self.cost_exponent = _check_cost(cost_metric, cost_target, cost_exponent)

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
        self._decoded: dict[tuple[int, ...], Architecture] = {}  # (depth's token count, *actions) -> architecture

        # Depth: only spaces that can rebuild themselves at another depth support it.
        depth = getattr(space, "num_layers", None)
        self.max_num_layers: int | None = depth if callable(getattr(space, "with_layers", None)) and isinstance(
            depth, int) else None
        self._depths: dict[int, tuple[SearchSpace, int]] = {}  # depth -> (space at that depth, its token count)
        self._num_layers = self.max_num_layers  # the setting, applied at each reset
        if active_layers is not None:
            self.set_num_layers(active_layers)
        self._apply_depth()

    # --- depth -------------------------------------------------------------------------------
    @property
    def num_layers(self) -> int | None:
        """The depth episodes are sampled at from the next reset (None: the space has no depth)."""
        return self._num_layers

    def set_num_layers(self, num_layers: int) -> None:
        """Emit only the first ``num_layers`` layers' tokens from the next ``reset`` on (depth curriculum).

        The spaces keep the full depth, so an agent built for it needs no change. Raises
        ``ValueError`` for a depth outside ``1..max_num_layers`` or a space without a depth.
        """
        if self.max_num_layers is None:
            raise ValueError(f"this env's search space ({type(self.space).__name__}) has no depth to set: it needs "
                             "an int num_layers and a with_layers(k) method")
        if not is_int(num_layers) or not 1 <= num_layers <= self.max_num_layers:
            raise ValueError(f"num_layers must be an int in 1..{self.max_num_layers} (the space's depth), "
                             f"got {num_layers!r}")
        k = int(num_layers)
        if k not in self._depths:
            sub = self.space.with_layers(k)
            n = len(tuple(sub.tokens()))
            if tuple(sub.tokens()) != self.token_specs[:n]:
                raise ValueError(f"the space at depth {k} is not a prefix of the full space's tokens: "
                                 "a depth curriculum needs the first layers' tokens to come first")
            self._depths[k] = (sub, n)
        self._num_layers = k

    def _apply_depth(self) -> None:
        """The depth setting becomes the episode's: its layers, space and token count (the full ones by default)."""
        self._episode_layers = self._num_layers
        self._episode_space, self._episode_len = self._depths.get(self._num_layers, (self.space, len(self.token_specs)))

    # --- evaluator state -------------------------------------------------------------------
    @property
    def evaluator_state(self) -> dict[str, Any] | None:
        """The evaluator's checkpointable state (a weight-sharing supernet's weights and optimiser), or None.

        The runner saves it with the agent's checkpoint and sets it back on resume
        (``envs.get_attr`` / ``envs.set_attr`` reach it on every sub-env).
        """
        state_dict = getattr(self.evaluator, "state_dict", None)
        return state_dict() if callable(state_dict) else None

    @evaluator_state.setter
    def evaluator_state(self, state: dict[str, Any] | None) -> None:
        if state is None:
            return
        load = getattr(self.evaluator, "load_state_dict", None)
        if not callable(load):
            raise ValueError(f"this env's evaluator ({type(self.evaluator).__name__}) keeps no state to restore")
        load(state)

    # --- Gymnasium API ---------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if options and options.get("num_layers") is not None:
            self.set_num_layers(options["num_layers"])
        self._apply_depth()
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
        if t + 1 < self._episode_len:
            if self.render_mode == "human":
                self.render()
            return self._obs.copy(), 0.0, False, False, {"action_mask": self._masks_int8[t + 1].copy(), "step": t + 1}
        return self._finish()

    def action_masks(self) -> np.ndarray:
        """Valid actions of the current step (bool). After the episode ends: the first step's mask."""
        t = len(self._actions) if not self._done else 0
        return self._masks[t].copy()

    def render(self) -> str | np.ndarray | None:
        if self.render_mode == "rgb_array":
            return self._render_picture()
        text = self._render_text()
        if self.render_mode == "human":
            print(text)
            return None
        return text

    def _render_picture(self) -> np.ndarray:
        """The finished architecture (with its status and score) or the episode so far, as an RGB array."""
        from nas_env.draw import draw_episode  # matplotlib is imported only when a picture is asked for

        info = self._last_info if self._done else {}
        caption = None
        if info:
            score = info.get(self.score_key)
            shown = f"{score:.4f}" if isinstance(score, int | float) else score
            caption = f"status {info['status']}, {self.score_key} {shown}"
        return draw_episode(self._episode_space, self._actions, info.get("arch"), caption=caption)

    # --- helpers ---------------------------------------------------------------------------
    def _check_action(self, action: Any) -> int:
        if isinstance(action, np.ndarray):
            if action.shape != () or not np.issubdtype(action.dtype, np.integer):
                raise TypeError(
                    f"action must be a scalar int in 0..{self.action_space.n - 1}, got an array of shape "
                    f"{action.shape} and dtype {action.dtype}"
                )
            action = action.item()
        if not is_int(action):
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

    def _default_score(self, result: EvalResult) -> Any:
        """``info[score_key]`` when the evaluator's metrics lack it: the raw reward (an accuracy), 0 if not ok."""
        return result.reward if result.status == "ok" else 0.0

    def _result_info(self, arch: Architecture | None, result: EvalResult, reward: float) -> dict[str, Any]:
        m = result.metrics
        key = self.score_key
        info = {
            "arch": arch.to_json() if arch is not None else None,
            key: m.get(key, self._default_score(result)),
            f"{key}_history": list(m.get(f"{key}_history", [])),
            "params": m.get("params"),
            "flops": m.get("flops"),
            "train_seconds": m.get("train_seconds", 0.0),
            "status": result.status,
            "seed": self._child_seed,
            "raw_reward": result.reward,
            "score_key": key,
            "score_lower_is_better": self.score_lower_is_better,
        }
        if self._episode_layers is not None:
            info["num_layers"] = self._episode_layers
        info.update({k: v for k, v in m.items() if k not in info})
        return info

    def _end_invalid(self, a: int, t: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self._done = True
        result = EvalResult(0.0, "invalid_action", {"error": self._invalid_message(a, t)})
        info = {"action_mask": self._masks_int8[t].copy(), "step": t,
                **self._result_info(None, result, self.invalid_action_penalty)}
        self._last_info = info
        return self._obs.copy(), self.invalid_action_penalty, True, False, info

    def _finish(self) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self._done = True
        key = (self._episode_len, *self._actions)
        arch = self._decoded.get(key)
        if arch is None:  # decoding validates the whole architecture: do it once per distinct child
            arch = self._episode_space.decode(self._actions)
            if len(self._decoded) < DECODE_CACHE_SIZE:
                self._decoded[key] = arch
        result = as_result(self.evaluator(arch, self._child_seed))
        score, cost_info = self._apply_cost(result)
        # A child stopped early keeps the accuracy it reached (a lower bound); failures score 0.
        reward = float(self._transform(score)) if result.status in ("ok", "stopped_early") else 0.0
        if not math.isfinite(reward):
            result, reward = EvalResult(0.0, "diverged", result.metrics), 0.0
        t = self._episode_len
        info = {"action_mask": self._masks_int8[0].copy(), "step": t, **self._result_info(arch, result, reward),
                **cost_info}
        self._last_info = info
        if self.render_mode == "human":
            self.render()
        return self._obs.copy(), reward, True, False, info

    def _apply_cost(self, result: EvalResult) -> tuple[float, dict[str, Any]]:
        """The score after the cost factor, and the ``cost`` / ``cost_factor`` info entries (none without a metric)."""
        if self.cost_metric is None:
            return result.reward, {}
        cost = result.metrics.get(self.cost_metric)
        if cost is None:
            if result.status != "ok":  # a failed child may lack metrics; it is rewarded 0 anyway
                return result.reward, {"cost": None, "cost_factor": None}
            raise RuntimeError(f"cost_metric={self.cost_metric!r} needs the evaluator to report "
                               f"metrics[{self.cost_metric!r}]; it reported {sorted(result.metrics)}")
        if not isinstance(cost, int | float | np.integer | np.floating) or not cost > 0:
            raise RuntimeError(f"the evaluator reported {self.cost_metric}={cost!r}; a cost must be a number > 0")
        factor = (float(cost) / self.cost_target) ** self.cost_exponent
        return result.reward * factor, {"cost": cost, "cost_factor": factor}

    def _render_text(self) -> str:
        rows: dict[int, list[str]] = {}
        skips: dict[int, list[int]] = {}
        for spec, a in zip(self.token_specs, self._actions, strict=False):
            if spec.name == "skip":
                skips.setdefault(spec.layer, []).append(int(spec.choices[a]))
            else:
                rows.setdefault(spec.layer, []).append(f"{spec.name}={spec.choices[a]}")
        lines = [f"step {len(self._actions)}/{self._episode_len}"]
        for layer in sorted(set(rows) | set(skips)):
            cells = list(rows.get(layer, []))
            if layer in skips:
                srcs = [str(j + 1) for j, bit in enumerate(skips[layer]) if bit]
                cells.append("inputs=" + (",".join(srcs) or "image"))
            lines.append(f"layer {layer:>2} | " + " | ".join(cells))
        if self._done and self._last_info:
            i = self._last_info
            score = i[self.score_key]
            shown = f"{score:.4f}" if isinstance(score, int | float) else score
            lines.append(f"status={i['status']} {self.score_key}={shown} params={i['params']}")
        return "\n".join(lines)


def _check_cost(metric: str | None, target: float | None, exponent: float) -> tuple[str | None, float, float]:
    """Validate the cost-aware reward's options; returns ``(metric, target, exponent)``."""
    if metric is None:
        if target is not None:
            raise ValueError(f"cost_target={target!r} is set but cost_metric is None: choose one of {COST_METRICS}")
        return None, 1.0, 0.0
    check_optional("cost_metric", metric, check_in, COST_METRICS)  # the message offers None too
    if not is_number(target) or not math.isfinite(target) or target <= 0:
        raise ValueError(f"cost_target must be a finite number > 0 (the {metric} the reward is neutral at), "
                         f"got {target!r}")
    if not is_number(exponent) or not math.isfinite(exponent) or exponent > 0:
        raise ValueError(f"cost_exponent must be a finite number <= 0 (negative penalises cost above cost_target; "
                         f"MnasNet uses {MNASNET_COST_EXPONENT}), got {exponent!r}")
    return metric, float(target), float(exponent)
