"""The SQLite result store and the caching evaluator."""

from __future__ import annotations

import multiprocessing as mp
import pickle
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from nas_env.evaluators import EvalResult, SyntheticEvaluator
from nas_env.spaces.cnn import CNNArchitecture, cnn_space
from nas_env.store import CachedEvaluator, ResultStore

SPACE = cnn_space("v1", num_layers=3)


def random_archs(n: int, seed: int) -> list[CNNArchitecture]:
    rng = np.random.default_rng(seed)
    return [SPACE.decode([int(rng.integers(s.num_choices)) for s in SPACE.tokens()]) for _ in range(n)]


def test_round_trip_and_first_result_wins(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "s.sqlite")
    arch = random_archs(1, 0)[0]
    result = EvalResult(0.75, "ok", {"val_acc": 0.75, "val_acc_history": [0.5, 0.75], "params": np.int64(12)})
    assert store.get("fp", arch) is None
    assert store.put("fp", arch, result, seed=3)
    assert not store.put("fp", arch, EvalResult(0.1, "ok", {}))
    got = store.get("fp", arch)
    assert got == EvalResult(0.75, "ok", {"val_acc": 0.75, "val_acc_history": [0.5, 0.75], "params": 12})
    assert store.get("other-fingerprint", arch) is None
    again = ResultStore(tmp_path / "s.sqlite")  # a new connection sees the committed row
    assert len(again) == 1 and next(again.rows())["seed"] == 3


def test_store_path_that_is_a_folder_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="folder"):
        ResultStore(tmp_path)


class CountingEvaluator(SyntheticEvaluator):
    """The synthetic evaluator, counting real evaluations (so cache hits are visible)."""

    calls = 0

    def __call__(self, arch: CNNArchitecture, seed: int) -> EvalResult:
        self.calls += 1
        return super().__call__(arch, seed)


def test_cached_evaluator_serves_hits_and_skips_failures(tmp_path: Path) -> None:
    inner = CountingEvaluator(SPACE)
    cached = CachedEvaluator(inner, tmp_path / "s.sqlite")
    archs = random_archs(5, 1)
    first = [cached(a, seed=i) for i, a in enumerate(archs)]
    second = [cached(a, seed=100 + i) for i, a in enumerate(archs)]
    assert inner.calls == 5 and (cached.hits, cached.misses) == (5, 5)
    assert [r.reward for r in first] == [r.reward for r in second]
    assert not any(r.metrics["cache_hit"] for r in first) and all(r.metrics["cache_hit"] for r in second)

    class Oom:
        def fingerprint(self) -> str:
            return "oom"

        def __call__(self, arch: CNNArchitecture, seed: int) -> EvalResult:
            return EvalResult(0.0, "oom", {})

    oom = CachedEvaluator(Oom(), tmp_path / "s.sqlite")
    oom(archs[0], 0)
    oom(archs[0], 0)
    assert oom.hits == 0  # an OOM depends on what else ran; it is retried, not served


def test_cached_evaluator_needs_a_fingerprint(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="fingerprint"):
        CachedEvaluator(lambda arch, seed: 0.5, tmp_path / "s.sqlite")


def test_store_pickles_for_subprocess_envs(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "s.sqlite")
    arch = random_archs(1, 2)[0]
    store.put("fp", arch, EvalResult(0.5))
    clone = pickle.loads(pickle.dumps(store))
    assert clone.get("fp", arch) == EvalResult(0.5)


def _writer(path: str, seed: int, n: int) -> None:
    store = ResultStore(path)
    for i, arch in enumerate(random_archs(n, seed)):
        store.put(f"writer{seed}", arch, EvalResult(i / n, "ok", {"i": i}), seed=i)


def test_two_concurrent_writers_do_not_corrupt(tmp_path: Path) -> None:
    path = str(tmp_path / "s.sqlite")
    ResultStore(path)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, seed, 150)) for seed in (10, 11)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    store = ResultStore(path)
    for seed in (10, 11):
        rows = list(store.rows(f"writer{seed}"))
        expected = {a.to_json() for a in random_archs(150, seed)}
        assert {r["arch"] for r in rows} == expected
    assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone()[0] == "ok"
