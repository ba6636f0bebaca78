"""A worker run in the test's own process, with a producer and an observer beside it.

:class:`WorkerHarness` starts the same :class:`~worker.app.Worker` that ``meerkat-worker run``
starts, on one :class:`~worker.testing.isolation.Deployment`, with the executor the test names
(an ``async def execute(run)`` or a ``"module:callable"`` string) and settings overrides. Next
to it, on a broker connection of the harness's own: a :class:`~worker.client.Client` for the
deployment's topology, an :class:`~worker.testing.observe.EventRecorder` and a
:class:`~worker.testing.observe.DeadLetterTap`, both started (and the topology declared) before
the worker, so nothing the worker emits is missed, and both kept across :meth:`stop` and
:meth:`restart`.

:meth:`run_until_idle` needs no sleep and no polling: the harness counts what it published
(``send``, ``request``, ``prompt``, ``command``, ``publish_raw``), and waits until the workers it
ran have settled that many deliveries for good (acked or dead-lettered; a delivery dropped at a
stop is settled again by the next worker), then until the worker is idle (no run pending, the
outbox published). Messages published by other connections are not counted: pass ``expected``.

:meth:`stop` is the worker's graceful stop (in-flight commits finish; a running executor gets
``shutdown_grace_seconds``, then is abandoned to recovery); :meth:`restart` starts a new worker
on the same deployment, which takes over what the stopped one left, as after a crash.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, Protocol

import aio_pika
from aio_pika.abc import AbstractConnection
from yarl import URL

from persistence.factory import open_runtime_store
from schemas import INPUT_MESSAGE_TYPE, CommandEnvelope, EventCode, EventEnvelope, InputEnvelope
from worker.app import Worker
from worker.cli.dead_letters import DeadLetter
from worker.cli.dlq import list_dead
from worker.cli.store_commands import inspection
from worker.client import Client, CommandOutcome, InputOutcome, messages
from worker.client.producer import Envelope
from worker.client.wire import publish_confirmed
from worker.config import Settings
from worker.connect import broker_addresses
from worker.runs.executors import Executor
from worker.testing.isolation import Deployment
from worker.testing.observe import DEFAULT_WAIT_SECONDS, DeadLetterTap, EventRecorder, within
from worker.topology import Topology

IDLE_WAIT_SECONDS = 60.0

ExecutorChoice = Executor | str | None
"""An executor function, a ``"module:callable"`` path, or None for ``MEERKAT_EXECUTOR``."""


class WorkerFactory(Protocol):
    """The ``meerkat_worker`` fixture: ``await meerkat_worker(executor, **settings)``."""

    async def __call__(self, executor: ExecutorChoice = None, *, serve_http: bool = False,
                       **overrides: Any) -> WorkerHarness: ...


class WorkerHarness:
    """One worker of ``deployment`` at a time, in this process (see the module docstring)."""

    def __init__(self, deployment: Deployment, *, executor: ExecutorChoice = None,
                 serve_http: bool = False, **overrides: Any) -> None:
        self.deployment = deployment
        self.executor = executor
        self._overrides = overrides
        self.settings: Settings = self._settings_for(executor)
        self.topology: Topology = deployment.topology(self.settings)
        self.serve_http = serve_http
        self.events = EventRecorder()
        self.dead = DeadLetterTap()
        self.worker: Worker | None = None
        """The worker running now (the last one after :meth:`stop`)."""
        self.running = False
        self.published = 0
        """Messages published through the harness."""
        self._settled_before = 0
        self._connection: AbstractConnection | None = None
        self._client: Client | None = None

    # --- life cycle ---------------------------------------------------------------------------

    async def start(self) -> WorkerHarness:
        """Connect, declare the topology, start observing, then start a worker."""
        url = broker_addresses(self.settings.amqp_url.get_secret_value())[0]
        self._connection = await aio_pika.connect(url)
        channel = await self._connection.channel()
        await self.topology.declare(channel)
        await self.events.start(channel, self.topology)
        await self.dead.start(channel, self.topology)
        self._client = Client(self._connection, topology=self.topology,
                              user_id=URL(url).user or None)
        await self._start_worker()
        return self

    def _settings_for(self, executor: ExecutorChoice) -> Settings:
        path = {"executor": executor} if isinstance(executor, str) else {}
        return self.deployment.settings(**{**self._overrides, **path})

    async def _start_worker(self) -> None:
        executor = None if isinstance(self.executor, str) else self.executor
        worker = Worker(self.settings, self.topology, executor=executor,
                        serve_http=self.serve_http)
        self.worker = worker
        try:
            await worker.start()
        except BaseException:
            with contextlib.suppress(Exception):
                await worker.stop()  # what it had opened before it failed
            raise
        self.running = True

    async def stop(self) -> None:
        """The worker's graceful stop; the observers keep running."""
        if not self.running or self.worker is None:
            return
        self.running = False
        await self.worker.stop()
        if self.worker.committer is not None:
            self._settled_before += self.worker.committer.settled

    async def restart(self, *, executor: ExecutorChoice = None) -> Worker:
        """Stop the worker (if running) and start a new one on the same deployment, with
        another executor when given."""
        await self.stop()
        if executor is not None:
            self.executor = executor
            self.settings = self._settings_for(executor)
        await self._start_worker()
        assert self.worker is not None
        return self.worker

    async def close(self) -> None:
        """Stop the worker and close the harness's connection."""
        await self.stop()
        if self._client is not None:
            await self._client.close()
        if self._connection is not None and not self._connection.is_closed:
            await self._connection.close()

    # --- producing ----------------------------------------------------------------------------

    @property
    def client(self) -> Client:
        """The producer client for this deployment (what it publishes is not counted by
        :meth:`run_until_idle`; use the harness's own methods for that)."""
        assert self._client is not None, "start() the harness first"
        return self._client

    async def send(self, envelope: Envelope) -> Envelope:
        """Publish an input or a command (confirmed); returns it."""
        await self.client.send(envelope)
        self.published += 1
        return envelope

    async def request(self, envelope: InputEnvelope | CommandEnvelope, *,
                      wait_seconds: float = DEFAULT_WAIT_SECONDS,
                      ) -> InputOutcome | CommandOutcome:
        """Publish and return the worker's outcome (``Accepted``, ``Rejected``, ...)."""
        def count() -> None:
            self.published += 1

        if isinstance(envelope, InputEnvelope):
            return await self.client.request(envelope, wait_seconds=wait_seconds,
                                             on_published=count)
        return await self.client.request(envelope, wait_seconds=wait_seconds,
                                         on_published=count)

    async def prompt(self, runtime_id: str, text: str, **options: Any) -> InputEnvelope:
        """Publish a prompt (``images=``, ``idempotency_key=``, ...: see
        :func:`worker.client.messages.prompt`)."""
        return await self.send(messages.prompt(runtime_id, text, **options))

    async def command(self, runtime_id: str, command_type: str, **fields: Any) -> CommandEnvelope:
        """Publish a lifecycle command by name."""
        return await self.send(messages.command(runtime_id, command_type, **fields))

    async def publish_raw(self, body: bytes, *, routing_key: str, message_id: str | None = None,
                          message_type: str | None = INPUT_MESSAGE_TYPE,
                          exchange: str | None = None, **properties: Any) -> None:
        """Publish any bytes (a poison message, say) to the ingress exchange, or to
        ``exchange``, confirmed and ``mandatory``."""
        assert self._connection is not None, "start() the harness first"
        channel = await self._connection.channel(publisher_confirms=True)
        try:
            message = aio_pika.Message(body, message_id=message_id, type=message_type,
                                       **properties)
            await publish_confirmed(channel, message, routing_key, topology=self.topology,
                                    exchange=exchange)
        finally:
            if not channel.is_closed:
                await channel.close()
        self.published += 1

    # --- observing ----------------------------------------------------------------------------

    async def wait_for_event(
        self, code: str | EventCode, *, runtime_id: str | None = None,
        where: Callable[[EventEnvelope], bool] | None = None, count: int = 1,
        wait_seconds: float = DEFAULT_WAIT_SECONDS,
    ) -> EventEnvelope:
        """The ``count``-th event with this code (of ``runtime_id``, for which ``where`` holds)
        seen since the harness started, once it has arrived."""
        wanted = EventCode(code)

        def matches(event: EventEnvelope) -> bool:
            return (event.code is wanted and runtime_id in (None, event.runtime_id)
                    and (where is None or where(event)))

        what = f"event {wanted.value}" + (f" of {runtime_id}" if runtime_id else "")
        what += f" (#{count})" if count > 1 else ""
        return await within(wait_seconds, what, self.events.nth(matches, count),
                            seen=lambda: str(self.events.codes(runtime_id)))

    def codes(self, runtime_id: str | None = None) -> list[str]:
        """Event codes seen so far, in arrival order."""
        return self.events.codes(runtime_id)

    async def wait_for_dead_letter(
        self, *, where: Callable[[DeadLetter], bool] | None = None, count: int = 1,
        wait_seconds: float = DEFAULT_WAIT_SECONDS,
    ) -> DeadLetter:
        """The ``count``-th message dead-lettered (for which ``where`` holds), once it was."""
        return await within(
            wait_seconds, f"dead letter #{count}", self.dead.nth(where or (lambda _: True), count),
            seen=lambda: str([d.error for d in self.dead.items]),
        )

    async def dead_letters(self, limit: int | None = None) -> list[DeadLetter]:
        """What the dead queue holds now, oldest first (the messages stay there)."""
        assert self._connection is not None, "start() the harness first"
        channel = await self._connection.channel()
        try:
            return await list_dead(channel, limit, topology=self.topology)
        finally:
            await channel.close()

    async def run_until_idle(self, *, expected: int | None = None,
                             wait_seconds: float = IDLE_WAIT_SECONDS) -> None:
        """Until every message published through the harness (or ``expected`` deliveries
        overall) has been settled and the worker is idle (see the module docstring)."""
        worker = self.worker
        assert self.running, "no worker is running"
        assert worker is not None
        committer = worker.committer
        assert committer is not None
        total = self.published if expected is None else expected
        own = total - self._settled_before
        await within(wait_seconds, f"{total} deliveries to be settled",
                     committer.wait_settled(own),
                     seen=lambda: f"{self._settled_before + committer.settled} settled")
        await within(wait_seconds, "the worker to be idle", worker.run_until_idle(),
                     seen=lambda: str({"pipeline": committer.describe(),
                                       "runs": worker.run_loop.describe()
                                       if worker.run_loop else None}))

    async def inspect(self, runtime_id: str) -> dict[str, Any]:
        """What ``meerkat-worker inspect --json`` shows: state, inputs, receipts, events."""
        store = await open_runtime_store(self.settings.database_url.get_secret_value())
        try:
            return await inspection(store, runtime_id)
        finally:
            await store.close()
