"""Pure arithmetic of the benchmark: percentiles, the pacing schedule, rates over a span.

Percentiles are nearest-rank: the p-th percentile of n samples is the smallest sample that at
least p % of the samples do not exceed (``sorted(samples)[ceil(p / 100 * n) - 1]``), so it is
always one of the measured values, never an interpolation between two.

The pacing schedule is open loop: request ``i`` is due ``i / rate`` seconds after the first,
whatever the replies do, so a slow reply never delays the requests after it (a closed loop
would publish less exactly when the worker is slow, and hide it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

SUMMARY_PERCENTILES = (50.0, 90.0, 99.0)


def percentile(samples: Sequence[float], p: float) -> float:
    """The nearest-rank ``p``-th percentile (0 < p <= 100) of ``samples``."""
    if not samples:
        raise ValueError("no samples")
    if not 0 < p <= 100:
        raise ValueError(f"a percentile is in (0, 100], not {p}")
    ordered = sorted(samples)
    rank = math.ceil(p / 100 * len(ordered))
    return ordered[max(rank, 1) - 1]


def summary(samples: Sequence[float]) -> dict[str, float]:
    """``p50``, ``p90``, ``p99`` and ``max`` of ``samples``."""
    figures = {f"p{p:g}": percentile(samples, p) for p in SUMMARY_PERCENTILES}
    figures["max"] = max(samples)
    return figures


def schedule(count: int, rate: float) -> list[float]:
    """When each of ``count`` requests is due, in seconds after the first, at ``rate``/s."""
    if count < 0:
        raise ValueError(f"a count is not negative: {count}")
    if rate <= 0:
        raise ValueError(f"a rate is positive, not {rate}")
    return [index / rate for index in range(count)]


def achieved_rate(sent_at: Sequence[float]) -> float | None:
    """Requests per second between the first and the last send (``None`` for fewer than two,
    or when they were all sent at once)."""
    if len(sent_at) < 2:
        return None
    span = max(sent_at) - min(sent_at)
    return None if span <= 0 else (len(sent_at) - 1) / span


def rate_after(times: Sequence[float], skip: int) -> tuple[int, float]:
    """The admissions after the first ``skip`` and the seconds they took: ``times`` are
    admission times in admission order, and the span runs from admission ``skip`` (the moment
    ``skip`` were in) to the last. ``skip`` must leave at least one, and be at least 1."""
    if not 1 <= skip < len(times):
        raise ValueError(f"cannot measure after {skip} of {len(times)} admissions")
    return len(times) - skip, times[-1] - times[skip - 1]


def rate_of_first(times: Sequence[float], count: int) -> tuple[int, float]:
    """The first ``count`` admissions after the very first one and the seconds they took."""
    if not 1 <= count < len(times):
        raise ValueError(f"cannot measure {count} of {len(times)} admissions")
    return count, times[count] - times[0]


def tenths(samples: Sequence[float]) -> list[list[float]]:
    """``samples`` in ten consecutive parts of (nearly) equal size, fewer when there are fewer
    than ten samples: how a figure moved over a run, in the order the samples were taken."""
    parts = min(10, len(samples))
    bounds = [round(k * len(samples) / parts) for k in range(parts + 1)] if parts else [0]
    return [list(samples[bounds[k]:bounds[k + 1]]) for k in range(parts)]
