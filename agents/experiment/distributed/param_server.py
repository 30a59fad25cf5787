"""A parameter-server shard: one slice of the controller's flattened parameters and its Adam state.

Pushes are idempotent: a shard remembers the last batch number it applied per replica and
ignores a repeat, so a replica restarted mid-push (Ray retries the call) or a batch learned
again after a driver resume never counts twice on a shard that already has it.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch


def shard_bounds(numel: int, num_shards: int) -> list[tuple[int, int]]:
    """Contiguous ``[start, end)`` slices of a flat vector of ``numel`` values, as even as possible."""
    if not 1 <= num_shards <= numel:
        raise ValueError(f"--param-servers must be between 1 and the controller's {numel} parameters, "
                         f"got {num_shards}")
    edges = [round(i * numel / num_shards) for i in range(num_shards + 1)]
    return list(itertools.pairwise(edges))


class ParameterServer:
    """Shard ``shard``: holds ``values`` and steps them with Adam(``lr``) on each (or each round's) gradient.

    ``round_size`` of a push: 0 applies it at once (asynchronous); n > 0 buffers it until n
    replicas of the round have pushed, then applies their mean, summed in replica order so the
    result does not depend on arrival order (synchronous).
    """

    def __init__(self, shard: int, values: torch.Tensor, lr: float, state: dict[str, Any] | None = None,
                 num_threads: int | None = None) -> None:
        if num_threads is not None:  # in its own actor process only: a driver-side instance leaves torch alone
            torch.set_num_threads(num_threads)
        self.shard = shard
        self.param = torch.nn.Parameter(values.detach().clone().float())
        self.optimizer = torch.optim.Adam([self.param], lr=lr)
        self.version = 0  # gradient steps applied
        self.applied: dict[int, int] = {}  # replica -> last batch number applied
        self.pending: dict[int, tuple[int, torch.Tensor]] = {}  # sync: replica -> (batch, gradient) this round
        if state is not None:
            self.load_state(state)

    def pull(self) -> tuple[int, torch.Tensor]:
        """(version, a copy of the values)."""
        return self.version, self.param.detach().clone()

    def push(self, replica: int, batch: int, grad: torch.Tensor, sampled_version: int,
             round_size: int = 0) -> dict[str, Any]:
        """Take one replica's gradient of batch ``batch``, computed at ``sampled_version``.

        Returns ``applied`` (a step was taken now), ``duplicate`` (already had it), ``staleness``
        (steps applied since the replica pulled) and the ``version`` after.
        """
        staleness = self.version - sampled_version
        done = batch <= self.applied.get(replica, -1) or self.pending.get(replica, (-1, None))[0] == batch
        if done:
            return {"applied": False, "duplicate": True, "staleness": staleness, "version": self.version}
        if grad.shape != self.param.shape:
            raise ValueError(f"shard {self.shard}: gradient of shape {tuple(grad.shape)}, expected "
                             f"{tuple(self.param.shape)}")
        if round_size > 0:
            self.pending[replica] = (batch, grad)
            if len(self.pending) < round_size:
                return {"applied": False, "duplicate": False, "staleness": staleness, "version": self.version}
            grads = [self.pending[r][1] for r in sorted(self.pending)]
            for r, (b, _) in self.pending.items():
                self.applied[r] = b
            self.pending = {}
            grad = torch.stack(grads).mean(0)
        else:
            self.applied[replica] = batch
        self.param.grad = grad.to(self.param.dtype)
        self.optimizer.step()
        self.param.grad = None
        self.version += 1
        return {"applied": True, "duplicate": False, "staleness": staleness, "version": self.version}

    def state(self) -> dict[str, Any]:
        """Everything a resume needs (tensors and plain types only: loads with ``weights_only=True``)."""
        return {"values": self.param.detach().clone(), "optimizer": self.optimizer.state_dict(),
                "version": self.version, "applied": dict(self.applied),
                "pending": {r: (b, g.clone()) for r, (b, g) in self.pending.items()}}

    def load_state(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            self.param.copy_(state["values"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.version = int(state["version"])
        self.applied = {int(r): int(b) for r, b in state["applied"].items()}
        self.pending = {int(r): (int(b), g) for r, (b, g) in state.get("pending", {}).items()}
