"""``--env-kwargs`` and ``--agent-kwargs`` checked before anything runs: an unknown key names itself and the allowed.

An agent's keywords are its constructor's (:mod:`nas_env.keywords`), its options dataclass's fields, or for an
SB3 agent also its algorithm's (less those the agent sets). The search sets ``seed`` and ``children_per_update``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from agents import AGENT_NAMES, AGENTS, SB3_ALGOS
from agents.experiment.run_folder import RunFolder
from agents.sb3 import SB3Agent, algorithm_class
from nas_env.keywords import check_env_kwargs, check_keywords, keyword_names

SET_BY_SB3_AGENT = ("policy", "env", "seed", "device", "verbose", "_init_setup_model")  # SB3Agent passes these
SET_BY_SEARCH = {"seed": "--seed", "children_per_update": "--children-per-update"}


def agent_keywords(name: str) -> tuple[str, ...] | None:
    """The keywords agent ``name`` accepts; None when it takes any (or its SB3 package is missing: that error
    comes, with its install hint, when the agent is built)."""
    if name in AGENTS:
        names, takes_any = keyword_names(AGENTS[name])
        if not takes_any:
            return names
        options = getattr(AGENTS[name], "options_type", None)  # the dataclass its **knobs fill
        return None if options is None else (*names, *(f.name for f in dataclasses.fields(options)))
    if name in SB3_ALGOS:
        try:
            algo = algorithm_class(name)
        except ImportError:
            return None
        own, _ = keyword_names(SB3Agent)
        algo_names, takes_any = keyword_names(algo)
        if takes_any:
            return None
        return tuple(n for n in own if n != "algo") + tuple(n for n in algo_names if n not in SET_BY_SB3_AGENT)
    return None  # an unknown agent name has its own error


def check_agent_kwargs(name: str, kwargs: Mapping[str, Any], flag: str = "--agent-kwargs",
                       reserved: Mapping[str, str] | None = None) -> None:
    """A ValueError naming an unknown key of ``kwargs`` for agent ``name`` and listing the allowed ones."""
    allowed = agent_keywords(name)
    if allowed is not None:
        check_keywords(flag, kwargs, allowed, f"agent {name!r}", reserved)


def check_search_kwargs(env: str, env_kwargs: Mapping[str, Any], agent: str, agent_kwargs: Mapping[str, Any]) -> None:
    """A search's ``--env-kwargs`` for ``env`` and ``--agent-kwargs`` for ``agent`` (both known names)."""
    check_env_kwargs(env, env_kwargs)
    check_agent_kwargs(agent, agent_kwargs, reserved=SET_BY_SEARCH)


def with_variants(specs: Mapping[str, tuple[str, dict[str, Any]]], variants: Mapping[str, Any]
                  ) -> dict[str, tuple[str, dict[str, Any]]]:
    """``specs`` (label -> (agent, kwargs)) and the labels of ``--variants``; a ValueError names a bad one."""
    specs = dict(specs)
    for label, spec in variants.items():
        agent = spec.get("agent") if isinstance(spec, dict) else None
        if agent not in AGENT_NAMES:
            raise ValueError(f"--variants {label!r} must be {{\"agent\": NAME, \"kwargs\": {{...}}}}, got {spec!r}: "
                             f"agent {agent!r} is not one of {', '.join(AGENT_NAMES)}")
        specs[label] = (agent, dict(spec.get("kwargs", {})))
    return specs


def check_run_config(run_dir: str, settings: type) -> None:
    """A ValueError when the run folder's config.json holds a key that is not a field of ``settings`` (a
    damaged or foreign file): named, with the allowed ones, instead of a TypeError from ``settings(**saved)``."""
    folder = RunFolder(run_dir)
    names, _ = keyword_names(settings)
    check_keywords(str(folder.config_path), folder.read_config(), names, f"{settings.__name__} (the run's settings)")
