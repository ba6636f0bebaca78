"""Prometheus metrics of one worker process, all named ``meerkat_*``.

They live in a registry of their own rather than the process-wide default, so each worker (and
each test) builds a :class:`Metrics` without clashing with another one in the same process.
The alert rules in ``ops/prometheus/alerts.yaml`` and the Grafana dashboard
``ops/grafana/meerkat-worker.json`` use these names; change them together (the unit tests of
both check every ``meerkat_*`` name they use against this registry).

The registry also holds the standard process, platform and garbage-collector collectors
(``process_*``, ``python_info``, ``python_gc_*``). The ``_created`` series that
prometheus-client adds to counters and histograms are switched off for the whole process
(:func:`prometheus_client.disable_created_metrics`): they double the series and nothing reads
them.

Labelled counters on the hot path are used through children made once (``settled["acked"]``),
since ``labels()`` costs a lookup per call.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

from worker.version import package_version

disable_created_metrics()  # type: ignore[no-untyped-call]

PREFIX = "meerkat"
METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST
"""The Content-Type of :meth:`Metrics.render`'s output (Prometheus text format)."""

COMMIT_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
"""Deliveries per group commit; bounded by the prefetch window (256 by default)."""
COMMIT_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
ACCEPT_SECONDS_BUCKETS = (0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
"""Receipt to settlement: the group-commit window, the commit and the ack; long while held."""
RUN_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300,
                       600)
"""Runs and executor calls: milliseconds (echo) to the executor timeout (300 s by default)."""

SETTLEMENTS = ("acked", "duplicate", "dead_lettered", "requeued")
"""How a delivery was settled: acked after its commit (``duplicate``: acked, and it had been
applied before), dead-lettered with its reason, or returned to the broker (its channel
closed: ``requeued``, delivered again)."""
RUN_OUTCOMES = ("completed", "failed", "cancelled", "abandoned")
"""How a run ended: its boundary committed, its failure committed, no longer current at its end
(a command ended it meanwhile), or given up to recovery (shutdown, the store away)."""
REPLY_RESULTS = ("sent", "refused", "failed")


