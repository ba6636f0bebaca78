"""The outbox relay's own process: ``python -m worker.relay_child --parent PID``.

Theory of operation
-------------------
A worker whose relay runs apart (``MEERKAT_OUTBOX_RELAY``, :mod:`worker.relay_process`) starts
this program as its child. It is the same :class:`~worker.outbox.OutboxRelay` as the inline one,
with a store and a broker link of its own made from the worker's settings (the
:class:`~worker.relay_protocol.Handoff`, the first line of standard input): it holds the
deployment's relay lease on its own database session, publishes with publisher confirms on its
own connection and marks events sent only after their confirms. Events are the same messages to
the same exchange; only the event loop that frames them is not the pipeline's.

It lives exactly as long as its worker:

- On Linux, ``PR_SET_PDEATHSIG`` makes the kernel SIGKILL it when the worker dies (however: a
  worker killed with SIGKILL runs no code of its own), so a crash is the crash of both, and
  the lease's session closes with it (the kernel's parent is the thread that started the
  child: the worker's event loop thread, which lasts as long as the worker). The parent pid is
  checked once that is armed, for a worker that died before. Elsewhere, and as well, end of
  file on standard input (every worker's end closes the pipe) stops it.
- SIGINT and SIGTERM are ignored: a Ctrl-C reaches the whole process group, and the worker
  drains its relay (``drain``, then end of file) as part of its own graceful stop.
- An injected ``kill`` fault (:data:`~worker.faults.RELAY_POINTS`) SIGKILLs the worker first,
  then this process: the crash-consistency suite sees a worker die there, as with an inline
  relay.

Its log lines go to the worker's standard error, configured from the same settings (format,
level); tracing is configured from the same ``OTEL_*`` environment. Standard output is kept for
the reports: file descriptor 1 is pointed at standard error once the report pipe is saved, so
that nothing a library prints can corrupt the protocol.

The store is opened again and again with backoff while the database is away (each attempt is
reported as a pass: the relay is alive, waiting out an outage); the broker link reconnects as the
worker's does, and the first pass waits for it (within the connect timeout). Passes are at least
:data:`~worker.outbox.MIN_PASS_SECONDS` apart, as inline, woken by the worker's commits or at
the poll interval. A relay loop that raises (an injected ``raise``) ends the process with code
1, which the worker's supervision logs and answers with a new child.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import os
import signal
import sys

import structlog

from persistence.factory import open_runtime_store
from persistence.ports import RuntimeStore
from worker import tracing
from worker.broker import BrokerLink
from worker.config import Settings
from worker.deadline import bounded
from worker.faults import RELAY_POINTS, FaultPlan
from worker.logs import configure_logging
from worker.metrics import Metrics
from worker.outbox import OutboxRelay
from worker.pipeline.policy import RECONNECT
from worker.relay_protocol import Handoff, ProtocolError, Report, ReportKind, read_commands

log = structlog.get_logger(__name__)

PR_SET_PDEATHSIG = 1
STOP_SECONDS = 2.0
"""How long a pass under way at the end of input may take to finish before it is cancelled."""


def die_with_parent(parent_pid: int) -> None:
    """SIGKILL this process when its parent dies (Linux), and exit now if it is gone already."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(0)


