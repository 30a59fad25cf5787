"""A crash-safe SQLite store of evaluated children, and the evaluator decorator that serves from it.

Every child is committed the moment it finishes, keyed by (fingerprint, architecture): the
fingerprint names everything besides the architecture that determines the result (code and
torch versions, data content, trainer settings, seed policy; see :mod:`nas_env.fingerprint`).
SQLite in WAL mode with a busy timeout lets several processes (vector-env workers, parallel
searches) write one file safely.

Claims: before training an architecture, a :class:`CachedEvaluator` claims it (a row in
``claims`` with a lease its worker renews while it trains). Another worker that draws the same
architecture meanwhile waits for the result instead of training it a second time, and counts
the wait (``duplicates_avoided``). A claim whose worker died (kill -9: its process is gone
from this host, or its lease ran out) is taken over, so the architecture is still trained.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sqlite3
import threading
import time
import uuid
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
);
CREATE TABLE IF NOT EXISTS claims (
    fingerprint TEXT NOT NULL,
    arch_hash TEXT NOT NULL,
    owner TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    expires REAL NOT NULL,
    PRIMARY KEY (fingerprint, arch_hash)
);
"""
DEFAULT_LEASE_S = 120.0  # a claim lives this long past its last renewal; workers renew every third of it
POLL_S = 0.2  # how often a worker waiting on another's claim looks for the result
HOST = socket.gethostname()


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
            conn.executescript(_SCHEMA)
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
        """The stored result of ``arch`` under ``fingerprint``, or None.

        ``metrics["result_seed"]`` is the seed that produced it (None for a row stored without one).
        """
        key = arch_key(arch)
        row = self._connect().execute(
            "SELECT reward, status, metrics, seed FROM results WHERE fingerprint = ? AND arch_hash = ?",
            (fingerprint, _hash(key)),
        ).fetchone()
        if row is None:
            return None
        return EvalResult(row[0], row[1], {**json.loads(row[2]), "result_seed": row[3]})

    # --- claims --------------------------------------------------------------------------------
    def claim(self, fingerprint: str, arch: Architecture, owner: str, lease_s: float = DEFAULT_LEASE_S) -> bool:
        """Claim ``arch`` for training by ``owner``; False while another live worker holds it.

        A claim is taken over when its lease has run out or its process no longer exists on this
        host (a worker killed with -9 frees its claims at once for the workers of its machine).
        """
        conn = self._connect()
        args = (fingerprint, _hash(arch_key(arch)))
        now = time.time()
        conn.execute("BEGIN IMMEDIATE")  # one writer decides: no two workers both see the claim free
        try:
            row = conn.execute("SELECT owner, host, pid, expires FROM claims WHERE fingerprint = ? AND arch_hash = ?",
                               args).fetchone()
            if row is not None and row[0] != owner and row[3] > now and not _dead(row[1], row[2]):
                conn.execute("ROLLBACK")
                return False
            conn.execute("INSERT OR REPLACE INTO claims (fingerprint, arch_hash, owner, host, pid, expires) "
                         "VALUES (?, ?, ?, ?, ?, ?)", (*args, owner, HOST, os.getpid(), now + lease_s))
            conn.execute("COMMIT")
            return True
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def renew(self, fingerprint: str, arch: Architecture, owner: str, lease_s: float = DEFAULT_LEASE_S) -> None:
        """Extend ``owner``'s claim on ``arch`` by ``lease_s`` from now."""
        self._connect().execute("UPDATE claims SET expires = ? WHERE fingerprint = ? AND arch_hash = ? AND owner = ?",
                                (time.time() + lease_s, fingerprint, _hash(arch_key(arch)), owner))

    def release(self, fingerprint: str, arch: Architecture, owner: str) -> None:
        """Drop ``owner``'s claim on ``arch`` (after its result is stored, or when it will not be)."""
        self._connect().execute("DELETE FROM claims WHERE fingerprint = ? AND arch_hash = ? AND owner = ?",
                                (fingerprint, _hash(arch_key(arch)), owner))

    def claims(self) -> list[dict[str, Any]]:
        """The claims held now (live or expired), for inspection."""
        rows = self._connect().execute("SELECT fingerprint, arch_hash, owner, host, pid, expires FROM claims")
        return [dict(zip(("fingerprint", "arch_hash", "owner", "host", "pid", "expires"), r, strict=True))
                for r in rows]

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


