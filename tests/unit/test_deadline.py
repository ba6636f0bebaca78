"""Bounded waits deliver a cancellation even when what they wait for completes in the same turn
of the event loop, so a supervised loop that waits on them stops when it is cancelled."""

from __future__ import annotations

import ast
import asyncio
import contextlib
from pathlib import Path

import pytest

from persistence.memory import MemoryRuntimeStore
from worker.broker import BrokerLink
from worker.deadline import bounded, event_set
from worker.outbox import OutboxRelay
from worker.topology import Topology

pytestmark = pytest.mark.unit

PACKAGES = [Path(__file__).parents[2] / name for name in ("worker", "persistence")]


class Loop:
    """A loop that runs until cancelled, or until the test gives up on it (``running``)."""

    def __init__(self) -> None:
        self.running = True

    async def ended(self, task: asyncio.Task[None]) -> bool:
        """Whether ``task``, just cancelled, ends; one that does not is ended for good."""
        done, _ = await asyncio.wait([task], timeout=5)
        self.running = False
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return bool(done)


async def test_an_event_set_as_its_waiter_is_cancelled_still_cancels_the_waiter() -> None:
    state = Loop()

    async def loop(event: asyncio.Event) -> None:
        while state.running:
            event.clear()
            await event_set(event, 1.0)
            await asyncio.sleep(0)

    for _ in range(50):
        event = asyncio.Event()
        task = asyncio.create_task(loop(event))
        await asyncio.sleep(0)
        event.set()
        await asyncio.sleep(0)  # the wait has its result and the loop is about to resume
        task.cancel()
        assert await state.ended(task), "a loop cancelled as its event was set went on running"


async def test_a_result_arriving_with_the_cancellation_does_not_swallow_it() -> None:
    state = Loop()

    async def loop() -> None:
        while state.running:
            ready = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_soon(ready.set_result, None)
            await bounded(ready, 1.0)

    for _ in range(50):
        task = asyncio.create_task(loop())
        await asyncio.sleep(0)
        task.cancel()
        assert await state.ended(task), "a loop cancelled as its wait completed went on running"


async def test_bounded_raises_timeout_and_event_set_says_whether_it_was_set() -> None:
    with pytest.raises(TimeoutError):
        await bounded(asyncio.Event().wait(), 0.01)
    assert await bounded(asyncio.sleep(0, "done"), None) == "done"
    assert not await event_set(asyncio.Event(), 0.01)
    event = asyncio.Event()
    event.set()
    assert await event_set(event, 0.01)


async def test_an_outbox_relay_notified_as_it_is_cancelled_stops() -> None:
    for _ in range(20):
        passed = asyncio.Event()
        relay = OutboxRelay(MemoryRuntimeStore(), BrokerLink("amqp://127.0.0.1:1/", Topology()),
                            poll_seconds=5.0, on_pass=passed.set)
        task = asyncio.create_task(relay.run())
        await bounded(passed.wait(), 5)
        relay.notify()
        await asyncio.sleep(0)
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=5)
        relay.stop()
        relay.notify()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert done, "an outbox relay notified as it was cancelled went on running"


def test_the_package_bounds_its_waits_only_through_the_deadline_module() -> None:
    offenders = []
    for package in PACKAGES:
        for path in package.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if (isinstance(node, ast.Attribute) and node.attr == "wait_for"
                        and isinstance(node.value, ast.Name) and node.value.id == "asyncio"):
                    offenders.append(f"{path.relative_to(package.parent)}:{node.lineno}")
    assert not offenders, f"asyncio.wait_for can swallow a cancellation: {offenders}"
