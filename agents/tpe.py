"""Optuna's TPE as a search agent: what a practitioner would reach for instead of RL.

Each child is one Optuna trial: at the start of a batch the agent asks the study for one trial
per child, and each trial suggests every token at once (``suggest_categorical`` over the token's
choice indices), so TPE proposes whole architectures; the env is then stepped with them, and the
update tells each trial its reward (maximised). Children whose status is not ``ok`` are told the
(low) reward the env gave them.

Settings: :class:`TPEOptions`; ``multivariate=True`` is far stronger on NAS-Bench-201, where edges interact.

Exact resume: each child's sampler is a fresh ``TPESampler`` seeded from (seed, child index), so a
proposal depends only on the history told so far; the checkpoint holds that history (actions and
rewards), and a resumed agent replays it into a new study. Optuna is an optional dependency
(``pip install nasrl[tpe]``), imported only when the agent samples.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from agents.base import AgentOptions, Episode, EpisodicSearchAgent, UpdateStats
from nas_env.checks import check_bool, check_int
from nas_env.spaces.base import TokenSpec


def import_optuna() -> Any:
    """Optuna, quiet; an ImportError naming the extra when it is not installed."""
    try:
        import optuna
    except ImportError as e:
        raise ImportError("the tpe agent needs Optuna: pip install 'nasrl[tpe]' (or pip install 'optuna>=4')") from e
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no line per trial
    return optuna


@dataclass(frozen=True)
class TPEOptions(AgentOptions):
    """TPE's knobs, passed to Optuna explicitly (results must not depend on the installed version's defaults)."""

    children_per_update: int = 1
    """m, trials asked before their results are told (1: sequential TPE, each proposal sees every result)."""
    multivariate: bool = False
    """A joint density over the tokens (Optuna 5's default for one objective) instead of one per token."""
    n_startup_trials: int = 10
    """Random trials before TPE starts modelling (Optuna's default)."""
    constant_liar: bool = True
    """Running trials of a batch count as bad ones, so a batch of several children spreads out."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check("multivariate", check_bool)
        self._check("n_startup_trials", check_int, minimum=0)
        self._check("constant_liar", check_bool)


class TPEAgent(EpisodicSearchAgent):
    """Tree-structured Parzen estimator (Optuna) over whole architectures, one trial per child (each sampler seeded
    from the search seed); its knobs (``multivariate=True``, or ``options=``) are :class:`TPEOptions`."""

    name: ClassVar[str] = "tpe"
    options_type = TPEOptions
    options: TPEOptions

    def __init__(self, seed: int = 0, *, options: TPEOptions | None = None, **knobs: Any) -> None:
        super().__init__(seed, options=options, **knobs)
        self.history: list[tuple[tuple[int, ...], float]] = []  # (actions, reward) of every told child
        self._study: Any = None
        self._trials: list[Any] = []  # the trials of the current update (asked, not told yet), in child order
        self._proposed: np.ndarray = np.zeros((0, 0), dtype=np.int64)  # B x T actions of the current batch

    # --- Optuna --------------------------------------------------------------------------
    def _param_names(self) -> list[str]:
        return [f"{t:02d}_{spec.name}_{spec.layer}" for t, spec in enumerate(self.token_specs or ())]

    def _distributions(self) -> dict[str, Any]:
        optuna = import_optuna()
        return {name: optuna.distributions.CategoricalDistribution(list(range(spec.num_choices)))
                for name, spec in zip(self._param_names(), self.token_specs or (), strict=True)}

    def _sampler(self, index: int) -> Any:
        """The sampler of child ``index``: seeded from (seed, index), so replaying the history reproduces it."""
        optuna = import_optuna()
        seed = int(np.random.SeedSequence([self.seed, index], spawn_key=(2,)).generate_state(1)[0])
        space = {name: d for name, d in self._distributions().items() if not d.single()}

        class FixedSpaceTPESampler(optuna.samplers.TPESampler):
            """TPE over a search space known in advance: Optuna's own inference re-reads every trial (a fresh
            sampler per child caches nothing), which made a 500-child search 4x slower for the same answer."""

            def infer_relative_search_space(self, study: Any, trial: Any) -> dict[str, Any]:
                return dict(space) if self._multivariate else {}

        with warnings.catch_warnings():  # multivariate / constant_liar are "experimental" in some versions
            warnings.simplefilter("ignore")
            return FixedSpaceTPESampler(seed=seed, multivariate=self.multivariate,
                                        n_startup_trials=self.n_startup_trials, constant_liar=self.constant_liar)

    def _ensure_study(self) -> Any:
        """The study, rebuilt from the history when there is none (a new agent, or one just loaded)."""
        if self._study is None:
            optuna = import_optuna()
            study = optuna.create_study(direction="maximize", sampler=self._sampler(0))
            dists, names = self._distributions(), self._param_names()
            for actions, reward in self.history:
                study.add_trial(optuna.trial.create_trial(params=dict(zip(names, actions, strict=True)),
                                                          distributions=dists, value=reward))
            self._study = study
        return self._study

    # --- hooks ---------------------------------------------------------------------------
    def _setup(self, token_specs: tuple[TokenSpec, ...], num_actions: int) -> None:
        super()._setup(token_specs, num_actions)
        self._study = None

    def _begin_batch(self, batch_size: int) -> None:
        study = self._ensure_study()
        dists, names = self._distributions(), self._param_names()
        rows = []  # the trials accumulate over an update's lockstep batches; the update tells them all
        first = self.children_done  # the index of this batch's first child (the loop counts finished batches)
        for k in range(batch_size):
            study.sampler = self._sampler(first + k)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                trial = study.ask(dists)
            self._trials.append(trial)
            rows.append([int(trial.params[n]) for n in names])
        self._proposed = np.asarray(rows, dtype=np.int64).reshape(batch_size, len(names))

    def _act(self, step: int, masks: np.ndarray, live: np.ndarray) -> np.ndarray:
        actions = self._proposed[:, step].copy()
        for i in np.flatnonzero(live):
            if not masks[i, actions[i]]:
                raise RuntimeError(f"the env forbids action {actions[i]} at step {step}, which TPE proposed: the tpe "
                                   "agent needs a space whose valid actions are fixed per token (its choices)")
        return actions

    def _update(self, episodes: list[Episode]) -> UpdateStats:
        study = self._ensure_study()
        for trial, ep in zip(self._trials, episodes, strict=True):
            study.tell(trial, float(ep.reward))
            # the proposal, not only the steps taken: an episode that ended early still told its trial
            self.history.append((tuple(int(a) for a in trial.params.values()), float(ep.reward)))
        self._trials = []
        return self._reward_stats(episodes)

    # --- state (no generator: every sampler is seeded from (seed, child index)) ---------------
    def _policy_state(self) -> dict[str, Any]:
        # Plain lists, so the checkpoint loads with torch.load(weights_only=True).
        return {"history": {"actions": [list(a) for a, _ in self.history], "rewards": [r for _, r in self.history]}}

    def _load_policy_state(self, state: dict[str, Any]) -> None:
        hist = state.get("history")
        if hist is None or len(hist["actions"]) != len(hist["rewards"]):
            raise ValueError("the checkpoint has no consistent `history`: it was not written by a tpe agent")
        self.history = [(tuple(int(a) for a in acts), float(r)) for acts, r in
                        zip(hist["actions"], hist["rewards"], strict=True)]
        self._study = None  # rebuilt from the history at the next batch
