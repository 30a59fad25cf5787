"""A crash-safe SQLite store of evaluated children, and the one rule for training each architecture once.

Every child is committed the moment it finishes, keyed by (fingerprint, architecture): the
fingerprint names everything besides the architecture that determines the result (see
:mod:`nas_env.fingerprint`). SQLite in WAL mode with a busy timeout lets several processes
(vector-env workers, parallel searches, Ray drivers) write one file safely.

The rule, written once here: serve a stored result, else claim the architecture, else wait for
the worker that claimed it, then record the result (:class:`Claimant`, :class:`Claim`). A claim
is a row in ``claims`` whose lease the claimant's heartbeat thread renews while it holds any
claim; a claim whose worker died (its process is gone from this host, or its lease ran out) is
taken over. :class:`BatchEvaluations` applies the same rule without blocking (the Ray drivers),
:class:`~nas_env.evaluators.cached.CachedEvaluator` to one evaluator.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from nas_env.checks import check_number
from nas_env.evaluators import EvalResult
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
SQLITE_HEADER = b"SQLite format 3\x00"
CLAIM_COLUMNS = ("fingerprint", "arch_hash", "owner", "host", "pid", "expires")
# The columns this code reads and writes: a table of that name without them is someone else's.
TABLE_COLUMNS = {
    "results": {"id", "fingerprint", "arch_hash", "arch", "reward", "status", "metrics", "seed", "created"},
    "claims": set(CLAIM_COLUMNS),
}
_KEY = "fingerprint = ? AND arch_hash = ?"


class StoreError(ValueError):
    """A store path that holds something other than a nasrl result store (it is left as it is)."""


def arch_key(arch: Architecture) -> str:
    """The canonical text of an architecture: equal architectures, equal keys."""
    return arch.to_json()


def _key(fingerprint: str, arch: Architecture) -> tuple[str, str]:
    """A row's key columns (``_KEY``'s parameters)."""
    return fingerprint, _hash(arch_key(arch))


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
            self._check_file()
            conn = sqlite3.connect(self.path, timeout=self.timeout_s, isolation_level=None, check_same_thread=False)
            try:
                self._check_tables(conn)
            except BaseException:
                conn.close()
                raise
            conn.execute("PRAGMA journal_mode=WAL")  # readers never block the writer; safe across processes
            conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable against process crashes (kill -9)
            conn.executescript(_SCHEMA)
            self._conn = conn
        return self._conn

    def _refuse(self, found: str) -> StoreError:
        return StoreError(f"{self.path} is not a nasrl result store: expected an SQLite file with the tables "
                          f"{' and '.join(TABLE_COLUMNS)} (or a new path), found {found}; it was left unchanged")

    def _check_file(self) -> None:
        """Refuse a file that is not SQLite before SQLite touches it (an empty file is a new store)."""
        if not self.path.is_file() or self.path.stat().st_size == 0:
            return
        with self.path.open("rb") as f:
            header = f.read(len(SQLITE_HEADER))
        if header != SQLITE_HEADER:
            raise self._refuse(f"a file that is not SQLite (it starts with {header[:8]!r})")

    def _check_tables(self, conn: sqlite3.Connection) -> None:
        """Refuse an SQLite file with tables but not ours, read before anything is written to it."""
        try:
            tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                      if not name.startswith("sqlite_")}
            columns = {t: {row[1] for row in conn.execute(f"PRAGMA table_info({t})")}
                       for t in TABLE_COLUMNS if t in tables}
        except sqlite3.DatabaseError as e:  # a damaged SQLite file
            raise self._refuse(f"an unreadable SQLite file ({e})") from None
        if tables and "results" not in tables:
            raise self._refuse(f"an SQLite file with the tables {', '.join(sorted(tables))}")
        for table, have in columns.items():
            missing = TABLE_COLUMNS[table] - have
            if missing:
                raise self._refuse(f"a table {table} without the columns {', '.join(sorted(missing))}")

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "timeout_s": self.timeout_s}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path, self.timeout_s, self._conn = state["path"], state["timeout_s"], None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def get(self, fingerprint: str, arch: Architecture) -> EvalResult | None:
        """The stored result of ``arch`` under ``fingerprint`` (``metrics["result_seed"]``: its seed), or None."""
        row = self._connect().execute(f"SELECT reward, status, metrics, seed FROM results WHERE {_KEY}",
                                      _key(fingerprint, arch)).fetchone()
        return None if row is None else EvalResult(row[0], row[1], {**json.loads(row[2]), "result_seed": row[3]})

    # --- claims --------------------------------------------------------------------------------
    def claim(self, fingerprint: str, arch: Architecture, owner: str, lease_s: float = DEFAULT_LEASE_S) -> bool:
        """Claim ``arch`` for training by ``owner``; False while another live worker holds it (a claim whose lease
        ran out, or whose process is gone from this host, e.g. killed with -9, is taken over)."""
        conn = self._connect()
        args = _key(fingerprint, arch)
        now = time.time()
        conn.execute("BEGIN IMMEDIATE")  # one writer decides: no two workers both see the claim free
        try:
            row = conn.execute(f"SELECT owner, host, pid, expires FROM claims WHERE {_KEY}", args).fetchone()
            if row is not None and row[0] != owner and row[3] > now and not _dead(row[1], row[2]):
                conn.execute("ROLLBACK")
                return False
            conn.execute(f"INSERT OR REPLACE INTO claims ({', '.join(CLAIM_COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?)",
                         (*args, owner, HOST, os.getpid(), now + lease_s))
            conn.execute("COMMIT")
            return True
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def release(self, fingerprint: str, arch: Architecture, owner: str) -> None:
        """Drop ``owner``'s claim on ``arch`` (after its result is stored, or when it will not be)."""
        self._connect().execute(f"DELETE FROM claims WHERE {_KEY} AND owner = ?", (*_key(fingerprint, arch), owner))

    def claims(self) -> list[dict[str, Any]]:
        """The claims held now (live or expired), for inspection."""
        rows = self._connect().execute(f"SELECT {', '.join(CLAIM_COLUMNS)} FROM claims")
        return [dict(zip(CLAIM_COLUMNS, r, strict=True)) for r in rows]

    def put(self, fingerprint: str, arch: Architecture, result: EvalResult, seed: int | None = None) -> bool:
        """Commit one result now; the first result for a key wins. Returns whether it was new."""
        key = arch_key(arch)
        cur = self._connect().execute(
            "INSERT OR IGNORE INTO results (fingerprint, arch_hash, arch, reward, status, metrics, seed, created) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (fingerprint, _hash(key), key, float(result.reward), result.status,
             json.dumps(result.metrics, default=_jsonable), seed, time.time()))
        return cur.rowcount == 1

    def record(self, fingerprint: str, arch: Architecture, result: EvalResult, seed: int | None = None) -> bool:
        """:meth:`put` a result worth serving again (status in :data:`CACHEABLE_STATUSES`); whether it was new."""
        return result.status in CACHEABLE_STATUSES and self.put(fingerprint, arch, result, seed)

    def renew_all(self, owner: str, lease_s: float = DEFAULT_LEASE_S) -> None:
        """Extend every claim ``owner`` holds by ``lease_s`` from now (one heartbeat for all of them)."""
        self._connect().execute("UPDATE claims SET expires = ? WHERE owner = ?", (time.time() + lease_s, owner))

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
        pass
    return False


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


