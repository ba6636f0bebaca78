"""The tracing glue (:mod:`worker.tracing`): when it turns on, what it does off, and the spans
and contexts it makes on (exported to memory)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from worker import tracing

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
PARENT_TRACE = 0x0AF7651916CD43DD8448EB211C80319C
PARENT_SPAN = 0xB7AD6B7169203331


class Message:
    """What :func:`tracing.received` reads of an incoming AMQP message."""

    def __init__(self, headers: dict[str, Any] | None) -> None:
        self.headers = headers
        self.routing_key = "rt:1"
        self.message_id = str(uuid4())
        self.delivery_tag = 1


@pytest.fixture
def exported() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    assert tracing.configure(exporter=exporter)
    try:
        yield exporter
    finally:
        tracing.shutdown()


@pytest.mark.parametrize(("environ", "names"), [
    ({}, []),
    ({"OTEL_TRACES_EXPORTER": "none"}, []),
    ({"OTEL_TRACES_EXPORTER": "console"}, ["console"]),
    ({"OTEL_TRACES_EXPORTER": "otlp, console"}, ["otlp", "console"]),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, ["otlp"]),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, ["otlp"]),
    ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "console"}, []),
    ({"OTEL_SDK_DISABLED": "TRUE", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}, []),
    ({"OTEL_SDK_DISABLED": "false", "OTEL_TRACES_EXPORTER": "console"}, ["console"]),
])
def test_the_standard_variables_choose_the_exporters(
    environ: dict[str, str], names: list[str]
) -> None:
    assert tracing.exporter_names(environ) == names


def test_tracing_is_off_without_an_exporter_or_when_disabled() -> None:
    assert not tracing.configure({})
    assert not tracing.configure({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "console"})
    assert not tracing.configure({"OTEL_TRACES_EXPORTER": "no-such-exporter"})
    assert not tracing.active()
    assert tracing.exporters() is None


def test_an_installed_exporter_turns_it_on_until_shutdown() -> None:
    try:
        assert tracing.configure({"OTEL_TRACES_EXPORTER": "console"})
        assert tracing.active()
        assert tracing.exporters() == ["console"]
    finally:
        tracing.shutdown()
    assert not tracing.active()


def test_off_every_call_is_a_no_op_and_stored_contexts_pass_through() -> None:
    assert tracing.received(Message({"traceparent": PARENT})) is None
    assert tracing.traceparent(None) is None
    assert tracing.start_reply(None) is None
    assert tracing.run_staged("rt:1", uuid4(), [uuid4()], 0) is None
    assert tracing.step_started(None, "stage", 0) is None
    with tracing.executing(None):
        pass
    tracing.run_ended(None, "completed")
    opened: list[Any] = []
    assert tracing.event_headers(PARENT, "run.completed", opened) == {"traceparent": PARENT}
    assert tracing.event_headers(None, "run.completed", opened) is None
    assert opened == []


def test_a_delivery_continues_the_producer_s_trace(exported: InMemorySpanExporter) -> None:
    span = tracing.received(Message({"traceparent": PARENT.encode()}))  # bytes, as AMQP may
    tracing.child(span, "commit", 1_000, 2_000, {"meerkat.batch_size": 3})
    tracing.settled(span, "dead_lettered", "malformed")

    accept, commit = (next(s for s in exported.get_finished_spans() if s.name == name)
                      for name in ("accept", "commit"))
    assert accept.parent is not None
    assert accept.parent.span_id == PARENT_SPAN
    assert accept.context is not None
    assert accept.context.trace_id == PARENT_TRACE
    assert accept.status.status_code.name == "ERROR"
    assert commit.parent is not None
    assert commit.parent.span_id == accept.context.span_id
    assert (commit.start_time, commit.end_time) == (1_000, 2_000)
    traceparent = tracing.traceparent(span)
    assert traceparent is not None
    assert traceparent.startswith(f"00-{PARENT_TRACE:032x}-{accept.context.span_id:016x}-")


def test_a_run_is_a_child_of_its_first_input_and_links_the_others(
    exported: InMemorySpanExporter,
) -> None:
    first, second = tracing.received(Message(None)), tracing.received(Message(None))
    input_ids = [uuid4(), uuid4()]
    tracing.admitted(first, input_ids[0])
    tracing.admitted(second, input_ids[1])

    run = tracing.run_staged("rt:1", uuid4(), input_ids, 5_000)
    stage = tracing.step_started(run, "stage", 5_000)
    assert stage == tracing.step_started(run, "stage", 6_000), "a retried step keeps its span"
    tracing.step_committed(run, 7_000)
    with tracing.executing(run):
        pass
    tracing.run_ended(run, "completed")

    found = {s.name: s for s in exported.get_finished_spans()}
    assert first is not None
    assert second is not None
    assert found["run"].parent is not None
    assert found["run"].parent.span_id == first.get_span_context().span_id
    assert [link.context.span_id for link in found["run"].links] == [
        second.get_span_context().span_id
    ]
    run_ctx = found["run"].context
    assert run_ctx is not None
    for name in ("stage", "execute"):
        parent = found[name].parent
        assert parent is not None
        assert parent.span_id == run_ctx.span_id
    assert (found["stage"].start_time, found["stage"].end_time) == (5_000, 7_000)


def test_an_event_is_published_under_a_span_of_its_stored_context(
    exported: InMemorySpanExporter,
) -> None:
    opened: list[Any] = []
    headers = tracing.event_headers(PARENT, "run.completed", opened)
    tracing.end_all(opened)

    (published,) = exported.get_finished_spans()
    assert published.name == "publish run.completed"
    assert published.parent is not None
    assert published.parent.span_id == PARENT_SPAN
    assert headers is not None
    assert headers["traceparent"] == tracing.traceparent(opened[0])
    assert headers["traceparent"] != PARENT


def test_without_the_sdk_the_worker_imports_and_tracing_stays_off() -> None:
    program = (
        "import sys\n"
        "sys.modules['opentelemetry'] = None\n"  # as if the otel extra were not installed
        "import worker.app, worker.pipeline.committer, worker.outbox\n"
        "from worker import tracing\n"
        "assert not tracing.configure({'OTEL_TRACES_EXPORTER': 'console'})\n"
        "assert tracing.event_headers('00-ab-cd-01', 'x', []) == {'traceparent': '00-ab-cd-01'}\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", program], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "ok"
    assert "tracing_off" in done.stdout + done.stderr
