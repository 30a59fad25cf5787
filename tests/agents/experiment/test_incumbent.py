"""The incumbent rules: the best mean reward of an architecture's evaluations, or the best single reward."""

from __future__ import annotations

import math

import pytest

from agents.experiment.incumbent import Incumbent


def feed(rule: str, evaluations: list[tuple[str, float]]) -> list[str | None]:
    incumbent = Incumbent(rule)
    keys = []
    for key, reward in evaluations:
        incumbent.add(key, reward)
        keys.append(incumbent.key)
    return keys


# NASRL-Bench-Digits' two best architectures: #4095 (seeds 0.926 / 0.953 / 0.963, mean 0.947) is sampled
# again and again; #3967 (0.960 / 0.946 / 0.963, mean 0.956) then shows up with its seeds.
STREAM = [("4095", 0.953), ("4095", 0.963), ("4095", 0.926), ("3967", 0.963), ("3967", 0.946), ("3967", 0.960)]


def test_max_keeps_a_lucky_seed_that_a_better_architecture_only_ties() -> None:
    assert feed("max", STREAM)[-1] == "4095"


def test_mean_picks_the_architecture_with_the_better_average() -> None:
    assert feed("mean", STREAM) == ["4095", "4095", "4095", "3967", "3967", "3967"]


def test_a_falling_mean_hands_over_to_the_next_best_and_back() -> None:
    incumbent = Incumbent("mean")
    assert incumbent.add("a", 0.9) and not incumbent.add("b", 0.7)  # b does not lead: no change
    assert (incumbent.key, incumbent.score) == ("a", 0.9)
    assert incumbent.add("a", 0.3)  # a: mean 0.6 < b's 0.7
    assert (incumbent.key, incumbent.score) == ("b", 0.7)
    assert incumbent.add("a", 1.1)  # a: mean 0.7667
    assert incumbent.key == "a" and incumbent.score == pytest.approx(2.3 / 3)
    assert incumbent.evaluations("a") == 3 and incumbent.mean_reward("a") == pytest.approx(2.3 / 3)
    assert incumbent.evaluations("c") == 0 and math.isnan(incumbent.mean_reward("c"))


def test_a_tie_keeps_the_incumbent_and_an_unchanged_one_reports_no_change() -> None:
    incumbent = Incumbent("max")
    assert incumbent.add("a", 0.5)
    assert not incumbent.add("b", 0.5)  # a tie: a stays
    assert incumbent.add("a", 0.4)  # a's max is still 0.5, but it has one more evaluation to report
    assert incumbent.key == "a" and incumbent.score == 0.5 and incumbent.evaluations("a") == 2
    mean = Incumbent("mean")
    mean.add("a", 0.6)
    mean.add("b", 0.8)
    mean.add("b", 0.4)  # b's mean falls to 0.6: a tie with a, and b stays
    assert mean.key == "b"


def test_an_unknown_rule_is_named() -> None:
    with pytest.raises(ValueError, match=r"incumbent rule must be one of \('mean', 'max'\), got 'median'"):
        Incumbent("median")
