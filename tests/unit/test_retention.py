"""The retention task: its policy, who prunes, and a pass against the in-memory store (wrapped to
fail on demand): counters, the log line, and failures that wait for the next interval."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import structlog

from persistence.errors import StoreUnavailable
from persistence.memory import MemoryRuntimeStore
from persistence.ports import PruneReport
from schemas import InputPhase
from tests.contract.faults import FaultyStore
from tests.contract.runtime_builders import NOW, created, record
from worker.config import Settings
from worker.metrics import Metrics
from worker.retention import Retention, RetentionPolicy, prunes_here

pytestmark = pytest.mark.unit

LATER = NOW + timedelta(days=30)


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    assert value is not None, f"{name}{labels} is not exported"
    return value


def test_the_policy_comes_from_the_settings_and_gives_the_cutoffs() -> None:
    settings = Settings(outbox_retention_seconds=60, dedupe_window_seconds=3600,
                        retention_interval_seconds=5)
    policy = RetentionPolicy.from_settings(settings)
    assert policy == RetentionPolicy(timedelta(minutes=1), timedelta(hours=1), 5.0)
    assert policy.cutoffs(NOW) == (NOW - timedelta(minutes=1), NOW - timedelta(hours=1))


def test_the_defaults_keep_an_hour_of_events_and_a_week_of_dedupe() -> None:
    policy = RetentionPolicy.from_settings(Settings())
    assert policy == RetentionPolicy(timedelta(hours=1), timedelta(days=7), 60.0)
    assert Settings().dead_letter_max_length == 100_000


@pytest.mark.parametrize("policy", [
    {"outbox_retention": timedelta(0)},
    {"dedupe_window": timedelta(seconds=-1)},
    {"interval_seconds": 0.0},
])
def test_an_unusable_policy_is_refused(policy: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="retention policy"):
        RetentionPolicy(**policy)  # type: ignore[arg-type]


@pytest.mark.parametrize(("me", "live", "prunes"), [
    ("b", ["c", "a", "b"], False),
    ("a", ["c", "a", "b"], True),
    ("a", [], True),
    (None, ["a"], True),
])
def test_the_first_live_worker_prunes(me: str | None, live: list[str], prunes: bool) -> None:
    assert prunes_here(me, live) is prunes


async def test_a_pass_prunes_counts_and_logs() -> None:
    store = MemoryRuntimeStore()
    runtime_id = await created(store, *(record(s, phase=InputPhase.CONSUMED) for s in (1, 2)),
                               record(3))
    metrics = Metrics()
    retention = Retention(store, RetentionPolicy(), metrics, clock=lambda: LATER)

    with structlog.testing.capture_logs() as logs:
        report = await retention.tick()

    assert report == PruneReport(inputs=2)
    assert [r.phase for r in await store.list_inputs(runtime_id)] == [InputPhase.QUEUED]
    assert sample(metrics, "meerkat_retention_deleted_total", table="inputs") == 2
    assert sample(metrics, "meerkat_retention_deleted_total", table="event_outbox") == 0
    pruned = [e for e in logs if e["event"] == "retention_pruned"]
    assert len(pruned) == 1
    assert pruned[0]["inputs"] == 2

    with structlog.testing.capture_logs() as logs:
        assert await retention.tick() == PruneReport()
    assert not [e for e in logs if e["event"] == "retention_pruned"], "nothing deleted, no log"


async def test_a_failed_prune_is_logged_and_the_next_pass_tries_again() -> None:
    store = FaultyStore(MemoryRuntimeStore())
    await created(store.inner, record(1, phase=InputPhase.ABANDONED))
    metrics = Metrics()
    retention = Retention(store, RetentionPolicy(), metrics, clock=lambda: LATER)
    store.fail_next("prune", error=StoreUnavailable("database away"))

    with structlog.testing.capture_logs() as logs:
        assert await retention.tick() is None

    assert [e["step"] for e in logs if e["event"] == "retention_failed"] == ["prune"]
    assert sample(metrics, "meerkat_retention_failures_total", step="prune") == 1
    assert await retention.tick() == PruneReport(inputs=1)
    assert retention.passes == 2
    assert retention.deleted == PruneReport(inputs=1)


async def test_only_the_elected_worker_prunes() -> None:
    store = FaultyStore(MemoryRuntimeStore())
    retention = Retention(store, RetentionPolicy(), Metrics(), should_prune=lambda: False)
    assert await retention.tick() is None
    assert store.calls["prune"] == 0


async def test_the_dead_queue_gauge_keeps_its_value_when_a_measurement_fails() -> None:
    depths: list[int | Exception] = [7, ConnectionError("broker away"), 9]

    async def measure() -> int:
        depth = depths.pop(0)
        if isinstance(depth, Exception):
            raise depth
        return depth

    metrics = Metrics()
    retention = Retention(MemoryRuntimeStore(), RetentionPolicy(), metrics,
                          measure_dead_queue=measure, dead_letter_max_length=500,
                          clock=lambda: datetime.now(UTC))
    assert sample(metrics, "meerkat_dead_letter_queue_max_length") == 500

    seen = []
    for _ in range(3):
        await retention.tick()
        seen.append(sample(metrics, "meerkat_dead_letter_queue_messages"))

    assert seen == [7, 7, 9]
    assert sample(metrics, "meerkat_retention_failures_total", step="dead_letter_queue") == 1
