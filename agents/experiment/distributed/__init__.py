"""The paper's distributed search (Zoph & Le, section 3.3) on Ray: parameter servers, controller replicas, child tasks.

Layout (``nasrl-search --backend ray --replicas K --children-per-replica m --param-servers S``):

* S :class:`~agents.experiment.distributed.param_server.ParameterServer` actors each hold one contiguous
  slice of the controller's flattened parameters and its Adam state. Adam is elementwise, so
  S shards step exactly as one optimizer over the whole vector would.
* K :class:`~agents.experiment.distributed.replica.ControllerReplica` actors pull the parameters, sample m
  children with their own seeded generator, and later turn the children's rewards into a
  REINFORCE gradient that they push, sliced, to the shards. Asynchronous by default (each push
  is one Adam step, applied as it comes; its staleness is logged), or synchronous (``--sync``:
  each round's K gradients are averaged into one step).
* Each child is trained by one Ray task (:func:`~agents.experiment.distributed.child.evaluate_child`) with
  the resources the flags ask for (``--cpus-per-child``, ``--gpus-per-child``, fractions allowed).
* The driver (:mod:`agents.experiment.distributed.driver`) submits the tasks, writes every child to the
  result store, results.jsonl and TensorBoard as it finishes (the run's ``RunFolder``),
  and checkpoints everything needed to resume.

The other episodic agents (``--agent evolution`` or ``random``) run on Ray differently: their own
loop stays in the driver's process, over a :class:`~agents.experiment.distributed.vector.RayVectorEnv` whose
``--num-envs`` lockstep children train as Ray tasks at once; checkpoints and resume are the local
backend's (see :mod:`agents.experiment.distributed.vector`).

Only :mod:`agents.experiment.distributed.driver` and :mod:`agents.experiment.distributed.vector` import Ray; the actor
classes are plain classes that the driver wraps, so they can be read and tested on their own.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agents.experiment.run_folder import RunFolder


# Agents that run their own loop over a RayVectorEnv; reinforce runs the parameter-server layout instead.
RAY_VECTOR_AGENTS = ("evolution", "random")
REINFORCE_LAYOUT = ("replicas", "children_per_replica", "param_servers", "sync")


def check_ray_args(args: Any) -> None:
    """Settings of a ``--backend ray`` search that are wrong whatever the cluster: a ValueError naming them.

    Cluster-dependent checks (GPUs or CPUs per child beyond any node's) run when the driver has joined Ray.
    """
    if importlib.util.find_spec("ray") is None:
        raise ValueError("--backend ray needs the ray package, which is not installed: "
                         "pip install -e '.[distributed]' (or pip install ray)")
    for name, flag in (("replicas", "K"), ("children_per_replica", "m"), ("param_servers", "S")):
        value = getattr(args, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"--{name.replace('_', '-')} ({flag}) must be an integer of at least 1, got {value!r}")
    if args.gpus_per_child < 0:
        raise ValueError(f"--gpus-per-child must be 0 or more (fractions allowed), got {args.gpus_per_child}")
    if args.cpus_per_child <= 0:
        raise ValueError(f"--cpus-per-child must be more than 0, got {args.cpus_per_child}")
    if args.child_retries < 0:
        raise ValueError(f"--child-retries must be 0 or more, got {args.child_retries}")
    if args.num_cpus < 0:
        raise ValueError(f"--num-cpus must be 0 (all of this machine's) or more, got {args.num_cpus}")
    if args.vectorization == "async" and not getattr(args, "resume", ""):  # older reinforce runs saved it, unused
        raise ValueError("--vectorization async does not apply to --backend ray: children train as Ray tasks "
                         "(use auto or sync)")
    if args.agent in RAY_VECTOR_AGENTS:
        from agents.experiment.search import SearchArgs  # here: agents.experiment.search imports this package

        defaults = SearchArgs()
        for name in REINFORCE_LAYOUT:
            if getattr(args, name) != getattr(defaults, name):
                raise ValueError(f"--{name.replace('_', '-')} sets the paper's parameter-server layout of --agent "
                                 f"reinforce; --agent {args.agent} on Ray trains --num-envs children at once as Ray "
                                 f"tasks (leave --{name.replace('_', '-')} out)")
        return
    if args.agent != "reinforce":
        raise ValueError(f"--backend ray runs --agent reinforce (the paper's layout) or "
                         f"{' or '.join(RAY_VECTOR_AGENTS)}; got {args.agent!r}: stable-baselines3 agents step their "
                         f"own DummyVecEnv one child at a time, so use --backend local for them")
    if getattr(args, "curriculum", False):
        raise ValueError("--curriculum is not supported with --backend ray --agent reinforce (use the local backend)")
    if getattr(args, "num_envs", 1) != 1 and not getattr(args, "resume", ""):  # older runs saved it, unused
        raise ValueError(f"--num-envs {args.num_envs} does not apply to --backend ray --agent reinforce: its K x m "
                         f"children (--replicas x --children-per-replica) train at once as Ray tasks")


def task_summary(folder: RunFolder, duplicates_avoided: int) -> str:
    """What a Ray search adds to its closing line: children whose worker kept dying, and tasks shared."""
    failed = sum(r["status"] == "failed" for r in folder.records)
    return f", {failed} failed, {duplicates_avoided} duplicates trained once"


def run_ray_search(args: Any, folder: RunFolder, store_path: Path) -> Path:
    """Run (or resume) a Ray search into ``folder``; see :mod:`agents.experiment.distributed.driver`."""
    check_ray_args(args)  # also for callers that built their arguments without the command line
    from agents.experiment.distributed.driver import run_ray_search as run

    return run(args, folder, store_path)


__all__ = ["RAY_VECTOR_AGENTS", "check_ray_args", "run_ray_search", "task_summary"]
