"""The shared argument checks: what they accept, and the message naming what they refuse."""

from __future__ import annotations

import re

import numpy as np
import pytest

from nas_env.checks import check_bool, check_choice, check_fraction, check_int, check_number, check_optional


def test_integers_accept_ints_and_refuse_bools_floats_and_out_of_range() -> None:
    assert check_int("epochs", 3, minimum=1) == 3
    assert isinstance(check_int("epochs", np.int64(2), minimum=1), int)
    for bad in (True, 2.0, "3", 0, None):
        with pytest.raises(ValueError, match=rf"epochs must be an integer >= 1, got {bad!r}"):
            check_int("epochs", bad, minimum=1)
    with pytest.raises(ValueError, match="n must be an integer >= 1 and <= 4, got 5"):
        check_int("n", 5, minimum=1, maximum=4)


def test_numbers_are_finite_and_bounded() -> None:
    assert check_number("lr", 1, minimum=0, above=True) == 1.0
    for bad in (0, -1.0, float("nan"), float("inf"), False, "0.1"):
        with pytest.raises(ValueError, match=r"lr must be a finite number > 0, got"):
            check_number("lr", bad, minimum=0, above=True)
    assert check_number("p", 1.0, minimum=0, maximum=1) == 1.0
    with pytest.raises(ValueError, match=r"p must be a finite number >= 0 and <= 1, got 1\.5"):
        check_number("p", 1.5, minimum=0, maximum=1)


def test_choices_and_bools() -> None:
    assert check_choice("mode", "sync", ("sync", "async")) == "sync"
    with pytest.raises(ValueError, match="mode must be one of 'sync', 'async', got 'fast'"):
        check_choice("mode", "fast", ("sync", "async"))
    with pytest.raises(ValueError, match="must be one of 1, 3"):
        check_choice("size", True, (1, 3))  # True == 1, but a bool is not a filter size
    with pytest.raises(ValueError, match="got \\[1\\]"):
        check_choice("size", [1], {1, 3})
    assert check_bool("flag", np.bool_(True)) is True
    with pytest.raises(ValueError, match="flag must be true or false, got 0"):
        check_bool("flag", 0)


def test_fractions_name_their_interval() -> None:
    assert check_fraction("decay", 0) == 0.0 and isinstance(check_fraction("decay", 0), float)
    for bad in (1.0, -0.1, True, float("nan"), "0.5"):
        with pytest.raises(ValueError, match=rf"decay must be a number in \[0, 1\), got {re.escape(repr(bad))}"):
            check_fraction("decay", bad)
    assert check_fraction("p", 1, zero=False, one=True) == 1.0
    for bad in (0, 0.0, 1.01):
        with pytest.raises(ValueError, match=r"p must be a number in \(0, 1\], got"):
            check_fraction("p", bad, zero=False, one=True)


def test_optional_values_allow_none_and_say_what_it_means() -> None:
    assert check_optional("clip", None, check_number, minimum=0, above=True, none="no clipping") is None
    assert check_optional("clip", 2, check_number, minimum=0, above=True) == 2.0
    with pytest.raises(ValueError, match=r"^clip must be None \(no clipping\) or a finite number > 0, got 0$"):
        check_optional("clip", 0, check_number, minimum=0, above=True, none="no clipping")
    with pytest.raises(ValueError, match=r"^n must be None or an integer >= 2, got 1$"):
        check_optional("n", 1, check_int, minimum=2)
    with pytest.raises(ValueError, match=r"^ratio must be None or a number in \(0, 1\), got 'x'$"):
        check_optional("ratio", "x", check_fraction, zero=False)