# --- the rule: serve, else claim, else wait; then record --------------------------------------------------------
SEED_POLICY = "first-seed-wins"  # a result depends on the architecture and settings, not the episode's seed


def store_fingerprint(evaluator_fingerprint: str) -> str:
    """The key under which an evaluator's results are stored: its fingerprint and the seed policy."""
    return f"{evaluator_fingerprint}/{SEED_POLICY}"


def tag_result(result: EvalResult, cache_hit: bool, waited: bool, **metrics: Any) -> EvalResult:
    """``result`` with the tags every store user adds: ``cache_hit``, ``waited_for_claim`` and ``metrics``."""
    return EvalResult(result.reward, result.status, {**result.metrics, **metrics, "cache_hit": cache_hit,
                                                     "waited_for_claim": waited})


class Claim:
    """The right to train one architecture, held (its lease renewed by its :class:`Claimant`'s heartbeat) until
    :meth:`record` or :meth:`release` (``with`` releases it)."""

    def __init__(self, claimant: Claimant, fingerprint: str, arch: Architecture) -> None:
        self.claimant, self.fingerprint, self.arch = claimant, fingerprint, arch
        self.held = True

    def record(self, result: EvalResult, seed: int | None = None, fingerprint: str | None = None) -> bool:
        """Store ``result`` if it is worth serving again (under ``fingerprint`` when not the claim's: a Ray node
        whose code or data differ), then release; whether it was stored anew."""
        try:
            return self.claimant.store.record(fingerprint or self.fingerprint, self.arch, result, seed)
        finally:
            self.release()

    def release(self) -> None:
        """Drop the claim without a result (training failed, or will not run); a second call does nothing."""
        if self.held:
            self.held = False
            self.claimant._drop(self)

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class Claimant:
    """One worker's identity in a store: it takes claims, and one heartbeat renews all it holds. Picklable: a
    copy is another owner. Never poll an architecture it holds already (its own claim is taken again)."""

    def __init__(self, store: ResultStore | str | Path, lease_s: float = DEFAULT_LEASE_S) -> None:
        self.store = store if isinstance(store, ResultStore) else ResultStore(store)
        self.lease_s = check_number("lease_s (seconds)", lease_s, minimum=0, above=True)
        self._start()

    def _start(self) -> None:
        self.owner = f"{HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}"  # unique per process and claimant
        self.held = 0  # claims held now
        self._lock = threading.Lock()
        self._heartbeat: _Heartbeat | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"store": self.store, "lease_s": self.lease_s}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.store, self.lease_s = state["store"], state["lease_s"]
        self._start()

    def poll(self, fingerprint: str, arch: Architecture) -> EvalResult | Claim | None:
        """One look: the stored result, else a claim to train ``arch``, else None while another live worker does."""
        stored = self.store.get(fingerprint, arch)
        if stored is not None or not self.store.claim(fingerprint, arch, self.owner, self.lease_s):
            return stored  # served, or None: another live worker holds the claim
        stored = self.store.get(fingerprint, arch)  # recorded between the look and the claim: serve it
        if stored is not None:
            self.store.release(fingerprint, arch, self.owner)
            return stored
        with self._lock:
            self.held += 1
            if self._heartbeat is None:
                self._heartbeat = _Heartbeat(self.store.path, self.owner, self.lease_s, self.store.timeout_s)
        return Claim(self, fingerprint, arch)

    def acquire(self, fingerprint: str, arch: Architecture, poll_s: float = POLL_S) -> tuple[EvalResult | Claim, bool]:
        """:meth:`poll` until it gives a result or a claim (waiting while another worker trains ``arch``), and
        whether it waited."""
        waited = False
        while (got := self.poll(fingerprint, arch)) is None:
            waited = True  # another worker is training it: wait for its result (or for its claim to lapse)
            time.sleep(poll_s)
        return got, waited

    def _drop(self, claim: Claim) -> None:
        self.store.release(claim.fingerprint, claim.arch, self.owner)
        with self._lock:
            self.held -= 1
            heartbeat = self._heartbeat if self.held == 0 else None
            if heartbeat is not None:
                self._heartbeat = None
        if heartbeat is not None:
            heartbeat.stop()


