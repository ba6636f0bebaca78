"""The run loop: woken by admission signals, it stages a batch, calls the executor and ends the
run, for many runtimes concurrently.

Theory of operation
-------------------
A runtime is worked by at most one task at a time. The task keeps running turns until the
runtime has nothing it may run, because queued work whose admission asked for no wake (a prompt
accepted while a run was going) still drains at the next turn. A turn:

1. takes an executor slot (``max_concurrent``: how many executors run at once);
2. asks the commit pipeline to **stage** the next batch (a run step, committed in the same
   windows as deliveries: group commit), unless the previous run's end staged it already, and
   restores its images and session;
3. calls the executor, bounded by ``executor_timeout``;
4. gives the slot back, and asks the pipeline to **end** the run (finished or failed). A finish
   also stages the runtime's next batch in the same decision when there is one, so a runtime
   with a backlog costs one window per run, not two.

A slow executor holds only its executor slot, never a commit: stages and ends of many runtimes
share the pipeline's transactions. An ``interrupt`` signal that arrives while a run is executing
sets that run's interrupt flag; the executor is expected to yield at its next checkpoint.

Each run is logged when its executor starts (``run_started``) and when it ends
(``run_completed``, ``run_failed``, ``run_cancelled``: no longer current at its end, or
``run_abandoned``: given up to recovery), with its duration from the turn that took it on;
``meerkat_runs_ended_total{outcome}``, ``meerkat_run_seconds`` and
``meerkat_executor_seconds`` count the same, and with tracing on the run's spans end with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from uuid import UUID

import structlog

from persistence.errors import StoreError
from worker import tracing
from worker.core import Signal
from worker.deadline import bounded
from worker.driver import RuntimeDriver
from worker.faults import NO_FAULTS, FaultPlan
from worker.health import ReadinessError
from worker.ids import uuid7
from worker.metrics import Metrics
from worker.pipeline.policy import RUN_TURN, is_transient
from worker.pipeline.steps import RunStep, Staged, StepKind
from worker.runs.executors import Executor, RunRequest, RunResult
from worker.runs.restore import Restorer

log = structlog.get_logger(__name__)


class RunLoop:
    def __init__(
        self,
        driver: RuntimeDriver,
        executor: Executor,
        *,
        submit: Callable[[RunStep], None],
        restorer: Restorer,
        max_concurrent: int = 256,
        executor_timeout: float = 300.0,
        metrics: Metrics | None = None,
        faults: FaultPlan = NO_FAULTS,
    ) -> None:
        self._metrics = metrics or Metrics()
        self._faults = faults
        self._driver = driver
        self._executor = executor
        self._submit = submit
        self._restorer = restorer
        self._slots = asyncio.Semaphore(max_concurrent)
        self._timeout = executor_timeout
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()
        self._running: dict[str, RunRequest] = {}
        self._turns: dict[str, float] = {}
        """Runtime → when its current turn took its slot (monotonic), for the liveness check."""
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
        running = self._running.get(runtime_id)
        if running is not None and signal >= Signal.INTERRUPT:
            running.interrupt.set()
        if runtime_id in self._tasks:
            self._again.add(runtime_id)
            return
        self._idle.clear()
        task = asyncio.get_running_loop().create_task(self._work(runtime_id))
        task.add_done_callback(lambda done: self._ended(runtime_id, done))
        self._tasks[runtime_id] = task

    def _ended(self, runtime_id: str, task: asyncio.Task[None]) -> None:
        """``_work`` handles every failure of a turn itself, so an exception here is a bug: say
        so loudly, and wake the runtime again so its work is not left stranded."""
        if task.cancelled() or task.exception() is None:
            return
        log.error("run_task_crashed", runtime_id=runtime_id, error=repr(task.exception()),
                  exc_info=task.exception())
        if not self._stopping:
            asyncio.get_running_loop().call_later(1.0, self.wake, runtime_id, Signal.WAKE)

    async def _work(self, runtime_id: str) -> None:
        failures = 0
        chained: Staged | None = None
        try:
            while not self._stopping:
                self._again.discard(runtime_id)
                self._driver.take_signal(runtime_id)
                try:
                    ran, chained = await self._turn(runtime_id, chained)
                    failures = 0
                except Exception as exc:
                    chained = None
                    # The store stayed away, or the pipeline gave a step up. Forget the cached
                    # runtime: the next turn reloads it, and recovery requeues what the run had
                    # staged, so a runtime is never left stuck in "running" in this process.
                    failures += 1
                    log.error("run_turn_failed", runtime_id=runtime_id, error=repr(exc))
                    self._driver.drop(runtime_id)
                    await asyncio.sleep(RUN_TURN.delay(failures))
                    continue
                if not ran and runtime_id not in self._again:
                    break
        finally:
            if chained is not None:  # staged by the last end, never run: recovery requeues it
                self._over(runtime_id, chained, "abandoned", time.monotonic())
            self._tasks.pop(runtime_id, None)
            if not self._tasks:
                self._idle.set()

    async def _stage(self, runtime_id: str) -> Staged | None:
        """Stage the runtime's next batch; None when it has nothing to run."""
        step = RunStep(StepKind.STAGE, runtime_id, uuid7())
        self._submit(step)
        try:
            staged = await step.done
        except BaseException:
            tracing.run_ended(step.trace, "abandoned")
            raise
        if isinstance(staged, Staged):
            return staged
        tracing.run_ended(step.trace, "abandoned")  # a retry of the stage found nothing to run
        return None

    async def _turn(self, runtime_id: str, staged: Staged | None) -> tuple[bool, Staged | None]:
        """One run: ``staged`` (the previous finish staged it), else a stage of its own.
        Returns whether a run was made, and the next run when the finish staged one."""
        async with self._slots:
            began = time.monotonic()
            self._turns[runtime_id] = began
            try:
                await self._faults.reach("run_turn")
                if staged is None:
                    staged = await self._stage(runtime_id)
                    if staged is None:
                        return False, None
                error, result, executed = await self._execute(runtime_id, staged)
            except BaseException:
                if staged is not None:
                    self._over(runtime_id, staged, "abandoned", began)
                raise
            finally:
                del self._turns[runtime_id]
        try:
            if error is not None:
                failed = await self._fail(runtime_id, staged, error)
                self._over(runtime_id, staged, "failed" if failed else "cancelled", began,
                           executed, error)
                return True, None
            following = None if self._stopping else uuid7()
            ended = await self._end(StepKind.FINISH, runtime_id, staged.run_id, result=result,
                                    next_run_id=following, trace=staged.trace)
        except BaseException:
            self._over(runtime_id, staged, "abandoned", began, executed)
            raise
        self._over(runtime_id, staged, "completed" if ended else "cancelled", began, executed)
        if ended:
            await self._faults.reach("after_boundary_commit")
            self.runs_completed += 1
            self._metrics.runs_completed.inc()
        return True, ended if isinstance(ended, Staged) else None

    def _over(self, runtime_id: str, staged: Staged, outcome: str, began: float,
              executed: float | None = None, error: str | None = None) -> None:
        """The run ended so: its log line, metrics and spans."""
        seconds = round(time.monotonic() - began, 6)
        self._metrics.run_outcomes[outcome].inc()
        if outcome in ("completed", "failed"):
            self._metrics.run_seconds.observe(seconds)
        tracing.run_ended(staged.trace, outcome, error)
        fields = {"runtime_id": runtime_id, "run_id": str(staged.run_id),
                  "inputs": len(staged.payloads), "duration_seconds": seconds,
                  "executor_seconds": None if executed is None else round(executed, 6)}
        if outcome == "failed":
            log.warning("run_failed", **fields, error=error)
        else:
            log.info(f"run_{outcome}", **fields)

    async def _execute(
        self, runtime_id: str, staged: Staged
    ) -> tuple[str | None, RunResult | None, float | None]:
        """The executor's result, or why the run failed; and how long the executor took."""
        try:
            request = await self._restorer.request(runtime_id, staged.run_id, list(staged.payloads))
        except StoreError as exc:
            if is_transient(exc):  # our outage, not the run's fault: recovery requeues it
                self._driver.forget_run(runtime_id, staged.run_id)
                raise
            return f"{type(exc).__name__}: {exc}", None, None
        self._running[runtime_id] = request
        self._metrics.runs_started.inc()
        self._metrics.runs_active.set(len(self._running))
        log.info("run_started", runtime_id=runtime_id, run_id=str(staged.run_id),
                 inputs=len(staged.payloads))
        called = time.monotonic()
        try:
            await self._faults.reach("mid_run")
            with tracing.executing(staged.trace):
                result = await bounded(self._executor(request), self._timeout)
        except TimeoutError:
            return f"executor timed out after {self._timeout}s", None, self._timeout
        except asyncio.CancelledError:
            raise  # shutdown abandoned the run: recovery puts its inputs back
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}", None, time.monotonic() - called
        finally:
            self._metrics.executor_seconds.observe(time.monotonic() - called)
            self._running.pop(runtime_id, None)
            self._metrics.runs_active.set(len(self._running))
        if not isinstance(result, RunResult):
            return "executor did not return a RunResult", None, time.monotonic() - called
        return None, result, time.monotonic() - called

    async def _fail(self, runtime_id: str, staged: Staged, error: str) -> bool:
        """Commit the run's failure; False: it was no longer current."""
        self.runs_failed += 1
        self._metrics.runs_failed.inc()
        ended = await self._end(StepKind.FAIL, runtime_id, staged.run_id, error=error,
                                trace=staged.trace)
        return ended is not False

    async def _end(self, kind: StepKind, runtime_id: str, run_id: UUID, *,
                   result: RunResult | None = None, error: str | None = None,
                   next_run_id: UUID | None = None,
                   trace: tracing.RunTrace | None = None) -> bool | Staged:
        """Commit the run's end (True, or the next run it staged; False: the run was no longer
        current); if the pipeline gives it up, give the run up to recovery."""
        step = RunStep(kind, runtime_id, run_id, result=result, error=error,
                       next_run_id=next_run_id, trace=trace)
        try:
            self._submit(step)
            ended = await step.done
        except Exception:
            self._driver.forget_run(runtime_id, run_id)
            raise
        return ended if isinstance(ended, Staged) else ended is True

    def check(self, stall_seconds: float) -> None:
        """The liveness check: a turn (stage, executor, end) that outlasts the executor timeout
        by ``stall_seconds`` is wedged somewhere no timeout reaches."""
        limit = self._timeout + stall_seconds
        now = time.monotonic()
        stuck = sorted(r for r, began in self._turns.items() if now - began > limit)
        if stuck:
            raise ReadinessError(f"{len(stuck)} run turn(s) stuck for over {limit:.0f}s")

    def describe(self) -> dict[str, object]:
        """What is under way, for the log of a stop."""
        return {"runtimes": len(self._tasks), "executing": len(self._running),
                "in_turn": len(self._turns), "some": sorted(self._tasks)[:5]}

    def working(self, runtime_id: str) -> bool:
        """Whether a task of this loop is working on the runtime."""
        return runtime_id in self._tasks

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
        for running in self._running.values():
            running.interrupt.set()
        tasks = list(self._tasks.values())
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
