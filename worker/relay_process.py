"""The outbox relay in a child process of its own, seen from the worker.

Theory of operation
-------------------
Publishing events is a good part of a worker's CPU (framing, confirms, marking rows sent: from
a sixth to over a third of its event loop), and it needs nothing of the pipeline's memory: it
reads committed rows and publishes them. So where the database is shared (PostgreSQL), the
relay can run in a process of its own and take a second core, while the worker's event loop
keeps to the pipeline. That pays only where a core is spare: on a machine whose cores the
database and the broker already keep busy, the second process's own overhead (its round trips,
its wake-ups) costs more than it frees, so the default is inline. :func:`outbox_relay` makes
that choice, from ``MEERKAT_OUTBOX_RELAY`` (:attr:`~worker.config.Settings.relay_runs_apart`):
an inline :class:`~worker.outbox.OutboxRelay` or a :class:`RelayProcess`; the worker uses both
as an :class:`~worker.outbox.EventRelay`.

:meth:`RelayProcess.run` is the supervised task ``outbox``: it starts ``python -m
worker.relay_child`` (:mod:`worker.relay_child`; the protocol is :mod:`worker.relay_protocol`),
hands it the settings, and reads its reports until it exits. A child that exits while the
worker is not stopping is logged (``outbox_relay_exited``, with its exit code or signal) and
raised as :class:`RelayExited`, so the worker's supervisor logs it, counts the restart and
starts a new child after its backoff; meanwhile ``/readyz`` names ``outbox`` (and ``tasks``).
A child that keeps dying stops the worker, as any task that does.

The reports keep, in the worker: the liveness of the relay (the time of the last pass; a child
still starting has the connect timeout besides), the ``meerkat_outbox_published`` and
``meerkat_outbox_backlog`` metrics, and :attr:`RelayProcess.leading`. ``notify`` writes a wake
byte, ``publish_pending`` a drain byte and waits for its ``drained`` answer (a child that dies
first fails it with ``ConnectionError``).

Stopping: the worker drains its relay (``publish_pending``) and then cancels the task, which
closes the child's input (its end of file: it finishes the pass under way and closes its
connections) and waits for it within :data:`CHILD_STOP_SECONDS`, then kills it. A worker that
is killed takes the child with it (see :mod:`worker.relay_child`).

Fault points of the relay (:data:`~worker.faults.RELAY_POINTS`) are handed to the child; one
that fired (``raise``, ``hang``) is not handed to the next child: each fires once per worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections import deque
from pathlib import Path

import structlog

from persistence.ports import OutboxStore
from worker.broker import BrokerLink
from worker.config import ENV_PREFIX, Settings
from worker.deadline import bounded
from worker.faults import RELAY_POINTS, FaultPlan
from worker.health import ReadinessError
from worker.metrics import Metrics
from worker.outbox import EventRelay, OutboxRelay
from worker.relay_protocol import DRAIN, WAKE, Handoff, ProtocolError, Report
from worker.topology import Topology

log = structlog.get_logger(__name__)

CHILD_MODULE = "worker.relay_child"
CHILD_STOP_SECONDS = 5.0
"""How long a child told to stop may take before it is killed."""
POLL_SECONDS = 1.0
"""The child relay's poll interval (the inline relay's default)."""
_PROJECT_ROOT = str(Path(__file__).resolve().parents[1])


def outbox_relay(settings: Settings, topology: Topology, store: OutboxStore,
                 broker: BrokerLink, *, worker_id: str | None, metrics: Metrics,
                 faults: FaultPlan) -> EventRelay:
    """The worker's relay: in a child process or inline, as the settings say."""
    if settings.relay_runs_apart:
        return RelayProcess(settings, topology, worker_id=worker_id, metrics=metrics,
                            faults=faults)
    return OutboxRelay(store, broker, metrics=metrics, faults=faults)


class RelayExited(ConnectionError):
    """The relay's child process ended while the worker still ran."""


