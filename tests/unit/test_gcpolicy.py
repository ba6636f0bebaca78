"""The running worker's collector settings: start-up objects frozen, thresholds raised."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from worker import gcpolicy

pytestmark = pytest.mark.unit


@pytest.fixture
def restored_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


@pytest.mark.usefixtures("restored_gc")
def test_tuning_freezes_what_exists_and_raises_the_thresholds() -> None:
    kept = [object() for _ in range(10)]
    gc.unfreeze()
    gcpolicy.tune_for_throughput()
    assert gc.get_threshold() == (
        gcpolicy.YOUNG_THRESHOLD, gcpolicy.MIDDLE_THRESHOLD, gcpolicy.OLD_THRESHOLD
    )
    assert gc.get_freeze_count() >= len(kept)
    assert gc.isenabled()  # cyclic garbage is still collected, only less often


@pytest.mark.usefixtures("restored_gc")
def test_start_up_already_collects_rarely() -> None:
    kept = [object() for _ in range(10)]
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    gcpolicy.collect_rarely()
    assert gc.get_freeze_count() >= len(kept)
    assert gc.get_threshold() == (
        gcpolicy.YOUNG_THRESHOLD, gcpolicy.MIDDLE_THRESHOLD, gcpolicy.OLD_THRESHOLD
    )
