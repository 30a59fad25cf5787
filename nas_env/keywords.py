"""Keyword arguments checked against what they are passed to: an unknown key is a ValueError listing the allowed ones.

A typo in ``--env-kwargs`` otherwise surfaces as a TypeError from deep inside ``gym.make`` (and one in
``--agent-kwargs`` from an agent's constructor, or only mid-run for SB3). The allowed names are read from
the target's signature (a dataclass's: its fields), never from a list kept by hand, so they stay right
when a constructor changes.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Collection, Mapping
from typing import Any

import gymnasium as gym
from gymnasium.envs.registration import load_env_creator

_NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def keyword_names(target: Callable[..., Any]) -> tuple[tuple[str, ...], bool]:
    """The keywords ``target`` names (a class: its constructor's; a dataclass: its init fields), and whether it
    also takes any others (``**kwargs``)."""
    params = inspect.signature(target).parameters.values()
    return tuple(p.name for p in params if p.kind in _NAMED), any(p.kind is p.VAR_KEYWORD for p in params)


def check_keywords(flag: str, kwargs: Mapping[str, Any], allowed: Collection[str], what: str,
                   reserved: Mapping[str, str] | None = None) -> None:
    """A ValueError naming the first key of ``kwargs`` that is not in ``allowed`` (with a close match, if any) and
    listing the allowed ones; ``reserved`` maps keys set elsewhere to the flag that sets them."""
    reserved = reserved or {}
    names = sorted(set(allowed) - set(reserved))
    for key in kwargs:
        if key in reserved:
            raise ValueError(f"{flag} key {key!r} is set by {reserved[key]}, not in {flag}")
        if key not in allowed:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"{flag} key {key!r} is not a keyword of {what}{hint}; allowed: {', '.join(names)}")


def env_keywords(env_id: str) -> tuple[str, ...] | None:
    """What ``gym.make(env_id, **kwargs)`` accepts: the env constructor's keywords and gym.make's own; None when the
    constructor takes any keyword."""
    entry_point = gym.spec(env_id).entry_point
    creator = load_env_creator(entry_point) if isinstance(entry_point, str) else entry_point
    if creator is None:
        return None
    names, takes_any = keyword_names(creator)
    if takes_any:
        return None
    make_names, _ = keyword_names(gym.make)
    return tuple(n for n in (*names, *make_names) if n not in ("self", "id"))


def check_env_kwargs(env_id: str, kwargs: Mapping[str, Any], flag: str = "--env-kwargs") -> None:
    """A ValueError naming an unknown key of ``kwargs`` for ``env_id`` (a registered id) and the allowed ones."""
    allowed = env_keywords(env_id)
    if allowed is not None:
        check_keywords(flag, kwargs, allowed, f"env {env_id}")
