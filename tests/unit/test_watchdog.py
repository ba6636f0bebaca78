"""The watchdog: liveness fails when deliveries wait and nothing has moved for too long, and only
then; a wedged task that supervision cannot see is caught by it."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from tests.unit.timing import WAIT_SECONDS, Clock, within
from worker.health import HealthServer, ReadinessError
from worker.metrics import Metrics
from worker.supervisor import Supervisor
from worker.watchdog import Watchdog

pytestmark = pytest.mark.unit

@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def watchdog(clock: Clock) -> Watchdog:
    return Watchdog(stall_seconds=60, clock=clock)


def test_deliveries_waiting_too_long_fail_the_check(watchdog: Watchdog, clock: Clock) -> None:
    watchdog.received(12)
    clock.advance(75)

    with pytest.raises(ReadinessError) as raised:
        watchdog.check()

    assert str(raised.value) == "no delivery settled for 75s while 12 wait"


def test_a_settle_restarts_the_stall_clock(watchdog: Watchdog, clock: Clock) -> None:
    watchdog.received(3)
    clock.advance(59)
    watchdog.settled()
    clock.advance(59)

    watchdog.check()
    assert watchdog.waiting == 2

    clock.advance(2)
    with pytest.raises(ReadinessError, match="while 2 wait"):
        watchdog.check()


def test_exactly_the_stall_time_is_not_yet_a_stall(watchdog: Watchdog, clock: Clock) -> None:
    watchdog.received()
    clock.advance(60)

    watchdog.check()


def test_progress_without_settling_keeps_the_worker_alive(
    watchdog: Watchdog, clock: Clock
) -> None:
    # The database is away for ten minutes: deliveries wait, each retry is progress.
    watchdog.received(5)
    for _ in range(30):
        clock.advance(20)
        watchdog.progressed()
        watchdog.check()

    assert watchdog.waiting == 5


def test_nothing_waiting_is_never_a_stall(watchdog: Watchdog, clock: Clock) -> None:
    watchdog.received(4)
    watchdog.settled(4)
    clock.advance(3600)

    watchdog.check()
    assert watchdog.waiting == 0
    assert watchdog.seconds_since_progress() == 0


def test_work_arriving_after_a_quiet_hour_is_not_a_stall(
    watchdog: Watchdog, clock: Clock
) -> None:
    clock.advance(3600)
    watchdog.received()
    clock.advance(30)

    watchdog.check()
    assert watchdog.seconds_since_progress() == 30


def test_more_settled_than_received_counts_as_none_waiting(watchdog: Watchdog) -> None:
    watchdog.received(1)
    watchdog.settled(2)

    assert watchdog.waiting == 0
    assert (watchdog.received_count, watchdog.settled_count) == (1, 2)


def test_a_stall_time_must_be_positive() -> None:
    with pytest.raises(ValueError, match="stall_seconds"):
        Watchdog(stall_seconds=0)


def test_the_gauges_are_refreshed_on_render(clock: Clock) -> None:
    metrics = Metrics()
    watchdog = Watchdog(stall_seconds=60, clock=clock, metrics=metrics)
    watchdog.received(7)
    watchdog.settled(3)
    clock.advance(12)

    text = metrics.render().decode()

    assert "meerkat_deliveries_waiting 4.0" in text
    assert "meerkat_seconds_since_progress 12.0" in text


class WedgingCommitter:
    """An in-memory committer that settles each delivery, until one wedges it: it then awaits
    forever, as a lost wake-up would, without raising or returning."""

    WEDGE = "wedge"

    def __init__(self, watchdog: Watchdog) -> None:
        self.watchdog = watchdog
        self.deliveries: asyncio.Queue[str] = asyncio.Queue()
        self.wedged = asyncio.Event()

    def deliver(self, body: str) -> None:
        self.watchdog.received()
        self.deliveries.put_nowait(body)

    async def run(self) -> None:
        while True:
            body = await self.deliveries.get()
            if body == self.WEDGE:
                self.wedged.set()
                await asyncio.Event().wait()
            self.watchdog.settled()


async def get_json(server: HealthServer, path: str) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{server.port}{path}") as response,
    ):
        return response.status, await response.json()


async def test_a_wedged_task_is_caught_by_the_watchdog_not_by_supervision(
    watchdog: Watchdog, clock: Clock
) -> None:
    fatal: list[str] = []
    supervisor = Supervisor(on_fatal=lambda name, _: fatal.append(name), clock=clock)
    committer = WedgingCommitter(watchdog)
    health = HealthServer(Metrics())
    health.add_check("tasks", supervisor.readiness)
    health.add_liveness_check("pipeline", watchdog.check)
    await health.start("127.0.0.1", 0)
    try:
        supervisor.spawn("committer", committer.run)
        for delivery in ("first", "second", WedgingCommitter.WEDGE):
            committer.deliver(delivery)
        await within(committer.wedged.wait(), "the committer to wedge")
        clock.advance(75)

        status, body = await get_json(health, "/healthz")

        assert status == 503
        assert body["failing"] == {"pipeline": "no delivery settled for 75s while 1 wait"}
        assert health.metrics.registry.get_sample_value("meerkat_liveness") == 0
        # Supervision sees a running task: that is why liveness watches progress.
        await supervisor.readiness()
        assert fatal == []
    finally:
        await supervisor.stop(timeout=WAIT_SECONDS)
        await health.stop()
