"""The benchmark's arithmetic: nearest-rank percentiles, the open-loop pacing schedule, the rate
achieved, the spans of admissions and the tenths of a run."""

from __future__ import annotations

import itertools

import pytest

from bench.stats import (
    achieved_rate,
    percentile,
    rate_after,
    rate_of_first,
    schedule,
    summary,
    tenths,
)

pytestmark = pytest.mark.unit


def test_a_percentile_is_the_nearest_rank_whatever_the_order() -> None:
    samples = [7.0, 1.0, 10.0, 3.0, 5.0, 2.0, 9.0, 4.0, 8.0, 6.0]
    assert percentile(samples, 50) == 5.0
    assert percentile(samples, 90) == 9.0
    assert percentile(samples, 99) == 10.0
    assert percentile(samples, 100) == 10.0
    assert percentile(samples, 1) == 1.0
    assert percentile(samples, 10) == 1.0
    assert percentile(samples, 11) == 2.0


def test_a_percentile_is_always_a_measured_value() -> None:
    assert percentile([4.0, 2.0], 50) == 2.0
    assert percentile([4.0, 2.0], 51) == 4.0
    assert percentile([3.5], 99) == 3.5


def test_a_percentile_of_nothing_or_out_of_range_is_an_error() -> None:
    with pytest.raises(ValueError, match="no samples"):
        percentile([], 50)
    for p in (0, -1, 100.5):
        with pytest.raises(ValueError, match="percentile"):
            percentile([1.0], p)


def test_the_summary_has_the_median_the_tails_and_the_max() -> None:
    samples = [float(k) for k in range(1, 201)]
    assert summary(samples) == {"p50": 100.0, "p90": 180.0, "p99": 198.0, "max": 200.0}


def test_the_schedule_is_open_loop_at_the_rate() -> None:
    assert schedule(5, 2.0) == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert schedule(0, 10.0) == []
    due = schedule(1000, 250.0)
    assert due[-1] == pytest.approx(999 / 250)
    assert all(b - a == pytest.approx(1 / 250) for a, b in itertools.pairwise(due))


def test_the_schedule_refuses_a_rate_that_is_not_positive() -> None:
    with pytest.raises(ValueError, match="rate"):
        schedule(3, 0.0)
    with pytest.raises(ValueError, match="count"):
        schedule(-1, 1.0)


def test_the_achieved_rate_counts_the_gaps_between_sends() -> None:
    assert achieved_rate([10.0, 10.5, 11.0]) == pytest.approx(2.0)
    assert achieved_rate([3.0, 1.0, 2.0]) == pytest.approx(1.0)
    assert achieved_rate([1.0]) is None
    assert achieved_rate([2.0, 2.0]) is None


def test_the_rate_after_a_backlog_starts_when_the_backlog_was_in() -> None:
    times = [0.0, 0.1, 0.2, 1.2, 2.2]  # two in, then three more each a second apart
    assert rate_after(times, 2) == pytest.approx((3, 2.1))
    assert rate_after(times, 4) == pytest.approx((1, 1.0))
    with pytest.raises(ValueError, match="cannot measure"):
        rate_after(times, 5)
    with pytest.raises(ValueError, match="cannot measure"):
        rate_after(times, 0)


def test_the_rate_of_the_first_admissions_starts_at_the_very_first() -> None:
    times = [5.0, 5.5, 6.0, 9.0]
    assert rate_of_first(times, 2) == pytest.approx((2, 1.0))
    with pytest.raises(ValueError, match="cannot measure"):
        rate_of_first(times, 4)


def test_tenths_keep_the_order_and_every_sample() -> None:
    samples = [float(k) for k in range(25)]
    parts = tenths(samples)
    assert len(parts) == 10
    assert [x for part in parts for x in part] == samples
    assert {len(part) for part in parts} <= {2, 3}
    assert tenths([1.0, 2.0, 3.0]) == [[1.0], [2.0], [3.0]]
    assert tenths([]) == []
