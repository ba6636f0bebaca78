"""The pytest plugin of ``meerkat-worker[testing]``: service, deployment and worker fixtures.

Installed with the extra, pytest loads it by itself (entry point ``pytest11``, named
``worker.testing.plugin`` like the module, so that a ``conftest.py`` may also list it in
``pytest_plugins`` without loading it twice; ``-p no:worker.testing.plugin`` turns it off).

Fixtures:

- ``meerkat_rabbitmq``, ``meerkat_postgresql``, ``meerkat_s3`` (session): each service, found
  once, as :mod:`worker.testing.services` says (environment, then containers, then the
  machine's own / moto); only the ones a test asks for are brought up.
- ``meerkat_services`` (session): the three together; ``.sources`` says where each came from.
- ``meerkat_deployment``: this test's own topology prefix, database and bucket
  (:mod:`worker.testing.isolation`), removed afterwards.
- ``meerkat_worker``: ``await meerkat_worker(executor=..., **settings)`` starts a
  :class:`~worker.testing.harness.WorkerHarness` on the test's deployment; every one started is
  stopped at teardown. Its defaults come from ``meerkat_executor`` (None: ``MEERKAT_EXECUTOR``)
  and ``meerkat_settings`` (a dict), which a ``conftest.py`` may override.

The report header says where each service would come from; the terminal summary says where
the ones used came from.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio

from worker.testing.harness import ExecutorChoice, WorkerFactory, WorkerHarness
from worker.testing.isolation import Deployment, ServiceUnavailable, open_deployment
from worker.testing.services import (
    AMQP_URL_VARIABLE,
    BLOB_URL_VARIABLE,
    POSTGRES_URL_VARIABLE,
    S3,
    PostgreSQL,
    RabbitMQ,
    Services,
    masked,
    open_postgresql,
    open_rabbitmq,
    open_s3,
    planned_sources,
)

_USED = pytest.StashKey[dict[str, str]]()


def pytest_report_header(config: pytest.Config) -> list[str]:
    planned = ", ".join(f"{name}={source}" for name, source in planned_sources().items())
    return [f"meerkat services: {planned} (override with {AMQP_URL_VARIABLE}, "
            f"{POSTGRES_URL_VARIABLE}, {BLOB_URL_VARIABLE})"]


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int,
                            config: pytest.Config) -> None:
    used = config.stash.get(_USED, {})
    if used:
        terminalreporter.write_line(
            "meerkat services used: " + ", ".join(f"{k}={v}" for k, v in used.items()))


def _record(config: pytest.Config, name: str, source: str, where: str) -> None:
    config.stash.setdefault(_USED, {})[name] = f"{source} ({where})"


# --- services ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def meerkat_rabbitmq(pytestconfig: pytest.Config) -> Iterator[RabbitMQ]:
    """The session's RabbitMQ (with the consistent-hash exchange plugin)."""
    with open_rabbitmq() as service:
        _record(pytestconfig, "rabbitmq", service.source, masked(service.url))
        yield service


@pytest.fixture(scope="session")
def meerkat_postgresql(pytestconfig: pytest.Config) -> Iterator[PostgreSQL]:
    """The session's PostgreSQL server (databases are made per test)."""
    with open_postgresql() as service:
        _record(pytestconfig, "postgresql", service.source, masked(service.url))
        yield service


@pytest.fixture(scope="session")
def meerkat_s3(pytestconfig: pytest.Config) -> Iterator[S3]:
    """The session's S3 server (buckets are made per test)."""
    with open_s3() as service:
        _record(pytestconfig, "s3", service.source, service.endpoint)
        yield service


@pytest.fixture(scope="session")
def meerkat_services(meerkat_rabbitmq: RabbitMQ, meerkat_postgresql: PostgreSQL,
                     meerkat_s3: S3) -> Services:
    """RabbitMQ, PostgreSQL and S3 for the session; ``.sources`` names where each came from."""
    return Services(meerkat_rabbitmq, meerkat_postgresql, meerkat_s3)


# --- per test ---------------------------------------------------------------------------------


@pytest_asyncio.fixture
async def meerkat_deployment(meerkat_services: Services) -> AsyncIterator[Deployment]:
    """This test's own topology prefix, database (migrated) and bucket; removed afterwards."""
    async with contextlib.AsyncExitStack() as stack:
        try:
            deployment = await stack.enter_async_context(open_deployment(meerkat_services))
        except ServiceUnavailable as exc:
            pytest.fail(str(exc), pytrace=False)
        yield deployment


@pytest.fixture
def meerkat_executor() -> ExecutorChoice:
    """The executor ``meerkat_worker`` uses unless told otherwise: None (``MEERKAT_EXECUTOR``,
    by default the echo executor). Override it to test your own."""
    return None


@pytest.fixture
def meerkat_settings() -> dict[str, Any]:
    """Settings overrides ``meerkat_worker`` applies unless told otherwise (field names of
    ``worker.config.Settings``: ``shards``, ``delivery_limit``, ...)."""
    return {}


@pytest_asyncio.fixture
async def meerkat_worker(
    meerkat_deployment: Deployment, meerkat_executor: ExecutorChoice,
    meerkat_settings: dict[str, Any],
) -> AsyncIterator[WorkerFactory]:
    """``harness = await meerkat_worker(executor=..., **settings)``: a worker in this process on
    the test's deployment; all are stopped at teardown."""
    started: list[WorkerHarness] = []

    async def start(executor: ExecutorChoice = None, *, serve_http: bool = False,
                    **overrides: Any) -> WorkerHarness:
        harness = WorkerHarness(meerkat_deployment, executor=executor or meerkat_executor,
                                serve_http=serve_http, **{**meerkat_settings, **overrides})
        started.append(harness)
        return await harness.start()

    yield start
    for harness in reversed(started):
        await harness.close()
