"""Benchmark the environment itself: a non-final ``env.step`` beside CartPole-v1's, and a digits child's training.

Run: ``python scripts/bench_env.py`` (about a minute on 2 CPU cores). Prints a table and,
as its last line, one JSON object with the medians and the ratio to CartPole measured in
this same run.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
from bench_common import print_report  # scripts/ is on sys.path when this file runs

import nas_env  # noqa: F401  (registers the ids)
from nas_env.cli import parse_dataclass


@dataclass
class Args:
    steps: int = 20000
    """non-final env steps to time (and as many CartPole steps)"""
    children: int = 9
    """digits children to train for the training-time median"""
    seed: int = 0
    """seed of the sampled architectures"""


def median_step_us(env: gym.Env, steps: int, rng: np.random.Generator, skip_final: bool) -> float:
    """Median microseconds of ``env.step`` over ``steps`` calls (episodes reset outside the timing)."""
    times: list[float] = []
    _obs, info = env.reset(seed=0)
    n_tokens = len(env.unwrapped.token_specs) if skip_final else None
    t_in_episode = 0
    while len(times) < steps:
        if skip_final and t_in_episode == n_tokens - 1:  # the final step trains; time only the others
            _obs, info = env.reset()
            t_in_episode = 0
        mask = info.get("action_mask")
        a = int(rng.choice(np.flatnonzero(mask))) if mask is not None else int(env.action_space.sample())
        start = time.perf_counter()
        _obs, _r, terminated, truncated, info = env.step(a)
        times.append(time.perf_counter() - start)
        t_in_episode += 1
        if terminated or truncated:
            _obs, info = env.reset()
            t_in_episode = 0
    return statistics.median(times) * 1e6


def main(argv: list[str] | None = None) -> None:
    args, _, _ = parse_dataclass(Args, argv, prog="bench_env.py", description=__doc__)
    rng = np.random.default_rng(args.seed)

    # gym.make adds the same wrappers (order enforcing, env checker) to both envs: a like-for-like comparison.
    nas = gym.make("NASRL-CIFAR10-v0", evaluator="synthetic")
    cartpole = gym.make("CartPole-v1")
    nas_us = median_step_us(nas, args.steps, rng, skip_final=True)
    cart_us = median_step_us(cartpole, args.steps, rng, skip_final=False)
    raw_us = median_step_us(nas.unwrapped, args.steps, rng, skip_final=True)

    digits = gym.make("NASRL-Digits-v0", device="cpu")
    seconds: list[float] = []
    accs: list[float] = []
    for i in range(args.children + 1):
        _obs, info = digits.reset(seed=args.seed + i)
        done = False
        while not done:
            _obs, _r, done, _t, info = digits.step(int(rng.choice(np.flatnonzero(info["action_mask"]))))
        if i > 0:  # the first child pays one-off start-up costs (allocator, oneDNN kernels)
            seconds.append(info["train_seconds"])
            accs.append(info["val_acc"])
    cfg = digits.unwrapped.train_config

    rows = [
        ("NASRL-CIFAR10-v0 non-final step (gym.make)", f"{nas_us:.1f} us"),
        ("NASRL-CIFAR10-v0 non-final step (unwrapped)", f"{raw_us:.1f} us"),
        ("CartPole-v1 step (gym.make)", f"{cart_us:.1f} us"),
        ("ratio NAS / CartPole", f"{nas_us / cart_us:.2f}x"),
        (f"digits child, {cfg.epochs} epochs, median of {args.children}", f"{statistics.median(seconds):.2f} s"),
        ("digits child train seconds min / max", f"{min(seconds):.2f} / {max(seconds):.2f} s"),
        ("digits child val acc min / median / max",
         f"{min(accs):.3f} / {statistics.median(accs):.3f} / {max(accs):.3f}"),
    ]
    print_report(rows, {
        "env_step_median_us": round(nas_us, 2),
        "env_step_unwrapped_median_us": round(raw_us, 2),
        "cartpole_step_median_us": round(cart_us, 2),
        "env_step_vs_cartpole": round(nas_us / cart_us, 3),
        "digits_child_train_median_s": round(statistics.median(seconds), 3),
        "digits_child_val_acc_median": round(statistics.median(accs), 4),
        "digits_epochs": cfg.epochs,
    })


if __name__ == "__main__":
    main()