class _Heartbeat:
    """Renews every claim of one owner each third of its lease, on its own thread and connection."""

    def __init__(self, path: Path, owner: str, lease_s: float, timeout_s: float) -> None:
        self.path, self.owner, self.lease_s, self.timeout_s = path, owner, lease_s, timeout_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="nasrl-claim-heartbeat")
        self._thread.start()

    def _run(self) -> None:
        store = ResultStore(self.path, self.timeout_s)
        try:
            while not self._stop.wait(self.lease_s / 3):
                store.renew_all(self.owner, self.lease_s)
        finally:
            store.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


W = TypeVar("W")  # what a caller of BatchEvaluations calls the child waiting for a result (an index, a slot)


@dataclass
class _Training(Generic[W]):
    """An architecture this caller trains: its seed, its claim (None without a store) and who waits for it."""

    arch: Architecture
    seed: int
    claim: Claim | None
    waited: bool
    waiters: list[W] = field(default_factory=list)  # the first is the child whose task trains it


class BatchEvaluations(Generic[W]):
    """The store rule for a caller that trains many architectures at once and must not block (the Ray drivers).

    :meth:`ask` for each child to evaluate (``waiter`` names it) answers:

    * an :class:`EvalResult`: served from the store now;
    * True: the caller trains it (a task), then hands the result to :meth:`done`;
    * False: it trains already, for another of this caller's children (the waiter shares that training)
      or by another worker (``waiting`` is then true: call :meth:`poll` now and then while tasks run).

    :meth:`done` and :meth:`poll` return ``(waiter, result)`` pairs, tagged as a
    :class:`~nas_env.evaluators.cached.CachedEvaluator` tags them. ``store`` None: nothing is
    served or recorded; copies of one architecture still share one training.
    """

    def __init__(self, store: ResultStore | None, fingerprint: str, lease_s: float = DEFAULT_LEASE_S) -> None:
        self.claimant = Claimant(store, lease_s) if store is not None else None
        self.fingerprint = fingerprint
        self._training: dict[str, _Training[W]] = {}
        self._elsewhere: dict[str, tuple[Architecture, list[tuple[W, int]]]] = {}  # trained by another worker
        self.duplicates_avoided = 0  # children served by another one's training (here or elsewhere)

    @property
    def waiting(self) -> bool:
        """Whether some child waits for an architecture another worker trains (see :meth:`poll`)."""
        return bool(self._elsewhere)

    def ask(self, arch: Architecture, seed: int, waiter: W) -> EvalResult | bool:
        key = arch_key(arch)
        if key in self._training:
            self._training[key].waiters.append(waiter)
            self.duplicates_avoided += 1
            return False
        if key in self._elsewhere:
            self._elsewhere[key][1].append((waiter, int(seed)))
            return False
        got = self.claimant.poll(self.fingerprint, arch) if self.claimant is not None else None
        if isinstance(got, EvalResult):
            return tag_result(got, cache_hit=True, waited=False)
        if got is None and self.claimant is not None:
            self._elsewhere[key] = (arch, [(waiter, int(seed))])
            return False
        self._training[key] = _Training(arch, int(seed), got, waited=False, waiters=[waiter])
        return True

    def done(self, arch: Architecture, result: EvalResult,
             fingerprint: str | None = None) -> list[tuple[W, EvalResult]]:
        """Record the result of a training :meth:`ask` or :meth:`poll` handed out (produced under ``fingerprint``
        when not ``self.fingerprint``); each of its waiters' results."""
        t = self._training.pop(arch_key(arch))
        stored = None
        if t.claim is not None:
            t.claim.record(result, t.seed, fingerprint)
            if result.status in CACHEABLE_STATUSES:  # served as the store serves it (first seed wins)
                stored = t.claim.claimant.store.get(fingerprint or self.fingerprint, arch)
        first = tag_result(result, cache_hit=False, waited=t.waited, result_seed=t.seed)
        shared = stored if stored is not None else EvalResult(result.reward, result.status,
                                                              {**result.metrics, "result_seed": t.seed})
        return [(t.waiters[0], first)] + [(w, tag_result(shared, cache_hit=stored is not None, waited=True))
                                          for w in t.waiters[1:]]

    def abandon(self, arch: Architecture) -> list[W]:
        """Give up a training without a result (its task raised): its claim is released; its waiters."""
        t = self._training.pop(arch_key(arch))
        if t.claim is not None:
            t.claim.release()
        return t.waiters

    def poll(self) -> tuple[list[tuple[W, EvalResult]], list[tuple[W, Architecture, int]]]:
        """Look again at the architectures other workers train: the waiters now served, and the trainings that fell
        to this caller (their worker gave up or died: start a task for each, then :meth:`done` as usual)."""
        served: list[tuple[W, EvalResult]] = []
        to_train: list[tuple[W, Architecture, int]] = []
        if self.claimant is None:  # no store: nothing trains elsewhere
            return served, to_train
        for key, (arch, waiters) in list(self._elsewhere.items()):
            got = self.claimant.poll(self.fingerprint, arch)
            if got is None:
                continue
            del self._elsewhere[key]
            if isinstance(got, EvalResult):
                served += [(w, tag_result(got, cache_hit=True, waited=True)) for w, _ in waiters]
                self.duplicates_avoided += len(waiters)
                continue
            (first, seed), rest = waiters[0], waiters[1:]
            self._training[key] = _Training(arch, seed, got, waited=True, waiters=[first, *(w for w, _ in rest)])
            self.duplicates_avoided += len(rest)
            to_train.append((first, arch, seed))
        return served, to_train

    def release_all(self) -> None:
        """Release every claim held (the caller stops with trainings unfinished); forget the waiting children."""
        for t in self._training.values():
            if t.claim is not None:
                t.claim.release()
        self._training.clear()
        self._elsewhere.clear()
