"""The throughput scenarios of the worker: ``accept``, ``e2e`` and ``latency`` (one session,
the echo executor) and ``slow`` (a session of its own).

``accept``, ``e2e`` and ``latency`` share one worker run: the shard queues are pre-filled with
the workload, the worker started, and the admissions timed (``accept``); the same run goes on
until every input is consumed (``e2e``); the worker, now idle, then answers paced requests
(``latency``, :mod:`bench.latency`) at half the most it sustains: the lower of the rates
``accept`` and ``e2e`` just measured. A run that stops
after ``accept`` measures exactly what the first part of a longer one does: the worker cannot
tell. ``slow`` pre-fills one prompt per runtime for an executor that sleeps 1 s.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

from bench.errors import BenchFailure
from bench.executors import LATENCY_SECONDS
from bench.latency import measure_latency
from bench.report import Row
from bench.session import Context, Session, open_session, session_details
from bench.workerproc import WorkerBuild
from bench.workload import prompts
from schemas import InputPhase
from worker.config import Settings

DEFAULT_MAX_CONCURRENT_RUNS: int = Settings.model_fields["max_concurrent_runs"].default
"""``MEERKAT_MAX_CONCURRENT_RUNS`` when it is not set (the worker's own default)."""
SLOW_EXECUTOR = "bench.executors:sleep_one_second"
CONSUMED = InputPhase.CONSUMED.value
ALL_INPUTS = "SELECT count(*) FROM inputs"
CONSUMED_INPUTS = f"SELECT count(*) FROM inputs WHERE phase = '{CONSUMED}'"


@dataclass(frozen=True)
class EchoPlan:
    """Which of the echo session's scenarios to report, and their sizes."""

    inputs: int
    runtimes: int
    accept: bool
    e2e: bool
    latency_requests: int | None
    """``None``: no ``latency``."""
    latency_rate: float | None = None
    """Requests per second; ``None``: half the lower of ``accept``'s and ``e2e``'s rates."""

    @property
    def until_consumed(self) -> bool:
        return self.e2e or self.latency_requests is not None


def label(build: WorkerBuild, name: str) -> str:
    """A row's name: ``accept``, or ``accept@<folder>`` for another build."""
    return f"{name}@{build.label}" if build.label else name


def described(build: WorkerBuild, text: str) -> str:
    return f"{text} [{build.label}]" if build.label else text


async def run_echo(context: Context, build: WorkerBuild, plan: EchoPlan) -> list[Row]:
    messages = prompts(plan.inputs, plan.runtimes)
    rows: list[Row] = []
    async with open_session(context, label(build, "echo"), build) as session:
        await session.prefill(messages)
        started_wall = await _start(session)
        with session.timed("run"):
            await session.wait("inputs accepted", ALL_INPUTS, len(messages))
        first, last_admission = await _admission_span(session)
        accept_seconds = _span(session, first, last_admission)
        accept_rate = len(messages) / accept_seconds
        base = {"runtimes": plan.runtimes, "startup_seconds": round(first - started_wall, 3)}
        if plan.accept:
            rows.append(Row(label(build, "accept"), described(build, "worker accept (echo)"),
                            len(messages), accept_seconds, accept_rate, "inputs/s",
                            details=dict(base)))
        e2e_rate: float | None = None
        if plan.until_consumed:
            with session.timed("run"):
                await session.wait("inputs consumed", CONSUMED_INPUTS, len(messages))
            last: datetime = await session.database.fetchval(
                f"SELECT max(updated_at) FROM inputs WHERE phase = '{CONSUMED}'")
            e2e_seconds = _span(session, first, last.timestamp())
            e2e_rate = len(messages) / e2e_seconds
            if plan.e2e:
                rows.append(Row(label(build, "e2e"),
                                described(build, "worker end to end (echo)"), len(messages),
                                e2e_seconds, e2e_rate, "inputs/s",
                                details=dict(base)))
        if plan.latency_requests is not None:
            # The most the worker sustains is the lower of its admission and consumption rates:
            # past consumption, the queue (and so the latency) grows for as long as it runs.
            assert e2e_rate is not None  # latency runs until every input is consumed
            sustained, which = min((accept_rate, "accept"), (e2e_rate, "e2e"))
            rate = plan.latency_rate or sustained / 2
            source = "given" if plan.latency_rate else f"half of {which}'s {sustained:.1f}/s"
            with session.timed("latency"):
                row = await measure_latency(session, requests=plan.latency_requests,
                                            runtimes=plan.runtimes, rate=rate, source=source,
                                            sustained=e2e_rate)
            row.scenario, row.description = label(build, "latency"), described(
                build, row.description)
            rows.append(row)
            total = len(session.published)
            await session.wait("inputs consumed", CONSUMED_INPUTS, total)
        report = await session.finish(consumed=plan.until_consumed)
        for row in rows:
            row.details.update(session_details(session, report))
    return rows


async def _start(session: Session) -> float:
    """Start the worker; the wall-clock time it was started at."""
    started = time.time()
    await session.start_worker()
    return started


async def _admission_span(session: Session) -> tuple[float, float]:
    first: datetime = await session.database.fetchval("SELECT min(created_at) FROM inputs")
    last: datetime = await session.database.fetchval("SELECT max(created_at) FROM inputs")
    return first.timestamp(), last.timestamp()


def _span(session: Session, first: float, last: float) -> float:
    seconds = last - first
    if seconds <= 0:
        raise BenchFailure(f"{session.name}: first and last timestamps coincide ({first})")
    return seconds


def slow_settings(max_concurrent_runs: int | None) -> dict[str, str]:
    settings = {"MEERKAT_EXECUTOR": SLOW_EXECUTOR}
    if max_concurrent_runs is not None:
        settings["MEERKAT_MAX_CONCURRENT_RUNS"] = str(max_concurrent_runs)
    return settings


async def run_slow(
    context: Context, build: WorkerBuild, runs: int, max_concurrent_runs: int | None
) -> Row:
    """One prompt for each of ``runs`` runtimes; runs per second from the first admission to
    the last consumption, against ``max concurrent runs / 1 s``."""
    messages = prompts(runs, runs)
    settings = slow_settings(max_concurrent_runs)
    name = label(build, "slow")
    async with open_session(context, name, build, settings) as session:
        await session.prefill(messages)
        started_wall = await _start(session)
        with session.timed("run"):
            await session.wait("inputs consumed", CONSUMED_INPUTS, len(messages))
        first, _ = await _admission_span(session)
        last: datetime = await session.database.fetchval(
            f"SELECT max(updated_at) FROM inputs WHERE phase = '{CONSUMED}'")
        seconds = _span(session, first, last.timestamp())
        report = await session.finish(consumed=True)
        details: dict[str, object] = {
            "runtimes": runs, "startup_seconds": round(first - started_wall, 3),
            "settings": settings, "latency_seconds": LATENCY_SECONDS,
            **session_details(session, report),
        }
    description = described(build, f"worker, executor sleeping {LATENCY_SECONDS:g} s")
    rate = report.runs / seconds
    if build.label and max_concurrent_runs is None:
        # Another build: its own default concurrency, which this checkout does not know.
        return Row(name, f"{description}, its default concurrency", report.runs, seconds,
                   rate, "runs/s", details=details)
    limit = max_concurrent_runs or DEFAULT_MAX_CONCURRENT_RUNS
    details["max_concurrent_runs"] = limit
    return Row(name, f"{description}, {limit} at once", report.runs, seconds, rate, "runs/s",
               ideal=limit / LATENCY_SECONDS, details=details)
