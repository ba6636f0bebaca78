"""The run loop: woken by admission signals, it stages a batch, calls the executor and commits
the boundary, for many runtimes concurrently (bounded).

A runtime is worked by at most one task at a time. The task keeps running turns until the
runtime has nothing it may run, because queued work whose admission asked for no wake (a prompt
accepted while a run was going) still drains at the next turn. An ``interrupt`` signal that
arrives while a run is executing sets that run's interrupt flag; the executor is expected to
yield at its next checkpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar
from uuid import UUID

import structlog
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from persistence.errors import StoreError
from worker.core import Signal
from worker.driver import RuntimeDriver, StartedRun
from worker.executors import Executor, RunResult
from worker.faults import NO_FAULTS, FaultPlan
from worker.health import ReadinessError
from worker.metrics import Metrics

log = structlog.get_logger(__name__)

P = ParamSpec("P")
T = TypeVar("T")


async def durably(operation: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run a store operation, retrying while the store is only briefly away: a finished run's
    result is worth a few retries before the run is given up to recovery."""
    retrying = AsyncRetrying(
        retry=retry_if_exception(lambda e: isinstance(e, StoreError) and e.transient),
        wait=wait_exponential(multiplier=0.1, max=5.0) + wait_random(0, 0.1),
        stop=stop_after_attempt(6),
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            return await operation(*args, **kwargs)
    raise AssertionError("unreachable: tenacity reraises the last error")


class RunLoop:
    def __init__(
        self,
        driver: RuntimeDriver,
        executor: Executor,
        *,
        max_concurrent: int = 8,
        executor_timeout: float = 300.0,
        metrics: Metrics | None = None,
        faults: FaultPlan = NO_FAULTS,
    ) -> None:
        self._metrics = metrics or Metrics()
        self._faults = faults
        self._driver = driver
        self._executor = executor
        self._slots = asyncio.Semaphore(max_concurrent)
        self._timeout = executor_timeout
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()
        self._running: dict[str, StartedRun] = {}
        self._turns: dict[str, float] = {}
        """Runtime → when its current turn began (monotonic), for the liveness check."""
        self._stopping = False
        self._idle = asyncio.Event()
        self._idle.set()
        self.runs_completed = 0
        self.runs_failed = 0
        driver.on_signal(self.wake)

    def wake(self, runtime_id: str, signal: Signal) -> None:
        """Called by the driver after a commit left a runtime with a pending signal."""
        if self._stopping:
            return
        started = self._running.get(runtime_id)
        if started is not None and signal >= Signal.INTERRUPT:
            started.request.interrupt.set()
        if runtime_id in self._tasks:
            self._again.add(runtime_id)
            return
        self._idle.clear()
        task = asyncio.get_running_loop().create_task(self._work(runtime_id))
        task.add_done_callback(lambda done: self._ended(runtime_id, done))
        self._tasks[runtime_id] = task

    def _ended(self, runtime_id: str, task: asyncio.Task[None]) -> None:
        """A runtime's task ended. ``_work`` handles every failure of a turn itself, so an
        exception here is a bug: say so loudly, and wake the runtime again so its work is
        not left stranded."""
        if task.cancelled() or task.exception() is None:
            return
        log.error("run_task_crashed", runtime_id=runtime_id, error=repr(task.exception()),
                  exc_info=task.exception())
        if not self._stopping:
            asyncio.get_running_loop().call_later(1.0, self.wake, runtime_id, Signal.WAKE)

    async def _work(self, runtime_id: str) -> None:
        failures = 0
        try:
            while not self._stopping:
                self._again.discard(runtime_id)
                self._driver.take_signal(runtime_id)
                try:
                    async with self._slots:
                        ran = await self._one_turn(runtime_id)
                    failures = 0
                except Exception as exc:
                    # The store stayed away through every retry. Forget the cached runtime:
                    # the next turn reloads it, and recovery requeues what the run had staged,
                    # so a runtime is never left stuck in "running" in this process.
                    failures += 1
                    log.error("run_turn_failed", runtime_id=runtime_id, error=repr(exc))
                    self._driver.drop(runtime_id)
                    await asyncio.sleep(min(0.5 * 2**failures, 30.0))
                    continue
                if not ran and runtime_id not in self._again:
                    break
        finally:
            self._tasks.pop(runtime_id, None)
            if not self._tasks:
                self._idle.set()

    async def _one_turn(self, runtime_id: str) -> bool:
        self._turns[runtime_id] = time.monotonic()
        try:
            return await self._turn(runtime_id)
        finally:
            del self._turns[runtime_id]

    def check(self, stall_seconds: float) -> None:
        """The liveness check: a turn (stage, executor, boundary) that outlasts the executor
        timeout by ``stall_seconds`` is wedged somewhere no timeout reaches."""
        limit = self._timeout + stall_seconds
        now = time.monotonic()
        stuck = sorted(r for r, began in self._turns.items() if now - began > limit)
        if stuck:
            raise ReadinessError(f"{len(stuck)} run turn(s) stuck for over {limit:.0f}s")

    async def _turn(self, runtime_id: str) -> bool:
        await self._faults.reach("run_turn")
        started = await self._driver.start_run(runtime_id)
        if started is None:
            return False
        self._running[runtime_id] = started
        self._metrics.runs_started.inc()
        self._metrics.runs_active.set(len(self._running))
        try:
            await self._faults.reach("mid_run")
            result = await asyncio.wait_for(self._executor(started.request), self._timeout)
        except TimeoutError:
            await self._fail(
                runtime_id, started.run_id, f"executor timed out after {self._timeout}s"
            )
            return True
        except asyncio.CancelledError:
            raise  # shutdown abandoned the run: recovery puts its inputs back
        except Exception as exc:
            await self._fail(runtime_id, started.run_id, f"{type(exc).__name__}: {exc}")
            return True
        finally:
            self._running.pop(runtime_id, None)
            self._metrics.runs_active.set(len(self._running))
        if not isinstance(result, RunResult):
            await self._fail(runtime_id, started.run_id, "executor did not return a RunResult")
            return True
        if await self._settle_run(
            runtime_id, started.run_id, self._driver.finish_run, runtime_id, started.run_id, result
        ):
            await self._faults.reach("after_boundary_commit")
            self.runs_completed += 1
            self._metrics.runs_completed.inc()
        return True

    async def _fail(self, runtime_id: str, run_id: UUID, error: str) -> None:
        log.warning("run_failed", runtime_id=runtime_id, run_id=str(run_id), error=error)
        self.runs_failed += 1
        self._metrics.runs_failed.inc()
        await self._settle_run(runtime_id, run_id, self._driver.fail_run, runtime_id, run_id, error)

    async def _settle_run(
        self,
        runtime_id: str,
        run_id: UUID,
        operation: Callable[P, Awaitable[bool]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> bool:
        """Commit a run's end, retrying; if the store stays away, give the run up to recovery."""
        try:
            return await durably(operation, *args, **kwargs)
        except Exception:
            self._driver.forget_run(runtime_id, run_id)
            raise

    @property
    def active_runs(self) -> int:
        return len(self._running)

    @property
    def idle(self) -> bool:
        return not self._tasks

    async def wait_idle(self) -> None:
        """Until no runtime has work this loop can do (tests use it instead of sleeping)."""
        await self._idle.wait()

    async def stop(self, grace: float) -> None:
        """Let running executors finish within ``grace`` seconds, then abandon them to recovery
        (their staged rows are requeued by the next load of the runtime)."""
        self._stopping = True
        for started in self._running.values():
            started.request.interrupt.set()
        tasks = list(self._tasks.values())
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
