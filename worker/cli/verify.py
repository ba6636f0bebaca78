"""``meerkat-worker verify``: check a history against what a producer says it published.

Reads the producer's published log (and, with ``--events``, a capture of the events exchange),
gathers the store, the blob store and the dead queue named by the settings, and runs the pure
checks of :mod:`worker.history.checks`. Meant for an idle or stopped worker: the gathering is
no snapshot (see :mod:`worker.history.gather`).

Exit codes, as ``topology check``: 0 the history is consistent, 1 a check found problems (or
the dead queue does not exist), 2 a usage or configuration error (an unreadable log, an
in-memory store), 3 a dependency cannot be reached.

The store is opened read-only in spirit: no migration, and no refusal of a database whose
commits are not durable, since nothing is committed here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from aio_pika.abc import AbstractConnection
from aiormq.exceptions import AMQPConnectionError, ChannelNotFoundEntity

from persistence.blobs import BlobUrlError, open_blob_store
from persistence.ports import BlobStore, HistoryReader
from persistence.sql.engine import database_url, make_engine
from persistence.sql.store import SqlRuntimeStore
from schemas import EventEnvelope
from worker.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, fail
from worker.config import Settings
from worker.connect import connect_broker
from worker.history.checks import check
from worker.history.facts import Report
from worker.history.gather import gather_facts
from worker.history.published import (
    PublishedLogError,
    PublishedRecord,
    read_events,
    read_published,
)
from worker.history.report import render_text, report_json
from worker.topology import Topology

COMMAND = "verify"


def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    try:
        published = read_published(args.published)
        events = None if args.events is None else read_events(args.events)
    except (PublishedLogError, OSError) as exc:
        return fail(str(exc), EXIT_USAGE, COMMAND)
    for name in ("database_url", "blob_url"):
        if getattr(settings, name).get_secret_value().startswith("memory://"):
            return fail(
                f"MEERKAT_{name.upper()} is an in-memory store: there is no history to verify",
                EXIT_USAGE,
                COMMAND,
            )
    try:
        # Both only parse here; the connections are made inside the command.
        url = database_url(settings.database_url.get_secret_value())
        blobs = open_blob_store(settings.blob_url.get_secret_value())
    except (BlobUrlError, ValueError) as exc:
        return fail(str(exc), EXIT_USAGE, COMMAND)
    store = SqlRuntimeStore(make_engine(url), url)
    try:
        return asyncio.run(_verify(args, settings, store, blobs, published, events))
    except ChannelNotFoundEntity as exc:
        detail = exc.args[0] if exc.args else exc
        return fail(f"{detail}; is MEERKAT_TOPOLOGY_PREFIX right, is the topology declared?",
                    EXIT_FAILED, COMMAND)


async def _verify(
    args: argparse.Namespace,
    settings: Settings,
    store: SqlRuntimeStore,
    blobs: BlobStore,
    published: Sequence[PublishedRecord],
    events: Sequence[EventEnvelope] | None,
) -> int:
    try:
        await store.ping()
        report = await verify_history(
            settings, store, blobs, published, events, topology=Topology.from_settings(settings)
        )
    finally:
        await store.close()
        await blobs.close()
    if args.json:
        print(json.dumps(report_json(report), indent=2))
    else:
        print(render_text(report))
    return EXIT_OK if report.ok else EXIT_FAILED


async def verify_history(
    settings: Settings,
    store: HistoryReader,
    blobs: BlobStore,
    published: Sequence[PublishedRecord],
    events: Sequence[EventEnvelope] | None = None,
    *,
    topology: Topology,
) -> Report:
    """Gather (the dead queue over a connection of its own) and check.

    Raises ``StoreUnavailable`` and the broker's connection and channel errors.
    """
    async with _broker(settings) as connection:
        channel = await connection.channel()
        facts = await gather_facts(
            published, store=store, blobs=blobs, channel=channel, topology=topology,
            events=events,
        )
    return check(facts)


@asynccontextmanager
async def _broker(settings: Settings) -> AsyncIterator[AbstractConnection]:
    """A plain connection (not auto-reconnecting): a check should fail, not wait.

    A refused connection raises ``ConnectionError``, which the command line reports as an
    unreachable dependency (exit 3), with the URL's password masked.
    """
    try:
        connection = await connect_broker(
            settings.amqp_url.get_secret_value(), settings.connect_timeout_seconds
        )
    except (AMQPConnectionError, OSError) as exc:
        raise ConnectionError(f"the broker: {exc or type(exc).__name__}") from exc
    try:
        yield connection
    finally:
        await connection.close()
