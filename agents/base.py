"""The interface the runner drives, and the batched-episode loop our own agents share (docs/agents.md).

:class:`EpisodicSearchAgent` is the core under our agents; a subclass only says how to act
(``_act``), how to learn (``_update``) and what its state is.

Seeding: child ``k`` of a search resets its env with :func:`child_seed` ``(seed, k)``, and
every batch starts with an explicit ``envs.reset(seed=[...])``. That makes each child's
env seed independent of batching and of resumes, and sidesteps Gymnasium 1.x vector
autoreset: a sub-env that ended is never asked for a meaningful step again; until the
batch ends it is fed a valid dummy action and its outputs are ignored.

Our agents size their policy from the env's ``token_specs`` (:func:`read_token_specs`, once per ``run``);
nothing else is read from env internals.
"""

from __future__ import annotations

import copy
import os
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext, suppress
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, ClassVar, TypeVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv

from nas_env.checks import check_int
from nas_env.spaces.base import TokenSpec

STATE_FORMAT = 1
AnyEnv = gym.vector.VectorEnv | gym.Env


@dataclass
class ChildRecord:
    """One finished episode (one child architecture)."""

    index: int  # 0-based child index in the whole search
    reward: float  # the env's final reward (after its reward_transform)
    info: dict[str, Any]  # the env's final-step info (arch, val_acc, status, ...)


@dataclass
class UpdateStats:
    """One policy update, for logging. Fields an agent has no value for are None."""

    update: int  # 0-based index of this update
    children_done: int  # children finished after this update
    num_children: int  # children this update learned from
    reward_mean: float
    reward_max: float
    baseline: float | None = None  # the baseline the advantages were computed with
    advantage_mean: float | None = None
    policy_loss: float = 0.0
    entropy: float | None = None  # mean per-token entropy of the policy over the update's children
    entropy_per_type: dict[str, float] = field(default_factory=dict)  # token type -> mean entropy
    grad_norm: float | None = None  # before clipping

    def scalars(self) -> dict[str, float]:
        """Flat name -> float of every available value (``entropy/<type>`` per token type), for loggers."""
        names = ("reward_mean", "reward_max", "baseline", "advantage_mean", "policy_loss", "entropy", "grad_norm",
                 "children_done")
        out = {k: float(getattr(self, k)) for k in names if getattr(self, k) is not None}
        out.update({f"entropy/{k}": float(v) for k, v in self.entropy_per_type.items()})
        return out


OnChild = Callable[[ChildRecord], None]
OnUpdate = Callable[[UpdateStats], None]


class SearchAgent(ABC):
    """What the runner drives: evaluate children, report them, checkpoint exactly."""

    name: ClassVar[str] = "agent"
    children_done: int

    @abstractmethod
    def run(self, envs: AnyEnv, num_children: int, on_child: OnChild, on_update: OnUpdate | None = None) -> None:
        """Evaluate children until ``self.children_done == num_children`` (a total, not an increment).

        ``on_child`` gets every finished child in index order; ``on_update`` follows each policy update.
        """

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """A snapshot (copies) of everything an exact resume needs; includes ``config`` (constructor kwargs)."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` snapshot."""

    def save(self, path: str | os.PathLike[str]) -> None:
        torch.save(self.state_dict(), path)

    @classmethod
    def load(cls, path: str | os.PathLike[str], **overrides: Any) -> SearchAgent:
        """Build an agent from a :meth:`save` file: its ``config``, updated by ``overrides``, then its state."""
        state = torch.load(path, weights_only=True)
        agent = cls(**{**state.get("config", {}), **overrides})
        agent.load_state_dict(state)
        return agent


