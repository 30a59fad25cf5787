"""The Ray driver: starts the parameter servers and replicas, trains children as tasks, records and checkpoints.

One event loop over Ray futures: a replica's ``sample`` (a batch of m children), each child's
training task, and a replica's ``learn`` (its gradient pushed to the shards). The driver,
not the replica, submits the child tasks: Ray ties an object to the process that submitted
its task, so results owned by the driver survive a replica's death and restart.

Every finished child is replayed through a local copy of the env (the same reward
transform and info as a single-process run), written to the result store, results.jsonl
and TensorBoard by the run's :class:`~agents.experiment.run_folder.RunFolder` (plus
``update/staleness``), in the order children finish. The store's rule decides which children
train (:class:`~nas_env.store.BatchEvaluations`): a child already stored is served; two
replicas that draw the same architecture while it trains share one task; one that another
worker (a local run, another Ray driver sharing the store file) has claimed waits for its
result (``duplicates_avoided`` in the summary). The driver holds the claims of its tasks.

Checkpoints (``checkpoints/ray.pt``) hold the shards (values, Adam state, versions), each
replica's state and its pending batch with the parameters it was sampled under and the
results of its finished children. One is written after every batch is sampled and before
its children are submitted (asynchronous mode also after every update; synchronous mode
once a round's batches are all sampled), so every child recorded since the last checkpoint
belongs to a batch in it: a resume matches those children to their results.jsonl lines by
(architecture, evaluation seed) instead of training them again, submits the rest, and
learns each batch once (shards ignore a push they already applied).

Faults: a child whose worker dies is retried by Ray ``--child-retries`` times, then recorded
with status "failed" (reward 0, and left out of its replica's gradient: a crash says nothing
about the architecture). A replica that dies is restarted by Ray and its call retried (the
driver passes it all its state). A parameter server that dies ends the search: resume it.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
import torch

from agents.base import ChildRecord, UpdateStats
from agents.experiment.distributed import RayConfig, task_summary
from agents.experiment.distributed.child import (
    PresetEvaluator,
    describe_env,
    evaluate_child,
    local_env,
    lost_worker_result,
    remote_kwargs,
    replay,
)
from agents.experiment.distributed.param_server import ParameterServer, shard_bounds
from agents.experiment.distributed.replica import ControllerReplica, initial_parameters, make_agent
from agents.experiment.run_folder import RunFolder
from nas_env.evaluators import EvalResult
from nas_env.store import POLL_S, BatchEvaluations, ResultStore

CHECKPOINT_FORMAT = 1
CHECKPOINT_NAME = "ray.pt"
REPLICA_RESTARTS = 5  # a replica that keeps dying (not one killed now and then) ends the search


@dataclass
class Pending:
    """A replica's batch between its sample and its learned gradient."""

    number: int  # the replica's batch number (the shards' duplicate-push key)
    batch: dict[str, Any]  # ControllerReplica.sample(): versions, params, children, state
    done: dict[int, tuple[float, str, int]] = field(default_factory=dict)  # slot -> (reward, status, record index)

    @property
    def complete(self) -> bool:
        return len(self.done) == len(self.batch["children"])


def connect(config: RayConfig) -> bool:
    """Join ``config.address`` or start a local Ray (``config.num_cpus`` CPUs, 0: all); False if already connected."""
    if ray.is_initialized():
        return False
    options: dict[str, Any] = {"include_dashboard": False, "logging_level": "warning"}
    if config.address:
        ray.init(address=config.address, **options)
    else:
        ray.init(num_cpus=config.num_cpus or None, **options)
    return True


