"""The paper's depth curriculum: children start shallow and grow as the search goes on (docs/searching.md).

Zoph & Le (2017, section 4.1) start at 6 layers and add 2 every 1,600 children, up to the space's maximum.
The env keeps its spaces at the maximum depth and emits only the current depth's tokens
(``NASEnv.set_num_layers``); the schedule is a pure function of the children sampled, and its value is
kept in the runner's checkpoint, so a resumed run continues at the right depth.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym

from nas_env.checks import check_int

SCHEDULE = ("max_layers", "start_layers", "layers_step", "every")  # the fields a checkpoint must agree on


@dataclass(frozen=True)
class DepthCurriculum:
    """Depth ``min(max_layers, start_layers + layers_step * (children // every))`` after ``children`` children.

    Args:
        max_layers: the space's depth (the env's ``max_num_layers``).
        start_layers: depth of the first children (the paper: 6).
        layers_step: layers added at each step (the paper: 2).
        every: children between steps (the paper: 1,600).
    """

    max_layers: int
    start_layers: int = 6
    layers_step: int = 2
    every: int = 1600

    def __post_init__(self) -> None:
        for name in SCHEDULE:
            object.__setattr__(self, name, check_int(name, getattr(self, name), minimum=1))
        if self.start_layers > self.max_layers:
            raise ValueError(f"start_layers={self.start_layers} is deeper than the space's {self.max_layers} layers: "
                             f"start at most at {self.max_layers}")

    def num_layers_at(self, children_done: int) -> int:
        """The depth of the children sampled after ``children_done`` children."""
        check_int("children_done", children_done, minimum=0)
        return min(self.max_layers, self.start_layers + self.layers_step * (children_done // self.every))

    def state(self, children_done: int) -> dict[str, int]:
        """What a checkpoint keeps: the schedule, the children count and the depth in force after it."""
        return {**{k: getattr(self, k) for k in SCHEDULE}, "children_done": children_done,
                "num_layers": self.num_layers_at(children_done)}

    def resume_num_layers(self, saved: dict[str, Any] | None, children_done: int) -> int:
        """The depth to continue at: the checkpoint's when it was written at ``children_done``, else the schedule's.

        A checkpoint written by an earlier schedule (other start, step or interval) is refused
        rather than silently mixed with this one.
        """
        if not saved:
            return self.num_layers_at(children_done)
        mine = self.state(children_done)
        for key in SCHEDULE:
            if int(saved.get(key, mine[key])) != mine[key]:
                raise ValueError(f"the checkpoint's curriculum has {key}={saved.get(key)}, this run {mine[key]}: "
                                 "resume with the run's own curriculum settings")
        if int(saved.get("children_done", -1)) == children_done:
            return int(saved["num_layers"])
        return self.num_layers_at(children_done)


def env_max_layers(envs: gym.vector.VectorEnv | gym.Env) -> int:
    """The depth of the env's search space (``NASEnv.max_num_layers``); ``ValueError`` if it has none."""
    if isinstance(envs, gym.vector.VectorEnv | gym.vector.VectorWrapper):
        values = list(envs.unwrapped.get_attr("max_num_layers"))
    else:
        values = [envs.get_wrapper_attr("max_num_layers")]
    if any(v is None for v in values) or len(set(values)) != 1:
        raise ValueError(f"a depth curriculum needs a search space with a depth (e.g. the CNN space); this env's "
                         f"max_num_layers is {values}")
    return int(values[0])


def set_env_layers(envs: gym.vector.VectorEnv | gym.Env, num_layers: int) -> None:
    """Set every sub-env's depth (``NASEnv.set_num_layers``); it applies from each sub-env's next reset."""
    if isinstance(envs, gym.vector.VectorEnv | gym.vector.VectorWrapper):
        envs.unwrapped.call("set_num_layers", int(num_layers))
    else:
        envs.get_wrapper_attr("set_num_layers")(int(num_layers))
