"""The broker commands of the command line, ``topology`` and ``send``, and the broker connection
that they and the ``dlq`` commands (:mod:`worker.cli.dlq_commands`) share.

Each ``cmd_*`` handler has the :data:`worker.cli.common.Handler` signature and runs one
coroutine (:func:`run_on_broker`); the coroutines take the ``Topology`` explicitly so that tests
can point them at their own names.

Exit codes beyond those of :mod:`worker.cli.main`: 1 when the broker answers but its topology is
wrong (``topology check`` problems, the consistent-hash plugin missing, nothing bound to the
ingress exchange), the broker refuses a publish (``basic.nack``) or a reply cannot be read.
``send --wait`` exits 3 when no reply comes in time (no worker answering) and 4 when the reply
is a rejection.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager

from aio_pika.abc import AbstractConnection
from aiormq.exceptions import AMQPConnectionError, ChannelNotFoundEntity
from yarl import URL

from schemas import CommandEnvelope, InputEnvelope, Outcome, Rejected
from worker.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_REJECTED,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    fail,
    scrub,
)
from worker.cli.publish import build_command, build_prompt
from worker.client import Client, NoReply, NotConfirmed, UnexpectedReply
from worker.client.messages import message_id_of
from worker.config import Settings
from worker.connect import broker_addresses, connect_broker
from worker.topology import Topology, TopologyError

DEFAULT_WAIT_SECONDS = 30.0


class BrokerUnreachable(Exception):
    """The broker did not accept a connection."""


# --- handlers ---------------------------------------------------------------------------------


def cmd_topology_declare(args: argparse.Namespace, settings: Settings) -> int:
    return run_on_broker(declare_topology(settings, Topology.from_settings(settings)), settings)


def cmd_topology_check(args: argparse.Namespace, settings: Settings) -> int:
    return run_on_broker(check_topology(settings, Topology.from_settings(settings)), settings)


def cmd_send_input(args: argparse.Namespace, settings: Settings) -> int:
    return run_on_broker(send_input(args, settings, Topology.from_settings(settings)), settings)


def cmd_send_command(args: argparse.Namespace, settings: Settings) -> int:
    return run_on_broker(send_command(args, settings, Topology.from_settings(settings)), settings)


def run_on_broker(command: Awaitable[int], settings: Settings) -> int:
    """Run a broker command in an event loop of its own; its exit code (see
    :func:`broker_command`)."""

    async def guarded() -> int:
        return await broker_command(command, settings)

    return asyncio.run(guarded())


async def broker_command(command: Awaitable[int], settings: Settings) -> int:
    """The command's exit code; broker and topology failures become a message and a code."""
    try:
        return await command
    except BrokerUnreachable as exc:
        return fail(f"cannot reach the broker: {scrub(str(exc), settings)}", EXIT_UNAVAILABLE)
    except (TopologyError, NotConfirmed) as exc:
        return fail(str(exc), EXIT_FAILED)
    except ChannelNotFoundEntity as exc:
        return fail(
            f"{exc.args[0] if exc.args else exc}; "
            "declare the topology with: meerkat-worker topology declare",
            EXIT_FAILED,
        )


# --- commands ---------------------------------------------------------------------------------


async def declare_topology(settings: Settings, topology: Topology) -> int:
    async with broker(settings) as connection:
        await topology.verify_shard_count(connection)
        channel = await connection.channel()
        await topology.declare(channel)
    print(f"declared {topology.ingress_exchange} with {topology.shards} shard queues, "
          f"{topology.commands_exchange} (bound to it), {topology.dead_letter_exchange}, "
          f"{topology.dead_queue}, {topology.events_exchange}")
    return EXIT_OK


async def check_topology(settings: Settings, topology: Topology) -> int:
    async with broker(settings) as connection:
        problems = await topology.check(connection)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return EXIT_FAILED
    print(f"topology ok: {topology.shards} shard queues, delivery limit "
          f"{topology.delivery_limit}")
    return EXIT_OK


async def send_input(args: argparse.Namespace, settings: Settings, topology: Topology) -> int:
    """``send input RUNTIME --text T [--image FILE]... [--idempotency-key K] [--wait]``."""
    try:
        envelope = build_prompt(args.runtime, args.text, list(args.image or []),
                                args.idempotency_key)
    except (ValueError, OSError) as exc:
        return fail(str(exc), EXIT_USAGE)
    return await _send(envelope, args, settings, topology)


async def send_command(args: argparse.Namespace, settings: Settings, topology: Topology) -> int:
    """``send command RUNTIME NAME [--reason R] [--input-id ID] [--abandon-reason A] [--wait]``."""
    try:
        envelope = build_command(args.runtime, args.name, args.reason, args.input_id,
                                 getattr(args, "abandon_reason", None))
    except ValueError as exc:
        return fail(str(exc), EXIT_USAGE)
    return await _send(envelope, args, settings, topology)


async def _send(
    envelope: InputEnvelope | CommandEnvelope,
    args: argparse.Namespace,
    settings: Settings,
    topology: Topology,
) -> int:
    """Publish; print the message id, and with ``--wait`` the outcome."""
    message_id = message_id_of(envelope)
    async with broker(settings) as connection:
        client = Client(connection, topology=topology, user_id=broker_user(settings))
        try:
            if not args.wait:
                await client.send(envelope)
                print(message_id)
                return EXIT_OK
            try:
                outcome = await client.request(
                    envelope, wait_seconds=_wait_seconds(args),
                    on_published=lambda: print(message_id, flush=True),
                )
            except NoReply as exc:
                return fail(str(exc), EXIT_UNAVAILABLE)
            except UnexpectedReply as exc:
                return fail(str(exc), EXIT_FAILED)
            return report_outcome(outcome)
        finally:
            await client.close()


def report_outcome(outcome: Outcome) -> int:
    print(outcome.model_dump_json())
    return EXIT_REJECTED if isinstance(outcome, Rejected) else EXIT_OK


# --- helpers ----------------------------------------------------------------------------------


@asynccontextmanager
async def broker(settings: Settings) -> AsyncIterator[AbstractConnection]:
    """A plain (not auto-reconnecting) connection: a command should fail, not wait (a virtual
    host the broker refuses is a ``VhostRefused``)."""
    try:
        connection = await connect_broker(
            settings.amqp_url.get_secret_value(), settings.connect_timeout_seconds
        )
    except (AMQPConnectionError, OSError) as exc:
        raise BrokerUnreachable(str(exc) or type(exc).__name__) from exc
    try:
        yield connection
    finally:
        await connection.close()


def broker_user(settings: Settings) -> str | None:
    """The user name in ``MEERKAT_AMQP_URL``: set as a command's ``user_id`` (the broker checks
    it is the connection's user), which ``MEERKAT_COMMAND_USERS`` allow-lists."""
    return URL(broker_addresses(settings.amqp_url.get_secret_value())[0]).user or None


def _wait_seconds(args: argparse.Namespace) -> float:
    seconds = getattr(args, "timeout", None)
    return DEFAULT_WAIT_SECONDS if seconds is None else float(seconds)
