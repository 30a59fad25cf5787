"""Benchmark a NASRL-Bench env: whole episodes (every token plus the table lookup) beside CartPole-v1's.

Run: ``python scripts/bench_table_env.py`` (a few seconds; ``--env NASRL-Bench201-CIFAR10-v0`` for
NAS-Bench-201). Both envs are timed in this one run, on
one core, with the same number of steps per episode: CartPole resets and steps as many times as the
table env has tokens (its episodes end early only if the pole falls; it is then reset and continued).
The last line is a JSON object with the medians and their ratio.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch

import nas_env  # noqa: F401  (registers the ids)
from nas_env.cli import parse_dataclass


@dataclass
class Args:
    env: str = "NASRL-Bench-Digits-v0"
    """the table env to time: NASRL-Bench-Digits-v0 (with --table) or a NASRL-Bench201-*-v0 id"""
    episodes: int = 20000
    """episodes of each env to time"""
    table: str = "digits"
    """NASRL-Bench table: a shipped name or a .json.gz path (for NASRL-Bench-Digits-v0)"""
    seed: int = 0
    """seed of the actions"""


def episode_us(env: gym.Env, episodes: int, steps: int, action: Callable[[int, int], int]) -> list[float]:
    """Microseconds of each of ``episodes`` episodes: a reset, then ``steps`` steps of ``action(episode, step)``
    (reset again where an episode ends early: CartPole's pole falls)."""
    times = []
    for k in range(episodes):
        start = time.perf_counter()
        env.reset(seed=k)
        for t in range(steps):
            _, _, terminated, truncated, _ = env.step(action(k, t))
            if (terminated or truncated) and t < steps - 1:
                env.reset()
        times.append((time.perf_counter() - start) * 1e6)
    return times


def main(argv: list[str] | None = None) -> None:
    args, _, _ = parse_dataclass(Args, argv, prog="bench_table_env.py", description=__doc__)
    torch.set_num_threads(1)
    env = gym.make(args.env, table=args.table) if args.env == "NASRL-Bench-Digits-v0" else gym.make(args.env)
    choices = np.array([s.num_choices for s in env.unwrapped.token_specs])
    rng = np.random.default_rng(args.seed)
    actions = (rng.random((args.episodes, len(choices))) * choices).astype(np.int64)  # valid at every step
    medians = []
    for timed_env, action in ((env, lambda k, t: actions[k, t]), (gym.make("CartPole-v1"), lambda k, t: k % 2)):
        episode_us(timed_env, min(200, args.episodes), len(choices), action)  # warm-up
        medians.append(statistics.median(episode_us(timed_env, args.episodes, len(choices), action)))
    ours, theirs = medians
    print(f"{'env':<28} {'steps/episode':>13} {'median us/episode':>18} {'episodes/s':>11}")
    print(f"{args.env:<28} {len(choices):>13} {ours:>18.1f} {1e6 / ours:>11,.0f}")
    print(f"{'CartPole-v1':<28} {len(choices):>13} {theirs:>18.1f} {1e6 / theirs:>11,.0f}")
    print(json.dumps({"env": args.env, "table_episode_us": round(ours, 2), "cartpole_episode_us": round(theirs, 2),
                      "ratio_to_cartpole": round(ours / theirs, 3), "steps_per_episode": len(choices),
                      "table_episodes_per_s": round(1e6 / ours)}))


if __name__ == "__main__":
    main()
