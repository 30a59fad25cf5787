"""The search loop: drives an agent over NAS envs into a :class:`~.run_folder.RunFolder`, and resumes.

:class:`SearchArgs` holds every setting of a search (its fields are the ``nasrl-search`` flags,
see :mod:`agents.experiment.runner`); :func:`check_search_args` validates them all, before any run folder,
env or worker exists; :func:`run_search` runs or resumes one search and returns its folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym

import nas_env  # noqa: F401  (registers the environment ids)
from agents import AGENT_NAMES, AGENTS, make_agent
from agents.base import ChildRecord, EpisodicSearchAgent, SearchAgent, UpdateStats
from agents.experiment import distributed
from agents.experiment.curriculum import DepthCurriculum, env_max_layers, set_env_layers
from agents.experiment.distributed import BACKENDS, RayConfig, check_ray_agent, check_ray_installed, flag, task_summary
from agents.experiment.keywords import check_search_kwargs
from agents.experiment.run_folder import RunFolder
from agents.sb3 import SB3_ALGOS
from nas_env.vector import VECTORIZATION_MODES, make_parallel_envs, make_sync_envs

AGENT_CHECKPOINT = "agent.pt"
# Settings a resume may change: how far to go and how to show it. Everything else must match the run's.
RESUMABLE_CHANGES = ("episodes", "progress", "resume", "time_budget")


@dataclass
class SearchArgs(distributed.RaySettings):
    """Arguments of one search (CleanRL style: one docstring per field; first the Ray ones, of ``RaySettings``)."""

    env: str = "NASRL-Digits-v1"
    """Gymnasium id of the NAS environment"""
    agent: str = "reinforce"
    """search strategy: one of agents.AGENT_NAMES"""
    episodes: int = 200
    """children (architectures) to evaluate in total"""
    time_budget: float = 0.0
    """stop after the first child (lockstep batch with --num-envs) that ends this many seconds into this
    invocation of the search (0: no limit), e.g. to compare two searches at equal wall-clock; every child so
    far is kept, and --resume continues from the last update"""
    children_per_update: int = 5
    """m: children per policy update (the default is rounded up to a multiple of --num-envs)"""
    num_envs: int = 1
    """sub-environments stepped in lockstep: children trained at once (on this machine, or as Ray tasks with
    --backend ray and an agent other than reinforce)"""
    vectorization: str = "auto"
    """sync (one process), async (one process per sub-env, each with its device and share of the CPU
    threads) or auto (async when --num-envs > 1, except for SB3 agents, which step a sync vector env)"""
    backend: str = "local"
    """local (this process and its sub-env processes) or ray: --agent reinforce runs the paper's parameter-server
    layout on Ray (--replicas, --children-per-replica, --param-servers, --sync); evolution and random run their
    usual loop here and train each lockstep batch's --num-envs children as Ray tasks"""
    seed: int = 0
    """seed of the agent and of every child's training"""
    logdir: str = "runs"
    """parent folder of run folders"""
    run_name: str = ""
    """run folder name (default: <env>__<agent>__<seed>__<unix time>)"""
    resume: str = ""
    """run folder to continue; its config.json gives every other setting (--episodes and --progress may change)"""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """keyword arguments passed to gym.make (JSON on the command line)"""
    agent_kwargs: dict[str, Any] = field(default_factory=dict)
    """keyword arguments passed to the agent (JSON on the command line)"""
    store: str = ""
    """SQLite result store shared across runs (default: <run folder>/store.sqlite)"""
    progress: bool = True
    """show a progress bar"""
    curriculum: bool = False
    """grow the child depth during the search (the paper's curriculum; the env's num_layers is the maximum)"""
    curriculum_start_layers: int = 6
    """under --curriculum: the depth of the first children (the paper: 6)"""
    curriculum_layers_step: int = 2
    """under --curriculum: layers added at each step (the paper: 2)"""
    curriculum_every: int = 1600
    """under --curriculum: children between steps (the paper: 1,600); a step applies from the next lockstep batch
    of num_envs children (exactly at each multiple with one env)"""


