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

Several brokers. ``MEERKAT_AMQP_URL`` may name the nodes of a cluster as comma-separated URLs
(``amqp://u:p@rabbit-1:5672/,amqp://u:p@rabbit-2:5672/``; :func:`broker_addresses`). A connection
tries them in order, each within the connect timeout, and takes the first that answers; a
refused connection costs nothing, so a node that is down is passed over at once. An
:class:`Addresses` keeps the place: the worker's broker link starts each reconnect at the
address after the one it was connected to, since that node is the likeliest to be the one that
went away. Only the last failure is raised when none answers.
"""

from __future__ import annotations

import aio_pika
from aio_pika.abc import AbstractConnection
from aiormq.exceptions import AMQPConnectionError, InvalidFrameError
from yarl import URL

from worker.config import mask_url
from worker.deadline import bounded


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


def broker_addresses(url: str) -> list[str]:
    """The broker URLs of ``MEERKAT_AMQP_URL``: one, or several separated by commas."""
    return [part.strip() for part in url.split(",") if part.strip()]


class Addresses:
    """The broker URLs and which one to try first: the one after the last used."""

    def __init__(self, url: str) -> None:
        self.urls = broker_addresses(url)
        self._next = 0

    def in_order(self) -> list[str]:
        return self.urls[self._next:] + self.urls[:self._next]

    def used(self, url: str) -> None:
        self._next = (self.urls.index(url) + 1) % len(self.urls)


async def connect_broker(url: str | URL | Addresses, within: float) -> AbstractConnection:
    """A plain (not auto-reconnecting) connection to ``url`` (or to the first of several that
    answers) within ``within`` seconds each.

    Raises :class:`BrokerTimeout`, :class:`VhostRefused`, and aiormq's connection errors
    (``AMQPConnectionError``, an ``OSError`` for a refused TCP connection).
    """
    addresses = url if isinstance(url, Addresses) else Addresses(str(url))
    failure: BaseException | None = None
    for address in addresses.in_order():
        try:
            connection = await _connect_one(address, within)
        except (TimeoutError, ConnectionError, OSError, AMQPConnectionError) as exc:
            failure = exc
            continue
        addresses.used(address)
        return connection
    assert failure is not None, "no broker address"
    raise failure


async def _connect_one(url: str, within: float) -> AbstractConnection:
    try:
        return await bounded(aio_pika.connect(url), within)
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
