"""The fault suite's private services behave like the real outages they stand for.

A fault test is only as good as its fault: an S3 "stop" that kept serving pooled connections, or
a broker "restart" that lost the durable queues, would make the suite measure something else.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from uuid import uuid4

import aio_pika
import pytest
import urllib3
from minio import Minio

from tests.fixtures.private_postgres import PrivatePostgres
from tests.fixtures.private_rabbitmq import PrivateRabbitMQ, port_open
from tests.fixtures.stoppable_s3 import ACCESS_KEY, SECRET_KEY, StoppableS3

pytestmark = [pytest.mark.integration, pytest.mark.faults]


def test_s3_stop_cuts_open_connections_and_keeps_the_objects(stoppable_s3: StoppableS3) -> None:
    http = urllib3.PoolManager(timeout=2, retries=False)
    client = Minio(stoppable_s3.server.endpoint, ACCESS_KEY, SECRET_KEY, secure=False,
                   http_client=http)
    bucket = f"meerkat-faults-{uuid4().hex[:12]}"
    client.make_bucket(bucket)
    client.put_object(bucket, "kept", io.BytesIO(b"survives"), 8)
    try:
        stoppable_s3.stop()
        # The pooled keep-alive connection is the one a "stopped" server must not serve.
        with pytest.raises(urllib3.exceptions.HTTPError):
            client.get_object(bucket, "kept")
    finally:
        stoppable_s3.start()
    assert client.get_object(bucket, "kept").read() == b"survives"


async def test_rabbitmq_restart_keeps_durable_queues_and_persistent_messages(
    private_rabbitmq: PrivateRabbitMQ,
) -> None:
    queue_name = f"faults-selftest-{uuid4().hex[:8]}"
    connection = await aio_pika.connect(private_rabbitmq.amqp_url)
    channel = await connection.channel(publisher_confirms=True)
    await channel.declare_queue(queue_name, durable=True, arguments={"x-queue-type": "quorum"})
    await channel.default_exchange.publish(
        aio_pika.Message(b"kept", delivery_mode=aio_pika.DeliveryMode.PERSISTENT), queue_name)
    await asyncio.to_thread(private_rabbitmq.stop)
    assert not port_open(private_rabbitmq.port)
    with contextlib.suppress(Exception):  # closed by the broker's shutdown already
        await connection.close()
    await asyncio.to_thread(private_rabbitmq.start)
    again = await aio_pika.connect(private_rabbitmq.amqp_url)
    try:
        queue = await (await again.channel()).get_queue(queue_name, ensure=True)
        message = await queue.get(no_ack=True, fail=False)
        assert message is not None, "the persistent message did not survive the restart"
        assert message.body == b"kept"
        await queue.delete(if_unused=False, if_empty=False)
    finally:
        await again.close()


def test_postgres_stop_refuses_connections_and_restart_keeps_the_data(
    private_postgres: PrivatePostgres,
) -> None:
    database = private_postgres.new_database()
    try:
        private_postgres.psql("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('row')",
                              database)
        private_postgres.stop()
        assert not private_postgres.accepts_connections()
        private_postgres.start()
        private_postgres.restart()
        assert private_postgres.psql("SELECT v FROM kept", database).strip() == "row"
    finally:
        private_postgres.ensure_running()
        private_postgres.drop_database(database)


def test_postgres_template_is_migrated(private_postgres: PrivatePostgres) -> None:
    database = private_postgres.new_database()
    try:
        tables = private_postgres.psql(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
            database)
        assert int(tables) > 1, "meerkat-worker migrate created no tables"
    finally:
        private_postgres.drop_database(database)

