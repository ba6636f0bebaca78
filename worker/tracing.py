"""Tracing: a W3C trace context carried from a producer's message through its processing, its
run, the reply and the events it caused (OpenTelemetry).

Theory of operation
-------------------
**Off unless configured.** Tracing needs the ``otel`` extra (``opentelemetry-api`` and
``-sdk``; ``otlp`` adds the OTLP exporter) and an exporter named by the standard variables:
``OTEL_TRACES_EXPORTER`` (``otlp``, ``console``, or any exporter installed under the entry
point group ``opentelemetry_traces_exporter``), or ``OTEL_EXPORTER_OTLP_ENDPOINT`` /
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, which mean ``otlp``. ``OTEL_SDK_DISABLED=true``,
``OTEL_TRACES_EXPORTER=none``, no exporter or no SDK: every function here returns at once
(a global read and a comparison, a few tens of ns), no span is made and no header is read. The
rest comes from the SDK's own reading of the environment: ``OTEL_SERVICE_NAME`` and
``OTEL_RESOURCE_ATTRIBUTES`` (the resource; ``service.name`` defaults to ``meerkat-worker``),
``OTEL_TRACES_SAMPLER`` / ``_ARG``, ``OTEL_BSP_*`` (the batch span processor),
``OTEL_EXPORTER_OTLP_*`` (endpoint, protocol, headers, TLS) and ``OTEL_PROPAGATORS`` (default
W3C ``tracecontext`` and ``baggage``).

**The spans of one prompt.** The producer's ``traceparent`` header (absent: a new trace) is the
parent of ``accept`` (kind consumer), from the delivery's receipt to its settlement; under it
``commit`` (the group commit that wrote it, as long as that transaction took) and ``reply``
(kind producer; the reply carries its ``traceparent``). The run that takes the input is
``run``, a child of the ``accept`` span of its first input (the others are links), with the
children ``stage`` (from the stage's request to its commit), ``execute`` (the executor call,
made the current span, so an executor that traces nests its own spans under it) and
``boundary`` (the end's request to its commit; ``fail`` for a failed run). A run staged by the
previous run's end has no ``stage`` span and links that ``boundary``.

**Events.** An event is written to the outbox in the transaction of the decision that made it
and published later, maybe by another worker process after a restart. So the decision carries
the ``traceparent`` of the span it was made in (``accept``, ``stage`` or ``boundary``), the
store keeps it in the event's outbox row (column ``traceparent``; the event's JSON is
unchanged), and the relay publishes each event under a ``publish <code>`` span (kind producer)
whose parent is that stored context, with its own ``traceparent`` in the AMQP headers. With
tracing off the relay passes a stored ``traceparent`` on as it is.

**Memory.** Which ``accept`` span admitted an input is kept in memory, for the run that takes
it (at most :data:`MAX_REMEMBERED_INPUTS`, oldest forgotten first; a run whose inputs were
admitted before a restart starts a new trace).
"""

from __future__ import annotations

import contextlib
import os
from collections import OrderedDict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, cast
from uuid import UUID

import structlog

from worker.version import DISTRIBUTION, package_version

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.propagators.textmap import Getter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, SpanContext, Tracer

log = structlog.get_logger(__name__)

MAX_REMEMBERED_INPUTS = 100_000
TRACEPARENT = "traceparent"


@dataclass
class _Tracing:
    provider: TracerProvider
    tracer: Tracer
    exporters: list[str]
    inputs: OrderedDict[UUID, SpanContext] = field(default_factory=OrderedDict)


_on: _Tracing | None = None
"""The configured tracing, or None: off."""


@dataclass
class RunTrace:
    """The spans of one run: ``run``, and the step (stage or end) being committed."""

    run: Span
    step: Span | None = None


# -- set-up ------------------------------------------------------------------------------------


