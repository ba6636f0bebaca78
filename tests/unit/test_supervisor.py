"""The supervisor: a failed long-lived task is logged, counted, restarted after a backoff or
declared fatal, and named by readiness; stop cancels and nothing restarts after it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import pytest
import structlog

from tests.unit.timing import WAIT_SECONDS, Clock, within
from worker.health import ReadinessError
from worker.metrics import Metrics
from worker.supervisor import (
    FATAL,
    RESTART,
    RestartPolicy,
    Supervisor,
    TaskReturned,
    TaskState,
    TaskStatus,
    backoff_seconds,
)

pytestmark = pytest.mark.unit


class Backoffs:
    """The supervisor's sleep: records each backoff, and holds it while ``hold`` is set. With
    ``outlive_cancel`` a held backoff ends normally even when cancelled."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.hold = self.outlive_cancel = False
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        self.entered.set()
        if self.hold:
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                if not self.outlive_cancel:
                    raise


class Fatal:
    def __init__(self) -> None:
        self.calls: list[tuple[str, BaseException]] = []
        self.called = asyncio.Event()

    def __call__(self, name: str, exc: BaseException) -> None:
        self.calls.append((name, exc))
        self.called.set()


class Runs:
    """A task body scripted per run: each entry raises, returns, or (None) waits to be cancelled.
    Runs past the script wait too."""

    def __init__(self, *script: BaseException | str | None, clock: Clock | None = None,
                 step_seconds: float = 0.0) -> None:
        self.script = list(script)
        self.started = 0
        self.cancelled = asyncio.Event()
        self._changed = asyncio.Condition()
        self._clock, self._step = clock, step_seconds

    async def __call__(self) -> None:
        async with self._changed:
            self.started += 1
            self._changed.notify_all()
        if self._clock is not None:
            self._clock.now += self._step
        action = self.script[self.started - 1] if self.started <= len(self.script) else None
        if isinstance(action, BaseException):
            raise action
        if action == "return":
            return
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise

    async def reach(self, starts: int) -> None:
        async with self._changed:
            await within(self._changed.wait_for(lambda: self.started >= starts),
                         f"the task to start {starts} times (started {self.started})")


@pytest.fixture
def fatal() -> Fatal:
    return Fatal()


@pytest.fixture
def backoffs() -> Backoffs:
    return Backoffs()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
async def supervisor(
    fatal: Fatal, backoffs: Backoffs, clock: Clock, metrics: Metrics
) -> AsyncIterator[Supervisor]:
    supervisor = Supervisor(on_fatal=fatal, metrics=metrics, clock=clock, sleep=backoffs)
    try:
        yield supervisor
    finally:
        backoffs.release.set()
        await supervisor.stop(timeout=WAIT_SECONDS)


def restarts_counted(metrics: Metrics, task: str) -> float | None:
    return metrics.registry.get_sample_value("meerkat_task_restarts_total", {"task": task})


def failures_logged(logs: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == "task_failed"]


async def test_a_task_that_raises_is_restarted_counted_and_logged(
    supervisor: Supervisor, backoffs: Backoffs, metrics: Metrics
) -> None:
    error = ValueError("postgresql://meerkat:secret@db/meerkat refused")
    runs = Runs(error)

    with structlog.testing.capture_logs() as logs:
        supervisor.spawn("committer", runs)
        await runs.reach(2)

    assert supervisor.states["committer"] == TaskState(TaskStatus.RUNNING, 1, "ValueError")
    assert restarts_counted(metrics, "committer") == 1
    [failure] = failures_logged(logs)
    assert failure["name"] == "committer"
    assert failure["error"] == repr(error)
    assert failure["restarts"] == 0
    assert failure["fatal"] is False
    assert failure["exc_info"] is error
    assert failure["log_level"] == "error"
    assert len(backoffs.delays) == 1
    assert 0.05 <= backoffs.delays[0] <= 0.1


async def test_a_task_that_returns_has_failed(supervisor: Supervisor, fatal: Fatal) -> None:
    runs = Runs("return")

    with structlog.testing.capture_logs() as logs:
        supervisor.spawn("outbox", runs, policy=FATAL)
        await within(fatal.called.wait(), "on_fatal after the task returned")

    [(name, exc)] = fatal.calls
    assert name == "outbox"
    assert isinstance(exc, TaskReturned)
    assert supervisor.states["outbox"] == TaskState(TaskStatus.FAILED, 0, "TaskReturned")
    assert failures_logged(logs)[0]["fatal"] is True
    assert runs.started == 1


async def test_a_crash_loop_becomes_fatal_once(
    supervisor: Supervisor, fatal: Fatal, backoffs: Backoffs, metrics: Metrics
) -> None:
    errors = [ValueError(f"run {n}") for n in range(1, 4)]
    runs = Runs(*errors)

    supervisor.spawn("committer", runs, policy=RestartPolicy(max_restarts=2, window_seconds=60))
    await within(fatal.called.wait(), "on_fatal after the third failure")

    assert fatal.calls == [("committer", errors[2])]
    assert runs.started == 3
    assert supervisor.states["committer"] == TaskState(TaskStatus.FAILED, 2, "ValueError")
    assert restarts_counted(metrics, "committer") == 2
    # The backoff doubles with each failure within the window (less up to half of jitter).
    assert len(backoffs.delays) == 2
    assert 0.05 <= backoffs.delays[0] <= 0.1
    assert 0.1 <= backoffs.delays[1] <= 0.2
    with pytest.raises(ReadinessError, match=r"^task committer has failed \(last error: "
                                             r"ValueError\)$"):
        await supervisor.readiness()