class Metrics:
    """Every metric the worker exports. Counters are named without ``_total``; the exposition
    adds it (``meerkat_messages_received_total``)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = CollectorRegistry() if registry is None else registry
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.build_info = Gauge(
            f"{PREFIX}_build_info", "1, labelled with the worker's version.", ["version"],
            registry=r,
        )
        self.build_info.labels(version=package_version()).set(1)

        self.messages_received = Counter(
            f"{PREFIX}_messages_received",
            "Deliveries taken from the ingress queues, by kind (input, command, malformed, "
            "unauthorized).",
            ["kind"],
            registry=r,
        )
        self.messages_acked = Counter(
            f"{PREFIX}_messages_acked", "Deliveries acked after their commit.", registry=r
        )
        self.messages_requeued = Counter(
            f"{PREFIX}_messages_requeued",
            "Deliveries rejected with requeue after a transient failure, by reason.",
            ["reason"],
            registry=r,
        )
        self.messages_dead_lettered = Counter(
            f"{PREFIX}_messages_dead_lettered",
            "Deliveries rejected without requeue (permanent failure or delivery limit), by reason.",
            ["reason"],
            registry=r,
        )

        self.deliveries_settled = Counter(
            f"{PREFIX}_deliveries_settled",
            "Deliveries settled, by settlement (acked, duplicate, dead_lettered, requeued).",
            ["settlement"],
            registry=r,
        )
        self.settled = {s: self.deliveries_settled.labels(settlement=s) for s in SETTLEMENTS}
        self.accept_seconds = Histogram(
            f"{PREFIX}_accept_seconds",
            "From a delivery's receipt to its settlement (ack, or dead letter then ack).",
            buckets=ACCEPT_SECONDS_BUCKETS,
            registry=r,
        )
        self.version_conflicts = Counter(
            f"{PREFIX}_version_conflicts",
            "Group commits refused because another worker had moved a runtime's version "
            "(a hand-over; retried on a fresh load).",
            registry=r,
        )
        self.replies = Counter(
            f"{PREFIX}_replies",
            "Replies to reply_to, by result (sent, refused: not an allowed name, failed).",
            ["result"],
            registry=r,
        )
        self.reply_results = {result: self.replies.labels(result=result)
                              for result in REPLY_RESULTS}
        self.replies_refused = Counter(
            f"{PREFIX}_replies_refused",
            "Replies not published because reply_to was not an allowed name.",
            registry=r,
        )

        self.commits = Counter(f"{PREFIX}_commits", "Group commits that returned.", registry=r)
        self.commit_failures = Counter(
            f"{PREFIX}_commit_failures",
            "Group commits that failed, by error.",
            ["error"],
            registry=r,
        )
        self.commit_batch_size = Histogram(
            f"{PREFIX}_commit_batch_size",
            "Deliveries decided in one group commit.",
            buckets=COMMIT_BATCH_BUCKETS,
            registry=r,
        )
        self.commit_seconds = Histogram(
            f"{PREFIX}_commit_seconds",
            "Duration of one group commit transaction.",
            buckets=COMMIT_SECONDS_BUCKETS,
            registry=r,
        )

        self.runs_started = Counter(
            f"{PREFIX}_runs_started",
            "Runs whose batch was staged and handed to the executor.",
            registry=r,
        )
        self.runs_completed = Counter(
            f"{PREFIX}_runs_completed", "Runs whose boundary was committed.", registry=r
        )
        self.runs_failed = Counter(
            f"{PREFIX}_runs_failed", "Runs whose executor raised or was cancelled.", registry=r
        )
        self.runs_active = Gauge(f"{PREFIX}_runs_active", "Runs executing now.", registry=r)
        self.runs_ended = Counter(
            f"{PREFIX}_runs_ended",
            "Runs that ended, by outcome (completed, failed, cancelled, abandoned).",
            ["outcome"],
            registry=r,
        )
        self.run_outcomes = {o: self.runs_ended.labels(outcome=o) for o in RUN_OUTCOMES}
        self.run_seconds = Histogram(
            f"{PREFIX}_run_seconds",
            "A run from its stage to its end committed (completed or failed).",
            buckets=RUN_SECONDS_BUCKETS,
            registry=r,
        )
        self.executor_seconds = Histogram(
            f"{PREFIX}_executor_seconds",
            "One executor call, until it returned, raised or timed out.",
            buckets=RUN_SECONDS_BUCKETS,
            registry=r,
        )

        self.outbox_published = Counter(
            f"{PREFIX}_outbox_published", "Events published from the outbox.", registry=r
        )
        self.outbox_backlog = Gauge(
            f"{PREFIX}_outbox_backlog", "Events committed but not yet published.", registry=r
        )

        self.consumers_registered = Gauge(
            f"{PREFIX}_consumers_registered", "Shard queues this worker consumes now.", registry=r
        )
        self.shards_owned = Gauge(
            f"{PREFIX}_shards_owned",
            "Shard queues assigned to this worker (membership; every shard without it).",
            registry=r,
        )
        self.runtimes_cached = Gauge(
            f"{PREFIX}_runtimes_cached", "Runtimes held in memory.", registry=r
        )
        self.readiness = Gauge(
            f"{PREFIX}_readiness", "1 while every readiness check passes, else 0.", registry=r
        )
        self.liveness = Gauge(
            f"{PREFIX}_liveness", "1 while every liveness check passes, else 0.", registry=r
        )

        self.task_restarts = Counter(
            f"{PREFIX}_task_restarts",
            "Restarts of a long-lived task after it raised or returned, by task.",
            ["task"],
            registry=r,
        )
        self.deliveries_waiting = Gauge(
            f"{PREFIX}_deliveries_waiting",
            "Deliveries received and not yet settled (acked, rejected or dropped).",
            registry=r,
        )
        self.seconds_since_progress = Gauge(
            f"{PREFIX}_seconds_since_progress",
            "Seconds since the pipeline last settled a delivery or made progress while "
            "deliveries wait; 0 while none wait.",
            registry=r,
        )

        self.retention_deleted = Counter(
            f"{PREFIX}_retention_deleted",
            "Rows the pruner deleted, by table (event_outbox, inputs, boundary_receipts, "
            "processed_commands).",
            ["table"],
            registry=r,
        )
        self.retention_failures = Counter(
            f"{PREFIX}_retention_failures",
            "Retention steps that failed and wait for the next interval, by step "
            "(prune, dead_letter_queue).",
            ["step"],
            registry=r,
        )
        self.dead_letter_queue_messages = Gauge(
            f"{PREFIX}_dead_letter_queue_messages",
            "Messages in the dead queue when it was last measured.",
            registry=r,
        )
        self.dead_letter_queue_max_length = Gauge(
            f"{PREFIX}_dead_letter_queue_max_length",
            "The dead queue's x-max-length: past it the oldest dead letters are dropped.",
            registry=r,
        )

        self.refreshers: list[Callable[[], None]] = []
        """Called before each render, to set gauges read from live objects."""

    def render(self) -> bytes:
        """The current values in the Prometheus text format."""
        for refresh in self.refreshers:
            refresh()
        return generate_latest(self.registry)
