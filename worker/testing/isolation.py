"""One test's own deployment on the session's services: names, a database and a bucket.

A :class:`Deployment` is what one test may touch: exchanges and queues under a topology prefix
of its own (``t`` and 10 hex digits, instead of ``meerkat``), a PostgreSQL database created
for it with a random name and migrated to the latest schema, and an S3 bucket of its own (the
worker creates it on first contact). :func:`open_deployment` makes them and, on the way out,
deletes every queue and exchange under the prefix that a worker of the test declared, drops the
database (``WITH (FORCE)``: a connection a test left open must not keep it) and empties and
removes the bucket. So tests never see each other's messages, rows or objects, and may run
against a broker, server or S3 store that other things share.

:meth:`Deployment.settings` gives worker settings for it; keyword arguments override any field
(``shards=2``, ``executor="pkg.mod:execute"``, ``delivery_limit=2``, ...).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from uuid import uuid4

import aio_pika
from aiormq.exceptions import AMQPConnectionError
from pydantic import SecretStr
from sqlalchemy import URL, text
from sqlalchemy.ext.asyncio import create_async_engine

from persistence.migrate import upgrade_async
from persistence.sql.engine import database_url, safe_url
from worker.config import SECRET_FIELDS, Settings
from worker.testing.services import S3, Services, masked
from worker.topology import Topology

TEST_DEFAULTS: dict[str, Any] = {
    "shards": 4,
    "http_port": 0,
    "group_commit_window_ms": 5,
    "shutdown_grace_seconds": 5,
}
"""Settings of a test worker unless the test says otherwise: few shard queues (quicker to
declare and delete), no fixed HTTP port, a short drain."""


class ServiceUnavailable(Exception):
    """A service of the session does not answer; the message names it and where it came from."""


def unique_prefix() -> str:
    return f"t{uuid4().hex[:10]}"


def unique_bucket() -> str:
    return f"meerkat-test-{uuid4().hex[:16]}"


@dataclass
class Deployment:
    """What one test may touch; see the module docstring."""

    services: Services
    prefix: str
    database_url: str
    bucket: str
    topologies: set[Topology] = field(default_factory=set)
    """Every topology declared for this deployment (deleted afterwards)."""

    @property
    def amqp_url(self) -> str:
        return self.services.rabbitmq.url

    @property
    def blob_url(self) -> str:
        return self.services.s3.url(self.bucket)

    def settings(self, **overrides: Any) -> Settings:
        """Worker settings for this deployment; ``overrides`` win (secret URLs may be given as
        plain strings)."""
        values: dict[str, Any] = {
            "amqp_url": self.amqp_url, "database_url": self.database_url,
            "blob_url": self.blob_url, "topology_prefix": self.prefix,
            **TEST_DEFAULTS, **overrides,
        }
        for name in SECRET_FIELDS:
            if isinstance(values.get(name), str):
                values[name] = SecretStr(values[name])
        return Settings(**values)

    def topology(self, settings: Settings | None = None) -> Topology:
        """The topology a worker with ``settings`` uses (recorded, to be deleted afterwards)."""
        topology = Topology.from_settings(settings or self.settings())
        self.topologies.add(topology)
        return topology


@contextlib.asynccontextmanager
async def open_deployment(services: Services) -> AsyncIterator[Deployment]:
    """A fresh deployment, removed on exit (see the module docstring)."""
    await _check_broker(services)
    async with new_database(services.postgresql.url, source=services.postgresql.source) as url:
        await upgrade_async(url)
        deployment = Deployment(services, unique_prefix(), url, unique_bucket())
        try:
            yield deployment
        finally:
            await delete_topologies(services.rabbitmq.url, deployment.topologies)
            await asyncio.to_thread(remove_bucket, services.s3, deployment.bucket)


async def _check_broker(services: Services) -> None:
    try:
        connection = await aio_pika.connect(services.rabbitmq.url, timeout=10)
    except (AMQPConnectionError, OSError, TimeoutError) as exc:
        raise ServiceUnavailable(
            f"no RabbitMQ answers at {masked(services.rabbitmq.url)} "
            f"({services.rabbitmq.source}): {exc!r}; set MEERKAT_TEST_AMQP_URL or start Docker"
        ) from exc
    await connection.close()


@contextlib.asynccontextmanager
async def new_database(server_url: str, *, source: str = "") -> AsyncIterator[str]:
    """A new, uniquely named, empty database on the server of ``server_url``; dropped on exit.
    Yields its URL (with the password: the worker needs it)."""
    server: URL = database_url(server_url)
    name = f"meerkat_test_{uuid4().hex[:16]}"
    admin = create_async_engine(server, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OSError as exc:
        await admin.dispose()
        raise ServiceUnavailable(
            f"no PostgreSQL server answers at {safe_url(server)}"
            + (f" ({source})" if source else "")
            + f": {exc}; set MEERKAT_TEST_POSTGRES_URL or start Docker"
        ) from exc
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()


async def delete_topologies(amqp_url: str, topologies: set[Topology]) -> None:
    """Delete every queue and exchange the topologies name (deleting a missing one succeeds)."""
    if not topologies:
        return
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        for name in sorted({q for t in topologies for q in t.all_queue_names()}):
            await channel.queue_delete(name)
        for name in sorted({x for t in topologies for x in t.exchange_names()}):
            await channel.exchange_delete(name)
    finally:
        await connection.close()


def remove_bucket(server: S3, bucket: str) -> None:
    """Empty and remove the bucket; a bucket never made, or a server that is gone, is left be."""
    from minio import Minio
    from minio.deleteobjects import DeleteObject

    options = dict(server.options)
    http_client: Any = None
    if "ca_file" in options:
        import urllib3

        http_client = urllib3.PoolManager(ca_certs=options["ca_file"])
    client = Minio(server.endpoint, access_key=server.access_key, secret_key=server.secret_key,
                   secure=server.secure, region=options.get("region"), http_client=http_client)
    with contextlib.suppress(Exception):
        objects = [DeleteObject(o.object_name) for o in
                   client.list_objects(bucket, recursive=True) if o.object_name]
        for error in client.remove_objects(bucket, objects):
            raise RuntimeError(str(error))
        client.remove_bucket(bucket)
