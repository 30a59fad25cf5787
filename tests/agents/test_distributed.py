"""The Ray backend on a local 2-CPU Ray: the paper's layout completes, survives killed workers and a killed driver."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

ray = pytest.importorskip("ray")

from agents.distributed.param_server import ParameterServer, shard_bounds  # noqa: E402
from agents.distributed.replica import initial_parameters  # noqa: E402
from agents.runner import SearchArgs, parse_args, run_search  # noqa: E402
from nas_env.store import ResultStore  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SYNTHETIC = {"evaluator": "synthetic", "num_layers": 3}
TRAIN = {"epochs": 1, "train_subset": 300, "num_layers": 2, "device": "cpu"}  # a real child in a fraction of a second


@pytest.fixture(scope="module")
def ray_address() -> str:
    """One local Ray (2 CPUs) for the whole module: starting one costs seconds."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level="error")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def ray_args(tmp_path: Path, name: str, episodes: int, env_kwargs: dict, **kw) -> SearchArgs:
    return SearchArgs(**{"env": "NASRL-Digits-v0", "backend": "ray", "episodes": episodes, "replicas": 2,
                         "children_per_replica": 2, "param_servers": 2, "seed": 0, "logdir": str(tmp_path),
                         "run_name": name, "env_kwargs": env_kwargs, "progress": False, **kw})


def read(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]


def shard_values(run_dir: Path) -> torch.Tensor:
    state = torch.load(run_dir / "checkpoints" / "ray.pt", weights_only=True)
    return torch.cat([s["values"] for s in state["shards"]])


def test_parameter_server_shards_dedupe_and_average() -> None:
    assert shard_bounds(10, 3) == [(0, 3), (3, 7), (7, 10)]
    with pytest.raises(ValueError, match="--param-servers"):
        shard_bounds(4, 5)
    ps = ParameterServer(0, torch.zeros(3), lr=0.1)
    assert ps.push(0, 0, torch.ones(3), 0)["applied"]
    assert ps.push(0, 0, torch.ones(3), 0)["duplicate"]  # a retried push counts once
    assert ps.push(1, 0, torch.ones(3), 0)["staleness"] == 1
    sync = ParameterServer(0, torch.zeros(2), lr=0.1)
    assert not sync.push(1, 0, torch.tensor([1.0, -1.0]), 0, round_size=2)["applied"]  # buffered
    assert sync.push(0, 0, torch.tensor([3.0, -1.0]), 0, round_size=2)["applied"]
    torch.testing.assert_close(sync.pull()[1], torch.tensor([-0.1, 0.1]))  # Adam's first step: -lr * sign(mean)


def test_k2_m2_s2_async_completes_learns_and_stores_every_child(ray_address: str, tmp_path: Path) -> None:
    run_dir = run_search(ray_args(tmp_path, "async", 16, SYNTHETIC))
    records = read(run_dir)
    assert [r["index"] for r in records] == list(range(16))
    assert all(r["status"] == "ok" for r in records)
    assert len({(r["arch"], r["seed"]) for r in records}) == 16  # 16 distinct samples
    store = ResultStore(run_dir / "store.sqlite")
    assert {row["arch"] for row in store.rows()} == {r["arch"] for r in records}
    start = initial_parameters("NASRL-Digits-v0", SYNTHETIC, 0, {})
    assert not torch.equal(shard_values(run_dir), start)  # the controller learned

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for tag in ("child/reward", "child/val_acc", "child/status", "search/best_val_acc", "search/cache_hit_share",
                "update/reward_mean", "update/baseline", "update/policy_loss", "update/entropy", "update/staleness"):
        assert tag in tags, tag
    assert len(acc.Scalars("update/policy_loss")) == 8  # one gradient per batch of m = 2


@pytest.mark.slow  # a Ray fault drill: run with -m slow
def test_sync_rounds_have_no_staleness(ray_address: str, tmp_path: Path) -> None:
    run_dir = run_search(ray_args(tmp_path, "sync", 8, SYNTHETIC, sync=True, param_servers=1))
    assert [r["index"] for r in read(run_dir)] == list(range(8))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    assert [e.value for e in acc.Scalars("update/staleness")] == [0.0] * 4
    state = torch.load(run_dir / "checkpoints" / "ray.pt", weights_only=True)
    assert state["shards"][0]["version"] == 2  # two rounds, one averaged step each


