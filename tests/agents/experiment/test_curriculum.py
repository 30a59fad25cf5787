"""The depth curriculum: its schedule, the env's depth option, the controller at any depth, the runner and resume."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import nas_env  # noqa: F401  (registers the ids)
from agents.controller import Controller
from agents.experiment.curriculum import DepthCurriculum, env_max_layers, set_env_layers
from agents.experiment.runner import SearchArgs, parse_args, run_search
from nas_env.envs.nas_env import NASEnv
from nas_env.evaluators import SyntheticEvaluator
from nas_env.spaces.base import TokenSpec
from nas_env.spaces.cnn import CNNArchitecture, cnn_space

FAST = {"evaluator": "synthetic"}


def play(env: gym.Env, seed: int = 0, options: dict | None = None) -> tuple[int, dict, np.ndarray]:
    """One episode of first-valid actions: (steps taken, final info, final observation)."""
    obs, info = env.reset(seed=seed, options=options)
    steps = 0
    while True:
        obs, _reward, terminated, truncated, info = env.step(int(np.flatnonzero(info["action_mask"])[-1]))
        steps += 1
        if terminated or truncated:
            return steps, info, obs


# --- the schedule ---------------------------------------------------------------------------------
def test_paper_schedule_starts_at_6_adds_2_every_1600_up_to_the_maximum() -> None:
    c = DepthCurriculum(max_layers=15)
    assert [c.num_layers_at(n) for n in (0, 1599, 1600, 3199, 3200, 4800, 6400, 7999, 8000, 12_800)] == [
        6, 6, 8, 8, 10, 12, 14, 14, 15, 15]
    assert DepthCurriculum(39, 6, 2, 1600).num_layers_at(12_800) == 22  # v3: 8 steps in the paper's 12,800 children


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"max_layers": 4}, "start_layers=6 is deeper than the space's 4 layers"),
    ({"max_layers": 15, "every": 0}, "every must be an integer >= 1, got 0"),
    ({"max_layers": 15, "layers_step": -2}, "layers_step must be an integer >= 1, got -2"),
    ({"max_layers": 15, "start_layers": 2.5}, "start_layers must be an integer >= 1, got 2.5"),
])
def test_bad_schedules_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DepthCurriculum(**kwargs)


def test_resume_depth_prefers_a_matching_checkpoint_and_refuses_another_schedule() -> None:
    c = DepthCurriculum(15, 6, 2, 10)
    assert c.resume_num_layers(None, 25) == 10
    assert c.resume_num_layers(c.state(20), 20) == 10
    assert c.resume_num_layers(c.state(20), 30) == 12  # a stale record: the schedule decides
    with pytest.raises(ValueError, match="every=10, this run 20"):
        DepthCurriculum(15, 6, 2, 20).resume_num_layers(c.state(20), 20)


# --- the env ----------------------------------------------------------------------------------------
def test_env_depth_shortens_episodes_and_keeps_the_full_spaces() -> None:
    env = gym.make("NASRL-CIFAR10-Pooling-v0", active_layers=6, **FAST)
    full = env.unwrapped
    assert full.num_layers == 6 and full.max_num_layers == 39
    obs_space, act_space = env.observation_space, env.action_space
    for k in (6, 14, 39):
        full.set_num_layers(k)
        steps, info, obs = play(env, seed=k)
        space_k = cnn_space("v3").with_layers(k)
        assert steps == len(space_k.tokens()) and info["step"] == steps
        assert np.count_nonzero(obs) == steps and obs.shape == obs_space.shape  # entries past the depth stay 0
        arch = CNNArchitecture.from_json(info["arch"])
        assert arch.num_layers == k == info["num_layers"]
        assert arch.pool_after == tuple(j for j in (13, 24) if j <= k)
        assert env.observation_space == obs_space and env.action_space == act_space


def test_a_shallow_env_passes_gymnasiums_checker() -> None:
    gym_check_env(gym.make("NASRL-Digits-v0", active_layers=2, **FAST).unwrapped, skip_render_check=True)


def test_reset_option_sets_the_depth_and_it_persists() -> None:
    env = gym.make("NASRL-Digits-v0", **FAST)
    assert play(env)[1]["num_layers"] == 4
    steps, info, _ = play(env, options={"num_layers": 2})
    assert info["num_layers"] == 2 and steps == len(cnn_space("v1", num_layers=2).tokens())
    assert play(env)[1]["num_layers"] == 2  # until changed again


def test_a_new_depth_applies_from_the_next_reset_only() -> None:
    env = gym.make("NASRL-Digits-v0", **FAST)
    env.reset(seed=0)
    env.unwrapped.set_num_layers(1)
    for _ in range(len(cnn_space("v1", num_layers=2).tokens())):  # still the 4-layer episode
        _, _, terminated, _, _ = env.step(0)
        assert not terminated
    assert play(env)[1]["num_layers"] == 1


@pytest.mark.parametrize("bad", [0, 5, -1, 2.0, True, "3", None])
def test_bad_depths_are_named(bad: object) -> None:
    env = gym.make("NASRL-Digits-v0", **FAST).unwrapped
    with pytest.raises(ValueError, match=r"num_layers must be an int in 1\.\.4"):
        env.set_num_layers(bad)


class FlatSpace:
    """A space without a depth: two decisions, no with_layers."""

    def tokens(self) -> Sequence[TokenSpec]:
        return (TokenSpec("a", (0, 1)), TokenSpec("b", (0, 1, 2)))

    def decode(self, actions: Sequence[int]) -> CNNArchitecture:
        return cnn_space("v1", num_layers=1).decode([0, 0, 0])

    def encode(self, arch: CNNArchitecture) -> list[int]:
        return [0, 0]


def test_a_space_without_a_depth_refuses_one() -> None:
    env = NASEnv(FlatSpace(), lambda arch, seed: 0.5)
    assert env.num_layers is None and env.max_num_layers is None
    with pytest.raises(ValueError, match="has no depth to set"):
        env.set_num_layers(1)
    with pytest.raises(ValueError, match="has no depth to set"):
        NASEnv(FlatSpace(), lambda arch, seed: 0.5, active_layers=1)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_vector_envs_take_the_depth_through_call(mode: str) -> None:
    envs = gym.make_vec("NASRL-Digits-v0", num_envs=2, vectorization_mode=mode, **FAST)
    try:
        assert env_max_layers(envs) == 4
        set_env_layers(envs, 3)
        assert list(envs.get_attr("num_layers")) == [3, 3]
        _, infos = envs.reset(seed=[0, 1])
        n = len(cnn_space("v1", num_layers=3).tokens())
        for t in range(n):
            _, _, terminated, _, infos = envs.step(np.zeros(2, dtype=np.int64))
            assert terminated.all() == (t == n - 1)
        assert list(infos["num_layers"]) == [3, 3]
    finally:
        envs.close()


def test_synthetic_evaluator_scores_a_shallower_child_on_its_own_tokens() -> None:
    space = cnn_space("v1", num_layers=5)
    ev = SyntheticEvaluator(space, target_seed=3)
    target = ev.target_arch
    shallow = space.with_layers(2).decode(list(ev.target[: len(space.with_layers(2).tokens())]))
    assert ev(shallow, 0).reward == 1.0
    assert ev(target, 0).reward == 1.0


# --- the controller at any depth --------------------------------------------------------------------
@pytest.mark.parametrize("depth", [2, 5, 9])  # from 2 on every token type exists, so the weights load
def test_controller_scores_a_prefix_like_a_controller_of_that_depth(depth: int) -> None:
    full_space = cnn_space("v2", num_layers=9)  # strides too: 5 + (i - 1) tokens per layer
    full = Controller(full_space.tokens(), num_actions=4, generator=torch.Generator().manual_seed(1))
    short_specs = full_space.with_layers(depth).tokens()
    short = Controller(short_specs, num_actions=4)
    short.load_state_dict(full.state_dict())  # no weight depends on the depth
    n = len(short_specs)
    actions = full.sample(3, torch.Generator().manual_seed(2)).clone()  # out of inference mode
    logp_short, ent_short = short.log_probs(actions[:, :n])
    logp_full, ent_full = full.log_probs(actions)
    torch.testing.assert_close(logp_full[:, :n], logp_short)
    torch.testing.assert_close(ent_full[:, :n], ent_short)
    # and step by step, as when sampling (the anchor attention only looks back)
    s_full, s_short = full.initial_state(3), short.initial_state(3)
    prev = None
    for t in range(n):
        a, s_full = full.step(s_full, prev)
        b, s_short = short.step(s_short, prev)
        torch.testing.assert_close(a, b)
        prev = actions[:, t]


# --- the runner ---------------------------------------------------------------------------------------
def curriculum_args(tmp_path: Path, name: str, episodes: int) -> SearchArgs:
    return SearchArgs(env="NASRL-CIFAR10-v0", agent="reinforce", episodes=episodes, children_per_update=4, seed=5,
                      logdir=str(tmp_path), run_name=name, env_kwargs={"evaluator": "synthetic"}, progress=False,
                      curriculum=True, curriculum_start_layers=6, curriculum_layers_step=2, curriculum_every=8)


def read_results(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]


def test_runner_grows_the_depth_logs_it_and_keeps_it_in_the_checkpoint(tmp_path: Path) -> None:
    run_dir = run_search(curriculum_args(tmp_path, "grow", 40))
    depths = [r["num_layers"] for r in read_results(run_dir)]
    assert depths == [6] * 8 + [8] * 8 + [10] * 8 + [12] * 8 + [14] * 8
    assert all(CNNArchitecture.from_json(r["arch"]).num_layers == r["num_layers"] for r in read_results(run_dir))
    ckpt = torch.load(run_dir / "checkpoints" / "agent.pt", weights_only=True)
    assert ckpt["curriculum"] == {"max_layers": 15, "start_layers": 6, "layers_step": 2, "every": 8,
                                  "children_done": 40, "num_layers": 15}
    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    logged = {e.step: e.value for e in acc.Scalars("search/num_layers")}
    assert logged[0] == 6 and logged[8] == 8 and logged[32] == 14 and logged[40] == 15


def test_resumed_run_continues_at_the_right_depth(tmp_path: Path) -> None:
    full = read_results(run_search(curriculum_args(tmp_path, "full", 28)))
    part = run_search(curriculum_args(tmp_path, "part", 18))  # stops mid-update, past two depth steps
    assert torch.load(part / "checkpoints" / "agent.pt", weights_only=True)["curriculum"]["num_layers"] == 10
    resumed = read_results(run_search(SearchArgs(resume=str(part), episodes=28, progress=False)))
    expected = [6] * 8 + [8] * 8 + [10] * 8 + [12] * 4
    assert [r["num_layers"] for r in resumed] == [r["num_layers"] for r in full] == expected
    assert [CNNArchitecture.from_json(r["arch"]).num_layers for r in resumed] == expected
    assert [r["index"] for r in resumed] == list(range(28))


def test_curriculum_flags_parse_and_bad_ones_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = parse_args(["--curriculum", "--curriculum-start-layers", "2", "--curriculum-every", "50"])
    assert (args.curriculum, args.curriculum_start_layers, args.curriculum_layers_step, args.curriculum_every) == (
        True, 2, 2, 50)
    with pytest.raises(SystemExit):
        parse_args(["--curriculum", "--curriculum-every", "0"])
    assert "--curriculum-every must be an integer of at least 1" in capsys.readouterr().err
    too_deep = SearchArgs(env="NASRL-Digits-v0", episodes=4, children_per_update=4, logdir=str(tmp_path),
                          run_name="deep", env_kwargs={"evaluator": "synthetic"}, progress=False, curriculum=True)
    with pytest.raises(ValueError, match="start_layers=6 is deeper than the space's 4 layers"):
        run_search(too_deep)
    assert not (tmp_path / "deep" / "config.json").exists()
