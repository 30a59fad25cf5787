"""The evaluator decorator that serves from the result store, and trains an architecture once across workers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nas_env.evaluators.base import EvalResult, Evaluator, as_result
from nas_env.spaces.base import Architecture
from nas_env.store import DEFAULT_LEASE_S, Claimant, ResultStore, store_fingerprint, tag_result


class CachedEvaluator:
    """Serve an architecture from the store when its fingerprint has seen it; otherwise evaluate and store it.

    A result is taken to depend on the architecture and the evaluator's settings, not on the episode's
    seed (the seed policy is part of the fingerprint); ``metrics["result_seed"]`` is the seed that
    produced it. ``serve=False`` records every result and serves none: for evaluators whose result
    depends on their own state (a weight-sharing supernet). Two workers that draw one architecture at
    once train it once (:class:`~nas_env.store.Claimant`); ``duplicates_avoided`` counts the waits.
    """

    def __init__(self, inner: Evaluator, store: ResultStore | str | Path, lease_s: float = DEFAULT_LEASE_S,
                 serve: bool = True) -> None:
        if not callable(getattr(inner, "fingerprint", None)):
            raise TypeError(f"caching needs an evaluator with a fingerprint() method, got {type(inner).__name__}")
        self.inner = inner
        self.claimant = Claimant(store, lease_s)  # pickled to another process, it is another owner
        self.serve = serve
        self.hits = 0
        self.misses = 0
        self.duplicates_avoided = 0

    @property
    def store(self) -> ResultStore:
        return self.claimant.store

    @property
    def lease_s(self) -> float:
        return self.claimant.lease_s

    @property
    def owner(self) -> str:
        return self.claimant.owner

    def fingerprint(self) -> str:
        return store_fingerprint(self.inner.fingerprint())

    def __call__(self, arch: Architecture, seed: int) -> EvalResult:
        fp = self.fingerprint()
        if not self.serve:
            result = as_result(self.inner(arch, seed))
            self.store.record(fp, arch, result, seed)
            return EvalResult(result.reward, result.status, {**result.metrics, "cache_hit": False,
                                                             "result_seed": int(seed)})
        got, waited = self.claimant.acquire(fp, arch)
        if isinstance(got, EvalResult):
            self.hits += 1
            self.duplicates_avoided += waited
            return tag_result(got, cache_hit=True, waited=waited)
        self.misses += 1
        with got:  # released even when training raises
            result = as_result(self.inner(arch, seed))
            got.record(result, seed)
        return tag_result(result, cache_hit=False, waited=waited, result_seed=int(seed))

    # Stateful evaluators (weight sharing) checkpoint through the wrapper.
    def __getattr__(self, name: str) -> Any:
        if name in ("state_dict", "load_state_dict"):
            return getattr(self.inner, name)
        raise AttributeError(name)


def with_store(evaluator: Any, store: ResultStore | str | Path | None, serve: bool = True) -> Any:
    """``evaluator`` in a :class:`CachedEvaluator` over ``store``, or as it is when ``store`` is None."""
    return evaluator if store is None else CachedEvaluator(evaluator, store, serve=serve)
