"""Shared fixtures of the weight-sharing tests."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def search_resumes_exactly(tmp_path: Path) -> Callable[[str, dict[str, Any], int, int], list[dict]]:
    """``check(env, env_kwargs, episodes, stop_at)``: a search of ``episodes`` children run straight (in
    ``tmp_path / "straight"``) and one stopped after ``stop_at`` then resumed (``tmp_path / "parts"``) give the
    same children and rewards; returns the straight run's results."""
    from agents.experiment.search import SearchArgs, run_search

    def search(env: str, env_kwargs: dict[str, Any], name: str, episodes: int, resume: str = "") -> list[dict]:
        args = SearchArgs(env=env, episodes=episodes, logdir=str(tmp_path), run_name=name, env_kwargs=env_kwargs,
                          progress=False, resume=resume)
        run = run_search(args)
        return [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]

    def check(env: str, env_kwargs: dict[str, Any], episodes: int, stop_at: int) -> list[dict]:
        straight = search(env, env_kwargs, "straight", episodes)
        search(env, env_kwargs, "parts", stop_at)
        resumed = search(env, env_kwargs, "parts", episodes, resume=str(tmp_path / "parts"))
        assert [r["reward"] for r in resumed] == [r["reward"] for r in straight]
        assert [r["arch"] for r in resumed] == [r["arch"] for r in straight]
        return straight

    return check
