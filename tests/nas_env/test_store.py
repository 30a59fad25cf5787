"""The SQLite result store and the caching evaluator."""

from __future__ import annotations

import multiprocessing as mp
import pickle
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from nas_env.evaluators import EvalResult, SyntheticEvaluator
from nas_env.evaluators.cached import CachedEvaluator
from nas_env.spaces.base import random_arch
from nas_env.spaces.cnn import CNNArchitecture, cnn_space
from nas_env.store import BatchEvaluations, Claim, Claimant, ResultStore, StoreError

SPACE = cnn_space("v1", num_layers=3)


def random_archs(n: int, seed: int) -> list[CNNArchitecture]:
    rng = np.random.default_rng(seed)
    return [random_arch(SPACE, rng) for _ in range(n)]


def test_round_trip_and_first_result_wins(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "s.sqlite")
    arch = random_archs(1, 0)[0]
    result = EvalResult(0.75, "ok", {"val_acc": 0.75, "val_acc_history": [0.5, 0.75], "params": np.int64(12)})
    assert store.get("fp", arch) is None
    assert store.put("fp", arch, result, seed=3)
    assert not store.put("fp", arch, EvalResult(0.1, "ok", {}))
    got = store.get("fp", arch)
    assert got == EvalResult(0.75, "ok", {"val_acc": 0.75, "val_acc_history": [0.5, 0.75], "params": 12,
                                          "result_seed": 3})
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
    assert clone.get("fp", arch) == EvalResult(0.5, metrics={"result_seed": None})


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


def test_a_hit_reports_the_seed_that_produced_the_result(tmp_path: Path) -> None:
    cached = CachedEvaluator(CountingEvaluator(SPACE), tmp_path / "s.sqlite")
    arch = random_archs(1, 3)[0]
    assert cached(arch, seed=5).metrics["result_seed"] == 5
    hit = cached(arch, seed=9)
    assert hit.metrics["cache_hit"] and hit.metrics["result_seed"] == 5


# A slow evaluator in a module of its own, so that other processes can import it.
SLOW_EVALUATOR = """
import time
from pathlib import Path
from nas_env.evaluators import EvalResult

class SlowEvaluator:
    '''Trains until a release file exists (or for ``seconds``), logging each start.'''

    def __init__(self, log, seconds):
        self.log, self.seconds = Path(log), seconds

    def fingerprint(self):
        return "slow"

    def __call__(self, arch, seed):
        with self.log.open("a") as f:
            print(f"start {seed}", file=f)
        deadline = time.time() + self.seconds
        while time.time() < deadline and not self.log.with_name("release").exists():
            time.sleep(0.05)
        return EvalResult(0.5, "ok", {"val_acc": 0.5})
"""
WORKER = """
import sys, json
sys.path.insert(0, sys.argv[1])
from slow_evaluator import SlowEvaluator
from nas_env.spaces.cnn import CNNArchitecture
from nas_env.evaluators.cached import CachedEvaluator
arch = CNNArchitecture.from_json(sys.argv[2])
cached = CachedEvaluator(SlowEvaluator(sys.argv[3], float(sys.argv[4])), sys.argv[5], lease_s=float(sys.argv[6]))
open(sys.argv[3] + ".ready", "a").write(sys.argv[7] + "\\n")
result = cached(arch, int(sys.argv[7]))
print(json.dumps({"cache_hit": result.metrics["cache_hit"], "waited": result.metrics["waited_for_claim"],
                  "result_seed": result.metrics["result_seed"]}))
"""


def _start_worker(tmp_path: Path, arch: CNNArchitecture, seconds: float, seed: int, lease_s: float = 30.0):
    import subprocess
    import sys

    (tmp_path / "slow_evaluator.py").write_text(SLOW_EVALUATOR)
    return subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path), arch.to_json(), str(tmp_path / "log"),
                             str(seconds), str(tmp_path / "s.sqlite"), str(lease_s), str(seed)],
                            stdout=subprocess.PIPE, text=True)


def _wait_for_claim(store: ResultStore, timeout_s: float = 60.0) -> None:
    import time

    deadline = time.time() + timeout_s
    while not store.claims():
        assert time.time() < deadline, "the worker never claimed the architecture"
        time.sleep(0.05)


def _wait_for_line(path: Path, line: str, timeout_s: float = 60.0) -> None:
    import time

    deadline = time.time() + timeout_s
    while not (path.is_file() and line in path.read_text().splitlines()):
        assert time.time() < deadline, f"{path} never got the line {line!r}"
        time.sleep(0.05)


