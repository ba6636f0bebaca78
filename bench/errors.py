"""The one error a benchmark raises when a check or a wait fails."""

from __future__ import annotations


class BenchFailure(Exception):
    """A scenario's result is wrong or did not come: no figure is reported for it."""
