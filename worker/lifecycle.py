"""``meerkat-worker run``: one worker process, from its signal handlers to its exit code.

Signals. SIGTERM and SIGINT are handled from the moment :func:`serve` begins, start-up
included, so that a worker waiting on a dependency that does not answer can always be stopped:

- The first signal during start-up cancels it; whatever start-up had begun is stopped (a
  membership row it wrote is deleted) and the exit code is 0: no message was taken, so there is
  nothing left to drain.
- The first signal once the worker runs starts the drain (:meth:`Worker.stop`, bounded by
  ``MEERKAT_SHUTDOWN_GRACE_SECONDS`` per step); the exit code is 0, or 5 when a part of the
  worker had failed for good.
- A second signal, whenever it comes after the first, ends the process at once with
  128 + the signal's number (130 for SIGINT, 143 for SIGTERM). Nothing committed is lost: the
  broker returns the unacked deliveries to their queues, in order, and the membership row
  expires after its ttl. The exit is ``os._exit``: no task or thread may hold it up.

While a drain (or the stop of an abandoned start-up) goes on, ``worker_draining`` is logged
every :data:`DRAIN_REPORT_SECONDS` with what it is waiting for (:meth:`Worker.drain_state`).

Start-up failures. One that :mod:`worker.refusals` knows (a configuration the worker cannot
use, an unreachable dependency, a wrong topology or schema) goes on to the command line, which
prints its one line; any other is logged with its traceback (``worker_start_failed``) and
raised as :class:`~worker.refusals.StartupFailed` (exit code 5).

Once start-up has completed, the start-up line ``worker_started`` is logged (the version, the
worker id, the prefix, the shards and those owned, the executor, the HTTP port, the trace
exporters, the fault plan, the event loop (:mod:`worker.event_loop`), the events emitted; every
setting, masked, at debug as ``worker_settings``), and before the worker waits for a stop the
garbage collector is tuned for a long-lived heap (:func:`worker.gcpolicy.tune_for_throughput`);
its thresholds are raised before start-up already (:func:`worker.gcpolicy.collect_rarely`),
which may load long queues.

The process (:func:`run_worker`) sets up logging at ``MEERKAT_LOG_FORMAT`` and
``MEERKAT_LOG_LEVEL`` first, then tracing (:func:`worker.tracing.configure`, from the
``OTEL_*`` environment, on only with the ``otel`` extra), and shuts tracing down (exporting the
spans it still holds) when the event loop has ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable

import structlog

from worker import tracing
from worker.app import EXIT_FATAL, Worker
from worker.config import Settings
from worker.event_loop import loop_factory, loop_name
from worker.event_selection import EventSelection
from worker.faults import FaultPlan
from worker.gcpolicy import collect_rarely, tune_for_throughput
from worker.logs import configure_logging
from worker.refusals import StartupFailed, refusal_of
from worker.topology import Topology
from worker.version import package_version

log = structlog.get_logger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
DRAIN_REPORT_SECONDS = 5.0
"""How often a drain logs what it is waiting for."""

ForceExit = Callable[[int], None]


def exit_now(code: int) -> None:
    """End the process at once with ``code`` (after flushing what was logged)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class StopSignals:
    """SIGTERM and SIGINT as they arrive: the first asks for a stop, the second forces one."""

    def __init__(self) -> None:
        self.received: list[signal.Signals] = []
        self.first = asyncio.Event()
        self.second = asyncio.Event()

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, self._receive, sig)

    def remove(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)

    def _receive(self, sig: signal.Signals) -> None:
        self.received.append(sig)
        log.info("signal_received", signal=sig.name, count=len(self.received))
        (self.second if self.first.is_set() else self.first).set()

    @property
    def forced_exit_code(self) -> int:
        """128 + the number of the signal that forces the exit (the shell's convention)."""
        return 128 + int(self.received[-1])


def run_worker(settings: Settings) -> int:
    """The whole process of ``meerkat-worker run``: logging, the event loop, the exit code."""
    configure_logging(settings.log_format, settings.log_level)
    tracing.configure(install_global=True)
    try:
        with asyncio.Runner(loop_factory=loop_factory(settings.event_loop)) as runner:
            return runner.run(serve(settings))
    finally:
        tracing.shutdown()