# --- options ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class AgentOptions:
    """The knobs every episodic agent has; each agent's options extend these (one field, default and check each)."""

    children_per_update: int = 5
    """m, the children per policy update; a multiple of the vector env's ``num_envs``."""

    def __post_init__(self) -> None:
        self._check("children_per_update", check_int, minimum=1)

    def _check(self, name: str, check: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Replace field ``name`` by ``check(name, value, *args, **kwargs)`` (frozen: once, in ``__post_init__``)."""
        object.__setattr__(self, name, check(name, getattr(self, name), *args, **kwargs))

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


Options = TypeVar("Options", bound=AgentOptions)


def options_from(options_type: type[Options], agent: str, options: Options | None, knobs: dict[str, Any],
                 arguments: Sequence[str] = ()) -> Options:
    """``options`` (None: the defaults) with the keyword ``knobs`` on top, checked by the options' own rules.

    An unknown keyword is a ValueError listing the allowed ones: the agent's own ``arguments``, then the fields.
    """
    names = options_type.names()
    unknown = sorted(set(knobs) - set(names))
    if unknown:
        raise ValueError(f"unknown argument(s) {', '.join(unknown)} for agent {agent!r}; allowed: "
                         f"{', '.join((*arguments, *names))}")
    if options is None:
        return options_type(**knobs)
    if type(options) is not options_type:
        raise ValueError(f"options must be a {options_type.__name__}, got {options!r}")
    return replace(options, **knobs) if knobs else options


# --- helpers ---------------------------------------------------------------------------------
def child_seed(seed: int, index: int) -> int:
    """The env seed of child ``index`` of a search seeded ``seed``: fixed, whatever the batching or resumes."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def as_vector_env(env: AnyEnv) -> gym.vector.VectorEnv:
    """A vector env as is; a single env wrapped (not copied) in a 1-env ``SyncVectorEnv``."""
    if isinstance(env, VectorEnv | gym.vector.VectorWrapper):
        return env
    if isinstance(env, gym.Env):
        return gym.vector.SyncVectorEnv([lambda: env])
    raise TypeError(f"expected a gymnasium Env or VectorEnv, got {type(env).__name__}")


def read_token_specs(envs: gym.vector.VectorEnv) -> tuple[TokenSpec, ...]:
    """The sub-envs' ``token_specs`` (they must agree), looked up through any wrappers."""
    try:  # a vector wrapper has no get_attr of its own; the sub-env lookup goes through single-env wrappers
        all_specs = envs.unwrapped.get_attr("token_specs")
    except AttributeError as e:
        raise TypeError("the env has no `token_specs`: our agents need a nasrl NASEnv or an env defining them") from e
    specs = tuple(all_specs[0])
    if any(tuple(s) != specs for s in all_specs[1:]):
        raise ValueError("the sub-envs have different token_specs")
    return specs


def specs_to_state(specs: Sequence[TokenSpec]) -> list[tuple[str, tuple[Any, ...], int]]:
    """Token specs as plain tuples, so a checkpoint loads with ``torch.load(weights_only=True)``."""
    return [(s.name, tuple(_to_python(c) for c in s.choices), int(s.layer)) for s in specs]


def specs_from_state(data: Sequence[Sequence[Any]]) -> tuple[TokenSpec, ...]:
    return tuple(TokenSpec(str(n), tuple(c), int(layer)) for n, c, layer in data)


def _to_python(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.copy()
    return value


def unbatch_info(infos: dict[str, Any], i: int) -> dict[str, Any]:
    """Sub-env ``i``'s own info out of a vector env's batched info (``key`` / ``_key`` mask pairs)."""
    out: dict[str, Any] = {}
    for key, value in infos.items():
        if key.startswith("_") and key[1:] in infos:
            continue
        present = infos.get(f"_{key}")
        if present is not None and not present[i]:
            continue
        out[key] = unbatch_info(value, i) if isinstance(value, dict) else _to_python(value[i])
    return out


@dataclass
class Episode:
    """A finished child with what learning needs: its actions and the masks it was sampled under."""

    index: int
    actions: np.ndarray  # (T_k,) int64
    masks: np.ndarray  # (T_k, A) bool
    reward: float
    info: dict[str, Any]


class EpisodicSearchAgent(SearchAgent):
    """Rolls episodes in lockstep over a vector env and updates every ``children_per_update`` children.

    Args:
        seed: the search seed: child env seeds and the agent's own generators derive from it.
        options: the agent's knobs, an :attr:`options_type` (None: its defaults); ``agent.<knob>`` reads
            ``agent.options.<knob>``, so each knob lives in one place.
        **knobs: any field of :attr:`options_type`, on top of ``options``.
    """

    options_type: ClassVar[type[AgentOptions]] = AgentOptions

    def __init__(self, seed: int = 0, options: AgentOptions | None = None, **knobs: Any) -> None:
        self.seed = check_int("seed", seed, minimum=0)
        self.options = options_from(self.options_type, self.name, options, knobs, ("seed", "options"))
        self.children_done = self.updates_done = 0
        self.token_specs: tuple[TokenSpec, ...] | None = None
        self.num_actions: int | None = None
        self._committed: dict[str, Any] | None = None  # counters and RNG state at the last update boundary
        self._unlearned: list[Episode] = []  # children of an unfinished update (a run that stopped mid-batch)

    def __getattr__(self, name: str) -> Any:
        """A knob by name: ``agent.lr`` is ``agent.options.lr`` (only called when no attribute has the name)."""
        options = self.__dict__.get("options")
        if options is not None and name in options.names():
            return getattr(options, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _stream_seed(self, stream: int) -> int:
        """A seed for the agent's own generator number ``stream``, independent of the child env seeds."""
        return int(np.random.SeedSequence(self.seed, spawn_key=(stream,)).generate_state(1, np.uint64)[0] >> 1)

    # --- hooks ---------------------------------------------------------------------------
    def _setup(self, token_specs: tuple[TokenSpec, ...], num_actions: int) -> None:
        """Build the policy for this space (called once, before the first batch or by ``load_state_dict``)."""
        self.token_specs = token_specs
        self.num_actions = num_actions

    def _begin_batch(self, batch_size: int) -> None:
        """Start ``batch_size`` new episodes (fresh recurrent state; default: nothing to start)."""

    @abstractmethod
    def _act(self, step: int, masks: np.ndarray, live: np.ndarray) -> np.ndarray:
        """Actions (B,) at ``step`` for the batch; only rows with ``live`` True are used.

        ``masks`` (B x A, bool) are the valid actions, the agent's own copy: it may narrow them in place, and
        the loop records the narrowed masks, so learning sees the distribution that was actually sampled.
        """

    @abstractmethod
    def _update(self, episodes: list[Episode]) -> UpdateStats:
        """Learn from one update's children (index order); the loop then sets ``update``, ``children_done``
        and ``num_children`` of the returned stats."""

    def _reward_stats(self, episodes: list[Episode]) -> UpdateStats:
        """An update's statistics from its children's rewards alone (an agent without a policy loss)."""
        rewards = np.array([ep.reward for ep in episodes], dtype=np.float64)
        return UpdateStats(update=self.updates_done, children_done=self.children_done, num_children=len(episodes),
                           reward_mean=float(rewards.mean()), reward_max=float(rewards.max()))

    def _rng_state(self) -> Any:
        """A copy of the agent's generator state(s) (default: an agent without one)."""
        return {}

    def _set_rng_state(self, state: Any) -> None: ...

    def _compute_scope(self) -> AbstractContextManager[Any]:
        """Context around a whole rollout, for the agent's own computations (default: none)."""
        return nullcontext()

    def _evaluation_scope(self) -> AbstractContextManager[Any]:
        """Context, inside the compute scope, around env steps that may evaluate a child (the last token)."""
        return nullcontext()

    def _policy_state(self) -> dict[str, Any]:
        """Weights, optimizer, baseline... (copies); merged into :meth:`state_dict`."""
        return {}

    def _load_policy_state(self, state: dict[str, Any]) -> None: ...

    def config(self) -> dict[str, Any]:
        """The constructor keyword arguments (stored in checkpoints; :meth:`load` rebuilds from them)."""
        return {"seed": self.seed, **asdict(self.options)}  # asdict copies: the config shares nothing

    # --- the policy without an env (benchmarks, tabulated studies) --------------------------
    def prepare(self, token_specs: tuple[TokenSpec, ...], num_actions: int) -> None:
        """Build the policy for a space without an env (``run`` does this from the env's token specs)."""
        if self.token_specs is None:
            self._setup(tuple(token_specs), int(num_actions))
        elif tuple(token_specs) != self.token_specs or num_actions != self.num_actions:
            raise ValueError("these token_specs or num_actions differ from the ones the agent was built for")

    def sample_actions(self, masks: np.ndarray, batch_size: int) -> np.ndarray:
        """Sample ``batch_size`` episodes under fixed per-step ``masks`` (T x A bool); returns B x T actions.

        The agent's own sampling, exactly as :meth:`run` drives it, but with no env stepped in between.
        """
        if self.token_specs is None:
            raise RuntimeError("call prepare(token_specs, num_actions) (or run) before sample_actions")
        live = np.ones(batch_size, dtype=bool)
        with self._compute_scope():
            self._begin_batch(batch_size)
            taken = [self._act(t, np.repeat(masks[t][None], batch_size, axis=0), live) for t in range(len(masks))]
        return np.stack(taken, axis=1)

    def learn(self, episodes: list[Episode]) -> UpdateStats:
        """One policy update from finished episodes (index order), as :meth:`run` makes after each batch."""
        with self._compute_scope():
            return self._update(episodes)

    def set_progress(self, children_done: int, updates_done: int) -> None:
        """Continue at these counters (a driver that keeps them, like the Ray replicas, sets them before a run).

        Children of an unfinished update are dropped, and the next checkpoint boundary is taken from here.
        """
        self.children_done = check_int("children_done", children_done, minimum=0)
        self.updates_done = check_int("updates_done", updates_done, minimum=0)
        self._unlearned = []
        self._committed = None

    # --- checkpointing -------------------------------------------------------------------
    def _counters(self) -> dict[str, Any]:
        """The counters and generator state as they are now (what an update boundary commits)."""
        return {"children_done": self.children_done, "updates_done": self.updates_done, "rng": self._rng_state()}

    def _commit(self) -> None:
        self._committed = self._counters()

    def state_dict(self) -> dict[str, Any]:
        """Snapshot at the last update boundary (mid-batch, a resume repeats the unfinished update's children)."""
        committed = self._committed or self._counters()
        return {
            "format": STATE_FORMAT,
            "agent": self.name,
            "config": self.config(),
            "children_done": committed["children_done"],
            "updates_done": committed["updates_done"],
            "rng": copy.deepcopy(committed["rng"]),
            "token_specs": specs_to_state(self.token_specs) if self.token_specs is not None else None,
            "num_actions": self.num_actions,
            **self._policy_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("agent") != self.name:
            raise ValueError(f"checkpoint is for agent {state.get('agent')!r}, not {self.name!r}")
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"unsupported checkpoint format {state.get('format')!r}")
        if state.get("token_specs") is not None:
            specs = specs_from_state(state["token_specs"])
            if self.token_specs is None:
                self._setup(specs, int(state["num_actions"]))
            elif specs != self.token_specs:
                raise ValueError("the checkpoint's token_specs differ from this agent's")
        self._load_policy_state(state)
        self._set_rng_state(copy.deepcopy(state["rng"]))
        self.children_done = int(state["children_done"])
        self.updates_done = int(state["updates_done"])
        self._unlearned = []  # the run replays the unfinished update's children (served from the store)
        self._commit()

    # --- the loop ------------------------------------------------------------------------
    def run(self, envs: AnyEnv, num_children: int, on_child: OnChild, on_update: OnUpdate | None = None) -> None:
        if num_children < self.children_done:
            raise ValueError(f"num_children={num_children} is below the {self.children_done} children already done")
        venv = as_vector_env(envs)
        n = venv.num_envs
        if self.children_per_update % n:
            raise ValueError(f"children_per_update={self.children_per_update} must be a multiple of "
                             f"num_envs={n} (lockstep batches fill an update exactly)")
        self.prepare(read_token_specs(venv), int(venv.single_action_space.n))
        if self._committed is None:
            self._commit()
        mode = venv.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)

        while self.children_done < num_children:
            # An update learns from exactly m children. A run that stops mid-batch keeps the batch's children
            # pending: the next run() call completes the batch, and a resume from the checkpoint (at the last
            # update) replays them from the store; both continue exactly as an uninterrupted run would.
            episodes, self._unlearned = self._unlearned, []
            target = min(self.children_per_update, len(episodes) + num_children - self.children_done)
            while len(episodes) < target:
                with self._compute_scope():
                    batch = self._rollout(venv, self.children_done, min(n, target - len(episodes)), mode)
                for ep in batch:
                    episodes.append(ep)
                    self.children_done = ep.index + 1
                    on_child(ChildRecord(ep.index, ep.reward, ep.info))
            if len(episodes) < self.children_per_update:
                self._unlearned = episodes
                break
            stats = self._update(episodes)
            stats.update, stats.children_done, stats.num_children = self.updates_done, self.children_done, len(episodes)
            self.updates_done += 1
            self._commit()
            if on_update is not None:
                on_update(stats)

    def _rollout(self, venv: gym.vector.VectorEnv, first: int, size: int, mode: Any) -> list[Episode]:
        """Run children ``first .. first + size - 1`` on sub-envs ``0 .. size - 1`` in lockstep."""
        n = venv.num_envs
        if size < n:  # only the last update of a run can be short; the spare sub-envs' children are discarded
            warnings.warn(f"{n - size} sub-env(s) run a discarded child to fill the last lockstep batch "
                          f"(the remaining children are not a multiple of num_envs={n})", stacklevel=3)
        _, infos = venv.reset(seed=[child_seed(self.seed, first + i) for i in range(n)])
        masks = self._read_masks(venv, infos, 0)
        live = np.arange(n) < size
        self._begin_batch(size)
        acts: list[np.ndarray] = []
        mask_log: list[np.ndarray] = []
        finished: dict[int, tuple[int, float, dict[str, Any]]] = {}  # row -> (last step, reward, final info)
        step = 0
        while live.any():
            if step >= len(self.token_specs):
                raise RuntimeError(f"the env did not end after its {len(self.token_specs)} tokens")
            action = np.argmax(masks, axis=-1).astype(np.int64)  # the lowest valid: spare and ended sub-envs' dummy
            agent_masks = masks[:size].copy()  # the agent may narrow its copy (see _act)
            action[:size] = np.where(live[:size], self._act(step, agent_masks, live[:size]), action[:size])
            if not masks[np.arange(n), action].all():
                raise RuntimeError(f"agent chose an invalid action at step {step}: {action.tolist()}")
            acts.append(action[:size].copy())
            mask_log.append(agent_masks)
            # Any step can end an episode (an invalid action, or a depth curriculum's shorter child) and
            # train a child: every env step runs with the caller's thread setting, not the controller's.
            with self._evaluation_scope():
                _, rewards, terminated, truncated, infos = venv.step(action)
            ended = np.asarray(terminated | truncated, dtype=bool)
            final = infos.get("final_info", {}) if mode == AutoresetMode.SAME_STEP else infos
            for i in np.flatnonzero(ended[:size] & live[:size]):
                finished[int(i)] = (step, float(rewards[i]), unbatch_info(final, int(i)))
            live &= ~ended
            if not live.any():
                break
            masks = self._read_masks(venv, infos, step + 1)
            if mode == AutoresetMode.DISABLED and ended.any():
                # No autoreset: restart ended sub-envs on an ignored episode so that lockstep can go on.
                _, reset_infos = venv.reset(options={"reset_mask": ended.copy()})
                masks[ended] = self._read_masks(venv, reset_infos, 0)[ended]
            step += 1
        all_actions, all_masks = np.stack(acts), np.stack(mask_log)  # steps x size (x A)
        return [Episode(first + i, all_actions[: last + 1, i].copy(), all_masks[: last + 1, i].copy(), reward, info)
                for i, (last, reward, info) in sorted(finished.items())]

    def _read_masks(self, venv: gym.vector.VectorEnv, infos: dict[str, Any], step: int) -> np.ndarray:
        """Valid actions (n x A, bool): ``infos["action_mask"]``, else ``action_masks()``, else the token's choices.

        Rows without a mask (or whose env has no valid action at all, e.g. a finished
        sub-env) fall back to the current token's choices so dummy actions stay valid.
        """
        n, a = venv.num_envs, self.num_actions
        masks, have = np.zeros((n, a), dtype=bool), np.zeros(n, dtype=bool)
        if "action_mask" in infos:
            have[:] = np.asarray(infos.get("_action_mask", True), dtype=bool)
            masks[:] = np.asarray(infos["action_mask"], dtype=bool).reshape(n, a)
            if have.all() and masks.any(axis=1).all():  # the usual case
                return masks
            masks[~have] = False
        if not have.all():
            with suppress(AttributeError):
                called = venv.unwrapped.call("action_masks")
                masks[~have] = np.stack([np.asarray(m, dtype=bool) for m in called])[~have]
                have[:] = True
        spec = self.token_specs[min(step, len(self.token_specs) - 1)]
        masks[~have | ~masks.any(axis=1)] = np.arange(a) < spec.num_choices
        return masks


class NumpyGeneratorAgent(EpisodicSearchAgent):
    """An episodic agent whose randomness is one seeded numpy generator, ``self.rng`` (its state is checkpointed)."""

    def __init__(self, seed: int = 0, options: AgentOptions | None = None, **knobs: Any) -> None:
        super().__init__(seed, options, **knobs)
        self.rng = np.random.default_rng(self._stream_seed(1))

    def _uniform_choice(self, choices: np.ndarray) -> int:
        """One of ``choices`` (action indices), uniformly at random."""
        return int(choices[self.rng.integers(len(choices))])

    def _rng_state(self) -> dict[str, Any]:
        return copy.deepcopy(self.rng.bit_generator.state)

    def _set_rng_state(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = copy.deepcopy(state)
