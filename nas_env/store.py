"""A crash-safe SQLite store of evaluated children, and the evaluator decorator that serves from it.

Every child is committed the moment it finishes, keyed by (fingerprint, architecture): the
fingerprint names everything besides the architecture that determines the result (data,
subset, epochs, trainer settings, seed policy). SQLite in WAL mode with a busy timeout lets
several processes (vector-env workers, parallel searches) write one file safely.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nas_env.evaluators import EvalResult, Evaluator, as_result
from nas_env.spaces.base import Architecture

# Results worth serving again. "oom" and "failed" depend on what else ran at the time, and
# "stopped_early" on the best accuracy so far, so those children are retrained when met again.
CACHEABLE_STATUSES = ("ok", "diverged")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    fingerprint TEXT NOT NULL,
    arch_hash TEXT NOT NULL,
    arch TEXT NOT NULL,
    reward REAL NOT NULL,
    status TEXT NOT NULL,
    metrics TEXT NOT NULL,
    seed INTEGER,
    created REAL NOT NULL,
    UNIQUE (fingerprint, arch_hash)
)
"""


def arch_key(arch: Architecture) -> str:
    """The canonical text of an architecture: equal architectures, equal keys."""
    return arch.to_json()


class ResultStore:
    """One SQLite file of evaluated children. Picklable (reconnects lazily in the new process)."""

    def __init__(self, path: str | Path, timeout_s: float = 60.0) -> None:
        self.path = Path(path)
        if self.path.exists() and self.path.is_dir():
            raise ValueError(f"store path {self.path} is a folder; give a file such as {self.path / 'store.sqlite'}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.timeout_s = timeout_s
        self._conn: sqlite3.Connection | None = None
        self._connect()

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(self.path, timeout=self.timeout_s, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")  # readers never block the writer; safe across processes
            conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable against process crashes (kill -9)
            conn.execute(_SCHEMA)
            self._conn = conn
        return self._conn

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "timeout_s": self.timeout_s}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path, self.timeout_s, self._conn = state["path"], state["timeout_s"], None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def get(self, fingerprint: str, arch: Architecture) -> EvalResult | None:
        """The stored result of ``arch`` under ``fingerprint``, or None."""
        key = arch_key(arch)
        row = self._connect().execute(
            "SELECT reward, status, metrics FROM results WHERE fingerprint = ? AND arch_hash = ?",
            (fingerprint, _hash(key)),
        ).fetchone()
        if row is None:
            return None
        return EvalResult(row[0], row[1], json.loads(row[2]))

    def put(self, fingerprint: str, arch: Architecture, result: EvalResult, seed: int | None = None) -> bool:
        """Commit one result now; the first result for a key wins. Returns whether it was new."""
        key = arch_key(arch)
        cur = self._connect().execute(
            "INSERT OR IGNORE INTO results (fingerprint, arch_hash, arch, reward, status, metrics, seed, created) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (fingerprint, _hash(key), key, float(result.reward), result.status,
             json.dumps(result.metrics, default=_jsonable), seed, time.time()),
        )
        return cur.rowcount == 1

    def __len__(self) -> int:
        return int(self._connect().execute("SELECT COUNT(*) FROM results").fetchone()[0])

    def rows(self, fingerprint: str | None = None) -> Iterator[dict[str, Any]]:
        """All stored children (optionally of one fingerprint) in insertion order."""
        sql = "SELECT fingerprint, arch, reward, status, metrics, seed, created FROM results"
        params: tuple[Any, ...] = ()
        if fingerprint is not None:
            sql, params = sql + " WHERE fingerprint = ?", (fingerprint,)
        for fp, arch, reward, status, metrics, seed, created in self._connect().execute(sql + " ORDER BY id", params):
            yield {"fingerprint": fp, "arch": arch, "reward": reward, "status": status,
                   "metrics": json.loads(metrics), "seed": seed, "created": created}


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


class CachedEvaluator:
    """Serve an architecture from the store when its fingerprint has seen it; otherwise evaluate and store it.

    The seed policy is part of the fingerprint: a child's result is taken to depend on its
    architecture and the evaluator's settings, not on the episode's seed, so an
    architecture met again (in this run, a resumed run, or another agent's run with the same
    settings) is not trained again.
    """

    SEED_POLICY = "first-seed-wins"

    def __init__(self, inner: Evaluator, store: ResultStore | str | Path) -> None:
        if not callable(getattr(inner, "fingerprint", None)):
            raise TypeError(f"caching needs an evaluator with a fingerprint() method, got {type(inner).__name__}")
        self.inner = inner
        self.store = store if isinstance(store, ResultStore) else ResultStore(store)
        self.hits = 0
        self.misses = 0

    def fingerprint(self) -> str:
        return f"{self.inner.fingerprint()}/{self.SEED_POLICY}"

    def __call__(self, arch: Architecture, seed: int) -> EvalResult:
        fp = self.fingerprint()
        cached = self.store.get(fp, arch)
        if cached is not None:
            self.hits += 1
            return EvalResult(cached.reward, cached.status, {**cached.metrics, "cache_hit": True})
        self.misses += 1
        result = as_result(self.inner(arch, seed))
        if result.status in CACHEABLE_STATUSES:
            self.store.put(fp, arch, result, seed)
        return EvalResult(result.reward, result.status, {**result.metrics, "cache_hit": False})
