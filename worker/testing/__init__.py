"""The test kit of meerkat-worker (``pip install 'meerkat-worker[testing]'``).

Theory of operation
-------------------
A test of an integration needs what production has (a RabbitMQ with the consistent-hash
exchange plugin, PostgreSQL, an S3 store, a worker running the test's executor), isolated from
every other test, and ways to wait for what the worker did without sleeping. The kit has four
layers, each usable without the ones above it:

1. :mod:`worker.testing.services` finds each service once per session: a URL in the
   environment (``MEERKAT_TEST_AMQP_URL``, ``MEERKAT_TEST_POSTGRES_URL``,
   ``MEERKAT_TEST_BLOB_URL``), else a testcontainers container when a Docker daemon answers,
   else the machine's own RabbitMQ and PostgreSQL and an in-process moto S3 server.
2. :mod:`worker.testing.isolation` makes one test's :class:`Deployment` on them: a topology
   prefix, a freshly created and migrated database, a bucket, all removed afterwards.
3. :mod:`worker.testing.harness` runs a :class:`WorkerHarness`: the real
   :class:`~worker.app.Worker` in the test's process with the executor the test names, a
   producer client (:mod:`worker.client`) and observers (:mod:`worker.testing.observe`) of the
   events and the dead letters, started before the worker. Every wait is on an arrival or a
   counter of the worker, bounded by a timeout whose error names what was awaited.
4. :mod:`worker.testing.plugin` is the pytest plugin (entry point ``pytest11``) that offers the
   layers as fixtures: ``meerkat_services``, ``meerkat_deployment``, ``meerkat_worker``.

Outside pytest, the same runs as ``async with open_deployment(services)`` and
``await WorkerHarness(deployment, executor=...).start()``.
"""

from worker.testing.harness import ExecutorChoice, WorkerFactory, WorkerHarness
from worker.testing.isolation import Deployment, ServiceUnavailable, open_deployment
from worker.testing.observe import WaitTimeout, within
from worker.testing.services import (
    AMQP_URL_VARIABLE,
    BLOB_URL_VARIABLE,
    POSTGRES_URL_VARIABLE,
    S3,
    PostgreSQL,
    RabbitMQ,
    Services,
    open_postgresql,
    open_rabbitmq,
    open_s3,
)

__all__ = [
    "AMQP_URL_VARIABLE",
    "BLOB_URL_VARIABLE",
    "POSTGRES_URL_VARIABLE",
    "S3",
    "Deployment",
    "ExecutorChoice",
    "PostgreSQL",
    "RabbitMQ",
    "ServiceUnavailable",
    "Services",
    "WaitTimeout",
    "WorkerFactory",
    "WorkerHarness",
    "open_deployment",
    "open_postgresql",
    "open_rabbitmq",
    "open_s3",
    "within",
]
