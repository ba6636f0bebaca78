"""The Dramatiq consumer of the ``dramatiq`` scenario: ``python -m bench.dramatiq_actor``.

A stock ``RabbitmqBroker`` (its default middleware) and one actor, ``bench_insert``, on the queue
named by ``--queue``, with no retries (a failed message goes to the dead-letter queue, where the
benchmark's check finds it). The actor writes its message with one ``INSERT`` on the thread's
own psycopg connection in autocommit mode: one statement, one transaction, one commit per
message, the unit of work of a Dramatiq task. Dramatiq acks the message once the actor has
returned. One process with ``--threads`` worker threads (Dramatiq's default is 8 per process)
runs until SIGTERM, then stops its worker (which finishes the messages in hand) and exits 0.

Needs the ``bench`` extra: ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from collections.abc import Callable, Sequence

import dramatiq
import psycopg
from dramatiq.brokers.rabbitmq import RabbitmqBroker

ACTOR = "bench_insert"
INSERT = ("INSERT INTO bench_messages (message_id, routing_key, body) "
          "VALUES (%s::uuid, %s, %s::jsonb)")
TABLE = """
CREATE TABLE bench_messages (
    message_id uuid PRIMARY KEY,
    routing_key text NOT NULL,
    body jsonb NOT NULL,
    received_at timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""
"""The table the benchmark creates; ``received_at`` is the insert's own time, which times the
run from the outside."""
DEFAULT_THREADS = 8


def inserter(database_url: str) -> Callable[[str, str, str], None]:
    """The actor's body: one autocommit INSERT, on a connection of the calling thread's own."""
    local = threading.local()

    def bench_insert(message_id: str, routing_key: str, body: str) -> None:
        connection: psycopg.Connection[tuple[object, ...]] | None = getattr(
            local, "connection", None)
        if connection is None:
            connection = psycopg.connect(database_url, autocommit=True)
            local.connection = connection
        connection.execute(INSERT, (message_id, routing_key, body))

    return bench_insert


def serve(amqp_url: str, database_url: str, queue: str, threads: int) -> None:
    broker = RabbitmqBroker(url=amqp_url)
    dramatiq.actor(actor_name=ACTOR, queue_name=queue, broker=broker,
                   max_retries=0)(inserter(database_url))
    worker = dramatiq.Worker(broker, worker_threads=threads)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    worker.start()
    stopping.wait()
    worker.stop()
    broker.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.dramatiq_actor")
    parser.add_argument("--amqp-url", required=True)
    parser.add_argument("--database-url", required=True, help="postgresql:// of the table")
    parser.add_argument("--queue", required=True)
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(args.amqp_url, args.database_url, args.queue, args.threads)


if __name__ == "__main__":
    main()
