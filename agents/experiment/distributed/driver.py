"""The Ray driver of the paper's layout: starts the parameter servers and replicas, trains children as tasks.

One event loop over Ray futures: a replica's ``sample`` (a batch of m children), each child's
training task, and a replica's ``learn`` (its gradient pushed to the shards). The driver, not the
replica, submits the child tasks, so their results survive a replica's death and restart. Every
finished child is replayed through a local copy of the env (the reward and info of a single-process
run) and recorded by the run's :class:`~agents.experiment.run_folder.RunFolder`; the store's rule
(:class:`~nas_env.store.BatchEvaluations`) decides which children train, and the driver holds the claims.

``checkpoints/ray.pt`` holds the shards, each replica's state and its pending batch (with the parameters
it was sampled under and its finished children's results). It is written after every batch is sampled,
before its children are submitted (also after every asynchronous update), so a resume matches the
children recorded since to their results.jsonl lines by (architecture, evaluation seed) and learns each
batch once. Faults and resume: see docs/parallel.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Collection, Iterator
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
from agents.experiment.search import SearchArgs, ray_config
from nas_env.evaluators import EvalResult
from nas_env.spaces.base import Architecture
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


@contextlib.contextmanager
def ray_session(config: RayConfig) -> Iterator[None]:
    """Joined to ``config.address``, or to a local Ray started here (``config.num_cpus`` CPUs, 0: all) and shut
    down after; an already connected Ray is used as it is."""
    started = not ray.is_initialized()
    if started:
        where = {"address": config.address} if config.address else {"num_cpus": config.num_cpus or None}
        ray.init(**where, include_dashboard=False, logging_level="warning")
    try:
        yield
    finally:
        if started:
            ray.shutdown()


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


def describe_on_cluster(options: dict[str, Any], env_id: str, env_kwargs: dict[str, Any]) -> str:
    """The fingerprint of the env built where children train (a task with ``options``): its keywords are
    checked there, before anything is trained or written."""
    try:
        return ray.get(ray.remote(describe_env).options(**options).remote(env_id, env_kwargs))
    except ray.exceptions.RayTaskError as e:
        raise remote_error(e) from None


def next_ready(refs: Collection[Any], polling: bool) -> list[Any]:
    """The next finished future of ``refs``; while children wait on another worker's claim, at most every POLL_S."""
    if not refs:
        time.sleep(POLL_S)
        return []
    ready, _ = ray.wait(list(refs), num_returns=1, timeout=POLL_S if polling else None)
    return ready


def finish_task(children: BatchEvaluations[Any], arch: Architecture, ref: Any, score_key: str,
                errors: list[BaseException] | None = None) -> list[tuple[Any, EvalResult]]:
    """Hand a finished child task's result to the store's rule; returns the waiters it serves.

    A worker that died past its retries gives a "failed" result; an evaluator that raised (a bug, as in a
    single-process run) gives up the claim and raises its own exception, or appends it to ``errors`` when
    given (a caller that raises it once its batch's other children are stored).
    """
    try:
        result, fingerprint = ray.get(ref)
    except ray.exceptions.RayTaskError as e:
        children.abandon(arch)
        if errors is None:
            raise remote_error(e) from None
        errors.append(remote_error(e))
        return []
    except ray.exceptions.RayError as e:  # its worker died (killed, OOM-killed, node lost)
        result, fingerprint = lost_worker_result(score_key, e), ""
    # Stored under the fingerprint of the node that trained it (a node with other code or data differs).
    return children.done(arch, result, fingerprint or None)


