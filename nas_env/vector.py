"""m NAS environments in m processes: ``AsyncVectorEnv`` with a device and a share of the CPU per sub-env.

* **Devices**: on a machine with several GPUs, sub-env i gets ``cuda:i`` (modulo the GPU count)
  unless the caller fixed a device.
* **Threads**: each worker process sets ``torch.set_num_threads(cores // m)`` (at least 1) before
  building its env; left alone, m processes would each start one thread per core and fight over them.
* **Start method**: ``forkserver`` by default, with torch and nas_env preloaded in the server: a
  *forked* child of a parent whose torch (OpenMP) thread pool already ran hangs in its first
  parallel region. ``spawn`` works too but imports torch once per sub-env.
* **Infos**: Gymnasium types each batched info key by the first sub-env that reports it, so a failed
  child's ``params=None`` beside an ok child's number raised a TypeError. :class:`NASSyncVectorEnv`
  and :class:`NASAsyncVectorEnv` turn such a key's array into an object array instead.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from nas_env.checks import check_int

VECTORIZATION_MODES = ("auto", "sync", "async")


def _widen(vector_infos: dict[str, Any], env_info: dict[str, Any]) -> None:
    """Make every batched info array able to take this sub-env's value: an object array where it does not cast
    safely (None or text into numbers, a float into ints, which numpy would truncate, a wider number)."""
    for key, value in env_info.items():
        array = vector_infos.get(key)
        if isinstance(value, dict) and isinstance(array, dict):
            _widen(array, value)
        elif (isinstance(array, np.ndarray) and array.dtype != object and not isinstance(value, np.ndarray)
              and not np.can_cast(np.asarray(value).dtype, array.dtype, casting="safe")):
            vector_infos[key] = array.astype(object)


class MixedInfoMixin:
    """Batches infos whose values differ in type across sub-envs (see the module docstring)."""

    def _add_info(self, vector_infos: dict[str, Any], env_info: dict[str, Any], env_num: int) -> dict[str, Any]:
        _widen(vector_infos, env_info)
        return super()._add_info(vector_infos, env_info, env_num)


class NASSyncVectorEnv(MixedInfoMixin, gym.vector.SyncVectorEnv):
    """A :class:`~gymnasium.vector.SyncVectorEnv` that batches infos of mixed types."""


class NASAsyncVectorEnv(MixedInfoMixin, gym.vector.AsyncVectorEnv):
    """An :class:`~gymnasium.vector.AsyncVectorEnv` that batches infos of mixed types."""


def make_sync_envs(env_id: str, num_envs: int, env_kwargs: dict[str, Any] | None = None) -> NASSyncVectorEnv:
    """``num_envs`` sub-envs of ``env_id`` stepped one after the other in this process."""
    check_int("num_envs", num_envs, minimum=1)
    return NASSyncVectorEnv([partial(gym.make, env_id, **(env_kwargs or {})) for _ in range(num_envs)])


def available_cores() -> int:
    """CPU cores this process may run on (the affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def threads_per_env(num_envs: int, cores: int | None = None) -> int:
    """Torch intra-op threads for each of ``num_envs`` worker processes: an even share of the cores, at least 1."""
    return max(1, (cores or available_cores()) // max(1, num_envs))


def sub_env_devices(num_envs: int, device: str | None = None, gpu_count: int | None = None) -> list[str | None]:
    """The device of each sub-env: ``cuda:i`` round-robin when ``device`` is unset/"auto" and there are 2+ GPUs,
    else None (the env's own ``device`` keyword stands)."""
    gpus = torch.cuda.device_count() if gpu_count is None else gpu_count
    if device in (None, "auto") and gpus > 1:
        return [f"cuda:{i % gpus}" for i in range(num_envs)]
    return [None] * num_envs


@dataclass
class SubEnvFactory:
    """Builds one sub-env inside its worker process, after limiting torch's threads there (picklable)."""

    env_id: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    num_threads: int | None = None

    def __call__(self) -> gym.Env:
        if self.num_threads is not None:
            torch.set_num_threads(self.num_threads)  # this process only: it trains this sub-env's children
        return gym.make(self.env_id, **self.kwargs)


def make_parallel_envs(env_id: str, num_envs: int, env_kwargs: dict[str, Any] | None = None,
                       num_threads: int | None = None, devices: Sequence[str | None] | None = None,
                       context: str | None = "forkserver") -> NASAsyncVectorEnv:
    """``num_envs`` sub-envs of ``env_id``, each in its own process, with its device and thread share.

    Args:
        env_kwargs: keywords for every sub-env's ``gym.make`` (a per-env device from ``devices`` overrides
            their ``device``).
        num_threads: torch threads per worker (default :func:`threads_per_env`).
        devices: one device (or None: keep ``env_kwargs``) per sub-env; default :func:`sub_env_devices`.
        context: multiprocessing start method (see the module docstring for why not fork).
    """
    check_int("num_envs", num_envs, minimum=1)
    kwargs = dict(env_kwargs or {})
    threads = num_threads if num_threads is not None else threads_per_env(num_envs)
    if devices is None:
        devices = sub_env_devices(num_envs, kwargs.get("device"))
    if len(devices) != num_envs:
        raise ValueError(f"got {len(devices)} devices for {num_envs} sub-envs")
    if context == "forkserver":
        # Import the heavy modules once in the fork server; every worker forks from it with them loaded.
        multiprocessing.get_context("forkserver").set_forkserver_preload(["torch", "nas_env"])
    fns = [SubEnvFactory(env_id, kwargs if dev is None else {**kwargs, "device": dev}, threads) for dev in devices]
    previous = torch.get_num_threads()
    try:
        return NASAsyncVectorEnv(fns, context=context)
    finally:  # AsyncVectorEnv builds one env in this process to read its spaces: keep this process's threads
        torch.set_num_threads(previous)
