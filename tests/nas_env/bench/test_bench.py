"""NASRL-Bench: the table file, the lookup evaluator and env, and nasrl-tabulate (resumable after kill -9)."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from bench_test_utils import made_up_table
from gymnasium.utils.env_checker import check_env

import nas_env  # noqa: F401
from agents.experiment.tabulate import TabulateArgs, seed_fingerprint, tabulate
from nas_env.bench.table import BenchTable, actions_of, describe, enumerate_actions, index_of, radices
from nas_env.store import ResultStore

# A one-layer digits space: 2 x 2 x 2 = 8 architectures, trained in a fraction of a second each.
TINY_KWARGS = {"num_layers": 1, "filter_heights": [1, 3], "filter_widths": [1, 5], "num_filters": [4, 8],
               "epochs": 2, "batch_size": 32, "train_subset": 64, "val_subset": 64}
def test_mixed_radix_index_round_trips() -> None:
    choices = [2, 3, 4]
    everything = list(enumerate_actions(choices))
    assert len(everything) == 24 and everything[0] == [0, 0, 0] and everything[-1] == [1, 2, 3]
    places = radices(choices)
    assert [index_of(a, places) for a in everything] == list(range(24))
    assert all(actions_of(i, choices) == a for i, a in enumerate(everything))


def test_a_saved_table_loads_identically_and_a_damaged_one_is_refused(tmp_path: Path) -> None:
    table = made_up_table()
    path = tmp_path / "t.json.gz"
    table.save(path)
    again = BenchTable.load(path)
    np.testing.assert_allclose(again.val_acc, table.val_acc, atol=1e-5)  # stored to 5 decimals
    assert np.isnan(again.val_acc[5, 1]).all() and again.status[5, 1] == "diverged"
    assert again.tokens == table.tokens and list(again.params) == list(table.params)
    with gzip.open(path, "rt") as f:
        data = json.load(f)
    data["val_acc"][0][0][0] = 0.99  # an edit
    with gzip.open(path, "wt") as f:
        json.dump(data, f)
    with pytest.raises(ValueError, match="checksum mismatch"):
        BenchTable.load(path)
    with pytest.raises(ValueError, match="no NASRL-Bench table 'nope'"):
        BenchTable.load("nope")


def play(env: gym.Env, actions: list[int], seed: int) -> tuple[float, dict]:
    env.reset(seed=seed)
    for a in actions:
        _, reward, done, _, info = env.step(a)
    assert done
    return float(reward), info


def test_the_env_serves_the_table_seed_by_seed_and_in_the_mean() -> None:
    table = made_up_table()
    env = gym.make("NASRL-Bench-Digits-v0", table=table)
    i = 77
    actions = actions_of(i, table.token_choices)
    rewards = set()
    for seed in range(12):
        reward, info = play(env, actions, seed)
        k = info["seed"] % 3  # the trained seed this episode's seed picks
        assert reward == pytest.approx(float(table.val_acc[i, k, -1]))
        assert info["test_acc"] == pytest.approx(float(table.test_acc[i, k]))
        assert info["train_seconds"] == pytest.approx(float(table.train_seconds[i, k]))
        assert info["regret"] == pytest.approx(float(table.mean_val().max() - table.mean_val()[i]))
        assert info["params"] == 100 + i and info["table_index"] == i
        rewards.add(reward)
    assert len(rewards) == 3  # noisy like real training: all three seeds were drawn

    mean_env = gym.make("NASRL-Bench-Digits-v0", table=table, noise="mean", epochs=1)
    reward, info = play(mean_env, actions, 0)
    assert reward == pytest.approx(float(table.val_acc[i, :, 0].mean()))
    assert info["train_seconds"] == pytest.approx(float(table.train_seconds[i].mean()) / 2)  # 1 of 2 epochs


def test_a_failed_seed_is_served_with_its_status() -> None:
    table = made_up_table()
    env = gym.make("NASRL-Bench-Digits-v0", table=table, noise="mean")
    reward, info = play(env, actions_of(5, table.token_choices), 0)
    assert info["status"] == "diverged" and reward == 0.0


def test_bad_keywords_and_foreign_architectures_are_named() -> None:
    table = made_up_table()
    with pytest.raises(ValueError, match="noise must be one of"):
        gym.make("NASRL-Bench-Digits-v0", table=table, noise="median")
    with pytest.raises(ValueError, match=r"epochs must be an int in 1\.\.2"):
        gym.make("NASRL-Bench-Digits-v0", table=table, epochs=3)
    with pytest.raises(ValueError, match="not an architecture of table"):
        table.index([0] * 3)
    env = gym.make("NASRL-Bench-Digits-v0", table=table).unwrapped
    other = gym.make("NASRL-Digits-v0", evaluator="synthetic", num_layers=2).unwrapped.space  # 4 choices a token
    with pytest.raises(ValueError, match="is not in table 'made-up'"):
        env.evaluator(other.decode([s.num_choices - 1 for s in other.tokens()]), 0)


def test_the_env_passes_both_checkers_and_an_sb3_agent_runs_on_it() -> None:
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    from agents import make_agent

    env = gym.make("NASRL-Bench-Digits-v0", table=made_up_table())
    check_env(env.unwrapped)
    sb3_check_env(env.unwrapped)
    agent = make_agent("maskable_ppo", seed=0, children_per_update=4)
    children = []
    agent.run(gym.make_vec("NASRL-Bench-Digits-v0", num_envs=1, vectorization_mode="sync", table=made_up_table()),
              8, children.append)
    assert len(children) == 8 and all("regret" in c.info for c in children)


def test_describe_reports_noise_against_spread() -> None:
    facts = describe(made_up_table())
    assert facts["architectures"] == 128 and facts["seeds"] == 3
    assert 0 < facts["seed_sd"] and 0 < facts["arch_sd"]
    assert facts["best"]["mean_val_acc"] == pytest.approx(float(made_up_table().mean_val().max()))
    assert -1 <= facts["spearman_val_test"] <= 1


def test_tabulate_trains_every_architecture_and_exports_a_table(tmp_path: Path) -> None:
    out = tmp_path / "tiny.json.gz"
    tabulate(TabulateArgs(env_kwargs=TINY_KWARGS, name="tiny", seeds=2, logdir=str(tmp_path), out=str(out),
                          progress=False))
    table = BenchTable.load(out)
    assert table.num_archs == 8 and table.val_acc.shape == (8, 2, 2) and not np.isnan(table.val_acc).any()
    assert (table.status == "ok").all() and (table.train_seconds > 0).all() and (table.test_acc > 0).all()
    assert len((tmp_path / "tabulate__tiny" / "results.jsonl").read_text().splitlines()) == 16
    env = gym.make("NASRL-Bench-Digits-v0", table=str(out))
    reward, info = play(env, actions_of(3, table.token_choices), 0)
    assert reward == pytest.approx(float(table.val_acc[3, info["seed"] % 2, -1]))
    with pytest.raises(ValueError, match="has 128 architectures, more than --max-archs 100"):
        tabulate(TabulateArgs(env_kwargs={**TINY_KWARGS, "num_layers": 2}, name="big", max_archs=100,
                              logdir=str(tmp_path), progress=False))


def test_tabulate_resumes_after_kill_9(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "agents.experiment.tabulate", "--name", "tiny", "--seeds", "2",
           "--logdir", str(tmp_path),
           "--no-progress", "--env-kwargs", json.dumps(TINY_KWARGS)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store_path = tmp_path / "tabulate__tiny" / "store.sqlite"
    deadline = time.time() + 120
    while not (store_path.exists() and len(ResultStore(store_path)) >= 3):
        assert time.time() < deadline and proc.poll() is None, "tabulate did not start training"
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    kept = len(ResultStore(store_path))
    assert 3 <= kept < 16
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True)
    assert f"{16 - kept} children to train ({kept} already in" in done.stdout
    table = BenchTable.load(tmp_path / "tabulate__tiny" / "tiny.json.gz")
    assert table.num_archs == 8 and not np.isnan(table.val_acc).any()
    fingerprint = table.fingerprint
    assert sum(1 for _ in ResultStore(store_path).rows(seed_fingerprint(fingerprint, 0))) == 8


@pytest.mark.slow
def test_tabulate_on_ray_gives_the_same_table_as_one_process(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    tables = []
    for backend in ("local", "ray"):
        out = tmp_path / f"{backend}.json.gz"
        tabulate(TabulateArgs(env_kwargs=TINY_KWARGS, name="tiny", seeds=2, logdir=str(tmp_path / backend),
                              out=str(out), backend=backend, progress=False))
        tables.append(BenchTable.load(out))
    np.testing.assert_array_equal(tables[0].val_acc, tables[1].val_acc)  # same seeds, same CPU results
    assert tables[0].fingerprint == tables[1].fingerprint


def test_tabulate_refuses_a_digits_split_its_test_images_could_overlap(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="remove val_size"):
        tabulate(TabulateArgs(env_kwargs={**TINY_KWARGS, "val_size": 400}, name="moved", logdir=str(tmp_path),
                              progress=False))