async def test_failures_further_apart_than_the_window_are_not_fatal(
    supervisor: Supervisor, fatal: Fatal, backoffs: Backoffs, clock: Clock
) -> None:
    # Each run starts 61 s after the last: never two failures within a 60 s window.
    runs = Runs(*(OSError(f"run {n}") for n in range(5)), clock=clock, step_seconds=61)

    supervisor.spawn("membership", runs, policy=RestartPolicy(max_restarts=1, window_seconds=60))
    await runs.reach(6)

    assert fatal.calls == []
    assert supervisor.states["membership"] == TaskState(TaskStatus.RUNNING, 5, "OSError")
    assert all(0.05 <= d <= 0.1 for d in backoffs.delays), "the backoff starts over"


async def test_readiness_names_a_task_in_backoff_and_passes_once_it_runs_again(
    supervisor: Supervisor, backoffs: Backoffs
) -> None:
    backoffs.hold = True
    runs = Runs(ConnectionError("amqp://guest:secret@broker"))
    supervisor.spawn("committer", runs)
    supervisor.spawn("outbox", Runs())

    await within(backoffs.entered.wait(), "the committer's backoff")
    with pytest.raises(ReadinessError) as raised:
        await supervisor.readiness()
    assert str(raised.value) == "task committer is restarting (last error: ConnectionError)"
    assert supervisor.states["committer"].status is TaskStatus.BACKOFF

    backoffs.release.set()
    await runs.reach(2)
    await supervisor.readiness()


async def test_stop_cancels_and_nothing_restarts_after_it(
    supervisor: Supervisor, fatal: Fatal
) -> None:
    runs = Runs()

    with structlog.testing.capture_logs() as logs:
        supervisor.spawn("run_loop", runs)
        await runs.reach(1)
        await supervisor.stop(timeout=WAIT_SECONDS)

    assert runs.cancelled.is_set()
    assert runs.started == 1
    assert supervisor.states["run_loop"].status is TaskStatus.STOPPED
    assert failures_logged(logs) == []
    assert fatal.calls == []
    with pytest.raises(RuntimeError, match="stopped"):
        supervisor.spawn("run_loop_again", Runs())


async def test_stop_during_a_backoff_restarts_nothing(
    supervisor: Supervisor, backoffs: Backoffs, metrics: Metrics
) -> None:
    backoffs.hold = True
    runs = Runs(ValueError("boom"))
    supervisor.spawn("sweep", runs)
    await within(backoffs.entered.wait(), "the sweep's backoff")

    await supervisor.stop(timeout=WAIT_SECONDS)
    backoffs.release.set()

    assert runs.started == 1
    assert supervisor.states["sweep"] == TaskState(TaskStatus.STOPPED, 0, "ValueError")
    assert restarts_counted(metrics, "sweep") == 0


async def test_a_backoff_that_ends_after_stop_restarts_nothing(
    supervisor: Supervisor, backoffs: Backoffs
) -> None:
    backoffs.hold = backoffs.outlive_cancel = True
    runs = Runs(ValueError("boom"))
    supervisor.spawn("outbox", runs)
    await within(backoffs.entered.wait(), "the outbox's backoff")

    await supervisor.stop(timeout=WAIT_SECONDS)

    assert runs.started == 1
    assert supervisor.states["outbox"].status is TaskStatus.STOPPED


async def test_stop_names_a_task_that_outlives_the_timeout(supervisor: Supervisor) -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def stubborn() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await release.wait()  # a cleanup that takes its time

    supervisor.spawn("health", stubborn)
    await within(started.wait(), "the task to start")

    with structlog.testing.capture_logs() as logs:
        await supervisor.stop(timeout=0.01)
    assert [e["name"] for e in logs if e["event"] == "task_did_not_stop"] == ["health"]

    release.set()
    await supervisor.stop(timeout=WAIT_SECONDS)  # stop again: waits for what is left
    assert supervisor.states["health"].status is TaskStatus.STOPPED


async def test_a_cancellation_nobody_asked_for_is_a_failure(
    supervisor: Supervisor, fatal: Fatal
) -> None:
    runs = Runs(asyncio.CancelledError())

    supervisor.spawn("consumers", runs, policy=FATAL)
    await within(fatal.called.wait(), "on_fatal after the stray cancellation")

    assert fatal.calls[0][0] == "consumers"
    assert supervisor.states["consumers"].last_error == "CancelledError"


async def test_each_task_runs_as_an_asyncio_task_of_its_name(supervisor: Supervisor) -> None:
    names: list[str] = []
    seen = asyncio.Event()

    async def committer() -> None:
        task = asyncio.current_task()
        assert task is not None
        names.append(task.get_name())
        seen.set()
        await asyncio.Event().wait()

    supervisor.spawn("committer", committer)
    await within(seen.wait(), "the committer to start")

    assert names == ["committer"]
    with pytest.raises(ValueError, match="already supervised"):
        supervisor.spawn("committer", committer)


def test_the_backoff_doubles_up_to_its_cap() -> None:
    no_jitter = [backoff_seconds(n, RESTART, jitter=0.0) for n in range(1, 10)]
    full_jitter = backoff_seconds(3, RESTART, jitter=0.999)

    assert no_jitter == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0])
    assert 0.2 < full_jitter < 0.4
    assert backoff_seconds(10_000, RESTART, jitter=0.0) == 5.0


@pytest.mark.parametrize("bad", [
    {"max_restarts": -1}, {"window_seconds": 0}, {"first_backoff_seconds": 6.0},
])
def test_a_policy_that_cannot_work_is_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="restart policy"):
        RestartPolicy(**bad)


def test_the_presets() -> None:
    assert (RESTART.max_restarts, RESTART.window_seconds) == (5, 60)
    assert FATAL.max_restarts == 0

