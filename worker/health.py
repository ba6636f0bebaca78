"""The worker's HTTP endpoint: liveness, readiness and metrics.

- ``GET /healthz``: ``200 ok`` while every liveness check passes, else ``503`` naming each
  failing part (the JSON shape of ``/readyz``). Being served proves the event loop answers; the
  checks add only what restarting the process cures: a wedged pipeline (the
  :class:`~worker.watchdog.Watchdog`: deliveries wait and none settles nor progresses). Never a
  dependency's outage: a restart brings the database back no sooner. Sets ``meerkat_liveness``.
- ``GET /readyz``: runs every readiness check concurrently, each bounded by a timeout (a check
  that hangs is as bad as one that fails: the probe itself must answer). ``200`` when all pass,
  else ``503`` with a JSON body naming each failing part. The result also sets the
  ``meerkat_readiness`` gauge.
- ``GET /metrics``: the Prometheus text of :class:`~worker.metrics.Metrics`.

A readiness check is an async callable that returns when its part is usable and raises when it
is not; a liveness check is the same, or a plain callable for a check that needs no await (it
must not block: the event loop runs it inline). Both kinds run concurrently, each bounded by
the timeout. Only the message of a :class:`ReadinessError` is shown in the response; of any other
exception only its type, because driver errors may quote connection URLs with credentials.
"""

from __future__ import annotations

import asyncio
import errno
import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from aiohttp import web

from worker.deadline import bounded
from worker.metrics import METRICS_CONTENT_TYPE, Metrics

ReadinessCheck = Callable[[], Awaitable[None]]
LivenessCheck = Callable[[], Awaitable[None] | None]

READINESS_PARTS = ("database", "blob_store", "broker", "consumers", "tasks", "outbox")
"""The parts the worker registers checks for; a ready worker can reach all of them, ``tasks``
(the supervisor) says every long-lived task runs, and ``outbox`` that the relay's child process
runs (where it runs apart)."""
LIVENESS_PARTS = ("pipeline", "outbox", "runs")
"""The parts the worker registers liveness checks for: ``pipeline`` is the delivery watchdog,
``outbox`` the event relay's passes, ``runs`` the run loop's turns."""

DEFAULT_CHECK_TIMEOUT_SECONDS = 2.0


class ReadinessError(Exception):
    """A check's way to say why its part is not ready, in words safe to show."""


class PortInUse(Exception):
    """Another process listens on the HTTP port."""

    def __init__(self, port: int) -> None:
        super().__init__(
            f"MEERKAT_HTTP_PORT {port} is in use by another process; stop that process or "
            "choose another port with MEERKAT_HTTP_PORT"
        )
        self.port = port


@dataclass(frozen=True)
class Readiness:
    failing: Mapping[str, str]
    """Part name → why it failed, for the parts that did."""
    passing: tuple[str, ...]

    @property
    def ready(self) -> bool:
        return not self.failing


@dataclass(frozen=True)
class Liveness:
    failing: Mapping[str, str]
    """Part name → why it failed, for the parts that did."""
    passing: tuple[str, ...]

    @property
    def alive(self) -> bool:
        return not self.failing


class HealthServer:
    def __init__(
        self,
        metrics: Metrics,
        checks: Mapping[str, ReadinessCheck] | None = None,
        check_timeout_seconds: float = DEFAULT_CHECK_TIMEOUT_SECONDS,
    ) -> None:
        self.metrics = metrics
        self.check_timeout_seconds = check_timeout_seconds
        self._checks: dict[str, ReadinessCheck] = dict(checks or {})
        self._liveness_checks: dict[str, LivenessCheck] = {}
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    def add_check(self, name: str, check: ReadinessCheck) -> None:
        """Register (or replace) the readiness check of one part."""
        self._checks[name] = check

    def remove_check(self, name: str) -> None:
        """Forget the readiness check of one part (nothing happens when there is none)."""
        self._checks.pop(name, None)

    def add_liveness_check(self, name: str, check: LivenessCheck) -> None:
        """Register (or replace) the liveness check of one part."""
        self._liveness_checks[name] = check

    @property
    def port(self) -> int:
        """The bound port; useful after ``start(port=0)``."""
        if self._port is None:
            raise RuntimeError("the health server is not started")
        return self._port

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        return app

    async def start(self, host: str = "0.0.0.0", port: int = 8080) -> None:
        """Serve on ``port`` (``0``: any free one); raises :class:`PortInUse`."""
        if self._runner is not None:
            raise RuntimeError("the health server is already started")
        runner = web.AppRunner(self.make_app(), access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
        except BaseException as exc:
            await runner.cleanup()
            if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
                raise PortInUse(port) from exc
            raise
        self._runner = runner
        self._port = bound_port(runner, port)

    async def stop(self) -> None:
        runner, self._runner, self._port = self._runner, None, None
        if runner is not None:
            await runner.cleanup()

    async def check_readiness(self) -> Readiness:
        """Run every check at once; each gets ``check_timeout_seconds``."""
        failing, passing = await self._run_checks(self._checks)
        readiness = Readiness(failing=failing, passing=passing)
        self.metrics.readiness.set(1 if readiness.ready else 0)
        return readiness

    async def check_liveness(self) -> Liveness:
        """Run every liveness check at once; each gets ``check_timeout_seconds``."""
        failing, passing = await self._run_checks(self._liveness_checks)
        liveness = Liveness(failing=failing, passing=passing)
        self.metrics.liveness.set(1 if liveness.alive else 0)
        return liveness

    async def _run_checks(
        self, checks: Mapping[str, LivenessCheck]
    ) -> tuple[dict[str, str], tuple[str, ...]]:
        names = list(checks)
        verdicts = await asyncio.gather(*(self._run_check(checks[n]) for n in names))
        failing = {name: why for name, why in zip(names, verdicts, strict=True) if why}
        passing = tuple(name for name, why in zip(names, verdicts, strict=True) if not why)
        return failing, passing

    async def _run_check(self, check: LivenessCheck) -> str | None:
        """None when the check passed, else why it did not."""
        try:
            result = check()
            if inspect.isawaitable(result):
                await bounded(result, self.check_timeout_seconds)
        except TimeoutError:
            return f"no answer within {self.check_timeout_seconds:g}s"
        except ReadinessError as exc:
            return str(exc) or "not ready"
        except Exception as exc:
            return type(exc).__name__
        return None

    async def _healthz(self, request: web.Request) -> web.Response:
        liveness = await self.check_liveness()
        if liveness.alive:
            return web.Response(text="ok")
        return verdict_response("not_alive", liveness.failing, liveness.passing)

    async def _readyz(self, request: web.Request) -> web.Response:
        readiness = await self.check_readiness()
        status = "ready" if readiness.ready else "not_ready"
        return verdict_response(status, readiness.failing, readiness.passing)

    async def _metrics(self, request: web.Request) -> web.Response:
        # aiohttp refuses a charset inside content_type=, so the header is set whole.
        return web.Response(
            body=self.metrics.render(), headers={"Content-Type": METRICS_CONTENT_TYPE}
        )


def verdict_response(
    status: str, failing: Mapping[str, str], passing: tuple[str, ...]
) -> web.Response:
    body = {"status": status, "failing": dict(failing), "passing": list(passing)}
    return web.json_response(body, status=503 if failing else 200)


def bound_port(runner: web.AppRunner, requested: int) -> int:
    for address in runner.addresses:
        # IPv4 (host, port) and IPv6 (host, port, flowinfo, scope) both have the port second.
        if isinstance(address, tuple) and len(address) >= 2 and isinstance(address[1], int):
            return address[1]
    return requested
