"""Tracing through a worker: a prompt published with a W3C ``traceparent`` is traced from the
producer's span to the ``run.completed`` event, each span the child it should be, and the reply
and the events carry the ``traceparent`` of their own spans.

The worker traces to an in-memory exporter (each span exported as it ends); the producer's
span is made by a tracer provider of the test's own, as another process would.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from tenacity import AsyncRetrying, RetryError, stop_after_delay, wait_fixed

from schemas import INPUT_MESSAGE_TYPE, Accepted, Reply
from tests.integration.conftest import Stack, StackFactory, new_runtime_id
from worker import tracing
from worker.cli.publish import build_prompt
from worker.pipeline.authz import DIRECT_REPLY_TO

pytestmark = pytest.mark.integration

WAIT_SECONDS = 30


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on for this test, every span of the worker kept in memory."""
    exporter = InMemorySpanExporter()
    assert tracing.configure(exporter=exporter)
    try:
        yield exporter
    finally:
        tracing.shutdown()


def _traceparent_of(span: ReadableSpan) -> str:
    ctx = span.get_span_context()
    assert ctx is not None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"


def _one(found: Sequence[ReadableSpan], name: str) -> ReadableSpan:
    named = [s for s in found if s.name == name]
    assert len(named) == 1, f"{len(named)} spans named {name!r}: {[s.name for s in found]}"
    return named[0]


def _is_child(child: ReadableSpan, parent: ReadableSpan) -> bool:
    own, theirs = child.get_span_context(), parent.get_span_context()
    assert own is not None
    assert theirs is not None
    return (child.parent is not None and child.parent.span_id == theirs.span_id
            and own.trace_id == theirs.trace_id)


async def _finished(exporter: InMemorySpanExporter, names: set[str]) -> list[ReadableSpan]:
    """The spans exported, once every one of ``names`` is among them (polled)."""
    try:
        async for attempt in AsyncRetrying(stop=stop_after_delay(WAIT_SECONDS),
                                           wait=wait_fixed(0.1)):
            with attempt:
                found = list(exporter.get_finished_spans())
                assert names <= {s.name for s in found}
    except RetryError:
        have = sorted({s.name for s in exporter.get_finished_spans()})
        raise AssertionError(f"spans {sorted(names)} not all ended within {WAIT_SECONDS}s; "
                             f"ended: {have}") from None
    return found


async def test_a_prompt_is_traced_from_its_publish_to_run_completed(
    spans: InMemorySpanExporter, stack_factory: StackFactory
) -> None:
    # The spans are kept in this process's memory, so the relay publishes from here too (a relay
    # apart exports its own, configured from the same OTEL_* environment: test_relay_process).
    stack: Stack = await stack_factory(outbox_relay="inline")
    runtime_id = new_runtime_id()
    events: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
    watch = await stack.channel.declare_queue(exclusive=True, auto_delete=True)
    await watch.bind(stack.topology.events_exchange, routing_key="run.completed")
    await watch.consume(events.put, no_ack=True)

    producer = TracerProvider().get_tracer("producer")
    channel = await stack.connection.channel(publisher_confirms=True)
    replies: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
    reply_queue = await channel.get_queue(DIRECT_REPLY_TO, ensure=False)
    await reply_queue.consume(replies.put, no_ack=True)
    envelope = build_prompt(runtime_id, "trace me", [])
    headers: dict[str, str] = {}
    with producer.start_as_current_span("publish prompt", kind=SpanKind.PRODUCER) as sent:
        TraceContextTextMapPropagator().inject(headers)
        exchange = await channel.get_exchange(stack.topology.ingress_exchange, ensure=False)
        await exchange.publish(
            aio_pika.Message(envelope.model_dump_json().encode(), headers=dict(headers),
                             content_type="application/json", type=INPUT_MESSAGE_TYPE,
                             message_id=str(envelope.input.header.id),
                             reply_to=DIRECT_REPLY_TO, correlation_id="traced-1",
                             delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key=runtime_id,
        )
    reply = await asyncio.wait_for(replies.get(), WAIT_SECONDS)
    assert isinstance(Reply.model_validate_json(reply.body).outcome, Accepted)
    completed = await asyncio.wait_for(events.get(), WAIT_SECONDS)
    assert completed.headers.get("x-runtime-id") == runtime_id
    await channel.close()

    found = await _finished(spans, {"accept", "commit", "reply", "run", "stage", "execute",
                                    "boundary", "publish input.accepted",
                                    "publish run.completed"})
    producer_ctx = sent.get_span_context()
    accept = _one(found, "accept")
    assert accept.kind is SpanKind.CONSUMER
    assert accept.parent is not None
    assert accept.parent.span_id == producer_ctx.span_id
    assert accept.context is not None
    assert accept.context.trace_id == producer_ctx.trace_id
    assert accept.attributes is not None
    assert accept.attributes["meerkat.settlement"] == "acked"
    commits = [s for s in found if s.name == "commit" and _is_child(s, accept)]
    assert len(commits) == 1
    replied = _one(found, "reply")
    assert _is_child(replied, accept)
    assert reply.headers.get("traceparent") == _traceparent_of(replied)
    run = _one(found, "run")
    assert _is_child(run, accept), "the run continues the trace of its input"
    for step in ("stage", "execute", "boundary"):
        assert _is_child(_one(found, step), run), step
    published = _one(found, "publish run.completed")
    assert published.kind is SpanKind.PRODUCER
    assert _is_child(published, _one(found, "boundary"))
    assert completed.headers.get("traceparent") == _traceparent_of(published)
    accepted_event = _one(found, "publish input.accepted")
    assert _is_child(accepted_event, accept)
    assert {s.context.trace_id for s in found if s.context is not None} == {
        producer_ctx.trace_id
    }
