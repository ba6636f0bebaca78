"""What is told about a settled delivery: one log line, the counters, the end of its span.

Every delivery :mod:`worker.pipeline.settle` settles is told once: a ``delivery_settled`` info
line with its ``settlement`` (``acked``; ``duplicate``: acked, it had been applied before;
``dead_lettered``, with the ``reason`` also put in ``x-meerkat-error`` and its
``reason_type``; or ``requeued``: its channel closed, so the broker delivers it again), the
``runtime_id``, ``message_id``, ``correlation_id`` and ``delivery_count`` (1, plus the broker's
``x-delivery-count`` of earlier returns); ``meerkat_deliveries_settled_total{settlement}``;
``meerkat_accept_seconds`` from its receipt; and, when tracing is on, the end of its ``accept``
span. This module settles nothing itself.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import structlog
from aio_pika.abc import AbstractIncomingMessage

from schemas import CommandCompleted, Deduplicated
from worker import tracing
from worker.metrics import Metrics
from worker.pipeline.inbox import Delivery
from worker.pipeline.policy import Action, Settlement

log = structlog.get_logger(__name__)

CHANNEL_CLOSED = "channel_closed"


def settled_as(settlement: Settlement) -> str:
    """The ``settlement`` label of a delivery settled so."""
    if settlement.action is Action.DEAD_LETTER:
        return "dead_lettered"
    reply = settlement.reply
    if isinstance(reply, Deduplicated) or (isinstance(reply, CommandCompleted)
                                           and reply.deduplicated):
        return "duplicate"
    return "acked"


def delivery_count(message: AbstractIncomingMessage) -> int:
    """How many times the broker has delivered the message: 1, plus its ``x-delivery-count``."""
    headers = message.headers
    returns = headers.get("x-delivery-count") if headers else None
    return returns + 1 if isinstance(returns, int) else 1


def told(delivery: Delivery, settlement: str, metrics: Metrics, now: float,
         reason: str | None = None, reason_type: str | None = None) -> None:
    """The log line, counters and span end of a settled delivery (see the module docstring)."""
    message = delivery.message
    metrics.settled[settlement].inc()
    if delivery.received:
        metrics.accept_seconds.observe(now - delivery.received)
    if reason is None:
        log.info("delivery_settled", settlement=settlement, runtime_id=delivery.runtime_id,
                 message_id=message.message_id, correlation_id=message.correlation_id,
                 delivery_count=delivery_count(message))
    else:
        log.info("delivery_settled", settlement=settlement, runtime_id=delivery.runtime_id,
                 message_id=message.message_id, correlation_id=message.correlation_id,
                 delivery_count=delivery_count(message), reason=reason,
                 reason_type=reason_type)
    if delivery.trace is not None:
        tracing.settled(delivery.trace, settlement, reason)


def returned(deliveries: Sequence[Delivery], metrics: Metrics) -> None:
    """Deliveries whose channel closed before they were settled: the broker has them back."""
    if not deliveries:
        return
    metrics.messages_requeued.labels(reason=CHANNEL_CLOSED).inc(len(deliveries))
    now = time.monotonic()
    for delivery in deliveries:
        told(delivery, "requeued", metrics, now, reason=CHANNEL_CLOSED, reason_type=CHANNEL_CLOSED)


def returned_unread(message: AbstractIncomingMessage, metrics: Metrics) -> None:
    """A delivery whose channel had closed before it was read."""
    metrics.messages_requeued.labels(reason=CHANNEL_CLOSED).inc()
    metrics.settled["requeued"].inc()
    log.info("delivery_settled", settlement="requeued", runtime_id=message.routing_key,
             message_id=message.message_id, correlation_id=message.correlation_id,
             delivery_count=delivery_count(message), reason=CHANNEL_CLOSED,
             reason_type=CHANNEL_CLOSED)