def resolve_args(args: SearchArgs, explicit: set[str] | None = None) -> SearchArgs:
    """Validate every setting and settle the ones that depend on others; raises ValueError naming the bad value.

    ``explicit`` names the fields the user set (None: those that differ from the defaults). On ``--resume`` the
    run's config.json gives the settings; an explicit flag may change only :data:`RESUMABLE_CHANGES`. An m not
    given explicitly is rounded up to a multiple of ``--num-envs``; an explicit one that is not is an error.
    """
    if explicit is None:
        defaults = SearchArgs()
        explicit = {f.name for f in dataclasses.fields(SearchArgs)
                    if getattr(args, f.name) != getattr(defaults, f.name)}
    if args.resume:
        folder = RunFolder(args.resume)
        saved = folder.read_config()
        given = {k: getattr(args, k) for k in explicit if k in saved}
        changed = sorted(k for k, v in given.items() if k not in RESUMABLE_CHANGES and saved[k] != v)
        if changed:
            k = changed[0]
            raise ValueError(f"{flag(k)} {given[k]!r} differs from the run's {saved[k]!r}: a resumed "
                             f"run keeps its settings (allowed to change: --episodes, --progress, --time-budget)")
        kept = {k: getattr(args, k) for k in RESUMABLE_CHANGES if k in explicit}
        args = SearchArgs(**{**saved, **kept, "resume": str(folder.path)})
        explicit = set()  # the saved m was already settled when the run started
    check_one_of("agent", args.agent, AGENT_NAMES)
    check_counts(args, ("episodes", "children_per_update", "num_envs", "curriculum_start_layers",
                        "curriculum_layers_step", "curriculum_every"))
    if args.env not in gym.registry:
        nas_ids = sorted(k for k in gym.registry if k.startswith("NASRL-"))
        raise ValueError(f"--env {args.env!r} is not a registered environment; NAS environments: {', '.join(nas_ids)}")
    # an unknown --env-kwargs / --agent-kwargs key: named, with the allowed ones
    check_search_kwargs(args.env, args.env_kwargs, args.agent, args.agent_kwargs)
    budget = args.time_budget
    if isinstance(budget, bool) or not isinstance(budget, int | float) or not math.isfinite(budget) or budget < 0:
        raise ValueError(f"--time-budget must be a number of seconds >= 0 (0: no limit), got {budget!r}")
    check_parallel_args(args)
    m, n = args.children_per_update, args.num_envs
    lockstep = (args.backend == "local" or args.agent != "reinforce") and isinstance(
        AGENTS.get(args.agent), type) and issubclass(AGENTS[args.agent], EpisodicSearchAgent)
    if lockstep and m % n:
        if "children_per_update" in explicit:
            raise ValueError(f"--children-per-update {m} must be a multiple of --num-envs {n} (lockstep batches fill "
                             f"an update exactly): use {math.ceil(m / n) * n} or {max(n, m // n * n)}")
        rounded = math.ceil(m / n) * n
        print(f"--children-per-update {m} rounded up to {rounded}, a multiple of --num-envs {n}")
        args = dataclasses.replace(args, children_per_update=rounded)
    return args


def check_one_of(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    """A ValueError unless setting ``name`` is one of ``allowed``: ``--backend 'spark' is not one of local, ray``."""
    if value not in allowed:
        raise ValueError(f"{flag(name)} {value!r} is not one of {', '.join(allowed)}")


def check_counts(args: Any, names: tuple[str, ...]) -> None:
    """A ValueError naming the first of the settings ``names`` of ``args`` that is not an integer of at least 1."""
    for name in names:
        value = getattr(args, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{flag(name)} must be an integer of at least 1, got {value!r}")


def check_parallel_args(args: SearchArgs) -> None:
    """Bad --vectorization / --backend / Ray settings (those wrong whatever the cluster) as a ValueError naming them."""
    check_one_of("vectorization", args.vectorization, VECTORIZATION_MODES)
    check_one_of("backend", args.backend, BACKENDS)
    if args.vectorization == "async" and args.agent in SB3_ALGOS:
        raise ValueError(f"--vectorization async does not work with --agent {args.agent!r}: SB3 agents step a "
                         f"sync vector env; use --vectorization sync or auto")
    if args.backend != "ray":
        return
    check_ray_installed()
    if args.vectorization == "async" and not args.resume:  # older reinforce runs saved it, unused
        raise ValueError("--vectorization async does not apply to --backend ray: children train as Ray tasks "
                         "(use auto or sync)")
    check_ray_agent(ray_config(args), args.agent)
    if args.agent != "reinforce":
        return
    if args.time_budget:
        raise ValueError("--time-budget does not work with --backend ray --agent reinforce (the parameter-server "
                         "driver has its own rounds); use --backend local, or another agent on Ray")
    if args.curriculum:
        raise ValueError("--curriculum is not supported with --backend ray --agent reinforce (use the local backend)")
    if args.num_envs != 1 and not args.resume:  # older runs saved it, unused
        raise ValueError(f"--num-envs {args.num_envs} does not apply to --backend ray --agent reinforce: its K x m "
                         f"children (--replicas x --children-per-replica) train at once as Ray tasks")


def ray_config(args: SearchArgs) -> RayConfig:
    """The Ray settings of a search (a ValueError naming a bad one)."""
    return RayConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(RayConfig)})


