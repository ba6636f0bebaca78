"""The HTTP endpoint: liveness and readiness checks (concurrent, bounded) and Prometheus
metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from worker.health import LIVENESS_PARTS, READINESS_PARTS, HealthServer, ReadinessError
from worker.metrics import Metrics

pytestmark = pytest.mark.unit


@pytest.fixture
async def server() -> AsyncIterator[HealthServer]:
    health = HealthServer(Metrics(), check_timeout_seconds=0.05)
    await health.start("127.0.0.1", 0)
    try:
        yield health
    finally:
        await health.stop()


async def get(server: HealthServer, path: str) -> tuple[int, str, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{server.port}{path}") as response,
    ):
        return response.status, response.headers["Content-Type"], await response.text()


async def get_json(server: HealthServer, path: str) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{server.port}{path}") as response,
    ):
        return response.status, await response.json()


async def passes() -> None:
    return None


async def test_healthz_answers_ok(server: HealthServer) -> None:
    status, _, body = await get(server, "/healthz")

    assert (status, body) == (200, "ok")


async def test_healthz_is_200_when_every_liveness_check_passes(server: HealthServer) -> None:
    server.add_liveness_check("pipeline", lambda: None)
    server.add_liveness_check("event_loop", passes)

    status, _, body = await get(server, "/healthz")

    assert (status, body) == (200, "ok")
    assert server.metrics.registry.get_sample_value("meerkat_liveness") == 1


async def test_healthz_is_503_naming_the_failing_parts(server: HealthServer) -> None:
    def wedged() -> None:
        raise ReadinessError("no delivery settled for 75s while 12 wait")

    async def leaks() -> None:
        raise RuntimeError("amqp://guest:secret@localhost stuck")

    server.add_liveness_check("pipeline", wedged)
    server.add_liveness_check("relay", leaks)
    server.add_liveness_check("heartbeat", passes)

    status, body = await get_json(server, "/healthz")

    assert status == 503
    assert body == {
        "status": "not_alive",
        "failing": {
            "pipeline": "no delivery settled for 75s while 12 wait",
            "relay": "RuntimeError",
        },
        "passing": ["heartbeat"],
    }
    assert server.metrics.registry.get_sample_value("meerkat_liveness") == 0


async def test_a_hanging_liveness_check_times_out_to_503(server: HealthServer) -> None:
    async def hangs() -> None:
        await asyncio.Event().wait()

    server.add_liveness_check("pipeline", hangs)

    status, body = await get_json(server, "/healthz")

    assert status == 503
    assert body["failing"] == {"pipeline": "no answer within 0.05s"}


async def test_healthz_recovers_when_the_check_passes_again(server: HealthServer) -> None:
    wedged = True

    def pipeline() -> None:
        if wedged:
            raise ReadinessError("no delivery settled for 75s while 1 wait")

    server.add_liveness_check("pipeline", pipeline)
    assert (await get(server, "/healthz"))[0] == 503

    wedged = False
    assert (await get(server, "/healthz"))[0] == 200


def test_the_parts_the_worker_registers() -> None:
    assert "tasks" in READINESS_PARTS
    assert LIVENESS_PARTS == ("pipeline", "outbox", "runs")


async def test_readyz_is_200_when_every_check_passes(server: HealthServer) -> None:
    for name in ("database", "blob_store", "broker", "consumers"):
        server.add_check(name, passes)

    status, body = await get_json(server, "/readyz")

    assert status == 200
    assert body["failing"] == {}
    assert sorted(body["passing"]) == ["blob_store", "broker", "consumers", "database"]
    assert server.metrics.registry.get_sample_value("meerkat_readiness") == 1


async def test_readyz_is_503_naming_the_failing_parts(server: HealthServer) -> None:
    async def broker_down() -> None:
        raise ConnectionRefusedError("amqp://guest:secret@localhost refused")

    async def no_consumers() -> None:
        raise ReadinessError("2 of 16 shard consumers registered")

    server.add_check("database", passes)
    server.add_check("broker", broker_down)
    server.add_check("consumers", no_consumers)

    status, body = await get_json(server, "/readyz")

    assert status == 503
    assert body["failing"] == {
        "broker": "ConnectionRefusedError",
        "consumers": "2 of 16 shard consumers registered",
    }
    assert body["passing"] == ["database"]
    assert server.metrics.registry.get_sample_value("meerkat_readiness") == 0


async def test_a_hanging_check_times_out_to_503(server: HealthServer) -> None:
    cancelled = asyncio.Event()

    async def hangs() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    server.add_check("database", passes)
    server.add_check("blob_store", hangs)

    status, body = await get_json(server, "/readyz")

    assert status == 503
    assert body["failing"] == {"blob_store": "no answer within 0.05s"}
    assert cancelled.is_set(), "the hanging check must not be left running"


async def test_checks_run_concurrently() -> None:
    # Each check waits until the other has started: run one after the other, both would time out.
    first_started, second_started = asyncio.Event(), asyncio.Event()

    async def first() -> None:
        first_started.set()
        await second_started.wait()

    async def second() -> None:
        second_started.set()
        await first_started.wait()

    health = HealthServer(Metrics(), {"database": first, "broker": second})

    readiness = await health.check_readiness()

    assert readiness.ready
    assert readiness.passing == ("database", "broker")


async def test_metrics_are_prometheus_text(server: HealthServer) -> None:
    server.metrics.messages_received.labels(kind="input").inc()
    server.metrics.commit_batch_size.observe(3)

    status, content_type, body = await get(server, "/metrics")

    assert status == 200
    assert content_type.startswith("text/plain")
    assert 'meerkat_messages_received_total{kind="input"} 1.0' in body
    assert "meerkat_commit_batch_size_bucket" in body
    assert "meerkat_readiness" in body


def test_each_metrics_instance_has_its_own_registry() -> None:
    first, second = Metrics(), Metrics()
    first.runs_started.inc()

    assert b"meerkat_runs_started_total 1.0" in first.render()
    assert b"meerkat_runs_started_total 0.0" in second.render()


def test_every_named_metric_is_exported() -> None:
    metrics = Metrics(CollectorRegistry())
    names = {family.name for family in metrics.registry.collect()}

    # Counter families are named without the _total the exposition adds.
    assert names == {
        "meerkat_messages_received",
        "meerkat_messages_acked",
        "meerkat_messages_requeued",
        "meerkat_messages_dead_lettered",
        "meerkat_replies_refused",
        "meerkat_commits",
        "meerkat_commit_failures",
        "meerkat_version_conflicts",
        "meerkat_commit_batch_size",
        "meerkat_commit_seconds",
        "meerkat_runs_started",
        "meerkat_runs_completed",
        "meerkat_runs_failed",
        "meerkat_runs_active",
        "meerkat_outbox_published",
        "meerkat_outbox_backlog",
        "meerkat_consumers_registered",
        "meerkat_runtimes_cached",
        "meerkat_readiness",
        "meerkat_liveness",
        "meerkat_task_restarts",
        "meerkat_deliveries_waiting",
        "meerkat_seconds_since_progress",
        "meerkat_retention_deleted",
        "meerkat_retention_failures",
        "meerkat_dead_letter_queue_messages",
        "meerkat_dead_letter_queue_max_length",
    }


async def test_stop_releases_the_port() -> None:
    health = HealthServer(Metrics())
    await health.start("127.0.0.1", 0)
    port = health.port
    await health.stop()

    with pytest.raises(RuntimeError, match="not started"):
        _ = health.port
    again = HealthServer(Metrics())
    await again.start("127.0.0.1", port)
    try:
        assert again.port == port
    finally:
        await again.stop()
