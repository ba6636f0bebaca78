"""Accept latency: publish → reply, at a paced rate, through the producer client's wire.

:class:`ReplyLine` is one channel with publisher confirms that consumes RabbitMQ's direct
reply-to pseudo-queue; every request is published on it (direct reply-to needs the request
published on the channel that consumes the replies) with :func:`worker.client.wire.
publish_envelope`, the producer client's own publish, with its input id as correlation id. The
worker replies once the input's admission is committed; the line hands each reply to the request
awaiting that correlation id. One channel for all requests, unlike the client's ``request``
(a channel per request), so that opening channels is not what is measured.

:func:`measure_latency` publishes ``requests`` prompts over fresh runtimes open loop, request
``i`` due ``i / rate`` s after the first (:func:`bench.stats.schedule`), and measures each from
just before its publish to its reply's arrival. The publisher's lateness (how far behind its
schedule a publish started) and the rate it achieved are reported with the percentiles. Checks:
one reply per request, each ``accepted`` for its own input id, no reply for anything else.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection
from pydantic import ValidationError

from bench.errors import BenchFailure
from bench.report import Row
from bench.services import Prefix
from bench.session import Session
from bench.stats import achieved_rate, percentile, schedule, summary, tenths
from bench.workload import Message, prompts
from schemas import Accepted, Reply
from worker.client.wire import publish_envelope
from worker.pipeline.authz import DIRECT_REPLY_TO
from worker.topology import Topology


@dataclass(frozen=True)
class Replied:
    monotonic: float
    wall: float
    """``time.time()`` at arrival, to compare with the worker's log."""
    reply: Reply


class ReplyLine:
    """Requests with direct reply-to, any number at once, on one channel."""

    def __init__(self, connection: AbstractRobustConnection, prefix: Prefix) -> None:
        self._connection = connection
        self._topology = Topology(prefix=prefix.name, shards=prefix.shards)
        self._channel: AbstractChannel | None = None
        self._waiting: dict[str, asyncio.Future[Replied]] = {}
        self.strays: list[str] = []
        """Correlation ids of replies nobody awaited (or a second reply to one)."""

    async def open(self) -> None:
        self._channel = await self._connection.channel(publisher_confirms=True)
        replies = await self._channel.get_queue(DIRECT_REPLY_TO, ensure=False)
        await replies.consume(self._on_reply, no_ack=True)

    async def close(self) -> None:
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        arrived, wall = time.monotonic(), time.time()
        key = message.correlation_id or ""
        waiting = self._waiting.get(key)
        if waiting is None or waiting.done():
            self.strays.append(key)
            return
        try:
            waiting.set_result(Replied(arrived, wall, Reply.model_validate_json(message.body)))
        except ValidationError as exc:
            waiting.set_exception(BenchFailure(f"an invalid reply to {key}: {exc}"))

    def expect(self, message: Message) -> asyncio.Future[Replied]:
        """The reply to ``message``, once it is published (registered before the publish, so
        that no reply can arrive unawaited)."""
        future: asyncio.Future[Replied] = asyncio.get_running_loop().create_future()
        self._waiting[str(message.input_id)] = future
        return future

    async def publish(self, message: Message) -> float:
        """Publish ``message`` (confirmed) with this line as ``reply_to``; the monotonic time
        just before the publish."""
        if self._channel is None:
            raise BenchFailure("the reply line is not open")
        started = time.monotonic()
        await publish_envelope(self._channel, message.envelope, reply_to=DIRECT_REPLY_TO,
                               correlation_id=str(message.input_id), topology=self._topology)
        return started


def accepted(message: Message, replied: Replied) -> None:
    """Fails unless the reply says ``message`` was accepted."""
    outcome = replied.reply.outcome
    if not isinstance(outcome, Accepted) or outcome.input_id != message.input_id:
        raise BenchFailure(f"the reply to input {message.input_id} is {outcome!r:.300}")


async def gather_replies(
    futures: list[asyncio.Future[Replied]], stall_seconds: float, what: str
) -> list[Replied]:
    """Every reply; fails when none has come for ``stall_seconds``."""
    pending = {f for f in futures if not f.done()}
    while pending:
        done, pending = await asyncio.wait(pending, timeout=stall_seconds,
                                           return_when=asyncio.FIRST_COMPLETED)
        if not done:
            raise BenchFailure(f"timed out waiting for {what}: {len(pending)} of "
                               f"{len(futures)} unanswered, none for {stall_seconds:g}s")
    return [f.result() for f in futures]


async def measure_latency(
    session: Session, *, requests: int, runtimes: int, rate: float, source: str,
    sustained: float | None = None,
) -> Row:
    """``requests`` prompts over ``runtimes`` fresh runtimes at ``rate``/s, publish → reply.
    ``sustained``: the end-to-end rate the worker kept up in the same session; a rate above it
    is noted (runs of the inputs then compete with the admissions, and queues grow)."""
    messages = prompts(requests, runtimes)
    line = ReplyLine(session.connection, session.prefix)
    await line.open()
    try:
        futures = [line.expect(m) for m in messages]
        due = schedule(len(messages), rate)
        late: list[float] = []
        tasks: list[asyncio.Task[float]] = []
        begun = time.monotonic()
        for message, offset in zip(messages, due, strict=True):
            delay = begun + offset - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)  # pacing: the schedule, not a condition
            late.append(max(0.0, time.monotonic() - begun - offset))
            tasks.append(asyncio.create_task(line.publish(message)))
        session.published.extend(messages)
        sent = list(await asyncio.gather(*tasks))
        replies = await gather_replies(futures, session.context.stall_seconds,
                                       f"replies ({session.name})")
    finally:
        await line.close()
    for message, replied in zip(messages, replies, strict=True):
        accepted(message, replied)
    if line.strays:
        raise BenchFailure(f"{session.name}: {len(line.strays)} unexpected replies "
                           f"({line.strays[:3]})")
    millis = [1000 * (r.monotonic - s) for r, s in zip(replies, sent, strict=True)]
    figures = {k: round(v, 2) for k, v in summary(millis).items()}
    seconds = max(r.monotonic for r in replies) - min(sent)
    achieved = achieved_rate(sent)
    details: dict[str, object] = {
        "target_rate": round(rate, 1), "rate_source": source,
        "achieved_rate": None if achieved is None else round(achieved, 1),
        "publisher_late_ms": {k: round(1000 * v, 2) for k, v in summary(late).items()},
        "runtimes": runtimes,
        "p50_ms_by_tenth": [round(percentile(part, 50), 2) for part in tenths(millis)],
    }
    note = f"at {rate:.1f}/s ({source})"
    if sustained is not None:
        details["e2e_rate"] = round(sustained, 1)
        if rate > sustained:
            note += f", above e2e's {sustained:.1f}/s"
    return Row("latency", f"accept latency, {rate:.0f}/s paced", len(messages), seconds,
               figures["p50"], "ms", percentiles=figures, note=note, details=details)
