"""The traffic of one fault run, and the producer that publishes it and keeps the published log.

Traffic is what users send: prompts spread round-robin over a set of runtimes (so each runtime
sees an ordered stream of its own), about one in ten carrying a small inline PNG so the blob
store is on the path, and, where a scenario asks for it, hostile bodies addressed to the same
runtimes. Texts carry their position (``<label>-<i>``) so a log line names the message.

The producer publishes a paced stream, one message at a time, waiting for the broker's confirm
before the next:
that is what "in per-runtime order" means to the broker, and a message is written to the
published log only after its confirm (a record of a message the broker never took would be
reported as lost, rightly). Hostile messages are recorded with ``record_hostile``: they must end
in the dead queue, never in the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from uuid import uuid4

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, DeliveryMode
from aiormq.exceptions import AMQPConnectionError, AMQPError, ChannelInvalidStateError

from schemas import INPUT_MESSAGE_TYPE, InputEnvelope
from tests.integration.conftest import PNG_1X1, new_runtime_id
from worker.cli.publish import build_prompt, publish_confirmed, publish_input
from worker.history.published import PublishedLog
from worker.topology import Topology

IMAGE_EVERY = 10
"""One prompt in this many carries an inline image."""
DEEP_ARRAY_LEVELS = 10_000
"""``[`` nested this deep: 20 KB of brackets, far past any sane JSON depth limit."""
DEEP_OBJECT_LEVELS = 5_000
REPUBLISH_SECONDS = 60.0
"""How long a publish is retried while the broker is away (a restart takes 5-10 s)."""
CONFIRM_SECONDS = 10.0
RECONNECT_SECONDS = 0.25


@dataclass(frozen=True)
class Hostile:
    runtime_id: str
    body: bytes
    message_id: str


def new_runtimes(count: int) -> list[str]:
    return [new_runtime_id() for _ in range(count)]


def build_prompts(runtimes: Sequence[str], count: int, png: Path, label: str
                  ) -> list[InputEnvelope]:
    """``count`` prompts round-robin over ``runtimes``; every ``IMAGE_EVERY``-th has a PNG."""
    return [
        build_prompt(runtimes[i % len(runtimes)], f"{label}-{i}",
                     [png] if i % IMAGE_EVERY == IMAGE_EVERY - 1 else [])
        for i in range(count)
    ]


def write_png(directory: Path) -> Path:
    path = directory / "pixel.png"
    path.write_bytes(PNG_1X1)
    return path


def deep_array(runtime_id: str) -> Hostile:
    """10,000 nested ``[`` (and their ``]``): not even a JSON object."""
    body = b"[" * DEEP_ARRAY_LEVELS + b"]" * DEEP_ARRAY_LEVELS
    return Hostile(runtime_id, body, str(uuid4()))


def deep_object(runtime_id: str) -> Hostile:
    """An input envelope whose ``input`` is objects nested 5,000 deep: readable runtime id,
    so a parser that gets that far could even route it."""
    nested = '{"a":' * DEEP_OBJECT_LEVELS + "1" + "}" * DEEP_OBJECT_LEVELS
    body = f'{{"runtime_id":{json.dumps(runtime_id)},"input":{nested}}}'.encode()
    return Hostile(runtime_id, body, str(uuid4()))


Traffic = InputEnvelope | Hostile


class Producer:
    """Publishes to one topology with publisher confirms and records every confirmed message.

    A publish that fails because the broker went away is retried on a new connection until
    :data:`REPUBLISH_SECONDS` have passed, as a careful producer does. If the broker had taken
    the message before it died, it now holds two copies: the worker must recognise the second
    by its input id, which is part of what a broker restart tests. Only a confirmed message is
    recorded, once.
    """

    def __init__(self, amqp_url: str, topology: Topology, log: PublishedLog) -> None:
        self.amqp_url = amqp_url
        self.topology = topology
        self.log = log
        self.published = 0
        self.retried = 0
        """Publishes tried again after the broker went away."""
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._connecting = asyncio.Lock()

    async def _ready_channel(self) -> AbstractChannel:
        # A plain connection, opened again when it died: a robust one would add its retry
        # interval and republish behind our back.
        async with self._connecting:  # lanes publishing at once share one connection
            if self._channel is None or self._channel.is_closed:
                await self.close()
                self._connection = await aio_pika.connect(self.amqp_url)
                self._channel = await self._connection.channel(publisher_confirms=True)
            return self._channel

    async def publish(self, item: Traffic) -> None:
        """Publish one message, riding out a broker outage; record it once confirmed."""
        deadline = time.monotonic() + REPUBLISH_SECONDS
        while True:
            try:
                channel = await self._ready_channel()
                await asyncio.wait_for(self._send(channel, item), CONFIRM_SECONDS)
                break
            except (AMQPConnectionError, ChannelInvalidStateError, OSError, TimeoutError):
                if time.monotonic() > deadline:
                    raise
                self.retried += 1
                await self.close()
                await asyncio.sleep(RECONNECT_SECONDS)
        if isinstance(item, Hostile):
            self.log.record_hostile(item.runtime_id, item.message_id)
        else:
            self.log.record_input(item)
        self.published += 1

    async def _send(self, channel: AbstractChannel, item: Traffic) -> None:
        if isinstance(item, InputEnvelope):
            await publish_input(channel, item, topology=self.topology)
            return
        message = aio_pika.Message(
            item.body, content_type="application/json", delivery_mode=DeliveryMode.PERSISTENT,
            message_id=item.message_id, type=INPUT_MESSAGE_TYPE,
        )
        await publish_confirmed(channel, message, item.runtime_id, topology=self.topology)

    async def publish_stream(self, items: Sequence[Traffic], per_second: float,
                             lanes: int = 1) -> None:
        """Publish in order at about ``per_second`` messages a second (a steady stream, so a
        fault injected meanwhile meets traffic arriving before, during and after it).

        With ``lanes`` > 1 the runtimes are split over that many lanes publishing at once, each
        one message at a time: every runtime's messages are still published, confirmed and
        recorded in order, while the stream is no longer bound by one confirm's round trip.
        """
        started = time.monotonic()
        by_lane: list[list[tuple[int, Traffic]]] = [[] for _ in range(lanes)]
        for index, item in enumerate(items):
            runtime_id = item.runtime_id
            by_lane[zlib.crc32(runtime_id.encode()) % lanes].append((index, item))

        async def lane(scheduled: list[tuple[int, Traffic]]) -> None:
            for index, item in scheduled:
                # Pacing, not waiting for anything: the producer's rate is part of the scenario.
                ahead = started + index / per_second - time.monotonic()
                if ahead > 0:
                    await asyncio.sleep(ahead)
                await self.publish(item)

        await asyncio.gather(*(lane(scheduled) for scheduled in by_lane if scheduled))

    async def close(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None:
            # Closed even when the broker closed it: aio-pika's finaliser would otherwise
            # start a close nobody awaits. Nothing is left to fail on a dead connection.
            with contextlib.suppress(AMQPError, TimeoutError, OSError, RuntimeError):
                await asyncio.wait_for(connection.close(), 10)
