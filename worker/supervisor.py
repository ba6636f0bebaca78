"""Supervision of the worker's long-lived tasks: none of them may die unseen.

Such a task never ends by itself, so raising *and* returning while the supervisor is not stopping
are failures: a committer that returned commits no more than one that raised. Each failure is
logged with its traceback, counted in ``meerkat_task_restarts_total`` and named by
:meth:`Supervisor.readiness` (by its error's type only: messages may quote URLs with credentials)
until the task runs again. Its :class:`RestartPolicy` restarts it after an exponential, jittered
backoff (workers failing together must not retry in step) until more than ``max_restarts``
failures fall within ``window_seconds``: such a task will not heal in place, so ``on_fatal`` lets
the app exit non-zero for its orchestrator to start it afresh.

Each task is one asyncio task, named after it, running the coroutine and its restarts inline.
Only cancellation by :meth:`stop` (or the event loop's shutdown) ends it quietly; a stray
``CancelledError`` from inside is a failure. ``clock`` and ``sleep`` are injected for tests.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from types import MappingProxyType
from typing import Any

import structlog

from worker.health import ReadinessError
from worker.metrics import Metrics
from worker.pipeline.policy import Backoff

log = structlog.get_logger(__name__)

TaskFactory = Callable[[], Coroutine[Any, Any, None]]


@dataclass(frozen=True)
class RestartPolicy:
    max_restarts: int = 5
    """More failures than this within ``window_seconds`` are fatal; 0 makes the first fatal."""
    window_seconds: float = 60.0
    first_backoff_seconds: float = 0.1
    max_backoff_seconds: float = 5.0

    def __post_init__(self) -> None:
        if (self.max_restarts < 0 or self.window_seconds <= 0
                or not 0 <= self.first_backoff_seconds <= self.max_backoff_seconds):
            raise ValueError(f"not a usable restart policy: {self}")


RESTART = RestartPolicy()
FATAL = RestartPolicy(max_restarts=0)


class TaskStatus(StrEnum):
    RUNNING = "running"
    BACKOFF = "backoff"
    FAILED = "failed"
    STOPPED = "stopped"


@dataclass(frozen=True)
class TaskState:
    status: TaskStatus
    restarts: int = 0
    """How often the task was started again after a failure."""
    last_error: str | None = None
    """The type name of the task's last failure."""


def describe(name: str, state: TaskState) -> str:
    """Why a task is not running, in words safe to show."""
    verb = {TaskStatus.BACKOFF: "is restarting", TaskStatus.FAILED: "has failed"}
    cause = f" (last error: {state.last_error})" if state.last_error else ""
    return f"task {name} {verb.get(state.status, f'is {state.status}')}{cause}"


class TaskReturned(RuntimeError):
    """The failure of a long-lived task whose coroutine returned while it should still run."""


def backoff_seconds(failures: int, policy: RestartPolicy, jitter: float) -> float:
    """The wait after ``failures`` failures within the window: doubling from the first backoff
    up to the max, less up to half of it as ``jitter`` goes from 0 to 1."""
    preset = Backoff(policy.first_backoff_seconds, policy.max_backoff_seconds, jitter=0.5)
    return preset.delay(failures, jitter)


class Supervisor:
    def __init__(self, *, on_fatal: Callable[[str, BaseException], None],
                 metrics: Metrics | None = None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self._on_fatal = on_fatal
        # Without the worker's metrics the restarts are still counted, in a registry of their own.
        self._restarts_total = (metrics or Metrics()).task_restarts
        self._clock = clock
        self._sleep = sleep
        self._states: dict[str, TaskState] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._stopping = False

    @property
    def states(self) -> Mapping[str, TaskState]:
        """Task name → its state now (a read-only view)."""
        return MappingProxyType(self._states)

    def spawn(self, name: str, factory: TaskFactory, *, policy: RestartPolicy = RESTART) -> None:
        """Run ``factory()`` as the task ``name``, and again after each failure the policy
        allows. ``factory`` must build a new coroutine on each call."""
        if self._stopping:
            raise RuntimeError(f"the supervisor is stopped; task {name} not started")
        if name in self._tasks:
            raise ValueError(f"a task named {name} is already supervised")
        self._restarts_total.labels(task=name)  # at 0 from the start: increase() sees the first
        self._states[name] = TaskState(TaskStatus.RUNNING)
        self._tasks[name] = asyncio.get_running_loop().create_task(
            self._supervise(name, factory, policy), name=name
        )

    async def readiness(self) -> None:
        """Raises while any task is not running, naming each with its last error's type."""
        down = [describe(name, state) for name, state in self._states.items()
                if state.status is not TaskStatus.RUNNING]
        if down:
            raise ReadinessError("; ".join(down))

    # Unlike a deadline around the call, the timeout ends only the wait: laggards get named.
    async def stop(self, timeout: float) -> None:  # noqa: ASYNC109
        """Cancel every task and wait up to ``timeout`` for them to end; safe to call again."""
        self._stopping = True
        pending = [task for task in self._tasks.values() if not task.done()]
        for task in pending:
            task.cancel()
        if not pending:
            return
        _, still_running = await asyncio.wait(pending, timeout=timeout)
        for task in still_running:
            log.warning("task_did_not_stop", name=task.get_name(), timeout_seconds=timeout)

    async def _supervise(self, name: str, factory: TaskFactory, policy: RestartPolicy) -> None:
        failures: deque[float] = deque()
        try:
            while (error := await self._run_once(name, factory)) is not None:
                delay = self._after_failure(name, error, policy, failures)
                if delay is None:
                    return
                await self._sleep(delay)
                if self._stopping:
                    return
                restarts = self._states[name].restarts + 1
                self._update(name, status=TaskStatus.RUNNING, restarts=restarts)
                self._restarts_total.labels(task=name).inc()
                log.info("task_restarted", name=name, restarts=restarts)
        finally:
            if self._states[name].status is not TaskStatus.FAILED:
                self._update(name, status=TaskStatus.STOPPED)

    async def _run_once(self, name: str, factory: TaskFactory) -> BaseException | None:
        """Run the task once; its failure, or None when it ended because the supervisor stops."""
        try:
            await factory()
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if self._stopping or (task is not None and task.cancelling() > 0):
                raise
            return exc
        except Exception as exc:
            if not self._stopping:
                return exc
            log.warning("task_failed_while_stopping", name=name, error=repr(exc))
            return None
        return None if self._stopping else TaskReturned(f"task {name} returned while it should run")

    def _after_failure(self, name: str, error: BaseException, policy: RestartPolicy,
                       failures: deque[float]) -> float | None:
        """Record the failure; the backoff before the restart, or None when it is fatal."""
        now = self._clock()
        failures.append(now)
        while failures and failures[0] <= now - policy.window_seconds:
            failures.popleft()
        fatal = len(failures) > policy.max_restarts
        state = self._states[name]
        delay = None if fatal else backoff_seconds(len(failures), policy, random.random())
        log.error("task_failed", name=name, error=repr(error), restarts=state.restarts,
                  failures_in_window=len(failures), fatal=fatal, backoff_seconds=delay,
                  exc_info=error)
        status = TaskStatus.FAILED if fatal else TaskStatus.BACKOFF
        self._update(name, status=status, last_error=type(error).__name__)
        if fatal:
            try:
                self._on_fatal(name, error)
            except Exception as exc:  # the supervisor's own task must not die of it unseen
                log.error("on_fatal_failed", name=name, error=repr(exc), exc_info=exc)
        return delay

    def _update(self, name: str, **changes: Any) -> None:
        self._states[name] = replace(self._states[name], **changes)