class RelayChild:
    """The child's relay, fed by standard input, reporting on the saved standard output."""

    def __init__(self, handoff: Handoff, settings: Settings, reports_fd: int) -> None:
        self._handoff = handoff
        self._settings = settings
        self._reports_fd = reports_fd
        self._relay: OutboxRelay | None = None
        self._reported = 0
        self._drains: asyncio.Queue[None] = asyncio.Queue()
        self._faults = FaultPlan.parse(settings.fault).restricted(
            RELAY_POINTS, companion=handoff.parent_pid, on_fire=self._fault_fired)

    def report(self, report: Report) -> None:
        os.write(self._reports_fd, report.encode())

    def report_pass(self) -> None:
        self.report(self._relay_report("pass"))

    def _relay_report(self, kind: ReportKind, *, count: int = 0,
                      error: str | None = None) -> Report:
        relay = self._relay
        if relay is None:
            return Report(kind, count=count, error=error)
        delta, self._reported = relay.published - self._reported, relay.published
        return Report(kind, published=delta, backlog=relay.backlog, leading=relay.leading,
                      count=count, error=error)

    def _fault_fired(self, point: str) -> None:
        self.report(Report("fault", point=point))

    async def serve(self, stdin: asyncio.StreamReader) -> int:
        """Relay until end of input (0) or until the relay's loop raises (1)."""
        settings = self._settings
        commands = asyncio.create_task(self._read_commands(stdin), name="relay-commands")
        store = await self._open_store(commands)
        if store is None:
            return 0
        broker = BrokerLink(settings.amqp_url.get_secret_value(),
                            self._handoff.resolved_topology(),
                            connect_timeout=settings.connect_timeout_seconds)
        relay = OutboxRelay(store, broker, metrics=Metrics(), faults=self._faults,
                            on_pass=self.report_pass)
        self._relay = relay
        tasks = [commands, asyncio.create_task(broker.run(), name="relay-broker")]
        try:
            # The first pass once the link is up: one without it would only warn.
            up = asyncio.create_task(broker.wait_up())
            await asyncio.wait({up, *tasks}, timeout=settings.connect_timeout_seconds,
                               return_when=asyncio.FIRST_COMPLETED)
            up.cancel()
            loop_task = asyncio.create_task(relay.run(), name="relay-loop")
            tasks += [loop_task, asyncio.create_task(self._answer_drains(relay))]
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            failed = [t for t in done if t is not commands and t.exception() is not None]
            for task in failed:
                log.error("outbox_relay_failed", task=task.get_name(), exc_info=task.exception())
            if not failed:
                relay.stop()
                await asyncio.wait({loop_task}, timeout=STOP_SECONDS)
            return 1 if failed else 0
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await broker.close()
            await store.close()

    async def _open_store(self, commands: asyncio.Task[None]) -> RuntimeStore | None:
        """The store, retried while the database is away; None when input ended first."""
        settings, attempt = self._settings, 0
        while not commands.done():
            opening = open_runtime_store(
                settings.database_url.get_secret_value(), writer_id=self._handoff.worker_id,
                writer_group=self._handoff.resolved_topology().prefix, require_schema=True)
            try:
                return await bounded(opening, settings.connect_timeout_seconds)
            except Exception as exc:
                attempt += 1
                log.warning("outbox_relay_store_unavailable", attempt=attempt,
                            error=settings.scrub(repr(exc)))
                self.report_pass()
            await asyncio.wait({commands}, timeout=RECONNECT.delay(attempt))
        return None

    async def _read_commands(self, stdin: asyncio.StreamReader) -> None:
        """Until end of input: wakes go to the relay, drains to their queue."""
        while chunk := await stdin.read(4096):
            try:
                wake, drains = read_commands(chunk)
            except ProtocolError as exc:
                log.error("outbox_relay_protocol_error", error=str(exc))
                continue
            if wake and self._relay is not None:
                self._relay.notify()
            for _ in range(drains):
                self._drains.put_nowait(None)

    async def _answer_drains(self, relay: OutboxRelay) -> None:
        """One ``drained`` report per drain asked for, in order."""
        while True:
            await self._drains.get()
            try:
                count = await relay.publish_pending()
            except Exception as exc:
                self.report(self._relay_report("drained", error=repr(exc)[:500]))
            else:
                self.report(self._relay_report("drained", count=count))


async def _main(parent_pid: int, reports_fd: int) -> int:
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    line = await stdin.readline()
    if not line:
        return 0
    handoff = Handoff.decode(line)
    if handoff.parent_pid != parent_pid:
        raise ProtocolError("the handoff names another parent")
    settings = handoff.resolved_settings()
    configure_logging(settings.log_format, settings.log_level)
    structlog.contextvars.bind_contextvars(process="outbox_relay")
    tracing.configure()
    try:
        return await RelayChild(handoff, settings, reports_fd).serve(stdin)
    finally:
        tracing.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.relay_child")
    parser.add_argument("--parent", type=int, required=True, help="the worker's pid")
    args = parser.parse_args(argv)
    die_with_parent(args.parent)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    reports_fd = os.dup(1)
    os.dup2(2, 1)
    return asyncio.run(_main(args.parent, reports_fd))


if __name__ == "__main__":
    sys.exit(main())