def exporter_names(environ: Mapping[str, str]) -> list[str]:
    """The exporters the standard variables name (empty: tracing stays off)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    names = environ.get("OTEL_TRACES_EXPORTER", "").strip()
    if not names:
        endpoints = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        return ["otlp"] if any(environ.get(v) for v in endpoints) else []
    chosen = [n.strip() for n in names.split(",") if n.strip()]
    return [] if [n.lower() for n in chosen] == ["none"] else chosen


def _entry_point(name: str, environ: Mapping[str, str]) -> str:
    """``otlp`` is the gRPC or the HTTP exporter, as ``OTEL_EXPORTER_OTLP_*PROTOCOL`` says."""
    if name != "otlp":
        return name
    protocol = (environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc").strip()
    return "otlp_proto_http" if protocol.startswith("http") else "otlp_proto_grpc"


def _load_exporter(name: str, environ: Mapping[str, str]) -> SpanExporter:
    point = _entry_point(name, environ)
    found = entry_points(group="opentelemetry_traces_exporter", name=point)
    if not found:
        raise LookupError(f"no trace exporter {point!r} is installed")
    exporter: SpanExporter = next(iter(found)).load()()  # it reads its own OTEL_* variables
    return exporter


def configure(
    environ: Mapping[str, str] | None = None, *, exporter: SpanExporter | None = None,
    install_global: bool = False,
) -> bool:
    """Turn tracing on when the ``OTEL_*`` variables of ``environ`` (the process's) name an
    exporter, or with ``exporter`` (each span exported as it ends: tests); the SDK reads the
    rest of its settings from the process's environment. Returns whether tracing is on.
    ``install_global`` also makes it OpenTelemetry's global tracer provider (once a process),
    for executors that trace with ``opentelemetry.trace.get_tracer``."""
    global _on
    shutdown()
    env = os.environ if environ is None else environ
    names = ["in-memory"] if exporter is not None else exporter_names(env)
    if not names:
        return False
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

        resource = Resource.create()  # OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME: DISTRIBUTION}))
        provider = TracerProvider(resource=resource)
        if exporter is not None:
            provider.add_span_processor(SimpleSpanProcessor(exporter))
        else:
            for name in names:
                provider.add_span_processor(BatchSpanProcessor(_load_exporter(name, env)))
    except (ImportError, LookupError) as exc:
        log.warning("tracing_off", exporters=names, error=str(exc),
                    hint="install the worker's otel extra (and otlp for the OTLP exporter)")
        return False
    except Exception as exc:  # an exporter refused its OTEL_* settings
        log.warning("tracing_off", exporters=names, error=f"{type(exc).__name__}: {exc}"[:300])
        return False
    if install_global:
        trace.set_tracer_provider(provider)
    _on = _Tracing(provider, provider.get_tracer(DISTRIBUTION, package_version()), names)
    return True


def shutdown() -> None:
    """Export what is left and turn tracing off."""
    global _on
    state, _on = _on, None
    if state is not None:
        state.provider.shutdown()


def active() -> bool:
    return _on is not None


def exporters() -> list[str] | None:
    """The exporters in use, or None when tracing is off (for the start-up line)."""
    return None if _on is None else list(_on.exporters)


# -- contexts ----------------------------------------------------------------------------------


class _HeaderGetter:
    """Reads AMQP headers (values may be bytes) for the propagators."""

    def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
        value = carrier.get(key)
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        return [value] if isinstance(value, str) else None

    def keys(self, carrier: Mapping[str, Any]) -> list[str]:
        return list(carrier)


_GETTER = _HeaderGetter()


def _extract(headers: Mapping[str, Any] | None) -> Context:
    from opentelemetry import propagate

    return propagate.extract(headers or {}, getter=cast("Getter[Mapping[str, Any]]", _GETTER))


def _context_of(span: Span | None) -> Context | None:
    from opentelemetry import trace

    return None if span is None else trace.set_span_in_context(span)


def traceparent(span: Span | None) -> str | None:
    """The W3C ``traceparent`` of ``span`` (what its children are to name as parent)."""
    if span is None:
        return None
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"


def inject(span: Span | None) -> dict[str, str]:
    """The propagation headers naming ``span`` as parent (``traceparent`` among them)."""
    from opentelemetry import propagate

    headers: dict[str, str] = {}
    if span is not None:
        propagate.inject(headers, context=_context_of(span))
    return headers


def end(span: Span | None, error: str | None = None, end_ns: int | None = None) -> None:
    """End ``span``; ``error`` marks it failed."""
    if span is None:
        return
    if error is not None:
        from opentelemetry.trace import Status, StatusCode

        span.set_status(Status(StatusCode.ERROR, error[:500]))
    span.end(end_time=end_ns)


# -- deliveries --------------------------------------------------------------------------------


def received(message: Any) -> Span | None:
    """The ``accept`` span of a delivery (an ``AbstractIncomingMessage``), child of its
    ``traceparent`` header; None when tracing is off."""
    state = _on
    if state is None:
        return None
    from opentelemetry.trace import SpanKind

    return state.tracer.start_span(
        "accept", context=_extract(message.headers), kind=SpanKind.CONSUMER,
        attributes={"messaging.system": "rabbitmq",
                    "messaging.destination.name": message.routing_key or "",
                    "messaging.message.id": message.message_id or "",
                    "messaging.rabbitmq.message.delivery_tag": message.delivery_tag or 0},
    )


def admitted(span: Span | None, input_id: UUID) -> None:
    """Remember that ``span`` admitted ``input_id``, for the run that takes it."""
    state = _on
    if state is None or span is None:
        return
    remembered = state.inputs
    remembered[input_id] = span.get_span_context()
    if len(remembered) > MAX_REMEMBERED_INPUTS:
        remembered.popitem(last=False)


def child(parent: Span | None, name: str, start_ns: int, end_ns: int,
          attributes: Mapping[str, str | int] | None = None) -> None:
    """A finished span ``name`` under ``parent``, from ``start_ns`` to ``end_ns``."""
    state = _on
    if state is None or parent is None:
        return
    span = state.tracer.start_span(name, context=_context_of(parent), start_time=start_ns,
                                   attributes=attributes)
    span.end(end_time=end_ns)


def settled(span: Span | None, settlement: str, reason: str | None = None) -> None:
    """End the ``accept`` span: the delivery was settled so."""
    if span is None:
        return
    span.set_attribute("meerkat.settlement", settlement)
    end(span, reason if settlement == "dead_lettered" else None)


def start_reply(parent: Span | None) -> Span | None:
    """The ``reply`` span of a delivery's reply (inject it into the reply's headers)."""
    state = _on
    if state is None or parent is None:
        return None
    from opentelemetry.trace import SpanKind

    return state.tracer.start_span("reply", context=_context_of(parent), kind=SpanKind.PRODUCER)


# -- runs --------------------------------------------------------------------------------------


def run_staged(runtime_id: str, run_id: UUID, input_ids: Sequence[UUID], start_ns: int,
               after: RunTrace | None = None) -> RunTrace | None:
    """The ``run`` span of a run that takes ``input_ids``: a child of the first input's
    ``accept`` span, linked to the others' (and to ``after``, the end that staged it)."""
    state = _on
    if state is None:
        return None
    from opentelemetry.trace import Link, NonRecordingSpan, set_span_in_context

    contexts = [c for c in (state.inputs.pop(i, None) for i in input_ids) if c is not None]
    parent = set_span_in_context(NonRecordingSpan(contexts[0])) if contexts else None
    links = [Link(c) for c in contexts[1:]]
    if after is not None:
        links.append(Link(after.run.get_span_context()))
    span = state.tracer.start_span(
        "run", context=parent, links=links, start_time=start_ns,
        attributes={"meerkat.runtime_id": runtime_id, "meerkat.run_id": str(run_id),
                    "meerkat.inputs": len(input_ids)},
    )
    return RunTrace(span)


