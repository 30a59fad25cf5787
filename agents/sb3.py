"""stable-baselines3 / sb3-contrib algorithms as search agents, driven by the runner like our own (docs/agents.md).

The env is used unmodified (MaskablePPO reads ``action_masks()``; the others rely on its
``invalid_action`` policy). Episodes that ended on an invalid action are counted
(``invalid_episodes``) but are not children, so ``num_children`` counts trained architectures for
every agent alike. Defaults sized for NAS episodes (override any with keyword arguments): PPO and
RecurrentPPO collect ``children_per_update`` episodes per update in minibatches of one episode
length; A2C updates after every episode; DQN keeps SB3's defaults.
"""

from __future__ import annotations

import importlib
import io
import math
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from agents.base import AnyEnv, ChildRecord, OnChild, OnUpdate, SearchAgent, UpdateStats
from nas_env.checks import check_int

ALGO_CLASSES = {"ppo": ("stable_baselines3", "PPO"), "a2c": ("stable_baselines3", "A2C"),
                "dqn": ("stable_baselines3", "DQN"), "maskable_ppo": ("sb3_contrib", "MaskablePPO"),
                "recurrent_ppo": ("sb3_contrib", "RecurrentPPO")}  # name -> (module, class)
SB3_ALGOS = tuple(ALGO_CLASSES)
MAX_EPISODES_PER_CHILD = 200  # stop an agent that almost never emits a valid architecture


def algorithm_class(name: str) -> type:
    """The SB3 class for ``name`` (imported lazily: sb3 is an optional extra)."""
    if name not in ALGO_CLASSES:
        raise ValueError(f"unknown SB3 algorithm {name!r}; allowed: {', '.join(SB3_ALGOS)}")
    module, cls = ALGO_CLASSES[name]
    try:
        return getattr(importlib.import_module(module), cls)
    except ImportError as e:
        raise ImportError(f"agent {name!r} needs stable-baselines3 and sb3-contrib: pip install -e '.[sb3]'") from e


def int_flatten_extractor() -> type:
    """SB3's FlattenExtractor with a Python-int ``features_dim`` (a ``MultiDiscrete`` space sums to a numpy int)."""
    from stable_baselines3.common.torch_layers import FlattenExtractor

    class IntFlattenExtractor(FlattenExtractor):
        def __init__(self, observation_space: gym.Space) -> None:
            super().__init__(observation_space)
            self._features_dim = int(self._features_dim)

    return IntFlattenExtractor


