"""Fixtures of the fault tests, and the result table printed at the end of the session.

Two kinds of fault tests live here. ``test_worker_crash.py`` kills workers on the shared test
services (``worker_env`` / ``worker_factory``). The fault suite (``test_fault_suite.py``) also
stops and restarts the services themselves, so it runs on private ones: a RabbitMQ node, a
PostgreSQL cluster and an S3 server of the session's own, started once per session (a node
takes seconds to boot) and handed to each run through ``dependencies``; each run makes its own
topology, database and bucket on them (``fault_run``).

``pytest_terminal_summary`` prints the table of :mod:`tests.faults.report` whenever any run
of the suite was recorded, failed runs included, and writes it to ``.faults/report.md``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.faults import report, scale
from tests.faults.harness import SHARDS, Dependencies, FaultRun
from tests.faults.workers import WorkerProcess
from tests.fixtures.private_postgres import PrivatePostgres, private_postgres
from tests.fixtures.private_rabbitmq import PrivateRabbitMQ, private_rabbitmq
from tests.fixtures.rabbitmq import TopologyFactory
from tests.fixtures.stoppable_s3 import StoppableS3, stoppable_s3
from worker.topology import Topology

__all__ = ["RunFactory", "WorkerFactory", "WorkerProcess", "private_postgres", "private_rabbitmq",
           "stoppable_s3"]

WorkerFactory = Callable[[], WorkerProcess]
RunFactory = Callable[..., FaultRun]


@pytest.fixture
def worker_env(
    amqp_url: str, postgres_url: str, s3_url: str, topology_factory: TopologyFactory
) -> tuple[dict[str, str], Topology]:
    topology = topology_factory(shards=4, delivery_limit=5)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEERKAT_")}
    env.update({
        "MEERKAT_AMQP_URL": amqp_url,
        "MEERKAT_DATABASE_URL": postgres_url,
        "MEERKAT_BLOB_URL": s3_url,
        "MEERKAT_SHARDS": str(topology.shards),
        "MEERKAT_DELIVERY_LIMIT": str(topology.delivery_limit),
        "MEERKAT_TOPOLOGY_PREFIX": topology.prefix,
        "MEERKAT_SHUTDOWN_GRACE_SECONDS": "10",
        "MEERKAT_LOG_FORMAT": "json",
    })
    return env, topology


@pytest.fixture
def worker_factory(
    worker_env: tuple[dict[str, str], Topology], tmp_path: Path
) -> Iterator[WorkerFactory]:
    started: list[WorkerProcess] = []

    def start() -> WorkerProcess:
        process = WorkerProcess(worker_env[0], tmp_path / f"worker-{len(started)}.log",
                                name=f"worker-{len(started)}")
        started.append(process)
        return process

    yield start
    for process in started:
        process.close()


@pytest.fixture(scope="session")
def dependencies(private_rabbitmq: PrivateRabbitMQ, private_postgres: PrivatePostgres,
                 stoppable_s3: StoppableS3) -> Dependencies:
    return Dependencies(private_rabbitmq, private_postgres, stoppable_s3)


@pytest.fixture
def fault_run(dependencies: Dependencies) -> RunFactory:
    """``fault_run(scenario, run, slug, shards=4, **options)``: a run to use as ``async with``
    (options: those of :class:`FaultRun`); its files go to ``.faults/runs/<slug>-run<run>/``."""

    def make(scenario: str, run: int, slug: str, shards: int = SHARDS,
             *, in_table: bool = True, **options: Any) -> FaultRun:
        return FaultRun(dependencies, scenario, run, slug, shards, in_table=in_table, **options)

    return make


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if scale.FIGURES:
        terminalreporter.section("scale figures")
        for test, lines in scale.FIGURES:
            terminalreporter.write_line(test)
            for line in lines:
                terminalreporter.write_line(f"  {line}")
        terminalreporter.write_line(f"(written to {scale.FIGURES_FILE})")
    if not report.OUTCOMES:
        return
    table = report.render(report.OUTCOMES)
    path = report.write(report.OUTCOMES)
    terminalreporter.section("fault suite")
    terminalreporter.write(table)
    terminalreporter.write_line(f"(written to {path})")
