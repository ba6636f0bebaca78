"""What publishing and requesting raise, typed so that a producer can tell the cases apart.

``Unroutable`` and ``ExchangeMissing`` are :class:`~worker.topology.TopologyError`\\ s: both mean
that no worker has declared the topology the producer names (yet, or under that prefix).
"""

from __future__ import annotations

from worker.topology import TopologyError

DECLARE_HINT = "declare the topology with: meerkat-worker topology declare"


class Unroutable(TopologyError):
    """The broker returned a ``mandatory`` message: no queue is bound to the exchange."""

    def __init__(self, message_id: str | None, exchange: str, routing_key: str) -> None:
        super().__init__(
            f"the broker could not route message {message_id} (routing key {routing_key!r}) "
            f"from exchange {exchange}: no queue is bound to it; {DECLARE_HINT}"
        )
        self.message_id = message_id
        self.exchange = exchange
        self.routing_key = routing_key


class ExchangeMissing(TopologyError):
    """The exchange does not exist (the broker answered 404 and closed the channel)."""

    def __init__(self, exchange: str) -> None:
        super().__init__(f"exchange {exchange} does not exist; {DECLARE_HINT}")
        self.exchange = exchange


class NotConfirmed(Exception):
    """The broker refused the message (``basic.nack``): it did not take responsibility for it."""

    def __init__(self, message_id: str | None, exchange: str) -> None:
        super().__init__(f"the broker did not confirm message {message_id} on {exchange}")
        self.message_id = message_id
        self.exchange = exchange


class NoReply(Exception):
    """No reply arrived within the timeout (no worker consuming, or a slow one)."""

    def __init__(self, wait_seconds: float, correlation_id: str | None = None) -> None:
        super().__init__(
            f"no reply within {wait_seconds:g}s; is a worker consuming the ingress queues?"
        )
        self.wait_seconds = wait_seconds
        self.correlation_id = correlation_id


class UnexpectedReply(ValueError):
    """A reply arrived that is not a ``Reply``, or not an outcome the request can have."""
