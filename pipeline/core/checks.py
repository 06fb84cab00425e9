"""One way to check an argument, one message shape (scikit-learn's):

    The 'decay_rate' parameter of exponential_decay must be a float >= 0. Got -1 instead.

Every factory of the core (models, optimizers, schedules, the range test, the training loop) and the data
loaders check their arguments with these functions. They raise :class:`ArgumentError`, a ValueError that keeps
the parameter's name, its owner, the rule and the value as attributes, so that the study-file boundary
(:mod:`pipeline.study.loader`) turns it into a ConfigError at the right key without reading the message.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from numbers import Integral, Real

import numpy as np


def shown(value):
    """The value as a user would write it (np.float64(1.0) -> 1.0), for messages."""
    return value.item() if isinstance(value, np.generic) else value


class ArgumentError(ValueError):
    """A bad argument: ``param`` of ``owner`` must be ``expected`` and was ``value``."""

    def __init__(self, param: str, owner: str, expected: str, value):
        self.param, self.owner, self.expected, self.value = param, owner, expected, shown(value)
        super().__init__(f"{self.rule} Got {self.value!r} instead.")

    @property
    def rule(self) -> str:
        """The message without the value: ``The 'p' parameter of f must be ...``."""
        return f"The {self.param!r} parameter of {self.owner} must be {self.expected}."


def interval(low=None, high=None, *, low_open: bool = False, high_open: bool = False) -> str:
    """``in (0, 1]``, ``> 0``, ``<= 5`` or ``""``; bounds are printed as given (0 -> 0, 0.0 -> 0.0)."""
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high}"
    return ""


def _within(x, low, high, low_open: bool, high_open: bool) -> bool:
    if low is not None and not (x > low if low_open else x >= low):
        return False
    return high is None or (x < high if high_open else x <= high)


def check_float(
    value,
    param: str,
    owner: str,
    *,
    low=None,
    high=None,
    low_open: bool = False,
    high_open: bool = False,
    inf_ok: bool = False,
    error: type[ArgumentError] = ArgumentError,
) -> float:
    """``value`` as a float: a real number (not a bool, not NaN; finite unless ``inf_ok``) within the bounds."""
    ok = isinstance(value, Real) and not isinstance(value, bool | np.bool_) and not math.isnan(value)
    ok = ok and (math.isfinite(value) or (inf_ok and value == math.inf))
    if not (ok and _within(value, low, high, low_open, high_open)):
        bounds = interval(low, high, low_open=low_open, high_open=high_open)
        raise error(param, owner, f"a float {bounds}" if bounds else "a finite float", value)
    return float(value)


def check_int(value, param: str, owner: str, *, low=None, high=None, error=ArgumentError) -> int:
    """``value`` as an int: an integral number (not a bool) in [low, high]."""
    ok = isinstance(value, Integral) and not isinstance(value, bool | np.bool_)
    if not (ok and _within(value, low, high, False, False)):
        bounds = interval(low, high)
        raise error(param, owner, f"an int {bounds}" if bounds else "an int", value)
    return int(value)


def check_choice(value, param: str, owner: str, choices: Iterable[str], *, error=ArgumentError) -> str:
    """``value`` if it is one of ``choices`` (strings)."""
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise error(param, owner, f"one of {', '.join(map(repr, choices))}", value)
    return value


def check_bool(value, param: str, owner: str, *, none_ok: bool = False, error=ArgumentError) -> bool | None:
    """``value`` as a bool (or None when ``none_ok``)."""
    if value is None and none_ok:
        return None
    if not isinstance(value, bool | np.bool_):
        raise error(param, owner, "a bool or None" if none_ok else "a bool", value)
    return bool(value)