class RaySearch:
    """One Ray search of ``args`` (settled :class:`~agents.experiment.search.SearchArgs`) into ``folder``."""

    def __init__(self, args: SearchArgs, folder: RunFolder, store_path: Path) -> None:
        self.args = args
        self.config = config = ray_config(args)
        self.folder = folder
        self.K, self.m, self.S = config.replicas, config.children_per_replica, config.param_servers
        # Checked here, before Ray: bad env or agent keywords fail before anything starts.
        self.preset = PresetEvaluator()
        self.env = local_env(args.env, args.env_kwargs, self.preset)
        make_agent(args.seed, self.m, args.agent_kwargs)
        self.space = self.env.unwrapped.space
        self.remote_kwargs = remote_kwargs(args.env_kwargs)
        self.store_path = store_path
        self.store: ResultStore | None = None
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
        self.children: BatchEvaluations[tuple[int, int]] | None = None  # the store's rule; waiters: (replica, slot)

    # --- checkpoint ------------------------------------------------------------------------
    @property
    def layout(self) -> dict[str, int]:
        return {"replicas": self.K, "children_per_replica": self.m, "param_servers": self.S}

    def state_dict(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "layout": self.layout,
            "shards": ray.get([s.state.remote() for s in self.shards]),
            "replicas": self.states,
            "pending": [dataclasses.asdict(p) if p is not None else None for p in self.pending],
            "batch_numbers": list(self.batch_numbers),
            "learned": self.learned,
            "updates_done": self.updates_done,
            "children_done": self.folder.written,
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
        if state["layout"] != self.layout:
            raise ValueError(f"{path} was written by a search with {state['layout']}, not {self.layout}")
        return state

    # --- start -----------------------------------------------------------------------------
    def _start_actors(self, saved: dict[str, Any] | None) -> None:
        args = self.args
        if saved is None:
            flat = initial_parameters(args.env, args.env_kwargs, args.seed, args.agent_kwargs)
            shard_states: list[dict[str, Any] | None] = [None] * self.S
        else:
            flat = torch.cat([s["values"] for s in saved["shards"]])
            shard_states = saved["shards"]
        bounds = shard_bounds(flat.numel(), self.S)
        lr = float(args.agent_kwargs.get("lr", make_agent(args.seed, 1, args.agent_kwargs).lr))
        tag = f"nasrl:{self.folder.path.name}"
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
            r, args.env, args.env_kwargs, args.seed, self.m, args.agent_kwargs, names, bounds, num_threads=1)
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
        later = {(r["arch"], r["seed"]): r for r in self.folder.records[int(saved["children_done"]):]}
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
        return self.args.episodes - promised - sum(self.reserved)

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
        ref = task.remote(self.args.env, self.remote_kwargs, c["actions"], c["seed"], self.config.task_threads)
        self.inflight[ref] = ("child", r, slot)

    def _on_child(self, r: int, slot: int, ref: Any) -> None:
        c = self.pending[r].batch["children"][slot]
        arch = self.space.decode(c["actions"])
        self._finish_all(finish_task(self.children, arch, ref, self.env.unwrapped.score_key))

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
        index = self.folder.written
        self.folder.record_child(ChildRecord(index, reward, info))
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
            stats.update, stats.children_done = self.updates_done, self.folder.written
            stats.num_children = sum(st != "failed" for _, st, _ in p.done.values())
            self.updates_done += 1
            self.folder.record_update(stats)
            self.folder.add_scalar("update/staleness", out["staleness"], stats.children_done)
        if not self.config.sync:
            self._checkpoint()

    def run(self) -> None:
        args, run_config = self.args, dataclasses.asdict(self.args)
        self._task = ray.remote(evaluate_child)
        fingerprint = describe_on_cluster(self.config.task_options, args.env, self.remote_kwargs)
        saved = self._load_checkpoint()
        if not args.resume:
            self.folder.write_config(run_config)
        self.store = ResultStore(self.store_path)
        self.children = BatchEvaluations(self.store, fingerprint)
        self.folder.start(run_config, args.episodes, f"ray K={self.K} m={self.m} S={self.S} on {args.env}",
                          args.progress, int(saved["children_done"]) if saved else 0, exact_replay=True)
        self._start_actors(saved)
        if saved is not None:
            self._match_recorded(saved)
            for r in range(self.K):
                if self.pending[r] is not None:
                    self._submit(r)
        self._schedule()
        while self.inflight or self.children.waiting:
            for ref in next_ready(self.inflight, self.children.waiting):
                kind, r, slot = self.inflight.pop(ref)
                if kind == "child":
                    self._on_child(r, slot, ref)
                elif kind == "sample":
                    self._on_sample(r, ray.get(ref))
                else:
                    self._on_learn(r, ray.get(ref))
            if self.children.waiting:  # children on another worker's claim: served, or trained here if it gave up
                served, to_train = self.children.poll()
                for (r, slot), _, _ in to_train:
                    self._start_task(r, slot)
                self._finish_all(served)
            self._schedule()
        self._checkpoint()

    def close(self) -> None:
        for actor in self.replicas + self.shards:
            ray.kill(actor, no_restart=True)
        if self.children is not None:
            self.children.release_all()  # tasks left unfinished (an error, an interrupt): their claims go
        self.folder.close()
        if self.store is not None:
            self.store.close()
        self.env.close()


def run_ray_search(args: SearchArgs, folder: RunFolder, store_path: Path) -> Path:
    """Run (or resume) the paper's layout for settled ``args``; returns the run folder. Starts a local Ray unless
    one is connected."""
    search = RaySearch(args, folder, store_path)  # env and agent keywords checked before Ray starts
    with ray_session(search.config), contextlib.closing(search):
        check_cluster(search.config)
        search.run()
    print(folder.summary(f"{task_summary(folder, search.children.duplicates_avoided)}, {search.updates_done} updates"))
    return folder.path