class SB3Agent(SearchAgent):
    """A stable-baselines3 algorithm behind the :class:`SearchAgent` interface.

    Resume is approximate: the model, its optimizer and the counters are restored, but not
    SB3's internal random state, so children after the last checkpoint differ from an
    uninterrupted run (``exact_replay = False``; the runner then rewrites them).
    """

    exact_replay: ClassVar[bool] = False

    def __init__(self, algo: str, seed: int = 0, children_per_update: int = 8, device: str = "cpu",
                 **algo_kwargs: Any) -> None:
        if algo not in SB3_ALGOS:
            raise ValueError(f"unknown SB3 algorithm {algo!r}; allowed: {', '.join(SB3_ALGOS)}")
        self.algo = algo
        self.name = algo
        self.seed = int(seed)
        self.children_per_update = check_int("children_per_update", children_per_update, minimum=1)
        self.device = device
        self.algo_kwargs = dict(algo_kwargs)
        self.children_done = self.episodes = self.invalid_episodes = self.updates_done = 0
        self.model: Any = None
        self._saved_model: bytes | None = None

    # --- SearchAgent -----------------------------------------------------------------------
    def run(self, envs: AnyEnv, num_children: int, on_child: OnChild, on_update: OnUpdate | None = None) -> None:
        from stable_baselines3.common.callbacks import BaseCallback

        venv = self._vec_env(envs)
        episode_len = len(venv.envs[0].get_wrapper_attr("token_specs"))
        if self.model is None:
            cls = algorithm_class(self.algo)
            if self._saved_model is not None:
                self.model = cls.load(io.BytesIO(self._saved_model), env=venv, device=self.device)
            else:
                kwargs = {**self._defaults(episode_len, venv.num_envs), **self.algo_kwargs}
                if self.algo == "recurrent_ppo":  # its nn.LSTM rejects the numpy int that SB3 computes as input size
                    kwargs["policy_kwargs"] = {"features_extractor_class": int_flatten_extractor(),
                                               **kwargs.get("policy_kwargs", {})}
                self.model = cls(self._policy(), venv, seed=self.seed, device=self.device, verbose=0, **kwargs)
        else:
            self.model.set_env(venv)
        agent = self

        class ChildCallback(BaseCallback):
            def __init__(self) -> None:
                super().__init__()
                self.rewards: list[float] = []  # rewards of the children since the last rollout's update
                self.learned: list[float] | None = None  # the children the coming train() learns from

            def after_train(self) -> None:
                """Report the update once SB3's ``train()`` has run: its losses and the checkpoint include it."""
                if on_update is not None and self.learned is not None:
                    on_update(agent._stats(self.learned))
                self.learned = None

            def _on_step(self) -> bool:
                for i, done in enumerate(self.locals["dones"]):
                    if done:
                        agent._episode_end(float(self.locals["rewards"][i]), dict(self.locals["infos"][i]), on_child,
                                           self.rewards)
                if agent.episodes > MAX_EPISODES_PER_CHILD * max(1, num_children):
                    raise RuntimeError(f"{agent.algo}: {agent.episodes} episodes gave only {agent.children_done} "
                                       "valid children; use invalid_action='wrap' or a masked agent")
                return agent.children_done < num_children

            def _on_rollout_end(self) -> None:  # SB3 calls this before train(): the update is reported after it
                if len(self.rewards) >= agent.children_per_update:
                    self.learned, self.rewards = self.rewards, []

        callback = ChildCallback()
        train = self.model.train

        def train_then_report(*args: Any, **kwargs: Any) -> None:
            train(*args, **kwargs)
            callback.after_train()

        self.model.train = train_then_report  # an instance attribute, left out of saves (see state_dict)
        try:
            while self.children_done < num_children:
                steps = max(episode_len, (num_children - self.children_done) * episode_len)
                self.model.learn(total_timesteps=steps, callback=callback, reset_num_timesteps=False,
                                 progress_bar=False)
        finally:
            del self.model.train
        leftover = (callback.learned or []) + callback.rewards  # children after the last update
        if on_update is not None and leftover:
            on_update(self._stats(leftover))

    def state_dict(self) -> dict[str, Any]:
        model_bytes = self._saved_model
        if self.model is not None:
            buf = io.BytesIO()
            self.model.save(buf, exclude=["train"])  # the run's train-then-report hook is not part of the model
            model_bytes = buf.getvalue()
        return {"config": {"algo": self.algo, "seed": self.seed, "children_per_update": self.children_per_update,
                           "device": self.device, **self.algo_kwargs},
                "model": model_bytes, "children_done": self.children_done, "episodes": self.episodes,
                "invalid_episodes": self.invalid_episodes, "updates_done": self.updates_done}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._saved_model = state.get("model")
        self.model = None
        self.children_done = int(state["children_done"])
        self.episodes = int(state.get("episodes", self.children_done))
        self.invalid_episodes = int(state.get("invalid_episodes", 0))
        self.updates_done = int(state.get("updates_done", 0))

    # --- helpers ---------------------------------------------------------------------------
    def _policy(self) -> str:
        return "MlpLstmPolicy" if self.algo == "recurrent_ppo" else "MlpPolicy"

    def _defaults(self, episode_len: int, num_envs: int) -> dict[str, Any]:
        if self.algo in ("ppo", "maskable_ppo", "recurrent_ppo"):
            n_steps = max(2, math.ceil(self.children_per_update * episode_len / num_envs))
            return {"n_steps": n_steps, "batch_size": min(episode_len, n_steps * num_envs)}
        return {"n_steps": episode_len} if self.algo == "a2c" else {}

    @staticmethod
    def _vec_env(envs: AnyEnv) -> Any:
        from stable_baselines3.common.monitor import Monitor
        from stable_baselines3.common.vec_env import DummyVecEnv

        if isinstance(envs, gym.vector.SyncVectorEnv):
            subs = list(envs.envs)
        elif isinstance(envs, gym.Env):
            subs = [envs]
        else:
            raise TypeError(f"SB3 agents need a single env or a SyncVectorEnv (SB3 makes its own VecEnv), "
                            f"got {type(envs).__name__}")
        return DummyVecEnv([lambda e=e: Monitor(e) for e in subs])

    def _episode_end(self, reward: float, info: dict[str, Any], on_child: OnChild, rewards: list[float]) -> None:
        self.episodes += 1
        if info.get("status") == "invalid_action":
            self.invalid_episodes += 1
            return
        for key in ("terminal_observation", "action_mask", "episode", "TimeLimit.truncated"):
            info.pop(key, None)
        on_child(ChildRecord(self.children_done, reward, info))
        self.children_done += 1
        rewards.append(reward)

    def _stats(self, rewards: list[float]) -> UpdateStats:
        logged = dict(self.model.logger.name_to_value) if self.model is not None else {}
        entropy_loss = logged.get("train/entropy_loss")
        stats = UpdateStats(
            update=self.updates_done, children_done=self.children_done, num_children=len(rewards),
            reward_mean=float(np.mean(rewards)), reward_max=float(np.max(rewards)),
            policy_loss=float(logged.get("train/policy_gradient_loss", logged.get("train/policy_loss",
                                                                                   logged.get("train/loss", 0.0)))),
            entropy=None if entropy_loss is None else -float(entropy_loss),
        )
        self.updates_done += 1
        return stats
