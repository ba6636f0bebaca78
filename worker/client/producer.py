"""The producer client: one broker connection, confirmed publishes, typed replies.

A :class:`Client` holds a connection and one publish channel with publisher confirms (opened on
first use, and again after the broker closed it, e.g. for a missing exchange). ``send`` puts an
envelope on the wire where its kind must go (inputs to ``<prefix>.ingress``, commands to
``<prefix>.commands``, with the connection's user as ``user_id``) and returns once the broker
has confirmed it; ``request`` does the same with direct reply-to and returns the worker's
outcome, typed by what was sent: an input gets ``Accepted | Deduplicated | Rejected``, a command
``CommandCompleted | Rejected``. Building the envelopes is :mod:`worker.client.messages`; the
wire format and the publish itself are :mod:`worker.client.wire`.

The client is async. :class:`worker.client.sync.SyncClient` wraps it for code without an event
loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, TypeVar, overload

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection
from yarl import URL

from schemas import (
    Accepted,
    CommandCompleted,
    CommandEnvelope,
    Deduplicated,
    InputEnvelope,
    Rejected,
)
from worker.client import messages
from worker.client.errors import UnexpectedReply
from worker.client.messages import Image
from worker.client.wire import publish_envelope, request_reply
from worker.topology import Topology

InputOutcome = Accepted | Deduplicated | Rejected
"""What the worker answers to an input."""
CommandOutcome = CommandCompleted | Rejected
"""What the worker answers to a command."""

Envelope = TypeVar("Envelope", bound=InputEnvelope | CommandEnvelope)

DEFAULT_REQUEST_SECONDS = 30.0
CONNECT_TIMEOUT_SECONDS = 10.0


class Client:
    """A producer of inputs and commands for the deployment named by ``prefix``.

    ``connection`` is any aio-pika connection; :func:`connect` makes one. ``user_id`` goes on
    commands (what ``MEERKAT_COMMAND_USERS`` checks; the broker refuses any other than the
    connection's user); :func:`connect` sets it to the URL's user. ``owns_connection``: close
    the connection with the client.
    """

    def __init__(
        self,
        connection: AbstractConnection,
        *,
        prefix: str = "meerkat",
        topology: Topology | None = None,
        user_id: str | None = None,
        request_seconds: float = DEFAULT_REQUEST_SECONDS,
        owns_connection: bool = False,
    ) -> None:
        self.connection = connection
        self.topology = topology or Topology(prefix=prefix)
        self.user_id = user_id
        self.request_seconds = request_seconds
        self._owns_connection = owns_connection
        self._channel: AbstractChannel | None = None
        self._opening = asyncio.Lock()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        traceback: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the publish channel (and the connection, when the client owns it)."""
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()
        self._channel = None
        if self._owns_connection and not self.connection.is_closed:
            await self.connection.close()

    # --- publishing ---------------------------------------------------------------------------

    async def send(self, envelope: Envelope) -> Envelope:
        """Publish the envelope and wait for the broker's confirm; returns it.

        Raises :class:`~worker.client.errors.Unroutable` when no queue is bound (the topology
        was never declared), :class:`~worker.client.errors.ExchangeMissing` when the exchange
        does not exist, :class:`~worker.client.errors.NotConfirmed` when the broker refuses it.
        """
        channel = await self._publish_channel()
        await publish_envelope(channel, envelope, topology=self.topology, user_id=self.user_id)
        return envelope

    @overload
    async def request(self, envelope: InputEnvelope, *, wait_seconds: float | None = None,
                      on_published: Callable[[], object] | None = None) -> InputOutcome: ...

    @overload
    async def request(self, envelope: CommandEnvelope, *, wait_seconds: float | None = None,
                      on_published: Callable[[], object] | None = None) -> CommandOutcome: ...

    async def request(self, envelope: InputEnvelope | CommandEnvelope, *,
                      wait_seconds: float | None = None,
                      on_published: Callable[[], object] | None = None,
                      ) -> InputOutcome | CommandOutcome:
        """Publish the envelope with direct reply-to and return the worker's outcome, which the
        worker sends once what the message caused is committed. ``on_published`` is called
        once the broker has confirmed the request, before the reply is awaited.

        Raises what :meth:`send` raises, :class:`~worker.client.errors.NoReply` after
        ``wait_seconds`` (default ``request_seconds``) and
        :class:`~worker.client.errors.UnexpectedReply` for a reply that does not fit.
        """
        message_id = messages.message_id_of(envelope)

        async def publish(channel: AbstractChannel, reply_to: str, correlation_id: str) -> None:
            await publish_envelope(channel, envelope, reply_to=reply_to,
                                   correlation_id=correlation_id, topology=self.topology,
                                   user_id=self.user_id)
            if on_published is not None:
                on_published()

        reply = await request_reply(
            self.connection, publish, correlation_id=message_id,
            wait_seconds=self.request_seconds if wait_seconds is None else wait_seconds,
        )
        outcome = reply.outcome
        if isinstance(envelope, InputEnvelope):
            if isinstance(outcome, Accepted | Deduplicated | Rejected):
                return outcome
        elif isinstance(outcome, CommandCompleted | Rejected):
            return outcome
        raise UnexpectedReply(
            f"a {outcome.outcome_type} reply to message {message_id} does not answer its kind"
        )

    async def prompt(self, runtime_id: str, text: str, *, images: Iterable[Image] = (),
                     idempotency_key: str | None = None) -> InputEnvelope:
        """Send a prompt (the text, then each image inline); returns what was sent. For the
        outcome: ``await client.request(messages.prompt(...))``."""
        return await self.send(messages.prompt(runtime_id, text, images=images,
                                               idempotency_key=idempotency_key))

    async def command(self, runtime_id: str, command_type: str, *, reason: str | None = None,
                      **fields: Any) -> CommandEnvelope:
        """Send a lifecycle command by name (see :func:`worker.client.messages.command`)."""
        return await self.send(messages.command(runtime_id, command_type, reason=reason,
                                                **fields))

    async def _publish_channel(self) -> AbstractChannel:
        async with self._opening:
            if self._channel is None or self._channel.is_closed:
                self._channel = await self.connection.channel(publisher_confirms=True)
            return self._channel


async def connect(
    url: str,
    *,
    prefix: str = "meerkat",
    request_seconds: float = DEFAULT_REQUEST_SECONDS,
    connect_seconds: float = CONNECT_TIMEOUT_SECONDS,
) -> Client:
    """A client on a connection of its own to ``url`` (``amqp://`` or ``amqps://``), which
    reconnects by itself after a broker restart; close it with ``await client.close()`` or use
    ``async with``. Commands carry the URL's user as ``user_id``."""
    connection = await aio_pika.connect_robust(url, timeout=connect_seconds)
    return Client(connection, prefix=prefix, user_id=URL(url).user or None,
                  request_seconds=request_seconds, owns_connection=True)
