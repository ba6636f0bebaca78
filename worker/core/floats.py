"""Finding a float in a JSON value without writing its text.

Two JSON libraries meet in the worker: the standard library's ``json`` (the core's canonical
text, and what takes integers of any width) and orjson (several times faster). They differ on a
few numbers: orjson writes floats below 10⁻⁴ in another form (the session digest must be the
core's), and reads an integer wider than 64 bits as a float, losing digits (what ``json``
wrote). Where those numbers could be, the value is checked for them by :func:`holds_float`, a
walk over its values whose cost is their number, not the length of the text (looking for the
numbers in the text with a pattern cost more than parsing it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

WIDEST_INT = 2**63
"""Integers from here on (either sign) are beyond a signed 64-bit one: orjson reads them as
floats (up to 2⁶⁴ minus 1 it still reads them exactly, which this check does not need to know)."""


def holds_float(value: Any, test: Callable[[float], bool]) -> bool:
    """Whether any float in ``value`` (dicts, lists and tuples, walked) passes ``test``."""
    stack: list[Any] = [value]
    pop, grow = stack.pop, stack.extend
    while stack:
        item = pop()
        kind = type(item)
        if kind is dict:
            grow(item.values())
        elif kind is list or kind is tuple:
            grow(item)
        elif kind is float and test(item):
            return True
    return False


def near_zero(item: float) -> bool:
    """A float orjson writes otherwise than ``json``: nearer zero than 10⁻⁴, but not zero."""
    return item != 0.0 and -1e-4 < item < 1e-4


def read_as_wide_int(item: float) -> bool:
    """A float orjson may have read from an integer wider than 64 bits (its digits lost)."""
    return not -WIDEST_INT < item < WIDEST_INT