def check_cluster(config: RayConfig) -> None:
    """Per-child resource requests that no node of the cluster can meet: a ValueError before anything starts."""
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    most_gpus = max((r.get("GPU", 0.0) for r in nodes), default=0.0)
    most_cpus = max((r.get("CPU", 0.0) for r in nodes), default=0.0)
    gpus, cpus = config.gpus_per_child, config.cpus_per_child
    if gpus > most_gpus:
        raise ValueError(f"--gpus-per-child {gpus:g} is more than any node of this Ray cluster has: allowed 0 to "
                         f"{most_gpus:g} ({len(nodes)} node(s); a child's task runs on one node)")
    if gpus > 1 and gpus != int(gpus):
        raise ValueError(f"--gpus-per-child {gpus:g}: Ray allows fractions only below 1 (e.g. 0.25), or whole GPUs")
    if cpus > most_cpus:
        raise ValueError(f"--cpus-per-child {cpus:g} is more than any node of this Ray cluster has: allowed up to "
                         f"{most_cpus:g}")


def remote_error(e: ray.exceptions.RayTaskError) -> BaseException:
    """A task's own exception (e.g. a ValueError about env keywords) rather than Ray's wrapper."""
    cause = e.as_instanceof_cause()
    return cause if isinstance(cause, BaseException) else e


