"""Bounded waits that never swallow a cancellation.

Theory of operation
-------------------
Every long-lived task of the worker (the inbox, the outbox relay, the membership loops, the run
loop) is stopped by cancelling it, and its supervisor then waits for it to end. On Python 3.11,
``asyncio.wait_for`` breaks that: when the waiting task is cancelled in the same turn of the
event loop as the awaited thing completes, it returns the result and drops the cancellation
(fixed in 3.12, where ``wait_for`` is built on ``asyncio.timeout``). A relay notified by a
commit at the moment its worker stopped went on running after the worker had closed its
connections. So the worker bounds its waits with :func:`bounded` and :func:`event_set`, which
are built on ``asyncio.timeout``: the awaited thing runs in the waiting task, and a cancellation
is delivered to it whatever else completes in that turn. ``tests/unit/test_deadline.py`` keeps
``asyncio.wait_for`` out of the package.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def bounded(awaitable: Awaitable[T], seconds: float | None) -> T:
    """``await awaitable``; :class:`TimeoutError` after ``seconds`` (None: no bound), having
    cancelled it."""
    async with asyncio.timeout(seconds):
        return await awaitable


async def event_set(event: asyncio.Event, seconds: float | None) -> bool:
    """Wait until ``event`` is set or ``seconds`` have passed; whether it is set."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
    return event.is_set()