def make_envs(args: SearchArgs, store_path: Path) -> gym.vector.VectorEnv:
    """The run's vector env: async (a process per sub-env, devices and CPU threads split) for several sub-envs."""
    kwargs = {**args.env_kwargs, "store": str(store_path)}
    mode = args.vectorization if args.vectorization != "auto" else (
        "async" if args.num_envs > 1 and args.agent not in SB3_ALGOS else "sync")
    if mode == "async":
        return make_parallel_envs(args.env, args.num_envs, kwargs)
    return make_sync_envs(args.env, args.num_envs, kwargs)


def run_folder_of(args: SearchArgs) -> RunFolder:
    """The folder a search writes: the resumed one, or a new ``<logdir>/<env>__<agent>__<seed>__<time>``."""
    if args.resume:
        return RunFolder(args.resume)
    name = args.run_name or f"{args.env}__{args.agent}__{args.seed}__{int(time.time())}"
    folder = RunFolder(Path(args.logdir) / name)
    if folder.exists():
        raise FileExistsError(f"run folder {folder.path} already holds a run; use --resume {folder.path} to continue")
    return folder


def build_agent(args: SearchArgs) -> SearchAgent:
    """The agent of a search; bad --agent-kwargs are a ValueError naming them."""
    try:
        return make_agent(args.agent, seed=args.seed, children_per_update=args.children_per_update,
                          **args.agent_kwargs)
    except TypeError as e:
        raise ValueError(f"--agent-kwargs {args.agent_kwargs} do not fit agent {args.agent!r}: {e}") from e


def agent_checkpoint(agent: SearchAgent, curriculum: DepthCurriculum | None, envs: gym.vector.VectorEnv
                     ) -> dict[str, Any]:
    """Everything a resume needs: the agent's state, the curriculum's, and a stateful evaluator's (weight sharing)."""
    state = agent.state_dict()
    if curriculum is not None:
        state["curriculum"] = curriculum.state(int(state["children_done"]))
    evaluators = envs.unwrapped.get_attr("evaluator_state")  # one per sub-env; None: an evaluator without state
    if any(e is not None for e in evaluators):
        state["evaluators"] = list(evaluators)
    return state


