"""RPC replies: published to ``reply_to`` after the commit, best effort."""

from __future__ import annotations

import aio_pika
import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from schemas import Outcome, Reply

log = structlog.get_logger(__name__)


class ReplyPublisher:
    def __init__(self, channel: AbstractChannel) -> None:
        self._channel = channel

    async def reply(
        self, message: AbstractIncomingMessage, runtime_id: str | None, outcome: Outcome
    ) -> None:
        """Publish the outcome when the producer asked for one; a lost reply is only logged,
        since the message's effect is already committed and a retry would not resend it."""
        if not message.reply_to:
            return
        reply = Reply(correlation_id=message.correlation_id, runtime_id=runtime_id, outcome=outcome)
        body = aio_pika.Message(
            body=reply.model_dump_json().encode(),
            content_type="application/json",
            correlation_id=message.correlation_id,
            type="meerkat.reply.v1",
        )
        try:
            await self._channel.default_exchange.publish(body, routing_key=message.reply_to)
        except Exception as exc:  # the effect is committed; the reply is best effort
            log.warning("reply_failed", reply_to=message.reply_to, error=str(exc))