async def serve(settings: Settings, *, force_exit: ForceExit = exit_now) -> int:
    """Start, run until SIGTERM or SIGINT (or until a part failed for good), drain, stop."""
    loop = asyncio.get_running_loop()
    signals = StopSignals()
    signals.install(loop)
    worker = Worker(settings, Topology.from_settings(settings))
    try:
        return await _serve(worker, signals, force_exit)
    except asyncio.CancelledError:
        await worker.stop()
        raise
    finally:
        signals.remove(loop)


async def _serve(worker: Worker, signals: StopSignals, force_exit: ForceExit) -> int:
    loop = asyncio.get_running_loop()
    collect_rarely()
    start = loop.create_task(worker.start(), name="start")
    asked = loop.create_task(signals.first.wait(), name="stop-signal")
    await asyncio.wait({start, asked}, return_when=asyncio.FIRST_COMPLETED)
    if not start.done():
        log.info("worker_stopping", during_startup=worker.phase)
        if not worker.stopping:  # a start-up that failed is already stopping what it began
            start.cancel()
        forced = await _unless_forced(start, worker, signals, force_exit)
        if forced is not None:
            return forced
    asked.cancel()
    failure = None if start.cancelled() else start.exception()
    if failure is not None:
        raise _startup_failure(worker, failure)
    if start.cancelled():
        log.info("worker_stopped", during_startup=True)
        return 0
    _log_started(worker)
    tune_for_throughput()
    asked = loop.create_task(signals.first.wait(), name="stop-signal")
    failed = loop.create_task(worker.wait_failed(), name="fatal")
    await asyncio.wait({failed, asked}, return_when=asyncio.FIRST_COMPLETED)
    failed.cancel()
    asked.cancel()
    log.info("worker_stopping", grace_seconds=worker.settings.shutdown_grace_seconds,
             failed_task=worker.fatal[0] if worker.fatal else None)
    drain = loop.create_task(worker.stop(), name="drain")
    forced = await _unless_forced(drain, worker, signals, force_exit)
    if forced is not None:
        return forced
    drain.result()  # a drain that failed is raised
    log.info("worker_stopped")
    return EXIT_FATAL if worker.fatal is not None else 0


def _log_started(worker: Worker) -> None:
    settings = worker.settings
    log.info("worker_started", version=package_version(), worker_id=worker.worker_id,
             prefix=worker.topology.prefix, shards=len(worker.topology.queue_names()),
             owned=len(worker.consumers.owned) if worker.consumers else 0,
             executor=settings.executor, http_port=worker.health.port if worker.health else None,
             tracing=tracing.exporters(), faults=FaultPlan.parse(settings.fault).spec() or None,
             event_loop=loop_name(asyncio.get_running_loop()),
             events=EventSelection.parse(settings.events).describe())
    log.debug("worker_settings", settings=settings.redacted())


async def _unless_forced(
    stopping: asyncio.Task[None], worker: Worker, signals: StopSignals, force_exit: ForceExit
) -> int | None:
    """Wait for ``stopping`` (a drain) while reporting on it; a second signal forces the exit
    (``None``: the drain ended on its own)."""
    loop = asyncio.get_running_loop()
    second = loop.create_task(signals.second.wait(), name="second-signal")
    reporter = loop.create_task(_report_drain(worker), name="drain-report")
    try:
        await asyncio.wait({stopping, second}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        reporter.cancel()
        second.cancel()
    if stopping.done():
        return None
    code = signals.forced_exit_code
    log.warning("worker_stop_forced", exit_code=code, **worker.drain_state())
    force_exit(code)
    stopping.cancel()  # only when force_exit returned
    with contextlib.suppress(BaseException):
        await stopping
    return code


async def _report_drain(worker: Worker) -> None:
    loop = asyncio.get_running_loop()
    began = loop.time()
    while True:
        await asyncio.sleep(DRAIN_REPORT_SECONDS)
        log.info("worker_draining", elapsed_seconds=round(loop.time() - began, 1),
                 **worker.drain_state())


def _startup_failure(worker: Worker, exc: BaseException) -> BaseException:
    """What start-up's failure ends ``serve`` with (see the module's docstring)."""
    refusal = refusal_of(exc)
    if refusal is not None:
        log.error("worker_start_failed", kind=refusal.kind.value,
                  error=worker.settings.scrub(refusal.line))
        return exc
    log.error("worker_start_failed", phase=worker.phase, exc_info=exc)
    return StartupFailed(
        f"start-up failed while {worker.phase}: {type(exc).__name__}: {exc} (the log has "
        "worker_start_failed with the traceback)"
    )
