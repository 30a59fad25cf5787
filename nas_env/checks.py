"""Argument checks shared by every module: each raises a ``ValueError`` naming the value and what is allowed.

One place for the rule "an integer is an ``int`` but not a ``bool``" and its messages, so a
knob's check is one call: ``self.epochs = check_int("epochs", epochs, minimum=1)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


def is_int(value: Any) -> bool:
    """An integer (Python or numpy), and not a bool."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def is_number(value: Any) -> bool:
    """A real number (int or float, Python or numpy), and not a bool."""
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool | np.bool_)


def _bounds(minimum: float | None, maximum: float | None, above: bool) -> str:
    parts = []
    if minimum is not None:
        parts.append(f"> {minimum:g}" if above else f">= {minimum:g}")
    if maximum is not None:
        parts.append(f"<= {maximum:g}")
    return " and ".join(parts)


def check_int(name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an int in ``[minimum, maximum]`` (either bound optional), else a ValueError naming ``name``."""
    if not is_int(value) or (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        bounds = _bounds(minimum, maximum, above=False)
        raise ValueError(f"{name} must be an integer{' ' + bounds if bounds else ''}, got {value!r}")
    return int(value)


def check_number(name: str, value: Any, *, minimum: float | None = None, maximum: float | None = None,
                 above: bool = False) -> float:
    """``value`` as a finite float in range (``above=True``: strictly more than ``minimum``), else a ValueError."""
    ok = is_number(value) and math.isfinite(value)
    if ok and minimum is not None:
        ok = value > minimum if above else value >= minimum
    if ok and maximum is not None:
        ok = value <= maximum
    if not ok:
        bounds = _bounds(minimum, maximum, above)
        raise ValueError(f"{name} must be a finite number{' ' + bounds if bounds else ''}, got {value!r}")
    return float(value)


def check_choice(name: str, value: T, choices: Collection[T]) -> T:
    """``value`` if it is one of ``choices``, else a ValueError listing them."""
    try:
        known = value in choices and isinstance(value, bool) == any(isinstance(c, bool) for c in choices)
    except TypeError:  # an unhashable value asked of a set
        known = False
    if not known:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def check_in(name: str, value: T, allowed: Sequence[T]) -> T:
    """``value`` if it is in ``allowed``, else a ValueError printing ``allowed`` as given (a tuple or a list)."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    return value


def check_type(value: Any, cls: type[T], refusal: str) -> T:
    """``value`` if it is a ``cls`` instance, else the TypeError ``"{refusal}, got <its type>"``."""
    if not isinstance(value, cls):
        raise TypeError(f"{refusal}, got {type(value).__name__}")
    return value


def check_image_shape(input_shape: Any) -> tuple[int, int, int]:
    """``input_shape`` as a ``(channels, height, width)`` tuple of positive ints, else a ValueError."""
    if isinstance(input_shape, str) or len(input_shape) != 3 or not all(is_int(v) and v >= 1 for v in input_shape):
        raise ValueError(f"input_shape must be (channels, height, width) of positive ints, got {input_shape!r}")
    return tuple(int(v) for v in input_shape)  # type: ignore[return-value]


def check_bool(name: str, value: Any) -> bool:
    """``value`` if it is a bool (numpy's too), else a ValueError: ``0`` and ``"false"`` are refused, not guessed."""
    if not isinstance(value, bool | np.bool_):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return bool(value)


def check_fraction(name: str, value: Any, *, zero: bool = True, one: bool = False) -> float:
    """``value`` as a float in the unit interval, 0 allowed if ``zero`` and 1 if ``one`` (default ``[0, 1)``)."""
    ok = is_number(value) and (0 <= value if zero else 0 < value) and (value <= 1 if one else value < 1)
    if not ok:
        raise ValueError(f"{name} must be a number in {'[' if zero else '('}0, 1{']' if one else ')'}, got {value!r}")
    return float(value)


def check_optional(name: str, value: Any, check: Callable[..., T], *args: Any, none: str = "", **kwargs: Any
                   ) -> T | None:
    """None as is (``none`` says what it means), else ``check(name, value, *args, **kwargs)``.

    The message of a refused value names both: ``max_grad_norm must be None (no clipping) or a finite number > 0``.
    Every check here words its message ``"{name} must be {allowed}, got {value!r}"``, which this relies on.
    """
    if value is None:
        return None
    try:
        return check(name, value, *args, **kwargs)
    except ValueError as e:
        allowed = str(e).removeprefix(f"{name} must be ").removesuffix(f", got {value!r}")
        raise ValueError(f"{name} must be None{f' ({none})' if none else ''} or {allowed}, got {value!r}") from None