def run_search(args: SearchArgs, explicit: set[str] | None = None) -> Path:
    """Run (or resume) a search; returns the run folder. ``explicit``: see :func:`resolve_args`."""
    args = resolve_args(args, explicit)
    folder = run_folder_of(args)
    store_path = Path(args.store) if args.store else folder.path / "store.sqlite"
    if args.backend == "ray" and args.agent == "reinforce":  # the paper's parameter-server layout
        from agents.experiment.distributed.driver import run_ray_search  # Ray is imported only when it is used

        return run_ray_search(args, folder, store_path)

    # Build the agent and the envs first: bad --agent-kwargs or --env-kwargs fail before a run folder exists.
    agent = build_agent(args)
    with open_envs(args, store_path) as envs:
        curriculum = None
        try:
            if args.curriculum:  # a space too shallow for the schedule fails before a run folder exists
                curriculum = DepthCurriculum(env_max_layers(envs), args.curriculum_start_layers,
                                             args.curriculum_layers_step, args.curriculum_every)
            config = dataclasses.asdict(args)
            if not args.resume:
                folder.write_config(config)
            saved = folder.load_checkpoint(AGENT_CHECKPOINT)
            if saved is not None:
                agent.load_state_dict(saved)
                if saved.get("evaluators") is not None:  # each sub-env's evaluator gets its state back
                    envs.unwrapped.set_attr("evaluator_state", list(saved["evaluators"]))
            where = f" (children as Ray tasks, {args.num_envs} at once)" if args.backend == "ray" else ""
            folder.start(config, args.episodes, f"{args.agent} on {args.env}{where}", args.progress,
                         agent.children_done, getattr(agent, "exact_replay", True))
            _search(args, agent, envs, folder, curriculum, saved)
        finally:
            folder.close()
        extra = ""
        if getattr(agent, "episodes", 0):  # agents that ignore masks: how often they end on an invalid action
            extra = f"; {agent.invalid_episodes} of {agent.episodes} episodes ended on an invalid action"
        evaluator = getattr(envs, "child_evaluator", None)
        if evaluator is not None:  # Ray tasks
            extra += task_summary(folder, evaluator.duplicates_avoided)
            if evaluator.on_the_spot:  # children a lockstep step did not train together: a mirroring bug
                extra += f", {evaluator.on_the_spot} trained alone"
    print(folder.summary(extra))
    return folder.path


@contextlib.contextmanager
def open_envs(args: SearchArgs, store_path: Path) -> Iterator[gym.vector.VectorEnv]:
    """The run's vector env (:func:`make_envs`, or children as Ray tasks with ``--backend ray``), closed after."""
    if args.backend == "ray":
        from agents.experiment.distributed.vector import ray_envs

        with ray_envs(ray_config(args), args.env, args.env_kwargs, args.num_envs, store_path) as envs:
            yield envs
    else:
        with contextlib.closing(make_envs(args, store_path)) as envs:
            yield envs


class TimeBudgetReached(Exception):
    """Raised from the child callback when ``--time-budget`` has run out: ends the agent's loop."""


def _search(args: SearchArgs, agent: SearchAgent, envs: gym.vector.VectorEnv, folder: RunFolder,
            curriculum: DepthCurriculum | None, saved: dict[str, Any] | None) -> None:
    started = time.perf_counter()
    depth = None
    if curriculum is not None:  # continue at the checkpoint's depth (the first depth on a fresh run)
        depth = curriculum.resume_num_layers((saved or {}).get("curriculum"), agent.children_done)
        set_env_layers(envs, depth)
        folder.add_scalar("search/num_layers", depth, agent.children_done)

    def on_child(child: ChildRecord) -> None:
        """Record the child; under a curriculum, set the depth for the children after it (per child, so the
        schedule does not depend on where updates or a resume fall; it applies from the next lockstep batch)."""
        nonlocal depth
        folder.record_child(child)
        if curriculum is not None and (new := curriculum.num_layers_at(child.index + 1)) != depth:
            depth = new
            set_env_layers(envs, depth)
            folder.add_scalar("search/num_layers", depth, child.index + 1)
        # stop at the end of a lockstep batch: its other children are trained already, and are kept
        if (args.time_budget and time.perf_counter() - started >= args.time_budget
                and (child.index + 1) % args.num_envs == 0):
            raise TimeBudgetReached

    def on_update(stats: UpdateStats) -> None:
        folder.record_update(stats)
        if getattr(agent, "episodes", 0):  # agents that ignore masks: how often they end on an invalid action
            folder.add_scalar("search/invalid_episode_share", agent.invalid_episodes / agent.episodes,
                              stats.children_done)
        # after every update: a crash loses at most the children since (in the store)
        folder.save_checkpoint(AGENT_CHECKPOINT, agent_checkpoint(agent, curriculum, envs))

    try:
        agent.run(envs, args.episodes, on_child, on_update)
    except TimeBudgetReached:  # the agent stopped mid-batch: its last checkpoint (at an update) stays the resume point
        print(f"--time-budget {args.time_budget:g} s reached after {folder.written} children")
        return
    folder.save_checkpoint(AGENT_CHECKPOINT, agent_checkpoint(agent, curriculum, envs))