def test_two_processes_drawing_one_architecture_train_it_once(tmp_path: Path) -> None:
    import json
    import time

    arch = random_archs(1, 4)[0]
    store = ResultStore(tmp_path / "s.sqlite")
    first = _start_worker(tmp_path, arch, seconds=600.0, seed=1)
    _wait_for_claim(store)  # the first holds the claim while it trains (until the release file exists)
    second = _start_worker(tmp_path, arch, seconds=600.0, seed=2)
    ready = tmp_path / "log.ready"
    while "2" not in (ready.read_text().split() if ready.exists() else []):
        time.sleep(0.05)
    time.sleep(1.0)  # the second is now waiting on the claim (it polls every 0.2 s)
    (tmp_path / "release").touch()
    outs = [json.loads(p.communicate(timeout=120)[0]) for p in (first, second)]
    assert (tmp_path / "log").read_text().splitlines() == ["start 1"]  # trained once
    assert outs[0] == {"cache_hit": False, "waited": False, "result_seed": 1}
    assert outs[1] == {"cache_hit": True, "waited": True, "result_seed": 1}  # the duplicate waited and was served
    assert store.claims() == []


def test_the_claim_of_a_killed_worker_expires_and_the_architecture_is_trained(tmp_path: Path) -> None:
    import sys

    arch = random_archs(1, 5)[0]
    store = ResultStore(tmp_path / "s.sqlite")
    worker = _start_worker(tmp_path, arch, seconds=600.0, seed=1)
    _wait_for_claim(store)
    _wait_for_line(tmp_path / "log", "start 1")  # the claim is written just before training starts: kill mid-training
    worker.kill()  # SIGKILL: no cleanup runs, the claim row stays
    worker.wait()
    assert len(store.claims()) == 1
    sys.path.insert(0, str(tmp_path))
    try:
        from slow_evaluator import SlowEvaluator  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(tmp_path))
    cached = CachedEvaluator(SlowEvaluator(tmp_path / "log", 0.0), store)
    result = cached(arch, seed=7)
    assert not result.metrics["cache_hit"] and result.metrics["result_seed"] == 7
    assert (tmp_path / "log").read_text().splitlines() == ["start 1", "start 7"]