def step_started(run: RunTrace | None, name: str, start_ns: int) -> str | None:
    """Open the run's ``name`` step span (kept when a retry decides the step again); returns
    its ``traceparent`` for the events the step's decision writes."""
    state = _on
    if state is None or run is None:
        return None
    if run.step is None:
        run.step = state.tracer.start_span(name, context=_context_of(run.run),
                                           start_time=start_ns)
    return traceparent(run.step)


def step_committed(run: RunTrace | None, end_ns: int) -> None:
    """The step's commit returned: its span ends."""
    if run is not None and run.step is not None:
        run.step.end(end_time=end_ns)
        run.step = None


def executing(run: RunTrace | None) -> contextlib.AbstractContextManager[object]:
    """The ``execute`` span, current while the executor runs (its own spans nest under it);
    an exception leaving it marks it failed."""
    state = _on
    if state is None or run is None:
        return contextlib.nullcontext()
    from opentelemetry import trace

    span = state.tracer.start_span("execute", context=_context_of(run.run))
    return trace.use_span(span, end_on_exit=True)


def run_ended(run: RunTrace | None, outcome: str, error: str | None = None) -> None:
    """End the run's spans: ``outcome`` is one of the ``meerkat_runs_ended_total`` outcomes."""
    if run is None:
        return
    end(run.step, error)
    run.step = None
    run.run.set_attribute("meerkat.outcome", outcome)
    end(run.run, error if outcome != "completed" else None)


# -- events ------------------------------------------------------------------------------------


def event_headers(stored: str | None, code: str, opened: list[Span]) -> dict[str, str] | None:
    """The propagation headers of an event whose outbox row holds ``stored``: with tracing on
    those of a new ``publish <code>`` span (appended to ``opened``), child of ``stored``; off,
    ``stored`` as it is; None when the event has no trace context."""
    if stored is None:
        return None
    state = _on
    if state is None:
        return {TRACEPARENT: stored}
    from opentelemetry.trace import SpanKind

    span = state.tracer.start_span(f"publish {code}", context=_extract({TRACEPARENT: stored}),
                                   kind=SpanKind.PRODUCER,
                                   attributes={"messaging.system": "rabbitmq"})
    opened.append(span)
    return inject(span)


def end_all(spans: Collection[Span], error: str | None = None) -> None:
    for span in spans:
        end(span, error)
