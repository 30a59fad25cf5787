"""The search runner: drives an agent over NAS environments, records every child, and resumes after a crash.

A run folder ``<logdir>/<env>__<agent>__<seed>__<time>/`` holds everything needed to resume:
``config.json`` (these arguments), ``results.jsonl`` (one line per child, flushed as each
finishes), ``store.sqlite`` (the result store that serves children already trained),
``best.json``, ``checkpoints/agent.pt`` (written after every policy update) and the
TensorBoard events.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import itertools
import json
import os
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

import nas_env  # noqa: F401  (registers the environment ids)
from agents import AGENT_NAMES, make_agent
from agents.base import ChildRecord, SearchAgent, UpdateStats
from agents.curriculum import DepthCurriculum, env_max_layers, set_env_layers
from agents.sb3 import SB3_ALGOS
from nas_env.evaluators import STATUSES
from nas_env.vector import VECTORIZATION_MODES, make_parallel_envs

BACKENDS = ("local", "ray")


@dataclass
class SearchArgs:
    """Arguments of one search (CleanRL style: one docstring per field)."""

    env: str = "NASRL-Digits-v0"
    """Gymnasium id of the NAS environment"""
    agent: str = "reinforce"
    """search strategy: one of agents.AGENT_NAMES"""
    episodes: int = 200
    """children (architectures) to evaluate in total"""
    children_per_update: int = 5
    """m: children per policy update"""
    num_envs: int = 1
    """sub-environments stepped in lockstep: children trained at once on this machine"""
    vectorization: str = "auto"
    """sync (one process), async (one process per sub-env, each with its device and share of the CPU
    threads) or auto (async when --num-envs > 1, except for SB3 agents, which step a sync vector env)"""
    backend: str = "local"
    """local (this process and its sub-env processes) or ray (the paper's parameter-server layout on Ray)"""
    address: str = ""
    """ray: cluster to join ("auto": the one `ray start` set up here); empty: start a local Ray"""
    num_cpus: int = 0
    """ray: CPUs of a local Ray started without --address (0: all of this machine's)"""
    replicas: int = 2
    """ray: K, controller replicas, each sampling and learning from its own children"""
    children_per_replica: int = 4
    """ray: m, children each replica samples per gradient (trained at once, as Ray tasks)"""
    param_servers: int = 1
    """ray: S, parameter-server shards holding the controller's parameters"""
    gpus_per_child: float = 0.0
    """ray: GPUs each child's training task requests (fractions share a GPU between small children)"""
    cpus_per_child: float = 1.0
    """ray: CPUs each child's training task requests (also its torch thread count)"""
    sync: bool = False
    """ray: synchronous updates (each round's gradients of all replicas averaged into one step) instead of the
    paper's asynchronous ones"""
    child_retries: int = 2
    """ray: times a child whose worker died is retried before it is recorded with status failed"""
    seed: int = 0
    """seed of the agent and of every child's training"""
    logdir: str = "runs"
    """parent folder of run folders"""
    run_name: str = ""
    """run folder name (default: <env>__<agent>__<seed>__<unix time>)"""
    resume: str = ""
    """run folder to continue; its config.json replaces the other arguments except episodes"""
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


def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each dataclass field (CleanRL's convention), for ``--help``."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, after in itertools.pairwise(body):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr) \
                and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str):
            docs[node.target.id] = after.value.value.strip()
    return docs


def parse_args(argv: list[str] | None = None) -> SearchArgs:
    """Command-line flags for every :class:`SearchArgs` field, with clear errors for bad values."""
    defaults = SearchArgs()
    parser = argparse.ArgumentParser(prog="nasrl-search", description="Neural architecture search with RL (Zoph & Le).")
    docs = field_docs(SearchArgs)
    for f in dataclasses.fields(SearchArgs):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        doc = docs.get(f.name, "")
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=doc)
        elif isinstance(default, dict):
            parser.add_argument(flag, type=_json_object(flag), default={}, help=doc)
        else:
            parser.add_argument(flag, type=type(default), default=default, help=f"{doc} (default: {default!r})")
    ns = parser.parse_args(argv)
    args = SearchArgs(**vars(ns))
    if args.agent not in AGENT_NAMES:
        parser.error(f"--agent {args.agent!r} is not one of {', '.join(AGENT_NAMES)}")
    for name in ("episodes", "children_per_update", "num_envs", "curriculum_start_layers", "curriculum_layers_step",
                 "curriculum_every"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    try:
        check_parallel_args(args)
    except ValueError as e:
        parser.error(str(e))
    if args.env not in gym.registry:
        nas_ids = sorted(k for k in gym.registry if k.startswith("NASRL-"))
        parser.error(f"--env {args.env!r} is not a registered environment; NAS environments: {', '.join(nas_ids)}")
    if args.resume and not (Path(args.resume) / "config.json").is_file():
        parser.error(f"--resume {args.resume!r} is not a run folder (no config.json in it)")
    return args


def _json_object(flag: str):
    def parse(text: str) -> dict[str, Any]:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:
            raise argparse.ArgumentTypeError(f"{flag} must be a JSON object, got {text!r}: {e}") from e
        if not isinstance(value, dict):
            raise argparse.ArgumentTypeError(f"{flag} must be a JSON object like '{{\"epochs\": 3}}', got {text!r}")
        return value

    return parse


def can_be_best(record: dict[str, Any]) -> bool:
    """Only a child that trained (fully, or until stopped early) competes for best.json."""
    return record["arch"] is not None and record["status"] in ("ok", "stopped_early")


def headline_metric(record: dict[str, Any]) -> tuple[str, float | None]:
    """The metric a child is reported by: validation perplexity for language-model children, else accuracy."""
    if "val_ppl" in record:
        return "val_ppl", record["val_ppl"]
    return "val_acc", record["val_acc"]


class RunRecorder:
    """Writes a run's children to results.jsonl, best.json and TensorBoard as they arrive."""

    def __init__(self, run_dir: Path, resumed_children: int, exact_replay: bool = True) -> None:
        self.run_dir = run_dir
        self.writer = SummaryWriter(log_dir=str(run_dir))
        self.results_path = run_dir / "results.jsonl"
        # Children already written before a resume. An agent that replays exactly re-evaluates those after its
        # checkpoint identically (served from the store), so they are skipped; otherwise they are dropped from
        # results.jsonl (they stay in the store) and the agent's new children take their indices.
        keep = None if exact_replay else resumed_children
        self.records = _read_results(self.results_path, keep)
        self.written = len(self.records)
        # Best = highest reward: the same order as val_acc for accuracies, and as lowest val_ppl for c / ppl^2.
        self.best: dict[str, Any] | None = max(filter(can_be_best, self.records), key=lambda r: r["reward"],
                                               default=None)
        self.cache_hits = sum(bool(r.get("cache_hit")) for r in self.records)
        self._file = self.results_path.open("a", encoding="utf-8")

    def on_child(self, child: ChildRecord) -> None:
        if child.index < self.written:  # replayed after a resume (served from the store): already recorded
            return
        info = child.info
        record = {
            "index": child.index,
            "reward": float(child.reward),
            "status": info.get("status"),
            "val_acc": float(info.get("val_acc") or 0.0),
            "val_acc_history": list(info.get("val_acc_history") or []),
            "params": info.get("params"),
            "flops": info.get("flops"),
            "train_seconds": float(info.get("train_seconds") or 0.0),
            "cache_hit": bool(info.get("cache_hit", False)),
            "seed": info.get("seed"),
            "num_layers": info.get("num_layers"),
            "arch": info.get("arch"),
            "time": time.time(),
        }
        record.update({k: info[k] for k in ("val_ppl", "val_ppl_history") if k in info})  # language-model children
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self.records.append(record)
        self.written += 1
        self.cache_hits += record["cache_hit"]
        step = child.index
        w = self.writer
        w.add_scalar("child/reward", record["reward"], step)
        name, value = headline_metric(record)
        if value is not None:
            w.add_scalar(f"child/{name}", value, step)
        if record["params"] is not None:
            w.add_scalar("child/params", record["params"], step)
            w.add_scalar("child/flops", record["flops"], step)
        w.add_scalar("child/train_seconds", record["train_seconds"], step)
        w.add_scalar("child/status", STATUSES.index(record["status"]) if record["status"] in STATUSES else -1, step)
        w.add_scalar("search/cache_hit_share", self.cache_hits / self.written, step)
        if can_be_best(record) and (self.best is None or record["reward"] > self.best["reward"]):
            self.best = record
            _atomic_write(self.run_dir / "best.json", json.dumps(record, indent=2))
            w.add_text("search/best_architecture", _arch_markdown(record), step)
        if self.best is not None and (best := headline_metric(self.best))[1] is not None:
            w.add_scalar(f"search/best_{best[0]}", best[1], step)

    def on_update(self, stats: UpdateStats) -> None:
        for name, value in stats.scalars().items():
            if name != "children_done":
                self.writer.add_scalar(f"update/{name}", value, stats.children_done)

    def close(self, hparams: dict[str, Any]) -> None:
        name, best = headline_metric(self.best) if self.best else ("val_acc", None)
        self.writer.add_hparams(hparams, {f"hparam/best_{name}": best or 0.0, "hparam/children": self.written},
                                run_name="hparams")
        self.writer.flush()
        self.writer.close()
        self._file.close()


def _read_results(path: Path, keep: int | None = None) -> list[dict[str, Any]]:
    """Lines of results.jsonl (at most ``keep``); a torn last line (killed mid-write) is truncated away."""
    if not path.exists():
        return []
    records, good_bytes = [], 0
    with path.open("rb") as f:
        for line in f:
            if keep is not None and len(records) >= keep:
                break
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break
            good_bytes += len(line)
    with path.open("r+b") as f:
        f.truncate(good_bytes)
    return records


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def arch_rows(record: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(layer, filter, stride, filters, inputs) per layer of a results record's CNN architecture."""
    arch = json.loads(record["arch"])
    rows = []
    for i, l in enumerate(arch.get("layers", []), start=1):
        pool = " +pool" if i in arch.get("pool_after", []) else ""
        rows.append((str(i), f"{l['filter_height']}x{l['filter_width']}", f"{l['stride_height']}x{l['stride_width']}",
                     f"{l['num_filters']}{pool}", ",".join(str(j) for j in l["inputs"]) or "image"))
    return rows


def _arch_markdown(record: dict[str, Any]) -> str:
    arch = json.loads(record["arch"])
    if arch.get("type", "cnn") != "cnn" or "layers" not in arch:  # another space (a recurrent cell): no layer table
        from nas_env.spaces.rnn_cell import CellArchitecture

        try:  # its readable form where the space is known, else its JSON
            text = str(CellArchitecture.from_dict(arch)) if arch.get("type") == "rnn_cell" else ""
        except ValueError:
            text = ""
        text = text or json.dumps(arch, indent=2)
        score = f"val_ppl {record['val_ppl']:.2f}" if record.get("val_ppl") is not None else \
            f"val_acc {record['val_acc']:.4f}"
        head = f"{score}, params {record['params']}, child {record['index']}"
        return "\n".join([head, "", "```", text, "```"])
    lines = [f"val_acc {record['val_acc']:.4f}, params {record['params']}, child {record['index']}", "",
             "| layer | filter | stride | filters | inputs |", "|---|---|---|---|---|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in arch_rows(record)])


def hparams_markdown(args: SearchArgs) -> str:
    rows = ["| argument | value |", "|---|---|"]
    rows += [f"| {k} | {json.dumps(v) if isinstance(v, dict) else v} |" for k, v in dataclasses.asdict(args).items()]
    return "\n".join(rows)


def _flat_hparams(args: SearchArgs) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in dataclasses.asdict(args).items():
        out[k] = json.dumps(v, sort_keys=True) if isinstance(v, dict) else v
    return out


def _score_text(record: dict[str, Any]) -> str:
    """A record's (or final info's) headline metric: the perplexity of a language model, else the accuracy."""
    if record.get("val_ppl") is not None:
        return f"ppl {record['val_ppl']:.1f}"
    return f"{float(record.get('val_acc') or 0.0):.4f}"


def print_best_table(record: dict[str, Any] | None) -> None:
    if record is None:
        print("no architecture was evaluated successfully")
        return
    score = f"val_ppl {record['val_ppl']:.2f}" if record.get("val_ppl") is not None else \
        f"val_acc {record['val_acc']:.4f}"
    params, flops = (f"{record[k]:,}" if record.get(k) is not None else "-" for k in ("params", "flops"))
    print(f"\nbest architecture: child {record['index']}, {score}, params {params}, multiply-adds {flops}")
    if json.loads(record["arch"]).get("type", "cnn") != "cnn":  # another space's architecture: its JSON
        print(record["arch"])
        return
    print(f"{'layer':>5}  {'filter':<6}  {'stride':<6}  {'filters':>7}  inputs")
    for layer, filt, stride, filters, inputs in arch_rows(record):
        print(f"{layer:>5}  {filt:<6}  {stride:<6}  {filters:>7}  {inputs}")


def save_checkpoint(agent: SearchAgent, path: Path, curriculum: DepthCurriculum | None = None) -> None:
    """Write the agent's checkpoint atomically: a kill mid-write leaves the previous one intact.

    With a depth ``curriculum``, its state at the checkpoint's children count is kept in the
    same file, so the depth and the agent cannot disagree after a resume.
    """
    tmp = path.with_suffix(path.suffix + ".tmp")
    if curriculum is None:
        agent.save(tmp)
    else:
        state = agent.state_dict()
        torch.save({**state, "curriculum": curriculum.state(int(state["children_done"]))}, tmp)
    os.replace(tmp, path)


def check_parallel_args(args: SearchArgs) -> None:
    """Bad --vectorization / --backend / Ray settings as a ValueError naming the value and what is allowed."""
    if args.vectorization not in VECTORIZATION_MODES:
        raise ValueError(f"--vectorization {args.vectorization!r} is not one of {', '.join(VECTORIZATION_MODES)}")
    if args.backend not in BACKENDS:
        raise ValueError(f"--backend {args.backend!r} is not one of {', '.join(BACKENDS)}")
    if args.vectorization == "async" and args.agent in SB3_ALGOS:
        raise ValueError(f"--vectorization async does not work with --agent {args.agent!r}: SB3 agents step a "
                         f"sync vector env; use --vectorization sync or auto")
    if args.backend == "ray":
        from agents.distributed import check_ray_args  # Ray itself is imported only when it is used

        check_ray_args(args)


def make_envs(args: SearchArgs, store_path: Path) -> gym.vector.VectorEnv:
    """The run's vector env: async (a process per sub-env, devices and CPU threads split) for several sub-envs."""
    kwargs = {**args.env_kwargs, "store": str(store_path)}
    mode = args.vectorization if args.vectorization != "auto" else (
        "async" if args.num_envs > 1 and args.agent not in SB3_ALGOS else "sync")
    if mode == "async":
        return make_parallel_envs(args.env, args.num_envs, kwargs)
    return gym.make_vec(args.env, num_envs=args.num_envs, vectorization_mode="sync", **kwargs)


def run_search(args: SearchArgs) -> Path:
    """Run (or resume) a search; returns the run folder."""
    if args.resume:
        run_dir = Path(args.resume)
        saved = json.loads((run_dir / "config.json").read_text())
        episodes = args.episodes if args.episodes != SearchArgs.episodes else saved["episodes"]
        progress = args.progress
        args = SearchArgs(**{**saved, "resume": str(run_dir), "episodes": episodes, "progress": progress})
    else:
        name = args.run_name or f"{args.env}__{args.agent}__{args.seed}__{int(time.time())}"
        run_dir = Path(args.logdir) / name
        if (run_dir / "config.json").exists():
            raise FileExistsError(f"run folder {run_dir} already holds a run; use --resume {run_dir} to continue it")
    store_path = Path(args.store) if args.store else run_dir / "store.sqlite"
    if args.backend == "ray":
        from agents.distributed import run_ray_search

        return run_ray_search(args, run_dir, store_path)
    ckpt = run_dir / "checkpoints" / "agent.pt"

    # Build the agent and the envs first: bad --agent-kwargs or --env-kwargs fail before a run folder exists.
    try:
        agent: SearchAgent = make_agent(args.agent, seed=args.seed, children_per_update=args.children_per_update,
                                        **args.agent_kwargs)
    except TypeError as e:
        raise ValueError(f"--agent-kwargs {json.dumps(args.agent_kwargs)} do not fit agent {args.agent!r}: {e}") from e
    envs = make_envs(args, store_path)
    curriculum = None
    if args.curriculum:  # checked here too: a space too shallow for the schedule fails before a run folder exists
        try:
            curriculum = DepthCurriculum(env_max_layers(envs), args.curriculum_start_layers,
                                         args.curriculum_layers_step, args.curriculum_every)
        except ValueError:
            envs.close()
            raise
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    if not args.resume:
        _atomic_write(run_dir / "config.json", json.dumps(dataclasses.asdict(args), indent=2))
    saved_state = torch.load(ckpt, weights_only=True) if ckpt.exists() else None
    if saved_state is not None:
        agent.load_state_dict(saved_state)
    recorder = RunRecorder(run_dir, agent.children_done, getattr(agent, "exact_replay", True))
    if not recorder.written:
        recorder.writer.add_text("hparams", hparams_markdown(args), 0)

    depth = None
    if curriculum is not None:  # continue at the checkpoint's depth (the first depth on a fresh run)
        depth = curriculum.resume_num_layers((saved_state or {}).get("curriculum"), agent.children_done)
        set_env_layers(envs, depth)
        recorder.writer.add_scalar("search/num_layers", depth, agent.children_done)

    def grow(children_done: int) -> None:
        """Set the depth for the children after ``children_done``; each sub-env takes it at its next reset.

        Called per child, not per update, so the schedule does not depend on where updates (or a
        resume) fall; our agents reset all sub-envs at each lockstep batch, so it applies from the next one.
        """
        nonlocal depth
        new = curriculum.num_layers_at(children_done)
        if new != depth:
            depth = new
            set_env_layers(envs, depth)
            recorder.writer.add_scalar("search/num_layers", depth, children_done)

    bar = tqdm(total=args.episodes, initial=min(recorder.written, args.episodes), unit="child",
               disable=not args.progress, dynamic_ncols=True, desc=f"{args.agent} on {args.env}")

    def on_child(child: ChildRecord) -> None:
        new = child.index >= recorder.written
        recorder.on_child(child)
        if curriculum is not None:
            grow(child.index + 1)
        if new:
            bar.update(1)
            bar.set_postfix(best=_score_text(recorder.best) if recorder.best else "-", last=_score_text(child.info),
                            status=child.info.get("status"), refresh=False)

    def on_update(stats: UpdateStats) -> None:
        recorder.on_update(stats)
        episodes = getattr(agent, "episodes", 0)
        if episodes:  # agents that ignore masks: how often they end an episode on an invalid action
            recorder.writer.add_scalar("search/invalid_episode_share", agent.invalid_episodes / episodes,
                                       stats.children_done)
        # after every update: a crash loses at most the children since (in the store)
        save_checkpoint(agent, ckpt, curriculum)

    try:
        agent.run(envs, args.episodes, on_child, on_update)
        save_checkpoint(agent, ckpt, curriculum)
    finally:
        bar.close()
        envs.close()
        recorder.close(_flat_hparams(args))
    print(f"run folder: {run_dir}  ({recorder.written} children, {recorder.cache_hits} served from the store)")
    if getattr(agent, "episodes", 0):
        print(f"{agent.invalid_episodes} of {agent.episodes} episodes ended on an invalid action "
              f"({agent.invalid_episodes / agent.episodes:.1%})")
    print_best_table(recorder.best)
    return run_dir


def main(argv: list[str] | None = None) -> None:
    """Console entry point ``nasrl-search``."""
    try:
        run_search(parse_args(argv))
    except KeyboardInterrupt:
        print("\ninterrupted: continue with --resume RUN_DIR (finished children are kept)", file=sys.stderr)
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
