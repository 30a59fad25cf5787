"""A controller replica: pull the parameters, sample m children, turn their rewards into a pushed gradient.

The replica keeps no state between calls that a restart could lose: the driver passes in its generator
state, baseline and counters (and the batch it learns from, with the parameters it was sampled under),
gets the new ones back and checkpoints them. A replica that dies is restarted by Ray and the call retried.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from agents.base import Episode, UpdateStats, child_seed
from agents.experiment.distributed.child import PresetEvaluator, local_env
from agents.reinforce import STUDY_KNOBS, ReinforceAgent

# Options a replica cannot apply: the layout sets m, and the running reward variance, PPO's further steps, the
# drawn-architecture set (unique children) and the priority queue are state or steps a replica does not have (one
# gradient per batch, nothing kept across a restart). Every other option acts in the gradient.
LOCAL_ONLY = ("children_per_update", "normalize_advantage", "ppo_epochs", "clip_ratio", "unique_children",
              "queue_size", "queue_coef")
STATELESS = {"unique_children": False, "queue_size": 0, "queue_coef": 0.0}  # our default's stateful knobs, off
AGENT_KWARGS = ("preset", *(k for k in STUDY_KNOBS if k not in LOCAL_ONLY))


def replica_seed(seed: int, replica: int) -> int:
    """Replica ``replica``'s own seed (its sampling generator, its children's env seeds) in a search seeded ``seed``."""
    return int(np.random.SeedSequence([seed, replica]).generate_state(1, np.uint64)[0] >> 1)


class SamplingAgent(ReinforceAgent):
    """The REINFORCE agent's sampling loop, stopped before its update: the episodes are kept for the driver."""

    last_episodes: list[Episode]

    def _update(self, episodes: list[Episode]) -> UpdateStats:
        self.last_episodes = episodes
        return UpdateStats(update=0, children_done=0, num_children=len(episodes), reward_mean=0.0, reward_max=0.0)


def make_agent(seed: int, children_per_replica: int, agent_kwargs: dict[str, Any]) -> SamplingAgent:
    unknown = sorted(set(agent_kwargs) - set(AGENT_KWARGS))
    if unknown:
        raise ValueError(f"--agent-kwargs {unknown} are not used by the Ray backend; "
                         f"allowed: {', '.join(AGENT_KWARGS)}")
    stateless = STATELESS if agent_kwargs.get("preset") is None else {}  # the paper preset has them off already
    return SamplingAgent(seed=seed, children_per_update=children_per_replica, device="cpu", num_threads=1,
                         **stateless, **agent_kwargs)


def initial_parameters(env_id: str, env_kwargs: dict[str, Any], seed: int, agent_kwargs: dict[str, Any]
                       ) -> torch.Tensor:
    """The controller's starting parameters, flattened: those a single-process agent seeded ``seed`` starts from."""
    env = local_env(env_id, env_kwargs, PresetEvaluator())
    agent = make_agent(seed, 1, agent_kwargs)
    agent.prepare(tuple(env.unwrapped.token_specs), int(env.action_space.n))
    env.close()
    return torch.nn.utils.parameters_to_vector(agent.controller.parameters()).detach().clone()


class ControllerReplica:
    """Replica ``replica`` of a search: samples children and pushes their REINFORCE gradient to ``shards``.

    ``shard_names`` name the parameter-server actors (looked up on first use: handles among the constructor's
    arguments would have to outlive a restart in Ray's object store) and ``bounds`` are their slices of the
    flat vector.
    """

    def __init__(self, replica: int, env_id: str, env_kwargs: dict[str, Any], seed: int, children_per_replica: int,
                 agent_kwargs: dict[str, Any], shard_names: list[str], bounds: list[tuple[int, int]],
                 num_threads: int | None = None) -> None:
        if num_threads is not None:  # in its own actor process only: a driver-side instance leaves torch alone
            torch.set_num_threads(num_threads)
        self.replica = replica
        self.shard_names = shard_names
        self._shards: list[Any] | None = None
        self.bounds = bounds
        self.env = local_env(env_id, env_kwargs, PresetEvaluator())
        self.agent = make_agent(replica_seed(seed, replica), children_per_replica, agent_kwargs)
        self.agent.prepare(tuple(self.env.unwrapped.token_specs), int(self.env.action_space.n))

    # --- state the driver holds --------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return self.agent.sampling_state()

    @property
    def shards(self) -> list[Any]:
        if self._shards is None:
            import ray  # only inside an actor

            self._shards = [ray.get_actor(name) for name in self.shard_names]
        return self._shards

    def _set_parameters(self, flat: torch.Tensor) -> None:
        torch.nn.utils.vector_to_parameters(flat, self.agent.controller.parameters())

    # --- the two calls -----------------------------------------------------------------------
    def sample(self, state: dict[str, Any], size: int) -> dict[str, Any]:
        """Pull the parameters and sample ``size`` children; returns the batch and the replica's new state."""
        import ray  # only inside an actor

        self.agent.load_sampling_state(state)
        pulled = ray.get([shard.pull.remote() for shard in self.shards])
        versions = [int(v) for v, _ in pulled]
        flat = torch.cat([values for _, values in pulled])
        self._set_parameters(flat)
        first = self.agent.children_done
        self.agent.run(self.env, first + size, on_child=lambda child: None)
        children = [{"actions": [int(a) for a in ep.actions], "masks": torch.from_numpy(ep.masks.copy()),
                     "arch": ep.info["arch"], "seed": int(ep.info["seed"]),
                     "env_seed": child_seed(self.agent.seed, ep.index)} for ep in self.agent.last_episodes]
        return {"versions": versions, "params": flat, "children": children, "state": self.state()}

    def learn(self, state: dict[str, Any], batch: dict[str, Any], rewards: list[float], learnable: list[bool],
              batch_no: int, round_size: int = 0) -> dict[str, Any]:
        """The REINFORCE gradient of the batch's learnable children (not "failed"), pushed to every shard.

        ``state`` is the replica's state after sampling the batch; the gradient is taken at the
        parameters the batch was sampled under. Returns update stats (with ``staleness``, the
        shards' steps between the pull and this push) and the new state.
        """
        import ray

        self.agent.load_sampling_state(state)
        self._set_parameters(batch["params"])
        episodes = [Episode(i, np.asarray(c["actions"], dtype=np.int64), c["masks"].numpy(), float(r), {})
                    for i, (c, r, ok) in enumerate(zip(batch["children"], rewards, learnable, strict=True)) if ok]
        if not episodes:  # every child failed: nothing to learn from, and nothing is pushed
            return {"stats": None, "staleness": None, "state": self.state()}
        stats = self.agent.policy_gradient(episodes)
        grad = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                          for p in self.agent.controller.parameters()])
        replies = ray.get([shard.push.remote(self.replica, batch_no, grad[a:b].clone(), v, round_size)
                           for shard, (a, b), v in zip(self.shards, self.bounds, batch["versions"], strict=True)])
        self.agent.updates_done += 1
        return {"stats": dataclasses.asdict(stats), "staleness": max(r["staleness"] for r in replies),
                "state": self.state()}
