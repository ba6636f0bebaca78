"""The pipe protocol of the relay's child process, the choice of where the relay runs, and the
fault plan a child is given."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from worker.config import SECRET_FIELDS, Settings
from worker.faults import RELAY_POINTS, FaultInjected, FaultPlan
from worker.metrics import Metrics
from worker.relay_process import RelayProcess
from worker.relay_protocol import (
    DRAIN,
    WAKE,
    Handoff,
    ProtocolError,
    Report,
    read_commands,
)
from worker.topology import Topology

pytestmark = pytest.mark.unit

PG = "postgresql+asyncpg://meerkat:s3cret@db:5432/meerkat"


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **{"database_url": SecretStr(PG), **values})  # type: ignore[arg-type]


def revealed(s: Settings) -> dict[str, object]:
    values = s.model_dump()
    for name in SECRET_FIELDS:
        secret = getattr(s, name)
        values[name] = None if secret is None else secret.get_secret_value()
    return values


def test_the_handoff_carries_the_settings_as_resolved_secrets_included() -> None:
    given = settings(shards=3, executor_url=SecretStr("http://u:pw@x/run"),
                     command_users={"destroy": ["ops"]}, limits={"max_images": 2},
                     log_format="console", fault="after_commit_before_ack:3")
    topology = Topology(shards=3, delivery_limit=7, prefix="tenant-a")

    handoff = Handoff.decode(Handoff.of(given, topology, "w-1", 42, fault=None).encode())

    assert revealed(handoff.resolved_settings()) == {**revealed(given), "fault": None}
    assert handoff.resolved_topology() == topology
    assert (handoff.worker_id, handoff.parent_pid) == ("w-1", 42)


def test_the_child_resolves_nothing_again(monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    """A secret file gone or an environment changed since the worker started changes nothing:
    the handed values are the only source."""
    handoff = Handoff.of(settings(shards=3), Topology(), None, 1, fault=None)
    monkeypatch.setenv("MEERKAT_SHARDS", "9")
    monkeypatch.setenv("MEERKAT_DATABASE_URL_FILE", str(tmp_path / "gone"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("MEERKAT_PREFETCH=1\n")

    resolved = handoff.resolved_settings()

    assert (resolved.shards, resolved.prefetch) == (3, 256)
    assert resolved.database_url.get_secret_value() == PG


def test_the_handoff_secrets_stay_out_of_reprs() -> None:
    handoff = Handoff.of(settings(), Topology(), None, 1, fault=None)
    assert "s3cret" not in repr(handoff.resolved_settings())


@pytest.mark.parametrize("line", [b"", b"{}", b"[1]", b"not json", b'{"settings": 1}'])
def test_a_broken_handoff_is_a_protocol_error(line: bytes) -> None:
    with pytest.raises(ProtocolError):
        Handoff.decode(line)


@pytest.mark.parametrize("report", [
    Report("pass", published=9, backlog=3, leading=True),
    Report("pass", leading=False),
    Report("pass"),
    Report("drained", published=2, count=5, leading=True),
    Report("drained", error="ConnectionError('not connected to the broker')"),
    Report("fault", point="outbox_loop"),
])
def test_reports_are_one_json_line_each_and_read_back(report: Report) -> None:
    line = report.encode()
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    assert Report.decode(line) == report


@pytest.mark.parametrize("line", [b"", b"{", b'{"kind": "hello"}', b'{"kind": "pass", "x": 1}',
                                  b"[]"])
def test_a_line_that_is_no_report_is_a_protocol_error(line: bytes) -> None:
    with pytest.raises(ProtocolError):
        Report.decode(line)


@pytest.mark.parametrize(("chunk", "expected"), [
    (WAKE, (True, 0)),
    (WAKE * 5, (True, 0)),
    (DRAIN, (False, 1)),
    (WAKE + DRAIN + WAKE + DRAIN, (True, 2)),
    (b"", (False, 0)),
])
def test_commands_wake_once_and_drain_each(chunk: bytes, expected: tuple[bool, int]) -> None:
    assert read_commands(chunk) == expected


def test_an_unknown_command_byte_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="x"):
        read_commands(WAKE + b"x")


# --- where the relay runs ---------------------------------------------------------------------


@pytest.mark.parametrize(("url", "mode", "apart"), [
    (PG, "auto", True),
    ("postgres://u@h/d", "auto", True),
    ("sqlite+aiosqlite:///./x.db", "auto", False),
    ("memory://", "auto", False),
    (PG, "inline", False),
    (PG, "process", True),
    ("sqlite:///x.db", "inline", False),
])
def test_where_the_relay_runs(url: str, mode: str, apart: bool) -> None:
    chosen = Settings(_env_file=None, database_url=SecretStr(url), outbox_relay=mode)  # type: ignore[arg-type]
    assert chosen.relay_runs_apart is apart


@pytest.mark.parametrize("url", ["sqlite+aiosqlite:///./x.db", "memory://"])
def test_a_relay_apart_on_a_database_of_one_process_is_refused(url: str) -> None:
    with pytest.raises(ValidationError, match="needs a PostgreSQL database"):
        Settings(_env_file=None, database_url=SecretStr(url), outbox_relay="process")


# --- the child's fault plan -------------------------------------------------------------------


def test_a_child_gets_only_the_relays_points() -> None:
    plan = FaultPlan.parse("after_commit_before_ack:3,outbox_loop:2:raise,broker_session:1")
    restricted = plan.restricted(RELAY_POINTS)
    assert restricted.spec() == "outbox_loop:2:raise"
    assert not FaultPlan.parse("after_blob_put:1").restricted(RELAY_POINTS)


async def test_a_raise_fault_tells_on_fire_before_it_raises() -> None:
    fired: list[str] = []
    plan = FaultPlan.parse("outbox_loop:2:raise").restricted(RELAY_POINTS, on_fire=fired.append)
    await plan.reach("outbox_loop")
    assert fired == []
    with pytest.raises(FaultInjected):
        await plan.reach("outbox_loop")
    assert fired == ["outbox_loop"]


async def test_a_hang_fault_tells_on_fire_then_hangs() -> None:
    fired: list[str] = []
    plan = FaultPlan.parse("during_outbox_publish:1:hang").restricted(
        RELAY_POINTS, on_fire=fired.append)
    hanging = asyncio.create_task(plan.reach("during_outbox_publish"))
    await asyncio.sleep(0)
    assert fired == ["during_outbox_publish"]
    assert not hanging.done()
    hanging.cancel()


def test_a_fired_fault_is_not_handed_to_the_next_child() -> None:
    relay = RelayProcess(settings(), Topology(), worker_id=None, metrics=Metrics(),
                         faults=FaultPlan.parse("outbox_loop:2:raise,during_outbox_publish:9"))
    relay._on_report(Report("fault", point="outbox_loop").encode())
    assert relay.child_faults() == "during_outbox_publish:9:kill"


def test_reports_keep_the_metrics_and_the_lease_view() -> None:
    metrics = Metrics()
    relay = RelayProcess(settings(), Topology(), worker_id=None, metrics=metrics,
                         faults=FaultPlan())
    relay._on_report(Report("pass", published=4, backlog=2, leading=True).encode())
    relay._on_report(Report("pass", published=3, backlog=0).encode())
    assert metrics.registry.get_sample_value("meerkat_outbox_published_total") == 7
    assert metrics.registry.get_sample_value("meerkat_outbox_backlog") == 0
    assert relay.leading is True
    relay._on_report(b"garbage\n")  # logged, ignored
    assert relay.published == 7