def _dead(host: str, pid: int) -> bool:
    """Whether a claim's process is known to be gone: only decidable for processes of this host."""
    if host != HOST:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


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
    settings) is not trained again. ``metrics["result_seed"]`` reports the seed that produced
    the result: the stored one on a hit, this call's on a miss.

    ``serve=False`` records every result and serves none: for evaluators whose result depends on their own
    state (a weight-sharing supernet), where an earlier reward is not what evaluating now would give.

    Concurrency: an architecture is claimed before it is trained (see the module docstring), so
    two workers that draw it at the same moment train it once; ``duplicates_avoided`` counts
    the evaluations served by waiting on another worker's claim.
    """

    SEED_POLICY = "first-seed-wins"

    def __init__(self, inner: Evaluator, store: ResultStore | str | Path, lease_s: float = DEFAULT_LEASE_S,
                 serve: bool = True) -> None:
        if not callable(getattr(inner, "fingerprint", None)):
            raise TypeError(f"caching needs an evaluator with a fingerprint() method, got {type(inner).__name__}")
        if not lease_s > 0:
            raise ValueError(f"lease_s must be > 0 seconds, got {lease_s!r}")
        self.inner = inner
        self.store = store if isinstance(store, ResultStore) else ResultStore(store)
        self.lease_s = float(lease_s)
        self.serve = serve  # False: record every result, serve none (a stateful evaluator, e.g. weight sharing)
        self.owner = f"{HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.hits = 0
        self.misses = 0
        self.duplicates_avoided = 0

    def fingerprint(self) -> str:
        return f"{self.inner.fingerprint()}/{self.SEED_POLICY}"

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __setstate__(self, state: dict[str, Any]) -> None:  # a copy in another process is another owner
        self.__dict__.update(state)
        self.owner = f"{HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    def __call__(self, arch: Architecture, seed: int) -> EvalResult:
        fp = self.fingerprint()
        if not self.serve:
            result = as_result(self.inner(arch, seed))
            if result.status in CACHEABLE_STATUSES:
                self.store.put(fp, arch, result, seed)
            return EvalResult(result.reward, result.status, {**result.metrics, "cache_hit": False,
                                                             "result_seed": int(seed)})
        waited = False
        while True:
            cached = self.store.get(fp, arch)
            if cached is not None:
                self.hits += 1
                self.duplicates_avoided += waited
                return EvalResult(cached.reward, cached.status, {**cached.metrics, "cache_hit": True,
                                                                 "waited_for_claim": waited})
            if self.store.claim(fp, arch, self.owner, self.lease_s):
                break
            waited = True  # another worker is training it: wait for its result (or for its claim to lapse)
            time.sleep(POLL_S)
        self.misses += 1
        try:
            with _Heartbeat(self.store.path, fp, arch, self.owner, self.lease_s, self.store.timeout_s):
                result = as_result(self.inner(arch, seed))
            if result.status in CACHEABLE_STATUSES:
                self.store.put(fp, arch, result, seed)
        finally:
            self.store.release(fp, arch, self.owner)
        return EvalResult(result.reward, result.status, {**result.metrics, "cache_hit": False,
                                                         "result_seed": int(seed), "waited_for_claim": waited})

    # Stateful evaluators (weight sharing) checkpoint through the wrapper.
    def __getattr__(self, name: str) -> Any:
        if name in ("state_dict", "load_state_dict"):
            return getattr(self.inner, name)
        raise AttributeError(name)


class _Heartbeat:
    """Renews a claim every third of its lease, on its own thread and connection, while training runs."""

    def __init__(self, path: Path, fingerprint: str, arch: Architecture, owner: str, lease_s: float,
                 timeout_s: float) -> None:
        self.args = (fingerprint, arch, owner, lease_s)
        self.path, self.timeout_s = path, timeout_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="nasrl-claim-heartbeat")

    def _run(self) -> None:
        store = ResultStore(self.path, self.timeout_s)
        try:
            while not self._stop.wait(self.args[3] / 3):
                store.renew(*self.args)
        finally:
            store.close()

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
