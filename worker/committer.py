"""Group commit: the deliveries of a few milliseconds become one transaction.

Deliveries from every shard consumer of this process arrive in one inbox, in the order each
queue delivered them, so one runtime's messages are decided in publish order. A batch is decided
message by message (each on the state the previous one produced), committed once, and only then
settled: acks for what committed, dead letters for permanent rejections, replies after both.

When the commit fails, nothing was swapped in. A dependency outage (database or blob store
unreachable) pauses processing until the dependency answers again (readiness reports it), then
gives the batch back with ``reject(requeue=True)``: an outage costs each in-flight message one
delivery, whatever its length. Any other failure retries the batch one message at a time, which
isolates the culprit; a single message that still fails is requeued with backoff, and on its last
allowed delivery it is dead-lettered with the reason instead of being retried forever.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from uuid import UUID

import structlog
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage
from tenacity import AsyncRetrying, retry_if_exception, wait_exponential, wait_random

from persistence.errors import StoreError, StoreUnavailable, VersionConflict
from schemas import Limits, Outcome, Rejected
from worker import settle
from worker.commit_batch import CommitBatch
from worker.core import Decision
from worker.driver import RuntimeDriver
from worker.metrics import Metrics
from worker.parsing import ParsedCommand, ParsedInput, ParsedMessage, Unparseable, parse_delivery
from worker.replies import ReplyPublisher

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Delivery:
    message: AbstractIncomingMessage
    parsed: ParsedMessage

    @property
    def runtime_id(self) -> str | None:
        return self.parsed.runtime_id


def is_outage(exc: BaseException) -> bool:
    """A dependency could not be reached (as opposed to a message-specific failure)."""
    return isinstance(exc, StoreUnavailable | ConnectionError | OSError | TimeoutError)


class Committer:
    def __init__(
        self,
        driver: RuntimeDriver,
        dead_letters: AbstractExchange,
        replies: ReplyPublisher,
        *,
        limits: Limits,
        delivery_limit: int,
        window_seconds: float = 0.005,
        max_batch: int = 256,
        on_commit: Callable[[], None] = lambda: None,
        metrics: Metrics | None = None,
    ) -> None:
        self._metrics = metrics or Metrics()
        self._driver = driver
        self._dead_letters = dead_letters
        self._replies = replies
        self._limits = limits
        self._delivery_limit = delivery_limit
        self._window = window_seconds
        self._max_batch = max_batch
        self._on_commit = on_commit
        self._inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self._stopping = False
        self.healthy = True
        self.settled = 0
        """Deliveries settled for good: acked after their commit, or dead-lettered."""
        self._settled_changed = asyncio.Condition()
        self.failures = 0
        """Batches whose decide-and-commit failed (each then retried or given back)."""
        self._idle = asyncio.Event()
        self._idle.set()

    def submit(self, message: AbstractIncomingMessage) -> None:
        self._idle.clear()
        self._inbox.put_nowait(message)

    async def run(self) -> None:
        """Take batches until :meth:`stop` (deliveries still waiting are given back by
        :meth:`release_pending`)."""
        while not self._stopping:
            batch = await self._next_batch()
            await self.process([self._parse(m) for m in batch])
            if self._inbox.empty():
                self._idle.set()

    async def _next_batch(self) -> list[AbstractIncomingMessage]:
        first = await self._inbox.get()
        if self._window > 0:
            await asyncio.sleep(self._window)
        batch = [first]
        while len(batch) < self._max_batch and not self._inbox.empty():
            batch.append(self._inbox.get_nowait())
        return batch

    def stop(self) -> None:
        self._stopping = True

    async def release_pending(self) -> int:
        """Requeue every delivery taken but not started (RabbitMQ 3.10 still counts it as a
        delivery toward the limit)."""
        released = 0
        while not self._inbox.empty():
            message = self._inbox.get_nowait()
            with contextlib.suppress(Exception):
                await settle.release(message)
                released += 1
        self._idle.set()
        return released

    async def wait_idle(self) -> None:
        await self._idle.wait()

    async def _count_settled(self, count: int) -> None:
        async with self._settled_changed:
            self.settled += count
            self._settled_changed.notify_all()

    async def wait_settled(self, count: int) -> None:
        """Until at least ``count`` deliveries have been settled for good (tests use it)."""
        async with self._settled_changed:
            await self._settled_changed.wait_for(lambda: self.settled >= count)

    @property
    def idle(self) -> bool:
        return self._idle.is_set() and self._inbox.empty()

    def _parse(self, message: AbstractIncomingMessage) -> Delivery:
        parsed = parse_delivery(message.body, message.type, self._limits)
        kind = {ParsedInput: "input", ParsedCommand: "command"}.get(type(parsed), "malformed")
        self._metrics.messages_received.labels(kind=kind).inc()
        return Delivery(message, parsed)

    async def process(self, batch: list[Delivery]) -> None:
        try:
            decided = await self._decide_and_commit(batch)
        except Exception as exc:
            await self._recover_from(batch, exc)
            return
        await self._settle(decided)

    async def _decide_and_commit(
        self, batch: list[Delivery]
    ) -> list[tuple[Delivery, Decision | None]]:
        # Only a lone or redelivered message pays for the store's dedupe lookups; in a batch
        # a duplicate trips a unique key and the batch is retried one message at a time.
        look_up = len(batch) == 1
        async with self._driver.batch() as commit:
            decided = [(d, await self._decide(commit, d, look_up)) for d in batch]
            with self._metrics.commit_seconds.time():
                await commit.commit()
        self._metrics.commits.inc()
        self._metrics.commit_batch_size.observe(len(batch))
        self._on_commit()
        return decided

    async def _decide(
        self, commit: CommitBatch, delivery: Delivery, look_up: bool
    ) -> Decision | None:
        parsed = delivery.parsed
        look_up = look_up or delivery.message.redelivered is True
        if isinstance(parsed, ParsedInput):
            return await commit.accept_input(
                parsed.runtime_id, parsed.item, message_bytes=parsed.size, look_up_stored=look_up
            )
        if isinstance(parsed, ParsedCommand):
            return await commit.apply_command(
                parsed.runtime_id, parsed.command, look_up_stored=look_up
            )
        if parsed.runtime_id is None:
            return None  # nothing names a runtime: dead-letter only
        subject = delivery.message.message_id
        return await commit.refuse(
            parsed.runtime_id, parsed.reason, subject=_uuid(subject), command=parsed.is_command
        )

    async def _settle(self, decided: list[tuple[Delivery, Decision | None]]) -> None:
        outcomes = [(delivery, _outcome(delivery, decision)) for delivery, decision in decided]
        acks = []
        for delivery, outcome in outcomes:
            if isinstance(outcome, Rejected):
                self._metrics.messages_dead_lettered.labels(reason=outcome.reason.reject_type).inc()
                await settle.dead_letter(
                    delivery.message, self._dead_letters, outcome.reason.model_dump_json()
                )
            else:
                acks.append(delivery.message)
        await settle.ack_committed(acks)
        self._metrics.messages_acked.inc(len(acks))
        await self._count_settled(len(decided))
        for delivery, outcome in outcomes:
            if outcome is not None:
                await self._replies.reply(delivery.message, delivery.runtime_id, outcome)

    async def _recover_from(self, batch: list[Delivery], exc: Exception) -> None:
        log.warning("commit_failed", size=len(batch), error=repr(exc))
        self.failures += 1
        self._metrics.commit_failures.labels(error=type(exc).__name__).inc()
        if is_outage(exc):
            await self._wait_until_healthy()
            await self._give_back(batch, exc)
        elif len(batch) > 1:
            for delivery in batch:
                await self.process([delivery])
        else:
            if isinstance(exc, StoreError) and not isinstance(exc, VersionConflict):
                for delivery in batch:  # the cached copy may disagree with the store
                    if delivery.runtime_id:
                        self._driver.drop(delivery.runtime_id)
            await asyncio.sleep(_backoff(settle.delivery_count(batch[0].message)))
            await self._give_back(batch, exc)

    async def _give_back(self, batch: list[Delivery], exc: Exception) -> None:
        for delivery in batch:
            deliveries = settle.delivery_count(delivery.message) + 1
            if deliveries >= self._delivery_limit:
                reason = f"gave up after {deliveries} deliveries: {type(exc).__name__}: {exc}"
                self._metrics.messages_dead_lettered.labels(reason="delivery_limit").inc()
                await settle.dead_letter(delivery.message, self._dead_letters, reason)
                await self._count_settled(1)
            else:
                self._metrics.messages_requeued.labels(reason=type(exc).__name__).inc()
                await settle.requeue(delivery.message)

    async def _wait_until_healthy(self) -> None:
        """Back off until the database and the blob store answer again."""
        self.healthy = False
        retrying = AsyncRetrying(
            wait=wait_exponential(multiplier=0.1, max=5.0) + wait_random(0, 0.1),
            retry=retry_if_exception(lambda e: not self._stopping),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    await self._driver.store.ping()
                    await self._driver.blobs.ping()
        except Exception:
            if not self._stopping:
                raise
        finally:
            self.healthy = True


def _outcome(delivery: Delivery, decision: Decision | None) -> Outcome | None:
    """What the delivery comes to: a message that does not parse is rejected, whether or not
    it named a runtime to record the rejection on."""
    if isinstance(delivery.parsed, Unparseable):
        return Rejected(reason=delivery.parsed.reason)
    return decision.outcome if decision is not None else None


def _backoff(previous_deliveries: int) -> float:
    return float(min(0.1 * 2**previous_deliveries, 5.0))


def _uuid(value: str | None) -> UUID | None:
    try:
        return UUID(value) if value else None
    except ValueError:
        return None