def _processes(title: str) -> list[int]:
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read().split(b"\0")[0].decode(errors="replace") == title:
                    pids.append(int(pid))
        except OSError:
            pass
    return pids


@pytest.mark.slow  # a Ray fault drill: run with -m slow
def test_killed_workers_are_retried_then_failed_and_a_dead_replica_restarts(ray_address: str,
                                                                              tmp_path: Path) -> None:
    run_dir = tmp_path / "faults"
    kills = {"ray::child-2": 2}  # its first try, then its one retry: recorded "failed"
    stop = threading.Event()
    replica_killed = threading.Event()

    def killer() -> None:
        while not stop.is_set() and (any(kills.values()) or not replica_killed.is_set()):
            for title, left in kills.items():
                if left:
                    for pid in _processes(title):
                        os.kill(pid, signal.SIGKILL)
                        kills[title] -= 1
                        time.sleep(0.3)  # let Ray see the death before the retry is looked for
            results = run_dir / "results.jsonl"
            if not replica_killed.is_set() and results.exists() and len(results.read_text().splitlines()) >= 3:
                names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                         if ":faults:replica0:" in a["name"]]
                if names:
                    ray.kill(ray.get_actor(names[0]), no_restart=False)  # a crash: Ray restarts it
                    replica_killed.set()
            time.sleep(0.01)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        run_search(ray_args(tmp_path, "faults", 8, TRAIN, child_retries=1, param_servers=1))
    finally:
        stop.set()
        thread.join()
    records = read(run_dir)
    assert kills == {"ray::child-2": 0} and replica_killed.is_set()
    assert [r["index"] for r in records] == list(range(8))  # every child accounted for
    statuses = [r["status"] for r in records]
    assert statuses.count("failed") == 1 and statuses.count("ok") == 7, statuses
    failed = next(r for r in records if r["status"] == "failed")
    assert failed["reward"] == 0.0 and failed["arch"] is not None


@pytest.mark.slow  # a Ray fault drill: run with -m slow
def test_driver_killed_resumes_without_losing_or_retraining(ray_address: str, tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "agents.runner", "--backend", "ray", "--address", ray_address, "--episodes", "10",
           "--replicas", "2", "--children-per-replica", "2", "--param-servers", "1", "--logdir", str(tmp_path),
           "--run-name", "killed", "--no-progress", "--env-kwargs", json.dumps(TRAIN)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    results = tmp_path / "killed" / "results.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not results.exists() or len(results.read_text().splitlines()) < 4):
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = read(tmp_path / "killed")
    assert 4 <= len(before) < 10

    run_search(SearchArgs(resume=str(tmp_path / "killed"), progress=False))
    after = read(tmp_path / "killed")
    assert after[: len(before)] == before  # nothing finished was rewritten or lost
    assert [r["index"] for r in after] == list(range(10))
    assert len({(r["arch"], r["seed"]) for r in after}) == 10  # no child recorded (trained) twice
    assert all(r["status"] == "ok" for r in after)


@pytest.mark.parametrize(("argv", "message"), [
    (["--replicas", "0"], "--replicas (K) must be an integer of at least 1, got 0"),
    (["--children-per-replica", "-2"], "--children-per-replica (m) must be an integer of at least 1, got -2"),
    (["--param-servers", "0"], "--param-servers (S) must be an integer of at least 1, got 0"),
    (["--agent", "random"], "--agent must be 'reinforce'"),
    (["--backend", "spark"], "--backend 'spark' is not one of local, ray"),
])
def test_bad_ray_flags_are_named(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--backend", "ray", *argv])
    assert message in capsys.readouterr().err


def test_more_gpus_per_child_than_the_cluster_has_fails_before_anything(ray_address: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"--gpus-per-child 1 is more than any node .* allowed 0 to 0"):
        run_search(ray_args(tmp_path, "gpus", 4, SYNTHETIC, gpus_per_child=1.0))
    assert not (tmp_path / "gpus" / "config.json").exists()