def test_a_lapsed_lease_from_another_host_is_taken_over(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    import nas_env.store

    arch = random_archs(1, 6)[0]
    store = ResultStore(tmp_path / "s.sqlite")
    inner = CountingEvaluator(SPACE)
    cached = CachedEvaluator(inner, store)
    with monkeypatch.context() as m:  # a worker on another machine claims it; its lease runs out in 1 s
        m.setattr(nas_env.store, "HOST", "elsewhere")
        assert store.claim(cached.fingerprint(), arch, "other", lease_s=1.0)
    assert not store.claim(cached.fingerprint(), arch, "third")  # held: its process cannot be checked from here
    start = time.time()
    result = cached(arch, seed=3)
    assert inner.calls == 1 and result.metrics["waited_for_claim"]
    assert 0.8 < time.time() - start < 10


def test_a_worker_renews_its_lease_while_it_trains(tmp_path: Path) -> None:
    import threading
    import time

    arch = random_archs(1, 7)[0]
    store = ResultStore(tmp_path / "s.sqlite")
    seen: list[float] = []

    class Watching(CountingEvaluator):
        def __call__(self, arch: CNNArchitecture, seed: int) -> EvalResult:
            for _ in range(3):
                time.sleep(0.4)
                seen.append(ResultStore(store.path).claims()[0]["expires"])
            return super().__call__(arch, seed)

    CachedEvaluator(Watching(SPACE), store, lease_s=0.6)(arch, seed=0)
    assert seen == sorted(seen) and seen[-1] > seen[0]  # renewed (every 0.2 s) while training
    assert threading.active_count() >= 1 and store.claims() == []


@pytest.mark.parametrize("content", [b"not a database at all\n" * 50, b"\x00" * 4096])
def test_a_file_that_is_not_sqlite_is_refused_and_left_unchanged(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(content)
    with pytest.raises(StoreError, match=r"notes\.txt is not a nasrl result store: expected an SQLite file") as e:
        ResultStore(path)
    assert isinstance(e.value, ValueError) and "not SQLite" in str(e.value)
    assert path.read_bytes() == content and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_an_sqlite_file_without_nasrls_tables_is_refused_and_left_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE songs (title TEXT)")
    conn.execute("INSERT INTO songs VALUES ('a')")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(StoreError, match=r"other\.sqlite is not a nasrl result store: .*tables results and claims"
                                         r".*found an SQLite file with the tables songs"):
        ResultStore(path)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["other.sqlite"]

    wrong = tmp_path / "wrong.sqlite"  # a table named results that is not ours
    conn = sqlite3.connect(wrong)
    conn.execute("CREATE TABLE results (name TEXT, score REAL)")
    conn.commit()
    conn.close()
    before = wrong.read_bytes()
    with pytest.raises(StoreError, match=r"a table results without the columns arch, arch_hash"):
        ResultStore(wrong)
    assert wrong.read_bytes() == before


def test_an_empty_file_and_a_store_without_claims_still_open(tmp_path: Path) -> None:
    empty = tmp_path / "empty.sqlite"
    empty.touch()
    assert len(ResultStore(empty)) == 0
    old = tmp_path / "old.sqlite"  # a results table alone (no claims yet): claims are added
    store = ResultStore(old)
    store.put("fp", random_archs(1, 8)[0], EvalResult(0.5))
    store.close()
    conn = sqlite3.connect(old)
    conn.execute("DROP TABLE claims")
    conn.commit()
    conn.close()
    again = ResultStore(old)
    assert len(again) == 1 and again.claims() == []


def test_a_claim_records_only_results_worth_serving_and_always_releases(tmp_path: Path) -> None:
    claimant = Claimant(tmp_path / "s.sqlite")
    a, b = random_archs(2, 9)
    claim = claimant.poll("fp", a)
    assert isinstance(claim, Claim) and claimant.held == 1
    assert not claim.record(EvalResult(0.4, "stopped_early", {}), seed=1)  # depends on the best so far
    assert claimant.held == 0 and claimant.store.claims() == [] and claimant.store.get("fp", a) is None
    with claimant.poll("fp", a) as again:  # the next worker trains it; "with" releases on an error too
        assert again.record(EvalResult(0.7, "ok", {}), seed=2)
        again.release()  # a second release does nothing
    assert claimant.poll("fp", a) == EvalResult(0.7, "ok", {"result_seed": 2})
    other = Claimant(claimant.store)
    held = claimant.poll("fp", b)
    assert other.poll("fp", b) is None  # held by a live worker: wait
    held.release()
    assert isinstance(other.poll("fp", b), Claim)
    with pytest.raises(ValueError, match=r"lease_s \(seconds\) must be a finite number > 0, got 0"):
        Claimant(claimant.store, lease_s=0)


def test_batch_evaluations_serve_share_wait_and_take_over(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import nas_env.store

    store = ResultStore(tmp_path / "s.sqlite")
    a, b, c, d = random_archs(4, 10)
    store.put("fp", a, EvalResult(0.9, "ok", {}), seed=0)
    elsewhere = Claimant(store)  # another worker trains c; d's worker, on another host, lets its lease lapse
    c_claim = elsewhere.poll("fp", c)
    with monkeypatch.context() as m:
        m.setattr(nas_env.store, "HOST", "elsewhere")
        assert store.claim("fp", d, "gone", lease_s=0.5)
    batch: BatchEvaluations[int] = BatchEvaluations(store, "fp")
    served = batch.ask(a, 1, 0)
    assert served == EvalResult(0.9, "ok", {"result_seed": 0, "cache_hit": True, "waited_for_claim": False})
    assert batch.ask(b, 2, 1) is True and batch.ask(b, 3, 2) is False  # trained once, for both
    assert batch.ask(c, 4, 3) is False and batch.ask(d, 5, 4) is False and batch.waiting
    assert batch.poll() == ([], [])  # c still trains elsewhere, d's lease has not lapsed yet
    results = dict(batch.done(b, EvalResult(0.6, "ok", {})))
    assert results[1].metrics == {"result_seed": 2, "cache_hit": False, "waited_for_claim": False}
    assert results[2].metrics == {"result_seed": 2, "cache_hit": True, "waited_for_claim": True}
    c_claim.record(EvalResult(0.3, "ok", {}), seed=9)
    import time

    time.sleep(0.6)
    served_now, to_train = batch.poll()
    assert served_now == [(3, EvalResult(0.3, "ok", {"result_seed": 9, "cache_hit": True,
                                                      "waited_for_claim": True}))]
    assert to_train == [(4, d, 5)] and not batch.waiting  # d's claim lapsed: this caller trains it now
    assert [w for w, _ in batch.done(d, EvalResult(0.0, "oom", {}))] == [4]
    assert store.get("fp", d) is None and store.claims() == []  # an OOM is not kept; the claim is gone
    assert batch.duplicates_avoided == 2

    alone: BatchEvaluations[str] = BatchEvaluations(None, "fp")  # no store: nothing served, copies still share
    assert alone.ask(a, 1, "x") is True and alone.ask(a, 2, "y") is False
    shared = dict(alone.done(a, EvalResult(0.5, "ok", {})))
    assert not shared["y"].metrics["cache_hit"] and shared["y"].metrics["result_seed"] == 1
    assert alone.poll() == ([], [])


def test_batch_evaluations_release_their_claims_when_abandoned(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "s.sqlite")
    a, b = random_archs(2, 11)
    batch: BatchEvaluations[int] = BatchEvaluations(store, "fp")
    assert batch.ask(a, 1, 0) is True and batch.ask(a, 1, 1) is False and batch.ask(b, 2, 2) is True
    assert len(store.claims()) == 2
    assert batch.abandon(a) == [0, 1] and len(store.claims()) == 1
    batch.release_all()
    assert store.claims() == [] and batch.claimant.held == 0


def test_a_pickled_cached_evaluator_is_another_claim_owner(tmp_path: Path) -> None:
    cached = CachedEvaluator(CountingEvaluator(SPACE), tmp_path / "s.sqlite", lease_s=5.0)
    clone = pickle.loads(pickle.dumps(cached))
    assert clone.owner != cached.owner and clone.store.path == cached.store.path and clone.lease_s == 5.0
    arch = random_archs(1, 12)[0]
    assert not clone(arch, seed=1).metrics["cache_hit"] and cached(arch, seed=2).metrics["result_seed"] == 1
