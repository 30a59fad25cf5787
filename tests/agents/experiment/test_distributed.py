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

from agents.experiment.distributed.param_server import ParameterServer, shard_bounds  # noqa: E402
from agents.experiment.distributed.replica import initial_parameters, make_agent  # noqa: E402
from agents.experiment.runner import SearchArgs, parse_args, run_search  # noqa: E402
from nas_env.store import ResultStore  # noqa: E402

REPO = Path(__file__).resolve().parents[3]
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


def test_replicas_run_without_the_state_they_could_not_keep() -> None:
    # unique children and the priority queue live across batches; a restarted replica would lose them
    options = make_agent(0, 2, {}).options
    assert (options.unique_children, options.queue_size, options.queue_coef) == (False, 0, 0.0)
    assert make_agent(0, 5, {"preset": "paper"}).options.queue_size == 0  # the paper fixes m=5
    assert make_agent(0, 2, {"lr": 0.01}).options.lr == 0.01
    with pytest.raises(ValueError, match=r"\['queue_size'\] are not used by the Ray backend"):
        make_agent(0, 2, {"queue_size": 10})


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
    cmd = [sys.executable, "-m", "agents.experiment.runner", "--backend", "ray", "--address", ray_address,
           "--episodes", "10",
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
    (["--replicas", "0"], "--replicas (K) must be an integer >= 1, got 0"),
    (["--children-per-replica", "-2"], "--children-per-replica (m) must be an integer >= 1, got -2"),
    (["--param-servers", "0"], "--param-servers (S) must be an integer >= 1, got 0"),
    (["--agent", "ppo"], "stable-baselines3 agents step their own DummyVecEnv"),
    (["--agent", "evolution", "--replicas", "3"], "--replicas sets the paper's parameter-server layout"),
    (["--agent", "random", "--sync"], "--sync sets the paper's parameter-server layout"),
    (["--agent", "evolution", "--vectorization", "async"], "--vectorization async does not apply to --backend ray"),
    (["--vectorization", "async"], "--vectorization async does not apply to --backend ray"),
    (["--time-budget", "60"], "--time-budget does not work with --backend ray --agent reinforce"),
    (["--num-envs", "2"], "--num-envs 2 does not apply to --backend ray --agent reinforce"),
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


# --- evolution and random on Ray: their own loop over a RayVectorEnv --------------------------------
EVOLUTION = {"population_size": 6, "sample_size": 3}


def vector_args(tmp_path: Path, name: str, backend: str, episodes: int, **kw) -> SearchArgs:
    """An evolution search over 2 lockstep sub-envs, m = 4, with a depth curriculum (1, 2, then 3 layers)."""
    return SearchArgs(**{"env": "NASRL-Digits-v0", "agent": "evolution", "backend": backend, "episodes": episodes,
                         "num_envs": 2, "children_per_update": 4, "vectorization": "sync", "seed": 3,
                         "logdir": str(tmp_path), "run_name": name, "env_kwargs": SYNTHETIC,
                         "agent_kwargs": EVOLUTION, "curriculum": True, "curriculum_start_layers": 1,
                         "curriculum_layers_step": 1, "curriculum_every": 8, "progress": False, **kw})


def child_keys(records: list[dict]) -> list[tuple]:
    return [(r["index"], r["arch"], r["seed"], r["reward"], r["status"], r["num_layers"]) for r in records]


def test_evolution_on_ray_records_what_a_local_run_does_and_resumes_exactly(
        ray_address: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    local = read(run_search(vector_args(tmp_path, "local", "local", 24)))
    assert {r["num_layers"] for r in local} == {1, 2, 3}  # the curriculum ran
    capsys.readouterr()
    ray_dir = run_search(vector_args(tmp_path, "ray", "ray", 24))
    assert child_keys(read(ray_dir)) == child_keys(local)
    summary = capsys.readouterr().out  # every child was trained in its lockstep batch (the depth reached the probes)
    assert "0 failed, 0 duplicates trained once" in summary and "trained alone" not in summary

    # Stopped mid-update (10 of m = 4: two children not learned from yet), then resumed to 24.
    cut = run_search(vector_args(tmp_path, "cut", "ray", 10))
    trained = len(ResultStore(cut / "store.sqlite"))
    run_search(SearchArgs(resume=str(cut), episodes=24, progress=False))
    resumed = read(cut)
    assert child_keys(resumed) == child_keys(local)
    assert [r["cache_hit"] for r in resumed[8:10]] == [False, False]  # first recorded when trained, kept as is
    rows = ResultStore(cut / "store.sqlite")
    assert len(rows) == len({r["arch"] for r in resumed}) > trained  # nothing trained twice


def test_random_search_on_ray_trains_real_children_as_tasks(ray_address: str, tmp_path: Path) -> None:
    args = SearchArgs(env="NASRL-Digits-v0", agent="random", backend="ray", episodes=4, num_envs=2, seed=1,
                      logdir=str(tmp_path), run_name="random", env_kwargs=TRAIN, progress=False)
    records = read(run_search(args))
    assert [r["index"] for r in records] == [0, 1, 2, 3]
    assert all(r["status"] == "ok" and 0.0 < r["val_acc"] <= 1.0 and r["train_seconds"] > 0 for r in records)
    assert len(ResultStore(tmp_path / "random" / "store.sqlite")) == len({r["arch"] for r in records})


def test_a_batch_that_draws_one_architecture_twice_trains_it_once(ray_address: str, tmp_path: Path) -> None:
    import gymnasium as gym

    from agents.experiment.distributed.vector import RayChildEvaluator

    space = gym.make("NASRL-Digits-v0", **SYNTHETIC).unwrapped.space
    a, b = space.decode([0] * len(space.tokens())), space.decode([1] * len(space.tokens()))
    evaluator = RayChildEvaluator("NASRL-Digits-v0", SYNTHETIC, tmp_path / "store.sqlite", score_key="val_acc")
    evaluator.prefetch([(a, 5), (b, 6), (a, 7)])
    first, other, second = evaluator(a, 5), evaluator(b, 6), evaluator(a, 7)
    assert (evaluator.trained, evaluator.duplicates_avoided) == (2, 1)
    assert (first.metrics["cache_hit"], second.metrics["cache_hit"], second.metrics["waited_for_claim"]) == (
        False, True, True)
    assert second.reward == first.reward and second.metrics["result_seed"] == 5 != other.metrics["result_seed"]
    again = evaluator(a, 9)  # not prefetched: served from the store on the spot, no task
    assert evaluator.trained == 2 and again.metrics["cache_hit"] and again.reward == first.reward
    evaluator.close()


def test_weight_sharing_is_refused_on_ray(ray_address: str, tmp_path: Path) -> None:
    args = SearchArgs(env="NASRL-Digits-v0", agent="random", backend="ray", episodes=2, logdir=str(tmp_path),
                      run_name="shared", env_kwargs={"evaluator": "shared", "num_layers": 2}, progress=False)
    with pytest.raises(ValueError, match=r"weight sharing.*use --backend local"):
        run_search(args)
    assert not (tmp_path / "shared" / "config.json").exists()


@pytest.mark.slow  # a Ray fault drill: run with -m slow
def test_evolution_on_ray_records_a_child_whose_worker_keeps_dying_as_failed(ray_address: str,
                                                                              tmp_path: Path) -> None:
    kills = {"ray::child-1": 2}  # its first try, then its one retry
    stop = threading.Event()
    killed: set[int] = set()

    def killer() -> None:  # polls fast: a retry on a warm worker trains this small child in a fraction of a second
        while not stop.is_set() and any(kills.values()):
            for title, left in kills.items():
                for pid in set(_processes(title)) - killed:
                    if left:
                        os.kill(pid, signal.SIGKILL)
                        killed.add(pid)
                        kills[title] = left = left - 1
            time.sleep(0.002)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        args = vector_args(tmp_path, "faults", "ray", 8, env_kwargs=TRAIN, curriculum=False, child_retries=1)
        records = read(run_search(args))
    finally:
        stop.set()
        thread.join()
    assert kills == {"ray::child-1": 0}
    statuses = [r["status"] for r in records]
    assert statuses.count("failed") == 1 and statuses.count("ok") == 7, statuses


def test_ray_vector_env_trains_each_steps_children_together_as_a_local_env_would(ray_address: str,
                                                                                 tmp_path: Path) -> None:
    """Probes mirror seeds (also None), depth changes, masks and early ends; a cost-aware reward works on them."""
    import gymnasium as gym
    import numpy as np

    from agents.evolution import EvolutionAgent
    from agents.experiment.distributed.vector import RayChildEvaluator, RayVectorEnv
    from nas_env.vector import make_sync_envs

    kwargs = {**SYNTHETIC, "cost_metric": "params", "cost_target": 20000.0}
    evaluator = RayChildEvaluator("NASRL-Digits-v0", kwargs, tmp_path / "store.sqlite", score_key="val_acc")
    envs = RayVectorEnv("NASRL-Digits-v0", kwargs, 2, evaluator)
    local = make_sync_envs("NASRL-Digits-v0", 2, kwargs)
    got: dict[str, list] = {"ray": [], "local": []}
    agents = {"ray": EvolutionAgent(seed=4, children_per_update=2, population_size=4, sample_size=2),
              "local": EvolutionAgent(seed=4, children_per_update=2, population_size=4, sample_size=2)}
    for depth, total in ((2, 8), (3, 16)):  # a depth change between runs, as a curriculum makes
        for name, venv in (("ray", envs), ("local", local)):
            venv.unwrapped.call("set_num_layers", depth)
            agents[name].run(venv, total, lambda c, n=name: got[n].append(
                (c.index, c.info["arch"], c.info["seed"], c.reward, c.info["status"], c.info["cost"])))
    assert got["ray"] == got["local"] and all(c[5] > 0 for c in got["ray"])
    assert evaluator.on_the_spot == 0 and evaluator.pending == 0  # every child came from a lockstep prefetch
    assert evaluator.trained + evaluator.duplicates_avoided == len({c[1] for c in got["ray"]})

    # A bad reset mask changes nothing; seed=None, a masked reset and an invalid action still keep the probes in step.
    with pytest.raises(TypeError, match="reset_mask"):
        envs.reset(options={"reset_mask": [True, False]})
    _, infos = envs.reset()
    envs.reset(options={"reset_mask": np.array([False, True])})
    while np.asarray(infos["action_mask"][0], dtype=bool).all():  # to a token with fewer choices than actions
        _, _, ended, _, infos = envs.step(np.zeros(2, dtype=np.int64))
        assert not ended.any()
    invalid = int(np.flatnonzero(~np.asarray(infos["action_mask"][0], dtype=bool))[0])
    _, reward, ended, _, infos = envs.step(np.array([invalid, 0]))  # sub-env 0 ends on an invalid action
    assert ended[0] and reward[0] == -1.0 and infos["status"][0] == "invalid_action"
    while not ended[1]:
        _, _, ended, _, infos = envs.step(np.zeros(2, dtype=np.int64))
    assert infos["status"][1] == "ok" and evaluator.on_the_spot == 0 and evaluator.pending == 0
    assert isinstance(envs.unwrapped, gym.vector.SyncVectorEnv)
    envs.close()
    local.close()


# A local search whose synthetic children train slowly: each logs its architecture, then waits for a release file.
SLOW_LOCAL_SEARCH = """
import sys, time
from pathlib import Path
from nas_env.evaluators import synthetic

log, release = Path(sys.argv[1]), Path(sys.argv[2])
instant = synthetic.SyntheticEvaluator.__call__

def slow(self, arch, seed):
    with log.open("a") as f:
        print(arch.to_json(), file=f, flush=True)
    deadline = time.time() + 60
    while not release.exists() and time.time() < deadline:
        time.sleep(0.02)
    return instant(self, arch, seed)

synthetic.SyntheticEvaluator.__call__ = slow
from agents.experiment.runner import main
main(sys.argv[3:])
"""


def test_a_ray_run_and_a_local_run_sharing_a_store_train_each_architecture_once(ray_address: str,
                                                                                tmp_path: Path) -> None:
    """The local run holds the claim of its first child while the Ray run (same seed: the same children) meets it:
    the Ray run waits for that result instead of training it again, and trains the rest for both."""
    store, log, release = tmp_path / "shared.sqlite", tmp_path / "local.log", tmp_path / "release"
    common = {"agent": "random", "episodes": 6, "num_envs": 2, "children_per_update": 2, "seed": 1,
              "store": str(store), "logdir": str(tmp_path)}
    argv = [f"--{k.replace('_', '-')}={v}" for k, v in common.items()]
    local = subprocess.Popen([sys.executable, "-c", SLOW_LOCAL_SEARCH, str(log), str(release), *argv,
                              "--run-name=local", "--vectorization=sync", "--no-progress",
                              f"--env-kwargs={json.dumps(SYNTHETIC)}"], cwd=REPO, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while not (log.exists() and log.read_text()):  # the local run has claimed its first child and trains it
        assert local.poll() is None and time.time() < deadline, local.stderr.read().decode()[-3000:]
        time.sleep(0.05)

    def release_once_ray_trains() -> None:  # the Ray run's first batch: one child trained, the other waited for
        while not release.exists() and time.time() < deadline:
            if len(ResultStore(store)) >= 1:
                release.touch()
            time.sleep(0.05)

    releaser = threading.Thread(target=release_once_ray_trains, daemon=True)
    releaser.start()
    try:
        ray_dir = run_search(SearchArgs(**common, backend="ray", run_name="ray", env_kwargs=SYNTHETIC,
                                        progress=False))
    finally:
        release.touch()
        releaser.join()
        assert local.wait(timeout=60) == 0, local.stderr.read().decode()[-3000:]
    ray_records, local_records = read(ray_dir), read(tmp_path / "local")
    assert [r["arch"] for r in ray_records] == [r["arch"] for r in local_records]  # the same six children
    trained_locally = log.read_text().splitlines()
    trained_on_ray = [r["arch"] for r in ray_records if not r["cache_hit"]]
    first = local_records[0]["arch"]
    assert json.loads(trained_locally[0]) == json.loads(first)
    assert ray_records[0]["cache_hit"] and ray_records[0]["result_seed"] == local_records[0]["seed"]  # waited
    trainings = sorted(json.dumps(json.loads(a), sort_keys=True) for a in trained_locally + trained_on_ray)
    assert trainings == sorted({json.dumps(json.loads(r["arch"]), sort_keys=True) for r in ray_records})  # once each
    assert ResultStore(store).claims() == [] and len(ResultStore(store)) == len(trainings)
