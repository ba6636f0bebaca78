"""Opening one AMQP connection: bounded in time, and with the broker's refusals named.

Every connection the worker and the command line make goes through :func:`connect_broker`, so
that two things hold everywhere:

- A broker that accepts TCP but never speaks AMQP (a half-started node, a proxy in front of
  nothing, the wrong port) costs at most ``MEERKAT_CONNECT_TIMEOUT_SECONDS``: the TCP connect
  and the whole AMQP handshake run under one timeout, and its expiry is a
  :class:`BrokerTimeout` (a ``TimeoutError``, so an unreachable dependency) naming the broker
  with its password masked.
- A virtual host the broker will not open is a :class:`VhostRefused`, a configuration error. The
  broker answers ``Connection.Open`` with ``Connection.Close`` (530 NOT_ALLOWED, for a vhost that
  does not exist and for one the user may not use alike); aiormq reports that as an
  ``InvalidFrameError`` whose text names the two frames and has lost the broker's reason, so
  both causes are named in the message.
"""

from __future__ import annotations

import asyncio

import aio_pika
from aio_pika.abc import AbstractConnection
from aiormq.exceptions import InvalidFrameError
from yarl import URL

from worker.config import mask_url


class BrokerTimeout(TimeoutError):
    """No AMQP connection within the connect timeout."""


class VhostRefused(Exception):
    """The broker refused to open the virtual host of the URL."""

    def __init__(self, vhost: str, user: str) -> None:
        super().__init__(
            f"the broker refused the virtual host {vhost!r} of MEERKAT_AMQP_URL: it does not "
            f"exist or user {user!r} may not use it; create it (rabbitmqctl add_vhost {vhost}; "
            f"rabbitmqctl set_permissions -p {vhost} {user} '.*' '.*' '.*') or fix the URL"
        )
        self.vhost = vhost


async def connect_broker(url: str | URL, within: float) -> AbstractConnection:
    """A plain (not auto-reconnecting) connection to ``url`` within ``within`` seconds.

    Raises :class:`BrokerTimeout`, :class:`VhostRefused`, and aiormq's connection errors
    (``AMQPConnectionError``, an ``OSError`` for a refused TCP connection).
    """
    try:
        return await asyncio.wait_for(aio_pika.connect(url), within)
    except TimeoutError:
        raise BrokerTimeout(
            f"the broker at {mask_url(str(url))} did not answer within {within:g}s "
            "(MEERKAT_CONNECT_TIMEOUT_SECONDS)"
        ) from None
    except InvalidFrameError as exc:
        if "Connection.OpenOk" in str(exc) and "Connection.Close" in str(exc):
            parsed = URL(url)
            raise VhostRefused(vhost_of(parsed), parsed.user or "guest") from None
        raise


def vhost_of(url: URL) -> str:
    """The virtual host an AMQP URL names, as aiormq reads it: ``/`` for an empty path."""
    if url.path in ("", "/"):
        return "/"
    return url.path[1:].replace("%2F", "/")
