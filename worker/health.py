"""The worker's HTTP endpoint: liveness, readiness and metrics.

- ``GET /healthz``: ``200 ok``. Being served at all proves the event loop is responsive, which
  is what a liveness probe should restart the process for; it checks nothing else, so an outage
  of a dependency never gets a healthy worker killed.
- ``GET /readyz``: runs every readiness check concurrently, each bounded by a timeout (a check
  that hangs is as bad as one that fails: the probe itself must answer). ``200`` when all pass,
  else ``503`` with a JSON body naming each failing part. The result also sets the
  ``meerkat_readiness`` gauge.
- ``GET /metrics``: the Prometheus text of :class:`~worker.metrics.Metrics`.

A readiness check is an async callable that returns when its part is usable and raises when it
is not. Only the message of a :class:`ReadinessError` is shown in the response; of any other
exception only its type, because driver errors may quote connection URLs with credentials.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from aiohttp import web

from worker.metrics import METRICS_CONTENT_TYPE, Metrics

ReadinessCheck = Callable[[], Awaitable[None]]

READINESS_PARTS = ("database", "blob_store", "broker", "consumers")
"""The parts the worker registers checks for; a ready worker can reach all of them."""

DEFAULT_CHECK_TIMEOUT_SECONDS = 2.0


class ReadinessError(Exception):
    """A check's way to say why its part is not ready, in words safe to show."""


@dataclass(frozen=True)
class Readiness:
    failing: Mapping[str, str]
    """Part name → why it failed, for the parts that did."""
    passing: tuple[str, ...]

    @property
    def ready(self) -> bool:
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
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    def add_check(self, name: str, check: ReadinessCheck) -> None:
        """Register (or replace) the readiness check of one part."""
        self._checks[name] = check

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
        if self._runner is not None:
            raise RuntimeError("the health server is already started")
        runner = web.AppRunner(self.make_app(), access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = bound_port(runner, port)

    async def stop(self) -> None:
        runner, self._runner, self._port = self._runner, None, None
        if runner is not None:
            await runner.cleanup()

    async def check_readiness(self) -> Readiness:
        """Run every check at once; each gets ``check_timeout_seconds``."""
        names = list(self._checks)
        verdicts = await asyncio.gather(*(self._run_check(self._checks[n]) for n in names))
        failing = {name: why for name, why in zip(names, verdicts, strict=True) if why}
        passing = tuple(name for name, why in zip(names, verdicts, strict=True) if not why)
        readiness = Readiness(failing=failing, passing=passing)
        self.metrics.readiness.set(1 if readiness.ready else 0)
        return readiness

    async def _run_check(self, check: ReadinessCheck) -> str | None:
        """None when the check passed, else why it did not."""
        try:
            await asyncio.wait_for(check(), self.check_timeout_seconds)
        except TimeoutError:
            return f"no answer within {self.check_timeout_seconds:g}s"
        except ReadinessError as exc:
            return str(exc) or "not ready"
        except Exception as exc:
            return type(exc).__name__
        return None

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _readyz(self, request: web.Request) -> web.Response:
        readiness = await self.check_readiness()
        body = {
            "status": "ready" if readiness.ready else "not_ready",
            "failing": dict(readiness.failing),
            "passing": list(readiness.passing),
        }
        return web.json_response(body, status=200 if readiness.ready else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        # aiohttp refuses a charset inside content_type=, so the header is set whole.
        return web.Response(
            body=self.metrics.render(), headers={"Content-Type": METRICS_CONTENT_TYPE}
        )


def bound_port(runner: web.AppRunner, requested: int) -> int:
    for address in runner.addresses:
        # IPv4 (host, port) and IPv6 (host, port, flowinfo, scope) both have the port second.
        if isinstance(address, tuple) and len(address) >= 2 and isinstance(address[1], int):
            return address[1]
    return requested