class RelayProcess:
    """An :class:`~worker.outbox.EventRelay` run by a child process (see the module)."""

    def __init__(self, settings: Settings, topology: Topology, *, worker_id: str | None,
                 metrics: Metrics, faults: FaultPlan) -> None:
        self._settings = settings
        self._topology = topology
        self._worker_id = worker_id
        self._metrics = metrics
        self._faults = list(faults.restricted(RELAY_POINTS).faults)
        self._child: asyncio.subprocess.Process | None = None
        self._drains: deque[asyncio.Future[int]] = deque()
        self._up = asyncio.Event()
        self._stopping = False
        self._exited: str | None = None
        self.last_pass = time.monotonic()
        self.published = 0
        self.backlog = 0
        self.leading: bool | None = None
        self.pid: int | None = None
        """The running child's pid (None between children)."""

    # -- the EventRelay interface ----------------------------------------------------------

    def notify(self) -> None:
        child = self._child
        if child is None or child.stdin is None or not self._up.is_set():
            return
        transport = child.stdin.transport
        # A byte still waiting in the buffer wakes the child after this commit anyway.
        if not transport.is_closing() and transport.get_write_buffer_size() == 0:
            transport.write(WAKE)

    async def publish_pending(self) -> int:
        await self._up.wait()
        child = self._child
        if child is None or child.stdin is None or child.stdin.transport.is_closing():
            raise RelayExited("the outbox relay's process is not running")
        drained: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._drains.append(drained)
        child.stdin.transport.write(DRAIN)
        return await drained

    async def wait_started(self) -> None:
        await self._up.wait()

    async def readiness(self) -> None:
        if self._up.is_set():
            return
        if self._exited is not None:
            raise ReadinessError(f"the outbox relay's process {self._exited}; restarting")
        raise ReadinessError("the outbox relay's process is starting")

    def check(self, stall_seconds: float) -> None:
        """Liveness: a pass reported within ``stall_seconds`` beyond the poll interval (and the
        connect timeout, for a child still starting)."""
        since = time.monotonic() - self.last_pass
        starting = 0.0 if self._up.is_set() else self._settings.connect_timeout_seconds
        if since > stall_seconds + POLL_SECONDS + starting:
            raise ReadinessError(f"outbox relay has not finished a pass for {since:.0f}s")

    def stop(self) -> None:
        self._stopping = True
        child = self._child
        if child is not None and child.stdin is not None:
            child.stdin.close()

    async def run(self) -> None:
        child = await self._spawn()
        try:
            assert child.stdin is not None
            assert child.stdout is not None
            child.stdin.write(Handoff.of(self._settings, self._topology, self._worker_id,
                                         os.getpid(), fault=self.child_faults()).encode())
            while line := await child.stdout.readline():
                self._on_report(line)
            code = await child.wait()
        finally:
            self._child, self.pid = None, None
            self._up.clear()
            self._fail_drains()
            await _end(child)
        if self._stopping:
            return
        self._exited = _describe_exit(code)
        log.error("outbox_relay_exited", pid=child.pid, how=self._exited)
        raise RelayExited(f"the outbox relay's process {self._exited}")

    # -- the child -------------------------------------------------------------------------

    def child_faults(self) -> str | None:
        """The fault plan of the next child: the relay's points that have not fired yet."""
        return FaultPlan(tuple(self._faults)).spec() or None

    async def _spawn(self) -> asyncio.subprocess.Process:
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith(ENV_PREFIX)}
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (_PROJECT_ROOT, os.environ.get("PYTHONPATH")) if p)
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", CHILD_MODULE, "--parent", str(os.getpid()),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env)
        self._child, self.pid = child, child.pid
        self.last_pass = time.monotonic()
        log.info("outbox_relay_started", pid=child.pid)
        return child

    def _on_report(self, line: bytes) -> None:
        try:
            report = Report.decode(line)
        except ProtocolError as exc:
            log.warning("outbox_relay_protocol_error", error=str(exc))
            return
        if report.kind == "fault":
            self._faults = [f for f in self._faults if f.point != report.point]
            return
        if report.published:
            self.published += report.published
            self._metrics.outbox_published.inc(report.published)
        self.backlog = report.backlog
        self._metrics.outbox_backlog.set(report.backlog)
        self.leading = report.leading if report.leading is not None else self.leading
        if report.kind == "pass":
            self.last_pass = time.monotonic()
            self._exited = None
            self._up.set()
        elif self._drains:
            drained = self._drains.popleft()
            if not drained.done():
                if report.error is None:
                    drained.set_result(report.count)
                else:
                    drained.set_exception(ConnectionError(report.error))

    def _fail_drains(self) -> None:
        while self._drains:
            drained = self._drains.popleft()
            if not drained.done():
                drained.set_exception(RelayExited("the outbox relay's process ended"))


async def _end(child: asyncio.subprocess.Process) -> None:
    """Close the child's input, wait for it to exit, kill it when it takes too long."""
    if child.returncode is not None:
        return
    if child.stdin is not None:
        child.stdin.close()
    try:
        await bounded(child.wait(), CHILD_STOP_SECONDS)
    except TimeoutError:
        log.warning("outbox_relay_killed", pid=child.pid, timeout_seconds=CHILD_STOP_SECONDS)
        _kill(child)
        await child.wait()
    except asyncio.CancelledError:
        _kill(child)
        raise


def _kill(child: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        child.kill()


def _describe_exit(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"
