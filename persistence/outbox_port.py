"""The outbox port: what the relay reads and marks, and the lease that makes one relay per
deployment publish (re-exported by :mod:`persistence.ports`, with the other ports)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from uuid import UUID

from schemas import EventEnvelope


@dataclass(frozen=True)
class OutboxEvent:
    """An unsent event as the relay publishes it: its JSON as stored, and the fields its AMQP
    properties need, read without parsing the body (:attr:`event` parses it, on demand)."""

    position: int
    event_id: UUID
    runtime_id: str
    code: str
    at: datetime
    body: bytes
    traceparent: str | None = None
    """The W3C trace context the event was committed under (:attr:`Decision.trace`)."""

    @classmethod
    def of(cls, position: int, event: EventEnvelope,
           traceparent: str | None = None) -> OutboxEvent:
        return cls(position, event.event_id, event.runtime_id, event.code.value, event.at,
                   event.model_dump_json().encode(), traceparent)

    @functools.cached_property
    def event(self) -> EventEnvelope:
        return EventEnvelope.model_validate_json(self.body)


class OutboxStore(Protocol):
    """What the outbox relay uses: committed events not yet published, and marking them sent."""

    async def fetch_unsent_events(self, limit: int) -> list[OutboxEvent]:
        """Oldest unsent outbox events of the store's own group first (and those written
        without a group)."""
        ...

    async def mark_events_sent(self, positions: Sequence[int]) -> None: ...

    async def lead_relay(self) -> bool:
        """Whether this store's relay is the one publishing its group's events now: one store
        at a time per group holds the lease (kept while held, taken when free); never raises."""
        ...

    async def release_relay(self) -> None:
        """Give the lease up, for another store of the group to take."""
        ...
