"""The services a scenario uses: a fresh database, a private topology prefix, condition waits.

``fresh_database`` creates ``bench_<hex>`` on the server of the admin URL (empty, or a copy of a
template database) and drops it (``WITH (FORCE)``) afterwards. ``Prefix`` names the exchanges
and queues of the README's topology under one prefix and deletes them afterwards.
``wait_for_count`` polls a count until it reaches its target (rising, or falling to it) and
fails, naming what it awaited, when the count stops moving.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit
from uuid import uuid4

import aio_pika
import asyncpg  # type: ignore[import-untyped]
from aio_pika.abc import AbstractRobustConnection
from aiormq.exceptions import ChannelNotFoundEntity

from bench.errors import BenchFailure

POLL_SECONDS = 0.1


def with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name``."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def with_scheme(url: str, scheme: str) -> str:
    return urlunsplit(urlsplit(url)._replace(scheme=scheme))


def asyncpg_url(url: str) -> str:
    """A PostgreSQL URL as asyncpg takes it (``postgresql+asyncpg://`` becomes ``postgresql://``)."""
    return with_scheme(url, "postgresql")


TEMPLATE_ATTEMPTS = 20
"""Tries at copying a template that another session (autovacuum, say) is still connected to."""


async def connect_admin(admin_url: str) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(asyncpg_url(admin_url))
    except (OSError, asyncpg.PostgresError) as exc:
        raise BenchFailure(f"cannot reach PostgreSQL at {admin_url}: {exc}") from exc


async def create_database(admin: asyncpg.Connection, name: str, template: str | None) -> None:
    """``CREATE DATABASE``, as a copy of ``template`` when given. PostgreSQL refuses to copy a
    database while anyone is connected to it; that is tried again, a few times."""
    statement = f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")
    for attempt in range(TEMPLATE_ATTEMPTS):
        try:
            await admin.execute(statement)
            return
        except asyncpg.ObjectInUseError:
            if attempt == TEMPLATE_ATTEMPTS - 1:
                raise BenchFailure(f"template database {template} stayed in use") from None
            await asyncio.sleep(POLL_SECONDS)  # the other session's disconnect is not signalled


@contextlib.asynccontextmanager
async def fresh_database(admin_url: str, template: str | None = None) -> AsyncIterator[str]:
    """A new database on the admin URL's server, empty or a copy of ``template``; yields its
    asyncpg URL."""
    name = f"bench_{uuid4().hex[:12]}"
    admin = await connect_admin(admin_url)
    try:
        await create_database(admin, name, template)
        try:
            yield with_database(asyncpg_url(admin_url), name)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def connect_broker(amqp_url: str) -> AbstractRobustConnection:
    try:
        return await aio_pika.connect_robust(amqp_url)
    except OSError as exc:
        raise BenchFailure(f"cannot reach RabbitMQ at {amqp_url}: {exc}") from exc


@dataclass(frozen=True)
class Prefix:
    """The README's topology under one prefix (``MEERKAT_TOPOLOGY_PREFIX``)."""

    name: str
    shards: int

    @classmethod
    def fresh(cls, shards: int) -> Prefix:
        return cls(f"bench-{uuid4().hex[:12]}", shards)

    @property
    def ingress(self) -> str:
        return f"{self.name}.ingress"

    @property
    def dead_queue(self) -> str:
        return f"{self.name}.dead"

    @property
    def events(self) -> str:
        return f"{self.name}.events"

    @property
    def event_sink(self) -> str:
        """The benchmark's queue bound to the events exchange (see :func:`bind_event_sink`)."""
        return f"{self.name}.bench-events"

    def shard_queues(self) -> list[str]:
        return [f"{self.ingress}.{k:02d}" for k in range(self.shards)]

    def queues(self) -> list[str]:
        return [*self.shard_queues(), self.dead_queue]

    def exchanges(self) -> list[str]:
        return [self.ingress, f"{self.name}.commands", f"{self.name}.dead-letter", self.events]


async def bind_event_sink(connection: AbstractRobustConnection, prefix: Prefix) -> None:
    """Bind a queue that drops everything (``x-max-length: 0``) to the events exchange with
    ``#``: the events are routed, as where a consumer listens, and the broker keeps none. (With
    nothing bound, every event published ``mandatory`` would come back to the worker.)"""
    channel = await connection.channel()
    try:
        queue = await channel.declare_queue(
            prefix.event_sink, durable=False, arguments={"x-max-length": 0}
        )
        await queue.bind(prefix.events, routing_key="#")
    finally:
        await channel.close()


async def queue_depths(connection: AbstractRobustConnection, names: list[str]) -> dict[str, int]:
    """Messages per queue, by passive declare (RabbitMQ's count for a quorum queue includes
    deliveries not yet acked; the checks read it once the consumer has gone, when every unacked
    delivery is back in its queue). A missing queue fails."""
    depths: dict[str, int] = {}
    channel = await connection.channel()
    try:
        for name in names:
            try:
                queue = await channel.declare_queue(name, passive=True)
            except ChannelNotFoundEntity as exc:
                raise BenchFailure(f"queue {name} does not exist") from exc
            depths[name] = queue.declaration_result.message_count or 0
    finally:
        with contextlib.suppress(Exception):
            await channel.close()
    return depths


async def delete_broker_names(
    connection: AbstractRobustConnection, queues: list[str], exchanges: list[str]
) -> None:
    """Delete the queues and exchanges, skipping those that do not exist."""
    for name in queues:
        channel = await connection.channel()
        with contextlib.suppress(ChannelNotFoundEntity):
            await channel.queue_delete(name)
        with contextlib.suppress(Exception):
            await channel.close()
    for name in exchanges:
        channel = await connection.channel()
        with contextlib.suppress(ChannelNotFoundEntity):
            await channel.exchange_delete(name)
        with contextlib.suppress(Exception):
            await channel.close()


async def wait_for_count(
    what: str,
    count: Callable[[], Awaitable[int]],
    target: int,
    *,
    stall_seconds: float,
    alive: Callable[[], None] = lambda: None,
    falling: bool = False,
) -> float:
    """Poll ``count`` until it reaches ``target``; returns the monotonic time it was seen there.

    Fails when the count has not changed for ``stall_seconds``, when it passes the target (above
    it, or below it when ``falling``), or when ``alive`` raises (the worker process has exited).
    """
    last = -1
    moved = time.monotonic()
    while True:
        alive()
        value = await count()
        now = time.monotonic()
        if value == target:
            return now
        if (value < target) if falling else (value > target):
            side = "fewer" if falling else "more"
            raise BenchFailure(f"{what}: {value}, {side} than the {target} expected")
        if value != last:
            last, moved = value, now
        elif now - moved > stall_seconds:
            raise BenchFailure(
                f"timed out waiting for {what}: {value}, not {target}, "
                f"no progress for {stall_seconds:g}s"
            )
        await asyncio.sleep(POLL_SECONDS)