class RaySearch:
    """One Ray search into ``folder`` (see the module docstring).

    ``run_config``: the run's settings as config.json keeps them (written on a fresh run); ``resume``: the
    folder holds a run to continue.
    """

    def __init__(self, config: RayConfig, folder: RunFolder, store_path: Path, *, env_id: str,
                 env_kwargs: dict[str, Any], seed: int, episodes: int, agent_kwargs: dict[str, Any],
                 run_config: dict[str, Any], resume: bool = False, progress: bool = False) -> None:
        self.config = config
        self.env_id, self.env_kwargs, self.seed, self.episodes = env_id, env_kwargs, seed, episodes
        self.agent_kwargs, self.run_config, self.resume, self.progress = agent_kwargs, run_config, resume, progress
        self.folder = folder
        self.run_dir = folder.path
        self.K, self.m, self.S = config.replicas, config.children_per_replica, config.param_servers
        # Checked here, before Ray: bad env or agent keywords fail before anything starts.
        self.preset = PresetEvaluator()
        self.env = local_env(env_id, env_kwargs, self.preset)
        make_agent(seed, self.m, agent_kwargs)
        self.space = self.env.unwrapped.space
        self.remote_kwargs = remote_kwargs(env_kwargs)
        self.store_path = store_path
        self.store: ResultStore | None = None
        self.recorder: RunFolder | None = None  # set once recording starts
        self.shards: list[Any] = []
        self.replicas: list[Any] = []
        self.states: list[dict[str, Any]] = []
        self.pending: list[Pending | None] = [None] * self.K
        self.batch_numbers = [0] * self.K
        self.learned = 0  # children of batches whose gradient was pushed
        self.updates_done = 0
        self.inflight: dict[Any, tuple[str, int, int]] = {}  # future -> (kind, replica, slot)
        self.reserved = [0] * self.K  # children of a sample in flight
        self.submitted = 0  # child tasks submitted by this driver (names them: child-<n>)
        self.fingerprint = ""
        self.children: BatchEvaluations[tuple[int, int]] | None = None  # the store's rule; waiters: (replica, slot)

    # --- checkpoint ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "layout": {"replicas": self.K, "children_per_replica": self.m, "param_servers": self.S},
            "shards": ray.get([s.state.remote() for s in self.shards]),
            "replicas": self.states,
            "pending": [dataclasses.asdict(p) if p is not None else None for p in self.pending],
            "batch_numbers": list(self.batch_numbers),
            "learned": self.learned,
            "updates_done": self.updates_done,
            "children_done": self.recorder.written,
        }

    def _checkpoint(self) -> None:
        self.folder.save_checkpoint(CHECKPOINT_NAME, self.state_dict())

    def _load_checkpoint(self) -> dict[str, Any] | None:
        state = self.folder.load_checkpoint(CHECKPOINT_NAME)
        if state is None:
            return None
        path = self.folder.checkpoint_path(CHECKPOINT_NAME)
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"unsupported Ray checkpoint format {state.get('format')!r} in {path}")
        layout = {"replicas": self.K, "children_per_replica": self.m, "param_servers": self.S}
        if state["layout"] != layout:
            raise ValueError(f"{path} was written by a search with {state['layout']}, not {layout}")
        return state

    # --- start -----------------------------------------------------------------------------
    @property
    def duplicates_avoided(self) -> int:
        return self.children.duplicates_avoided if self.children is not None else 0

    def _start_actors(self, saved: dict[str, Any] | None) -> None:
        if saved is None:
            flat = initial_parameters(self.env_id, self.env_kwargs, self.seed, self.agent_kwargs)
            shard_states: list[dict[str, Any] | None] = [None] * self.S
        else:
            flat = torch.cat([s["values"] for s in saved["shards"]])
            shard_states = saved["shards"]
        bounds = shard_bounds(flat.numel(), self.S)
        lr = float(self.agent_kwargs.get("lr", make_agent(self.seed, 1, self.agent_kwargs).lr))
        tag = f"nasrl:{self.run_dir.name}"
        # num_cpus=0 and one torch thread: parameter servers and replicas are light (a few thousand
        # floats, a tiny LSTM); every CPU the cluster has goes to the children's tasks.
        server = ray.remote(ParameterServer)
        names = [f"{tag}:ps{s}:{os.getpid()}" for s in range(self.S)]
        self.shards = [server.options(num_cpus=0, name=names[s]).remote(s, flat[lo:hi], lr, shard_states[s],
                                                                        num_threads=1)
                       for s, (lo, hi) in enumerate(bounds)]
        replica = ray.remote(ControllerReplica)
        self.replicas = [replica.options(
            num_cpus=0, max_restarts=REPLICA_RESTARTS, max_task_retries=REPLICA_RESTARTS,
            name=f"{tag}:replica{r}:{os.getpid()}").remote(
            r, self.env_id, self.env_kwargs, self.seed, self.m, self.agent_kwargs, names, bounds, num_threads=1)
            for r in range(self.K)]
        if saved is None:
            self.states = ray.get([rep.state.remote() for rep in self.replicas])
        else:
            self.states = saved["replicas"]
            self.pending = [Pending(**p) if p is not None else None for p in saved["pending"]]
            self.batch_numbers = list(saved["batch_numbers"])
            self.learned, self.updates_done = int(saved["learned"]), int(saved["updates_done"])

    def _match_recorded(self, saved: dict[str, Any]) -> None:
        """Children recorded after the checkpoint: the pending children they are (by architecture and seed)."""
        later = {(r["arch"], r["seed"]): r for r in self.recorder.records[int(saved["children_done"]):]}
        for p in self.pending:
            if p is None:
                continue
            for slot, c in enumerate(p.batch["children"]):
                rec = later.get((c["arch"], c["seed"]))
                if slot not in p.done and rec is not None:
                    p.done[slot] = (float(rec["reward"]), str(rec["status"]), int(rec["index"]))

    # --- the loop --------------------------------------------------------------------------
    def _budget_left(self) -> int:
        promised = self.learned + sum(len(p.batch["children"]) for p in self.pending if p is not None)
        return self.episodes - promised - sum(self.reserved)

    def _busy(self, r: int) -> bool:
        return self.reserved[r] > 0 or any(kind == "learn" and rr == r for kind, rr, _ in self.inflight.values())

    def _schedule(self) -> None:
        """Ask idle replicas for new batches: each as it is free (async), or all at once per round (sync)."""
        if self.config.sync and (any(p is not None for p in self.pending) or any(map(self._busy, range(self.K)))):
            return  # a round starts when the previous one has been learned from
        for r in range(self.K):
            size = min(self.m, self._budget_left())
            if size > 0 and self.pending[r] is None and not self._busy(r):
                self.reserved[r] = size
                self.inflight[self.replicas[r].sample.remote(self.states[r], size)] = ("sample", r, size)

    def _on_sample(self, r: int, batch: dict[str, Any]) -> None:
        self.reserved[r] = 0
        self.states[r] = batch["state"]
        self.pending[r] = Pending(self.batch_numbers[r], batch)
        self.batch_numbers[r] += 1
        if self.config.sync and any(self.reserved):
            return  # the round's checkpoint waits for all of its batches
        self._checkpoint()
        for rr in ([r] if not self.config.sync else range(self.K)):
            if self.pending[rr] is not None:
                self._submit(rr)

    def _submit(self, r: int) -> None:
        """Start the batch's unfinished children: served from the store, shared, waited for, or trained as tasks."""
        p = self.pending[r]
        for slot, c in enumerate(p.batch["children"]):
            if slot in p.done:
                continue
            answer = self.children.ask(self.space.decode(c["actions"]), c["seed"], (r, slot))
            if isinstance(answer, EvalResult):
                self._finish(r, slot, answer)
            elif answer:
                self._start_task(r, slot)
        self._maybe_learn(r)

    def _start_task(self, r: int, slot: int) -> None:
        c = self.pending[r].batch["children"][slot]
        task = self._task.options(name=f"child-{self.submitted}", **self.config.task_options)
        self.submitted += 1
        ref = task.remote(self.env_id, self.remote_kwargs, c["actions"], c["seed"], self.config.task_threads)
        self.inflight[ref] = ("child", r, slot)

    def _on_child(self, r: int, slot: int, ref: Any) -> None:
        c = self.pending[r].batch["children"][slot]
        arch = self.space.decode(c["actions"])
        try:
            result, fingerprint = ray.get(ref)
        except ray.exceptions.RayTaskError as e:  # the evaluator raised: a bug, as in a single-process run
            self.children.abandon(arch)
            raise remote_error(e) from None
        except ray.exceptions.RayError as e:  # its worker died (killed, OOM-killed, node lost) past the retries
            result, fingerprint = lost_worker_result(self.env.unwrapped.score_key, e), ""
        # Stored under the fingerprint of the node that trained it (a node with other code or data differs).
        self._finish_all(self.children.done(arch, result, fingerprint or None))

    def _poll_elsewhere(self) -> None:
        """Children waiting on another worker's claim: served once it records, trained here if it gave up."""
        served, to_train = self.children.poll()
        for (r, slot), _, _ in to_train:
            self._start_task(r, slot)
        self._finish_all(served)

    def _finish_all(self, results: list[tuple[tuple[int, int], EvalResult]]) -> None:
        for (r, slot), result in results:
            self._finish(r, slot, result)
        for r in {r for (r, _), _ in results}:
            self._maybe_learn(r)

    def _finish(self, r: int, slot: int, result: EvalResult) -> None:
        p = self.pending[r]
        c = p.batch["children"][slot]
        reward, info = replay(self.env, self.preset, c["actions"], c["env_seed"], result)
        if info.get("arch") != c["arch"] or int(info.get("seed", -1)) != c["seed"]:
            raise RuntimeError("replaying a child gave another architecture or seed than its sampling did")
        index = self.recorder.written
        self.recorder.record_child(ChildRecord(index, reward, info))
        p.done[slot] = (reward, result.status, index)

    def _maybe_learn(self, r: int) -> None:
        """Push a finished batch's gradient: at once (async), or every batch of the round together (sync)."""
        batches = [r] if not self.config.sync else [rr for rr in range(self.K) if self.pending[rr] is not None]
        if not all(self.pending[rr].complete for rr in batches) or any(
                kind == "learn" for kind, rr, _ in self.inflight.values() if rr in batches):
            return
        learnable = {rr: [self.pending[rr].done[s][1] != "failed" for s in range(len(self.pending[rr].done))]
                     for rr in batches}
        round_size = sum(any(v) for v in learnable.values()) if self.config.sync else 0
        for rr in batches:
            p = self.pending[rr]
            rewards = [p.done[s][0] for s in range(len(p.done))]
            ref = self.replicas[rr].learn.remote(self.states[rr], p.batch, rewards, learnable[rr], p.number,
                                                 round_size)
            self.inflight[ref] = ("learn", rr, 0)

    def _on_learn(self, r: int, out: dict[str, Any]) -> None:
        p = self.pending[r]
        self.states[r] = out["state"]
        self.learned += len(p.batch["children"])
        self.pending[r] = None
        if out["stats"] is not None:
            stats = UpdateStats(**out["stats"])
            stats.update, stats.children_done = self.updates_done, self.recorder.written
            stats.num_children = sum(st != "failed" for _, st, _ in p.done.values())
            self.updates_done += 1
            self.recorder.record_update(stats)
            self.recorder.add_scalar("update/staleness", out["staleness"], stats.children_done)
        if not self.config.sync:
            self._checkpoint()

    def run(self) -> None:
        self._task = ray.remote(evaluate_child)
        describe = ray.remote(describe_env).options(num_cpus=self.config.cpus_per_child,
                                                    num_gpus=self.config.gpus_per_child,
                                                    max_retries=self.config.child_retries)
        try:  # builds the env where children train: its keywords are checked there before anything is written
            self.fingerprint = ray.get(describe.remote(self.env_id, self.remote_kwargs))
        except ray.exceptions.RayTaskError as e:
            raise remote_error(e) from None
        saved = self._load_checkpoint()
        if not self.resume:
            self.folder.write_config(self.run_config)
        self.store = ResultStore(self.store_path)
        self.children = BatchEvaluations(self.store, self.fingerprint)
        self.folder.start(self.run_config, self.episodes, f"ray K={self.K} m={self.m} S={self.S} on {self.env_id}",
                          self.progress, int(saved["children_done"]) if saved else 0, exact_replay=True)
        self.recorder = self.folder
        self._start_actors(saved)
        if saved is not None:
            self._match_recorded(saved)
            for r in range(self.K):
                if self.pending[r] is not None:
                    self._submit(r)
        self._schedule()
        while self.inflight or self.children.waiting:
            ready = self._wait()
            for ref in ready:
                kind, r, slot = self.inflight.pop(ref)
                if kind == "child":
                    self._on_child(r, slot, ref)
                elif kind == "sample":
                    self._on_sample(r, ray.get(ref))
                else:
                    self._on_learn(r, ray.get(ref))
            if self.children.waiting:
                self._poll_elsewhere()
            self._schedule()
        self._checkpoint()

    def _wait(self) -> list[Any]:
        """The next finished future; while children wait on another worker's claim, at most every POLL_S."""
        if not self.inflight:
            time.sleep(POLL_S)
            return []
        ready, _ = ray.wait(list(self.inflight), num_returns=1, timeout=POLL_S if self.children.waiting else None)
        return ready

    def close(self) -> None:
        for actor in self.replicas + self.shards:
            ray.kill(actor, no_restart=True)
        if self.children is not None:
            self.children.release_all()  # tasks left unfinished (an error, an interrupt): their claims go
        self.folder.close()
        if self.store is not None:
            self.store.close()
        self.env.close()


def run_ray_search(config: RayConfig, folder: RunFolder, store_path: Path, *, env_id: str,
                   env_kwargs: dict[str, Any], seed: int, episodes: int, agent_kwargs: dict[str, Any],
                   run_config: dict[str, Any], resume: bool = False, progress: bool = False) -> Path:
    """Run (or resume) the paper's layout; returns the run folder. Starts a local Ray unless one is connected.

    The keywords are the search's (see :class:`RaySearch`).
    """
    search = RaySearch(config, folder, store_path, env_id=env_id, env_kwargs=env_kwargs, seed=seed,
                       episodes=episodes, agent_kwargs=agent_kwargs, run_config=run_config, resume=resume,
                       progress=progress)  # env and agent keywords checked before Ray starts
    started = connect(config)
    try:
        check_cluster(config)
        search.run()
    finally:
        search.close()
        if started:
            ray.shutdown()
    if search.recorder is not None:
        print(folder.summary(f"{task_summary(folder, search.duplicates_avoided)}, {search.updates_done} updates"))
    return folder.path
