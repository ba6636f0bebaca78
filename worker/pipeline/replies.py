"""RPC replies: published to ``reply_to`` after the commit, best effort.

A lost reply is only logged: the message's effect is already committed, and a retry of the
message would be recognised as a duplicate, not answered again from scratch.

Only some ``reply_to`` names are answered (:func:`worker.pipeline.authz.reply_allowed`): direct
reply-to, or queues named with ``MEERKAT_REPLY_QUEUE_PREFIX``. Any other is logged as
``reply_refused`` and counted in ``meerkat_replies_refused_total``; the message itself is settled
as usual. Each reply is counted in ``meerkat_replies_total{result}`` (``sent``, ``refused``,
``failed``). With tracing on, a reply is published under a ``reply`` span (a child of the
delivery's ``accept`` span) and carries its ``traceparent`` header.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import aio_pika
import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, FieldValue

from schemas import Outcome, Reply
from worker import tracing
from worker.metrics import Metrics
from worker.pipeline.authz import reply_allowed

if TYPE_CHECKING:
    from opentelemetry.trace import Span

log = structlog.get_logger(__name__)

REPLY_MESSAGE_TYPE = "meerkat.reply.v1"


async def publish_reply(
    channel: AbstractChannel | None,
    message: AbstractIncomingMessage,
    runtime_id: str | None,
    outcome: Outcome,
    *,
    allowed: Callable[[str], bool] = reply_allowed,
    metrics: Metrics | None = None,
    trace: Span | None = None,
) -> None:
    """Publish the outcome when the producer asked for one (``reply_to``) at a name that is
    ``allowed``; ``trace`` is the delivery's ``accept`` span."""
    if not message.reply_to:
        return
    if not allowed(message.reply_to):
        log.warning("reply_refused", reply_to=message.reply_to[:200],
                    message_id=message.message_id)
        if metrics is not None:
            metrics.replies_refused.inc()
            metrics.reply_results["refused"].inc()
        return
    if channel is None:
        log.warning("reply_failed", reply_to=message.reply_to, error="not connected")
        if metrics is not None:
            metrics.reply_results["failed"].inc()
        return
    reply = Reply(correlation_id=message.correlation_id, runtime_id=runtime_id, outcome=outcome)
    span = tracing.start_reply(trace)
    headers: dict[str, FieldValue] | None = dict(tracing.inject(span)) if span else None
    body = aio_pika.Message(
        body=reply.model_dump_json().encode(),
        content_type="application/json",
        correlation_id=message.correlation_id,
        type=REPLY_MESSAGE_TYPE,
        headers=headers,
    )
    try:
        await channel.default_exchange.publish(body, routing_key=message.reply_to)
    except Exception as exc:  # the effect is committed; the reply is best effort
        log.warning("reply_failed", reply_to=message.reply_to, error=repr(exc))
        tracing.end(span, repr(exc))
        if metrics is not None:
            metrics.reply_results["failed"].inc()
        return
    tracing.end(span)
    if metrics is not None:
        metrics.reply_results["sent"].inc()
