"""The paper's distributed search (Zoph & Le, section 3.3) on Ray: parameter servers, controller replicas, child tasks.

``nasrl-search --backend ray --agent reinforce`` runs the paper's layout (docs/parallel.md): S
:class:`~agents.experiment.distributed.param_server.ParameterServer` shards of the controller's parameters,
K :class:`~agents.experiment.distributed.replica.ControllerReplica` actors that sample m children and push
their gradient, and the driver (:mod:`agents.experiment.distributed.driver`), which trains each child as a
Ray task (:func:`~agents.experiment.distributed.child.evaluate_child`), records and checkpoints. The other
episodic agents (``evolution``, ``random``) run their own loop over a
:class:`~agents.experiment.distributed.vector.RayVectorEnv` instead. Only the driver and the vector env
import Ray; the actor classes are plain classes, readable and testable on their own.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from nas_env.checks import check_bool, check_int, check_number

if TYPE_CHECKING:
    from agents.experiment.run_folder import RunFolder


BACKENDS = ("local", "ray")  # where children train: this machine, or Ray tasks
# Agents that run their own loop over a RayVectorEnv; reinforce runs the parameter-server layout instead.
RAY_VECTOR_AGENTS = ("evolution", "random")
REINFORCE_LAYOUT = ("replicas", "children_per_replica", "param_servers", "sync")


def flag(name: str) -> str:
    """The command-line flag of a setting: ``children_per_replica`` -> ``--children-per-replica``."""
    return f"--{name.replace('_', '-')}"


@dataclass
class RaySettings:
    """The ``nasrl-search`` Ray flags (one docstring per field): fields of
    :class:`~agents.experiment.search.SearchArgs`, and as :class:`RayConfig` what the Ray backends receive."""

    help_last: ClassVar[bool] = True  # nas_env.cli lists these after the search's own flags
    address: str = ""
    """ray: cluster to join ("auto": the one `ray start` set up here); empty: start a local Ray"""
    num_cpus: int = 0
    """ray: CPUs of a local Ray started without --address (0: all of this machine's)"""
    replicas: int = 2
    """ray, reinforce: K, controller replicas, each sampling and learning from its own children"""
    children_per_replica: int = 4
    """ray, reinforce: m, children each replica samples per gradient (trained at once, as Ray tasks)"""
    param_servers: int = 1
    """ray, reinforce: S, parameter-server shards holding the controller's parameters"""
    gpus_per_child: float = 0.0
    """ray: GPUs each child's training task requests (fractions share a GPU between small children)"""
    cpus_per_child: float = 1.0
    """ray: CPUs each child's training task requests (also its torch thread count)"""
    sync: bool = False
    """ray, reinforce: synchronous updates (each round's gradients of all replicas averaged into one step) instead
    of the paper's asynchronous ones"""
    child_retries: int = 2
    """ray: times a child whose worker died is retried before it is recorded with status failed"""


@dataclass
class RayConfig(RaySettings):
    """Where and how a Ray search runs: the cluster, the paper's layout, and each child task's resources.

    A bad value is a ValueError naming the flag. Cluster-dependent checks (GPUs or CPUs per child beyond any
    node's) run when the driver has joined Ray (:func:`agents.experiment.distributed.driver.check_cluster`).
    """

    def __post_init__(self) -> None:
        if not isinstance(self.address, str):
            raise ValueError(f"--address must be a text (a Ray cluster address, or empty), got {self.address!r}")
        for name, letter in (("replicas", "K"), ("children_per_replica", "m"), ("param_servers", "S")):
            check_int(f"{flag(name)} ({letter})", getattr(self, name), minimum=1)
        check_number("--gpus-per-child (fractions allowed)", self.gpus_per_child, minimum=0)
        check_number("--cpus-per-child", self.cpus_per_child, minimum=0, above=True)
        check_int("--child-retries", self.child_retries, minimum=0)
        check_int("--num-cpus (0: all of this machine's)", self.num_cpus, minimum=0)
        check_bool("--sync", self.sync)

    @property
    def task_options(self) -> dict[str, Any]:
        """Ray options of a child's training task."""
        return {"num_cpus": self.cpus_per_child, "num_gpus": self.gpus_per_child, "max_retries": self.child_retries,
                "retry_exceptions": False}

    @property
    def task_threads(self) -> int:
        """Torch threads of a child's training task: the CPUs it asked for (at least 1)."""
        return max(1, int(self.cpus_per_child))


def check_ray_installed() -> None:
    """A ValueError saying how to install Ray when it is missing."""
    if importlib.util.find_spec("ray") is None:
        raise ValueError("--backend ray needs the ray package, which is not installed: "
                         "pip install -e '.[distributed]' (or pip install ray)")


def check_ray_agent(config: RayConfig, agent: str) -> None:
    """The agents Ray runs: reinforce (the paper's layout) or :data:`RAY_VECTOR_AGENTS` (without layout flags)."""
    if agent in RAY_VECTOR_AGENTS:
        changed = [name for name in REINFORCE_LAYOUT if getattr(config, name) != getattr(RayConfig(), name)]
        if changed:
            name = flag(changed[0])
            raise ValueError(f"{name} sets the paper's parameter-server layout of --agent reinforce; --agent {agent} "
                             f"on Ray trains --num-envs children at once as Ray tasks (leave {name} out)")
        return
    if agent != "reinforce":
        raise ValueError(f"--backend ray runs --agent reinforce (the paper's layout) or "
                         f"{' or '.join(RAY_VECTOR_AGENTS)}; got {agent!r}: stable-baselines3 agents step their "
                         f"own DummyVecEnv one child at a time, so use --backend local for them")


def task_summary(folder: RunFolder, duplicates_avoided: int) -> str:
    """What a Ray search adds to its closing line: children whose worker kept dying, and tasks shared."""
    failed = sum(r["status"] == "failed" for r in folder.records)
    return f", {failed} failed, {duplicates_avoided} duplicates trained once"


__all__ = [
    "BACKENDS", "RAY_VECTOR_AGENTS", "RayConfig", "RaySettings", "check_ray_agent", "check_ray_installed", "flag",
    "task_summary",
]
